"""The :class:`Store` interface the hub programs against; SQLite and PostgreSQL implement it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from datetime import datetime

from hub_client.store.models import (
    Copy, Host, HostBackupStatus, Lease, Move, MovelogEntry, OfflineLoss, Project, Rescue,
)


@runtime_checkable
class Store(Protocol):
    """The hub's durable record of hosts, project placement, moves and the movelog.

    Every method is one transaction. Errors are :class:`~hub_client.store.errors.StoreError`
    subclasses: ``NotFound``, ``MoveInProgress``, ``InvalidTransition``.
    """

    dialect: str

    # -- schema ---------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns how many (0 when up to date)."""

    def schema_version(self) -> int:
        """The newest applied migration version (0 for an empty database)."""

    # -- hosts and projects ---------------------------------------------------------------
    def upsert_host(self, host: Host) -> Host:
        """Insert or replace the host with ``host.id``; returns it as stored."""

    def update_host(self, host_id: str, *, status: str | None = None, last_seen: datetime | None = None) -> Host:
        """Set only the given columns of the host (a poller recording ``last_seen`` never undoes
        a status set meanwhile, as a read-then-upsert would); raises NotFound."""

    def delete_host(self, host_id: str) -> bool:
        """Forget the host (with its backup counts); False when it was not there. Raises HostInUse
        while a project is placed on it or a move, copy or offline-loss record names it (their
        history keeps the host)."""

    def get_host(self, host_id: str) -> Host:
        """The host; raises NotFound."""

    def list_hosts(self, *, region: str | None = None) -> list[Host]:
        """All hosts (of ``region`` if given), ordered by id."""

    def upsert_project(self, project: Project) -> Project:
        """Insert or replace the project with ``project.id``; raises NotFound for an unknown host."""

    def get_project(self, project_id: str) -> Project:
        """The project; raises NotFound."""

    def list_projects(self, *, host_id: str | None = None, region: str | None = None, after: str | None = None,
                      limit: int | None = None) -> list[Project]:
        """All projects (filtered by host and/or region), ordered by id; with ``after`` only ids
        after it, at most ``limit`` (a page)."""

    def set_placement(self, project_id: str, host_id: str) -> Project:
        """Place the project on ``host_id``; raises NotFound for an unknown project or host."""

    def record_freshness(
        self, project_id: str, host_id: str, *, last_backup: datetime | None, last_backup_snapshot: str,
        last_edited: datetime | None, reported_at: datetime,
    ) -> Project | None:
        """Record the project's freshness as the agent of ``host_id`` reported it at ``reported_at``
        (a time the agent reports none for keeps the stored one). Only the placement's report
        counts, and never over a newer one: returns the project as stored, or None (unknown
        project, placed elsewhere, or a newer report recorded already)."""

    # -- moves ----------------------------------------------------------------------------
    def create_move(
        self, project_id: str, source_host: str, target_host: str, *, force: bool = False,
        move_id: str | None = None, step: str = "created", cross_region: bool = False, force_target: bool = False,
    ) -> Move:
        """Record a new PENDING move; raises MoveInProgress if the project has an active move
        (enforced by a unique index, so it holds across hub processes) and NotFound for an unknown
        project or host. ``cross_region``: the move takes the project's repository to the target
        host's region, and completing it sets the project's region. ``force``: the move may go
        ahead losing edits newer than the project's last backup (its source is down);
        ``force_target``: it may go to a target host that is draining or was not seen recently."""

    def get_move(self, move_id: str) -> Move:
        """The move; raises NotFound."""

    def active_move(self, project_id: str) -> Move | None:
        """The project's active (pending, running or failed) move, if any."""

    def list_moves(self, *, project_id: str | None = None, active: bool | None = None) -> list[Move]:
        """Moves, newest first, filtered by project and/or by being active."""

    def update_move_step(self, move_id: str, step: str) -> Move:
        """Record that ``step`` starts; raises NotFound, or InvalidTransition for a finished move."""

    def update_move_status(
        self, move_id: str, status: str, *, error: str | None = None, new_attempt: bool = False
    ) -> Move:
        """Set the status (not SUCCEEDED: that is :meth:`complete_move`) and the error text (None
        clears it); ``new_attempt`` counts one more attempt. Raises NotFound, or InvalidTransition
        for a finished (succeeded/cancelled) move or a bad status."""

    def set_move_force(self, move_id: str, force: bool) -> Move:
        """Record that the active move runs with (or without) force; raises NotFound or InvalidTransition."""

    def set_move_force_target(self, move_id: str, force_target: bool) -> Move:
        """Record that the active move may (or may not) go to a draining or silent target host;
        raises NotFound or InvalidTransition."""

    def set_move_snapshot(self, move_id: str, snapshot_id: str | None) -> Move:
        """Record the exact snapshot the move's target restores (None clears it, for a retry);
        raises NotFound or InvalidTransition."""

    def set_move_frozen_at(self, move_id: str, when: datetime | None) -> Move:
        """Record when the move's freeze step started (None: the source was thawed again);
        raises NotFound or InvalidTransition."""

    def set_move_cleanup(self, move_id: str, cleanup: str) -> Move:
        """Set the source cleanup state (``Cleanup``) of any move, finished or not; raises NotFound."""

    def pending_cleanups(self) -> list[Move]:
        """Moves whose source copy still has to be removed, oldest first."""

    def complete_move(self, move_id: str, *, message: str = "complete", data: dict[str, Any] | None = None,
                      caught_up_bytes: int | None = None) -> Move:
        """Finish an active move in ONE transaction: status SUCCEEDED and step "complete", the
        project placed on the move's target (``placed_at`` now), the source cleanup pending,
        ``caught_up_bytes`` recorded, a movelog "complete" event and, for a move that froze its
        source, a "frozen" event with the frozen window (:func:`models.frozen_entry`). Either all
        of that is stored or none. Raises NotFound or InvalidTransition."""

    # -- copies -------------------------------------------------------------------------------
    def create_copy(
        self, source_project: str, source_path: str, target_project: str, target_path: str, on_conflict: str, *,
        source_host: str, target_host: str, copy_id: str | None = None,
    ) -> Copy:
        """Record a new PENDING copy (``on_conflict`` one of ``Conflict``); raises NotFound for an
        unknown host, InvalidTransition for an unknown rule."""

    def get_copy(self, copy_id: str) -> Copy:
        """The copy; raises NotFound."""

    def list_copies(self, *, project_id: str | None = None, blocking: bool | None = None) -> list[Copy]:
        """Copies, newest first: from or into ``project_id``, and/or (not) pending or running."""

    def update_copy_step(self, copy_id: str, step: str) -> Copy:
        """Record that ``step`` starts; raises NotFound, or InvalidTransition for a finished copy."""

    def update_copy_status(
        self, copy_id: str, status: str, *, error: str | None = None, new_attempt: bool = False
    ) -> Copy:
        """Set the status (not SUCCEEDED: that is :meth:`complete_copy`) and error; raises NotFound
        or InvalidTransition for a finished copy or a bad status."""

    def set_copy_snapshot(self, copy_id: str, snapshot_id: str | None) -> Copy:
        """Record the copy's temporary snapshot (None: forgotten); raises NotFound or InvalidTransition."""

    def complete_copy(self, copy_id: str, *, message: str = "complete", data: dict[str, Any] | None = None) -> Copy:
        """Mark the copy SUCCEEDED with its "complete" log event in one transaction."""

    def append_copylog(
        self, copy_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> MovelogEntry:
        """Append an event to the copy's log (the movelog's shape); raises NotFound."""

    def copylog(self, copy_id: str, after_seq: int = 0, limit: int | None = None) -> list[MovelogEntry]:
        """The copy's events with seq > ``after_seq``, in seq order."""

    # -- host backup status and offline losses ----------------------------------------------
    def set_host_backup_status(self, status: HostBackupStatus) -> HostBackupStatus:
        """Record the host's backup counts (replacing the previous ones); raises NotFound."""

    def host_backup_status(self, host_id: str) -> HostBackupStatus | None:
        """The host's last recorded backup counts, if any."""

    def record_offline_losses(self, losses: list[OfflineLoss]) -> None:
        """Record, in one transaction, projects a host took offline with changes not backed up."""

    def offline_losses(self, *, host_id: str | None = None) -> list[OfflineLoss]:
        """Recorded offline losses (of ``host_id``), oldest first."""

    # -- rescues ---------------------------------------------------------------------------
    def record_rescue(self, rescue: Rescue) -> Rescue:
        """Record a rescue snapshot of a move's source copy (again: a no-op); raises NotFound
        for an unknown move."""

    def list_rescues(self, *, project_id: str | None = None, move_id: str | None = None) -> list[Rescue]:
        """Recorded rescues (of the project and/or the move), oldest first."""

    # -- deletion ---------------------------------------------------------------------------
    def delete_project(self, project_id: str) -> bool:
        """Remove the project with its moves, copies, their logs, rescues and offline-loss records in one
        transaction; False when it was not there. Raises MoveInProgress while a move of it is
        active, CopyInProgress while a copy from or into it is pending or running."""

    # -- movelog --------------------------------------------------------------------------
    def append_movelog(
        self, move_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> MovelogEntry:
        """Append an event with the move's next sequence number (1, 2, 3 …); raises NotFound."""

    def movelog(self, move_id: str, after_seq: int = 0, limit: int | None = None) -> list[MovelogEntry]:
        """The move's events with seq > ``after_seq``, in seq order (at most ``limit``)."""

    # -- locking --------------------------------------------------------------------------
    def move_lock(self, project_id: str) -> AbstractContextManager[None]:
        """Hold the project's move lock for the ``with`` block, across processes and hosts that
        share the database; non-blocking: raises MoveInProgress naming the project when another
        holder has it. Released at the block's end or when the holding process dies."""

    # -- leases ---------------------------------------------------------------------------
    # Two guards, kept both on purpose. The move lock (an advisory lock / a flock, dropped by the
    # database or the kernel the moment its process dies) protects the *execution* of a job's
    # steps: at most one process runs them at any instant. The lease (a row in the store with an
    # expiry) says who *owns* the job between steps and while nobody runs it, so that when its
    # owner dies someone notices and takes it up: a lock vanishes with its holder and leaves no
    # trace of unfinished work, and a lease alone cannot stop a slow (paused, partitioned) owner
    # from acting after its lease lapsed — the lock does, and the lease's epoch fences it.
    # ``kind`` is "move" or "copy" (JobKind); times are the store's clock (:meth:`store_time`).

    def store_time(self) -> datetime:
        """The store's current time: the database's clock on PostgreSQL, this host's UTC clock on SQLite."""

    def get_lease(self, kind: str, job_id: str) -> Lease | None:
        """The job's last lease (None: never claimed); raises NotFound."""

    def claim_lease(self, kind: str, job_id: str, owner: str, seconds: float, *, take_over: bool = False) -> Lease:
        """Make ``owner`` the job's owner for ``seconds`` (a new epoch). Unless ``take_over``, only
        when the lease is free (never claimed, released) or lapsed: raises LeaseHeld naming the
        holder otherwise. ``take_over`` is only for a caller holding the project's move lock (no
        live process runs the job's steps then). Raises NotFound."""

    def claim_lapsed(self, kind: str, owner: str, seconds: float, *, limit: int = 10) -> list[Lease]:
        """Claim for ``owner`` up to ``limit`` pending or running jobs whose lease lapsed (their
        owner died, stopped renewing or handed them over); each job goes to one claimer only
        (PostgreSQL: FOR UPDATE SKIP LOCKED). Released jobs are not claimed."""

    def renew_lease(self, lease: Lease, seconds: float) -> Lease:
        """Extend ``lease`` to ``seconds`` from now, only while it is still this owner's claim
        (same owner and epoch, not released; lapsed but not claimed again is still its own).
        Raises LeaseLost otherwise: the caller must stop acting on the job."""

    def release_lease(self, lease: Lease, *, hand_over: bool = False) -> bool:
        """End this owner's claim: released (the job needs no owner: finished, failed), or with
        ``hand_over`` lapsed at once (the job still needs one: the next scan claims it). False
        when the claim was no longer this owner's."""

    def close(self) -> None:
        """Release the connections."""
