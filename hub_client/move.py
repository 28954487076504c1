"""Moving a project to another host of its region: the steps, their durable record, and recovery.

A move with its source host online runs::

    preflight → backup → precopy → freeze → final_backup → restore → verify → finalize

The bulk ``backup`` runs while the project is still in use; ``precopy`` has the target restore
that snapshot into a staged copy (PreCopy under the move's id), still while the project runs, and
then runs rounds (another backup, a PreCopy of it, incremental on the agent) until a round's
difference is small (:func:`precopy_done`); ``freeze`` writes the move's sentinel into the project
and makes it read-only; ``final_backup`` catches up what changed since, so no edit made before the
freeze is lost; the target brings its pre-copy to exactly that snapshot (never "latest" resolved
later) and places it, restoring whole only without a usable pre-copy. ``verify`` proves the
target's live home and persist location equal that snapshot (its restore receipt, then Verify
SNAPSHOT_TREE: a manifest of the live trees against the snapshot's listing, plus the sentinel),
and ``finalize`` removes the sentinel from the target (Thaw with the sentinel: only that exact
file; "absent" for a finalize resumed after a crash) and checks the live trees' entries and bytes
once more (Verify COUNTS, the snapshot's less the sentinel) right before placement changes; the frozen window (freeze step start → placement) and the bytes caught up
after the freeze are recorded with the completion. With the source host unreachable the move
runs ``preflight → restore → verify → finalize`` from the newest backup (verified the same way,
without a sentinel), and only with ``force`` when the store knows of edits after that backup.

Every step is recorded in the store before it starts, with a request id derived from the move and
the step (and a pre-copy's round), so a hub that dies mid-step resumes by joining the agent
operation it had started. Any failure leaves the placement on the source, thaws the source (only
while it is still the placement; the same Thaw removes the move's sentinel there), removes the target's pre-copy and partial copy, and records
why; the move then stays active until it is resumed, retried (from preflight, maybe with force)
or cancelled. ``force`` accepts the loss of edits newer than the last backup (source down);
``force_target`` allows a target host that is draining or was not seen recently; neither
implies the other. Placement changes in one store transaction with the move's completion,
after verification.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from hub_client.client import OK_STATES, AgentClient, AgentError, new_request_id, state_name
from hub_client.freshness import offline_window, record_status, timestamp_or_none
from hub_client.lease import JobLease
from hub_client.rescue import RescueFailed, same_snapshot, secure_source_copy
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Cleanup, Host, Move, MovelogEntry, MoveStatus, NotFound, Project, Store
from hub_client.store.models import utcnow
from hub_client.repository_copy import BucketConfig, RepositoryCopyError, copy_repository, delete_repository
from hub_client.steps import PROGRESS_INTERVAL, JobError, JobRunner, Observer, job_request_id

SENTINEL_PATH = "persist/.buckets-move-sentinel"
# ThawResponse.sentinel when the sentinel is gone (agent/sentinel.py REMOVED, ABSENT).
SENTINEL_REMOVED, SENTINEL_ABSENT = "removed", "absent"
ONLINE_STEPS = ("preflight", "backup", "precopy", "freeze", "final_backup", "restore", "verify", "finalize")
OFFLINE_STEPS = ("preflight", "restore", "verify", "finalize")
# A cross-region move copies the repository into the target region's bucket twice: in bulk while
# the project is in use, then what the catch-up backup added. Its pre-copy reads the target
# region's copy, so each of its rounds copies the repository again first.
CROSS_REGION_STEPS = ("preflight", "backup", "sync", "precopy", "freeze", "final_backup", "final_sync", "restore",
                      "verify", "finalize")
PLAN_STEPS = {"online": ONLINE_STEPS, "offline": OFFLINE_STEPS, "cross-region": CROSS_REGION_STEPS}
# A failure undoes these (the target's pre-copy and copy removed, the source thawed), so a
# resumed move starts again there at the latest.
FIRST_UNDONE_STEP = {"online": "precopy", "offline": "restore", "cross-region": "precopy"}
DEFAULT_PRECOPY_ROUNDS = 3
# A round whose backup added at most this much is the last: the catch-up after the freeze then
# fetches about this much at most. 16 MiB is ~0.15 s of fetching at 100 MB/s (a bucket in the
# same region), a tenth of the 1.5 s frozen-window target; a further round would save less than
# that and cost a whole scan of the project while it runs.
DEFAULT_PRECOPY_STOP_BYTES = 16 * 1024 * 1024

Connect = Callable[[Host], AgentClient]


class MoveError(JobError):
    """A move could not start, or one of its steps failed; the text is for the operator."""


class MoveRefused(MoveError):
    """Preflight said no; nothing was changed on any host. ``loss_minutes`` is set when the
    refusal is about changes that exist only on an unreachable source host."""

    def __init__(self, message: str, loss_minutes: int | None = None, code: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message, code)
        self.loss_minutes = loss_minutes


# ---------------------------------------------------------------- pure decisions


def possible_loss_minutes(last_backup: datetime | None, last_edited: datetime | None) -> int | None:
    """Whole minutes (rounded up) of edits newer than the last backup, or None when the last
    backup is not older than the last recorded edit (or nothing was ever edited)."""
    if last_edited is None:
        return None
    if last_backup is not None and last_backup >= last_edited:
        return None
    if last_backup is None:
        return None  # never backed up: there is nothing to move from; the caller refuses
    return max(1, math.ceil((last_edited - last_backup).total_seconds() / 60))


def steps_of(plan: str) -> tuple[str, ...]:
    return PLAN_STEPS[plan]


def resume_point(plan: str | None, step: str, crashed: bool) -> str:
    """Where a resumed move starts: the recorded step after a hub crash (nothing was undone);
    after a failure, the recorded step or the first step the failure undid, whichever is earlier."""
    if plan not in PLAN_STEPS or step not in steps_of(plan):
        return "preflight"
    if crashed:
        return step
    steps = steps_of(plan)
    return steps[min(steps.index(step), steps.index(FIRST_UNDONE_STEP[plan]))]


def precopy_done(rounds_done: int, max_rounds: int, difference: int | None, stop_bytes: int) -> bool:
    """Whether the pre-copy stops after its ``rounds_done``-th PreCopy (the bulk snapshot's is
    the first). ``difference``: what that round's backup added (None for the first round, which
    has no previous pre-copy to differ from). It stops at ``max_rounds`` PreCopies, or when a
    round's difference is at most ``stop_bytes``."""
    if rounds_done >= max_rounds:
        return True
    return difference is not None and difference <= stop_bytes


def round_difference(summary: pb.OperationSummary) -> int:
    """The measure of a pre-copy round's difference: the bytes the round's backup added to the
    repository (new and changed content after deduplication). That is what the next incremental
    restore has to fetch, where the number of changed files would not say how much."""
    return max(0, int(summary.bytes_added))


def caught_up_bytes(entries: list[MovelogEntry]) -> int | None:
    """The bytes caught up after the freeze, from the movelog: the catch-up restore's fetched
    bytes (its last "restore" entry) plus, for a cross-region move, what the final repository
    sync copied (its last "sync" entry of step final_sync). None when no restore was logged, or
    when its agent did not report the bytes (:func:`fetched_bytes_known`)."""
    restores = [e for e in entries if e.kind == "restore" and "bytes_fetched" in e.data]
    if not restores or not restores[-1].data.get("bytes_known", True):
        return None
    total = int(restores[-1].data["bytes_fetched"])
    syncs = [e for e in entries if e.kind == "sync" and e.data.get("step") == "final_sync"]
    if syncs:
        total += int(syncs[-1].data.get("copied_bytes", 0))
    return total


def fetched_bytes_known(summary: pb.OperationSummary) -> bool:
    """Whether a restore's ``bytes_fetched`` is a measure: the agent reports 0 when it does not
    know (e.g. rustic's restore over a pre-copy prints file counts only), so 0 bytes with files
    fetched is unknown, not nothing."""
    return summary.bytes_fetched > 0 or summary.files_fetched == 0


_PRECOPY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RepositoryOpener:
    """While a move's bulk backup makes the project's repository, the target lists it until it
    exists: its engine then reads the repository's key (rustic: the password's KDF, kept for the
    runs that follow) beside the backup rather than after it, when the move waits for the target
    to list the new backup.

    The agent answers a repository that does not exist yet with an empty listing (no backups), as
    it does one that exists and holds no backup yet, so an empty listing is no proof that the key
    was read: the target lists again, at intervals growing from :data:`OPEN_INTERVAL` by
    :data:`BACKOFF` (the repository appears in the backup's first seconds, its init; a long
    backup gets a few listings, not one every quarter second), for at most :data:`OPEN_FOR`
    seconds. Best effort: a listing with a backup in it, an error other than "no repository"
    (NOT_FOUND), :meth:`stop` or the time limit end it; what the move relies on is checked after
    the backup as before."""

    OPEN_INTERVAL = 0.25
    BACKOFF = 1.5
    OPEN_FOR = 30.0

    def __init__(self, client: AgentClient, project_id: str) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._open, args=(client, project_id), daemon=True,
                                        name=f"open repository of {project_id} on the target")
        self._thread.start()

    def _open(self, client: AgentClient, project_id: str) -> None:
        ends = time.monotonic() + self.OPEN_FOR
        interval = self.OPEN_INTERVAL
        while not self._stopped.wait(interval) and time.monotonic() < ends:
            interval *= self.BACKOFF
            try:
                if client.snapshots(project_id):
                    return
            except AgentError as exc:
                if exc.code.name != "NOT_FOUND":
                    return

    def stop(self) -> None:
        """No further listing (one under way ends by itself)."""
        self._stopped.set()


def precopy_key(move_id: str) -> str:
    """The name of the move's staged copy on the target (PreCopyRequest.key and
    EnsureProjectRequest.precopy_key): the move's id, or a digest of it where the id does not fit
    the agent's key charset and length."""
    if _PRECOPY_KEY.fullmatch(move_id):
        return move_id
    return "move-" + hashlib.sha256(move_id.encode()).hexdigest()[:32]


def override_words(move: Move) -> str:
    """The refusals ``move`` may override, as the CLI's flags name them ("" when none)."""
    return " ".join(flag for flag, on in (("--force", move.force), ("--to-draining", move.force_target)) if on)


def sentinel_for(move_id: str) -> str:
    return f"buckets move {move_id}\n"


# Snapshots that are not the project's own newest state (the agent's jobs.is_project_line): one
# path of it (a copy's), a source copy rescued before removal, the tree a restore replaced.
SUBPATH_SCOPE_TAG = "scope=subpath"
LEFT_BEHIND_PURPOSES = frozenset({"rescue", "pre-restore"})


def newest_backup(snapshots: list[pb.Snapshot], project_id: str) -> pb.Snapshot | None:
    """The newest whole layout-v2 backup of the project among ``snapshots``: what a move without
    its source restores (never a copy's snapshot of one path, nor a state the project left)."""
    usable = [s for s in snapshots if s.layout == "v2" and s.project_id == project_id
              and SUBPATH_SCOPE_TAG not in s.tags and s.purpose not in LEFT_BEHIND_PURPOSES]
    return max(usable, key=lambda s: (s.time.ToDatetime(), s.id), default=None)


def with_freshness(project: Project, status: pb.ProjectStatus) -> Project:
    """``project`` with its last backup and last edit as its agent reports them now (kept as they
    were where the agent reports none)."""
    last_backup = timestamp_or_none(status, "last_backup")
    return replace(project, last_backup=last_backup or project.last_backup,
                   last_backup_snapshot=status.last_backup_snapshot_id if last_backup else project.last_backup_snapshot,
                   last_edited=timestamp_or_none(status, "last_change") or project.last_edited, reported_at=utcnow())


def seen_now(store: Store, host: Host) -> Host:
    """Record that ``host``'s agent answered just now."""
    return store.update_host(host.id, last_seen=utcnow())


# ---------------------------------------------------------------- the runner


@dataclass
class MoveSettings:
    """``host_seen_within``: how recently the store must have seen a host to call it up;
    ``freshness_valid_for``: how recent a report of a project's freshness must be to count."""

    host_seen_within: timedelta = timedelta(minutes=10)
    # How long an agent's report of a project's freshness vouches for it: with the source host
    # down and no report this recent, the project's freshness is unknown (a move needs force).
    freshness_valid_for: timedelta = timedelta(minutes=10)
    operation_timeout: float | None = None  # seconds to wait for one agent operation (None: no limit)
    # PreCopies at most before the freeze (the bulk snapshot's, then one per round); 0: no
    # pre-copy at all, the target restores whole after the freeze (the flow before issue 18).
    precopy_rounds: int = DEFAULT_PRECOPY_ROUNDS
    # A round whose backup added at most this many bytes is the last (see precopy_done).
    precopy_stop_bytes: int = DEFAULT_PRECOPY_STOP_BYTES
    # Each region's bucket, as the hub reaches it: what a cross-region move copies between.
    buckets: Mapping[str, BucketConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precopy_rounds < 0:
            raise ValueError(f"MoveSettings.precopy_rounds must not be negative, got {self.precopy_rounds}")
        if self.precopy_stop_bytes < 0:
            raise ValueError(f"MoveSettings.precopy_stop_bytes must not be negative, got {self.precopy_stop_bytes}")


class MoveRunner(JobRunner):
    """Runs (starts, resumes, retries, cancels) one move. ``connect`` gives a client for a host;
    ``observer`` sees every movelog entry as it is written; ``before_step`` is called with a
    step's name after the step is recorded and before its work starts."""

    kind = "move"
    error = MoveError

    def __init__(
        self, store: Store, connect: Connect, move_id: str, *, settings: MoveSettings | None = None,
        observer: Observer | None = None, before_step: Callable[[str], None] | None = None,
        lease: JobLease | None = None,
    ) -> None:
        self.settings = settings or MoveSettings()
        super().__init__(move_id, observer=observer, before_step=before_step,
                         operation_timeout=self.settings.operation_timeout, lease=lease)
        self.store = store
        self.connect = connect
        self.move_id = move_id
        self.move = store.get_move(move_id)
        self.project_id = self.move.project_id
        self.sentinel = sentinel_for(move_id)

    # ------------------------------------------------------------ entry points

    def start(self) -> Move:
        return self._run("start")

    def resume(self) -> Move:
        return self._run("resume")

    def retry(self, *, force: bool | None = None, force_target: bool | None = None) -> Move:
        """Start the move again from preflight; ``force``/``force_target`` replace the move's
        when given (None: as it had them)."""
        return self._run("retry", force=force, force_target=force_target)

    def cancel(self) -> Move:
        with self.store.move_lock(self.project_id), self._leased():
            move = self._require_active("cancel")
            self._undo(move, self._plan())
            if move.cross_region:
                self._remove_target_region_copy()
            cancelled = self.store.update_move_status(self.move_id, MoveStatus.CANCELLED, error=move.error)
            self._log("cancelled", "move cancelled; the project stays on its source host")
            return cancelled

    def _run(self, how: str, *, force: bool | None = None, force_target: bool | None = None) -> Move:
        with self.store.move_lock(self.project_id), self._leased():
            move = self._require_active(how)
            crashed = move.status == MoveStatus.RUNNING
            if how == "start" and move.status != MoveStatus.PENDING:
                raise MoveError(f"move {self.move_id} has started already; resume or retry it")
            if how == "retry":
                start, continuing = "preflight", False
                if force is not None:
                    self.store.set_move_force(self.move_id, force)
                if force_target is not None:
                    self.store.set_move_force_target(self.move_id, force_target)
                self.store.set_move_snapshot(self.move_id, None)
            elif how == "resume" and move.status != MoveStatus.PENDING:
                start = resume_point(self._plan(), move.step, crashed)
                continuing = crashed and start == move.step
            else:
                start, continuing = "preflight", False
            self.move = self.store.update_move_status(self.move_id, MoveStatus.RUNNING, new_attempt=True)
            self._attempt(self.move.attempts, how, start, continuing,
                          {"force": self.move.force, "force_target": self.move.force_target},
                          overrides=override_words(self.move))
            return self.store.get_move(self.move_id)

    def _require_active(self, what: str) -> Move:
        move = self.store.get_move(self.move_id)
        if not move.active:
            raise MoveError(f"move {self.move_id} is {move.status}; there is nothing to {what}")
        self.move = move
        return move

    def _needs_owner(self) -> bool:
        return self.store.get_move(self.move_id).status in (MoveStatus.PENDING, MoveStatus.RUNNING)

    def _finished(self) -> bool:
        return not self.store.get_move(self.move_id).active

    # ------------------------------------------------------------ the job's log and steps

    def _append(self, kind: str, message: str, data: dict[str, Any] | None) -> MovelogEntry:
        return self.store.append_movelog(self.move_id, kind, message, data)

    def _read_log(self, after_seq: int = 0) -> list[MovelogEntry]:
        return self.store.movelog(self.move_id, after_seq=after_seq)

    def _record_step(self, step: str) -> None:
        self.move = self.store.update_move_step(self.move_id, step)

    def _steps(self) -> tuple[str, ...]:
        return steps_of(self._plan() or "online")

    def _current_step(self) -> str:
        return self.move.step

    def _plan(self) -> str | None:
        return self._plan_data().get("plan")

    def _plan_data(self) -> dict[str, Any]:
        plans = [entry for entry in self._read_log() if entry.kind == "plan"]
        return plans[-1].data if plans else {}

    def _hosts(self) -> tuple[Host, Host]:
        return self.store.get_host(self.move.source_host), self.store.get_host(self.move.target_host)

    def _client(self, host: Host) -> AgentClient:
        return self.connect(host)

    # ------------------------------------------------------------ the steps

    def _step_preflight(self) -> None:
        move = self.move
        project = self.store.get_project(self.project_id)
        source, target = self._hosts()
        if project.host_id != source.id:
            raise MoveRefused(f"project {project.id} is placed on {project.host_id}, not on the move's source {source.id}")
        if source.id == target.id:
            raise MoveRefused(f"project {project.id} is already on {target.id}")
        if move.cross_region:
            self._check_cross_region(project, source, target)
        elif not (project.region == source.region == target.region):
            raise MoveRefused(
                f"cross-region move ({source.region} → {target.region}, project region {project.region}) "
                "is not a same-region move; ask for a cross-region move explicitly"
            )
        copying = self.store.list_copies(project_id=project.id, blocking=True)
        if copying:
            raise MoveRefused(f"files are being copied from or into project {project.id} (copy {copying[0].id}); "
                              "let it finish or cancel it first")
        # Only force_target overrides the target's state: force accepts a loss of edits, which
        # says nothing about whether the target should receive the project.
        if target.status != "running" and not move.force_target:
            raise MoveRefused(f"target host {target.id} is {target.status}; use force_target (--to-draining) to "
                              "move there anyway")
        if not move.force_target and not self._seen_recently(target):
            raise MoveRefused(f"target host {target.id} was not seen in the last "
                              f"{self.settings.host_seen_within}; use force_target (--to-draining) to move there "
                              "anyway")
        target_client = self._client(target)
        try:
            target_client.capabilities()
        except AgentError as exc:
            raise MoveRefused(f"target host {target.id} does not answer: {exc}") from exc
        seen_now(self.store, target)
        self._clear_target(target, target_client)

        source_status = self._source_status(source)
        if source_status is not None and source_status.present:
            record_status(self.store, source, project.id, source_status)
            proven = self._check_reachability(source, target, target_client, source_status)
            if move.cross_region:
                self._log("plan", f"source {source.id} is online: back up, copy the repository from {source.region} "
                          f"to {target.region}, freeze, catch up, copy again, restore on {target.id}",
                          {"plan": "cross-region", "source_reachable": True, "from_region": source.region,
                           "to_region": target.region})
                return
            self._log("plan", f"source {source.id} is online: back up, freeze, catch up, restore on {target.id}",
                      {"plan": "online", "source_reachable": True, "target_reads_backups": proven})
            return
        if move.cross_region:
            raise MoveRefused(f"source host {source.id} is unreachable or lacks the project: a cross-region move "
                              "needs its source online (its last backups are copied after a catch-up backup)")
        self._plan_offline(project, source, target, target_client, reachable=source_status is not None)

    def _check_cross_region(self, project: Project, source: Host, target: Host) -> None:
        if not (project.region == source.region != target.region):
            raise MoveRefused(f"a cross-region move goes from the project's region {project.region} (source "
                              f"{source.region}) to another; the target is in {target.region}")
        for region in (source.region, target.region):
            if region not in self.settings.buckets:
                raise MoveRefused(f"the hub has no bucket configured for region {region}")

    # ------------------------------------------------------------ the target reads the repository

    def _check_reachability(self, source: Host, target: Host, target_client: AgentClient,
                            source_status: pb.ProjectStatus) -> bool:
        """Before anything is backed up or frozen: the target opens the project's repository.

        Same region: both agents must report one repository location (hosts of a region share
        a bucket; per-host local repositories cannot move), the target must list the project's
        snapshots, and must see the source's newest backup (proving the password, and that the
        location is the same repository). Cross-region: each agent's location must be the
        project's root in its own region's bucket (the target reads the copy the sync writes,
        which may not exist yet) and the target must list it. Returns whether the target was
        seen to read the source's newest backup (False: the project has none yet, so the check
        is repeated once the bulk backup exists). Raises MoveRefused naming why."""
        where_source = source_status.repository_location
        where_target = target_client.project_status(self.project_id).repository_location
        if not where_target:
            raise MoveRefused(f"target host {target.id} cannot open a repository for project {self.project_id} "
                              "(its agent reports none: is a repository password configured there?)")
        if self.move.cross_region:
            for host, where in ((source, where_source), (target, where_target)):
                bucket = self.settings.buckets[host.region]
                expected = f"/{bucket.bucket}/{bucket.root(self.project_id).strip('/')}"
                if not where.endswith(expected):
                    raise MoveRefused(f"host {host.id} keeps project {self.project_id} in {where or 'no repository'}, "
                                      f"not in its region {host.region}'s bucket ({expected.lstrip('/')}): a "
                                      "cross-region move copies the repository between the regions' buckets")
            self._target_snapshots(target, target_client, where_target)
            return False
        if where_source != where_target:
            raise MoveRefused(
                f"source host {source.id} keeps project {self.project_id} in repository {where_source or '(none)'} "
                f"but target host {target.id} would read {where_target}: hosts of a region must share its bucket; "
                "a project cannot move between hosts that each use their own local repository")
        return self._target_sees_newest(source, target, target_client, where_target)

    def _target_snapshots(self, target: Host, client: AgentClient, where: str) -> list[pb.Snapshot]:
        """The project's snapshots as the target lists them; MoveRefused when it cannot (a
        wrong password, refused credentials, an unreachable bucket: UNAVAILABLE)."""
        try:
            return client.snapshots(self.project_id)
        except AgentError as exc:
            code = "UNAVAILABLE" if exc.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else "FAILED_PRECONDITION"
            raise MoveRefused(f"target host {target.id} cannot read project {self.project_id}'s repository "
                              f"{where}: {exc}", code=code) from exc

    def _target_sees_newest(self, source: Host, target: Host, target_client: AgentClient, where: str,
                            *, newest_id: str = "") -> bool:
        """Whether the target lists the source's newest backup of the project (``newest_id`` when
        the caller knows it, else listed on the source): False when the source has none,
        MoveRefused when the target cannot list or does not see it."""
        if newest_id:
            newest: pb.Snapshot | None = pb.Snapshot(id=newest_id, short_id=newest_id[:8])
        else:
            try:
                newest = newest_backup(self._client(source).snapshots(self.project_id), self.project_id)
            except AgentError as exc:
                raise MoveRefused(f"source host {source.id} cannot read project {self.project_id}'s repository "
                                  f"{where}: {exc}") from exc
        seen = self._target_snapshots(target, target_client, where)
        if newest is None:
            return False
        if not any(same_snapshot(s.id, newest.id) for s in seen):
            raise MoveRefused(f"target host {target.id} does not see the source's newest backup {newest.short_id} "
                              f"of project {self.project_id} in {where}: the two hosts do not open the same "
                              "repository")
        return True

    def _seen_recently(self, host: Host) -> bool:
        return host.last_seen is not None and utcnow() - host.last_seen <= self.settings.host_seen_within

    def _source_status(self, source: Host) -> pb.ProjectStatus | None:
        try:
            status = self._client(source).project_status(self.project_id)
        except AgentError as exc:
            if exc.code.name not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            self._log("warning", f"source host {source.id} is unreachable: {exc}", {"host": source.id})
            return None
        seen_now(self.store, source)
        return status

    def _clear_target(self, target: Host, client: AgentClient) -> None:
        """Remove a copy of the project on the target that this move (an earlier attempt) or an
        unfinished source cleanup left; refuse to move over any other copy. An earlier attempt's
        operations still running there (the hub lost the target mid-step: a pre-copy, a verify)
        are stopped first: they would refuse the removal or this attempt's pre-copy (ABORTED)."""
        self._stop_own_operations(target)
        status = client.project_status(self.project_id)
        if not status.present:
            return
        ours = self._round("restore") > 0
        stale = any(m.project_id == self.project_id and m.source_host == target.id
                    for m in self.store.pending_cleanups())
        if not (ours or stale):
            raise MoveRefused(f"host {target.id} already holds a copy of project {self.project_id} that is not "
                              "its placement; delete it there first")
        if stale:
            # A copy a move away from the target left behind may hold edits newer than what that
            # move took: its cleanup proves it does not, or rescues them, before removing it.
            self._log("cleanup", f"cleaning up the copy left on {target.id} by a move away from it "
                      "(rescued first when it holds anything newer)", {"host": target.id})
            for move in self.store.pending_cleanups():
                if move.project_id == self.project_id and move.source_host == target.id:
                    move = clean_source(self.store, self.connect, move, buckets=self.settings.buckets,
                                        timeout=self.settings.operation_timeout)
                    if move.cleanup == Cleanup.PENDING:
                        raise MoveRefused(f"the copy of project {self.project_id} left on {target.id} by move "
                                          f"{move.id} could not be cleaned up (see its movelog); it is not "
                                          "removed before what it holds is in a snapshot", code="UNAVAILABLE")
            return
        self._log("cleanup", f"removing the copy left on {target.id} by an earlier attempt of this move",
                  {"host": target.id})
        self._remove_copy(target, "preflight", "clear-target")

    def _stop_own_operations(self, host: Host) -> None:
        """Cancel this move's unfinished operations on ``host`` (e.g. a pre-copy a stopped hub
        left running) and wait for them to end."""
        client = self._client(host)
        prefix = f"{self.kind}:{self.move_id}:"
        running = client.list_operations(project_id=self.project_id,
                                         states=[pb.PENDING, pb.RUNNING, pb.CANCELLING])
        for operation in running:
            if operation.request_id.startswith(prefix):
                handle = client.operation(operation.id)
                handle.cancel()
                handle.wait(self.settings.operation_timeout)
                self._log("cleanup", f"stopped operation {operation.id} on {host.id}",
                          {"host": host.id, "operation_id": operation.id})

    def _remove_copy(self, host: Host, step: str, purpose: str) -> None:
        """Delete the project's local copy on ``host`` (never its repository) and wait for it."""
        handle = self._client(host).delete_project(self.project_id, delete_repository=False,
                                                   request_id=job_request_id(self.kind, self.move_id, purpose,
                                                                             self.move.attempts))
        self._await(step, host, handle)

    def _plan_offline(self, project: Project, source: Host, target: Host, target_client: AgentClient,
                      *, reachable: bool) -> None:
        why = "is unreachable" if not reachable else "does not hold the project"
        if reachable and not self.move.force:
            raise MoveRefused(f"project {project.id} is not present on its source host {source.id}; "
                              "use force (--force) to move it from its last backup")
        # Without the source there is no location to compare (the store's may be stale): the
        # target's own listing is what the move goes by.
        where = target_client.project_status(project.id).repository_location
        newest = newest_backup(self._target_snapshots(target, target_client, where), project.id)
        if newest is None:
            raise MoveRefused(f"source host {source.id} {why} and project {project.id} has no backup to move from")
        snapshot_time = newest.time.ToDatetime(tzinfo=timezone.utc)
        window = offline_window(project, newest.id, snapshot_time, utcnow(), self.settings.freshness_valid_for)
        if window is not None and not self.move.force:
            raise MoveRefused(f"source host {source.id} {why}; {window.describe(self.settings.freshness_valid_for)}. "
                              f"Repeat with force (--force) to move from the last backup ({newest.short_id} of "
                              f"{_iso(snapshot_time)}).", loss_minutes=window.minutes)
        self.move = self.store.set_move_snapshot(self.move_id, newest.id)
        if window is None:
            loss, data = "no edit after it is recorded in a fresh report of the project", {"freshness": "known"}
        else:
            loss = f"changes after it are lost: {window.describe(self.settings.freshness_valid_for)}"
            data = window.as_data()
        self._log("warning", f"source host {source.id} {why}: moving from backup {newest.short_id} of "
                  f"{_iso(snapshot_time)}; {loss}",
                  {"loss_minutes": 0, **data, "snapshot_id": newest.id, "host": source.id})
        self._log("plan", f"restore backup {newest.short_id} on {target.id} without the source",
                  {"plan": "offline", "source_reachable": reachable, "snapshot_id": newest.id,
                   "loss_minutes": window.minutes if window else 0})

    def _step_backup(self) -> None:
        source, target = self._hosts()
        opener = None
        if self._plan() == "online" and not self._plan_data().get("target_reads_backups", True):
            # The repository is made by this backup: the target opens it as soon as it exists.
            opener = RepositoryOpener(self._client(target), self.project_id)
        try:
            operation = self._backup(source, "backup", force=False)
        finally:
            if opener is not None:
                opener.stop()
        done = ("nothing changed since the last backup" if operation.state == pb.UP_TO_DATE
                else f"snapshot {operation.summary.snapshot_id[:8]}")
        self._log("backup", f"bulk backup on {source.id}: {done}",
                  {"step": "backup", "snapshot_id": operation.summary.snapshot_id})
        if self._plan() == "online" and not self._plan_data().get("target_reads_backups", True):
            # Preflight had no backup to show the target: it must read this one before the freeze.
            self._require_target_reads(source, target)

    def _require_target_reads(self, source: Host, target: Host) -> None:
        """The target must list the source's newest backup (after the bulk backup or sync, before
        the freeze); MoveRefused naming why not."""
        client = self._client(target)
        where = client.project_status(self.project_id).repository_location
        # The source's newest backup is the bulk backup's snapshot, just made (or confirmed).
        if not self._target_sees_newest(source, target, client, where, newest_id=self._bulk_snapshot()):
            raise MoveRefused(f"source host {source.id} lists no backup of project {self.project_id} after "
                              "backing it up")
        self._log("verify", f"{target.id} reads the source's newest backup in {where}", {"host": target.id})

    def _step_precopy(self) -> None:
        """The target restores the bulk snapshot into its staged copy of the project (PreCopy
        under the move's key) while the project runs; then rounds of another backup and its
        PreCopy (incremental on the agent) until :func:`precopy_done`. An agent without PreCopy
        (UNIMPLEMENTED) leaves the move to the whole restore after the freeze (logged)."""
        source, target = self._hosts()
        settings = self.settings
        if settings.precopy_rounds == 0:
            self._log("precopy", "no pre-copy (precopy_rounds is 0): the target restores the whole catch-up "
                      "snapshot after the freeze", {"used": False, "rounds": 0})
            return
        snapshot_id = self._bulk_snapshot()
        if not snapshot_id:
            raise MoveError("no bulk snapshot recorded for the pre-copy; retry the move")
        done, difference, fetched = 0, None, 0
        while True:
            done += 1
            operation = self._precopy(target, snapshot_id, done, difference)
            if operation is None:
                if done == 1:
                    self._log("precopy", "no pre-copy: the target restores the whole catch-up snapshot after the "
                              "freeze", {"used": False, "rounds": 0})
                    return
                done -= 1
                break  # the earlier rounds' pre-copy stands
            fetched += operation.summary.bytes_fetched
            if precopy_done(done, settings.precopy_rounds, difference, settings.precopy_stop_bytes):
                break
            if self._source_unchanged_since(source, snapshot_id):
                # Another round would back up and bring over nothing: the catch-up after the
                # freeze (a full backup of the frozen project, whatever this said) takes the rest.
                self._log("precopy", f"round {done + 1}: {source.id} reports no change since snapshot "
                          f"{snapshot_id[:8]}", {"round": done + 1, "snapshot_id": snapshot_id, "difference": 0})
                break
            backup = self._backup(source, "precopy", force=False,
                                  request_id=self._part_request_id("precopy", f"backup-{done + 1}"))
            if backup.state == pb.UP_TO_DATE or not backup.summary.snapshot_id:
                self._log("precopy", f"round {done + 1}: nothing changed on {source.id} since snapshot "
                          f"{snapshot_id[:8]}", {"round": done + 1, "snapshot_id": snapshot_id, "difference": 0})
                break
            snapshot_id, difference = backup.summary.snapshot_id, round_difference(backup.summary)
            self._log("backup", f"pre-copy round {done + 1}: backup on {source.id}, snapshot {snapshot_id[:8]} "
                      f"added {difference} bytes", {"step": "precopy", "round": done + 1, "snapshot_id": snapshot_id,
                                                    "difference": difference})
            if self.move.cross_region:  # the target reads the copy in its region's bucket
                self._copy_repository("precopy", verify=False)
        self._log("precopy", f"pre-copy on {target.id} holds snapshot {snapshot_id[:8]} after {done} round(s) "
                  f"({fetched} bytes fetched while the project ran)",
                  {"used": True, "rounds": done, "snapshot_id": snapshot_id, "bytes_fetched": fetched,
                   "host": target.id})

    def _source_unchanged_since(self, source: Host, snapshot_id: str) -> bool:
        """Whether the source says the project is clean and its last backup is ``snapshot_id``
        (its status looks at the project now: generations on btrfs, a scan of the trees on the
        directory backend). Only decides whether another pre-copy round is worth its backup:
        the catch-up after the freeze backs up the frozen project whatever this says."""
        try:
            status = self._client(source).project_status(self.project_id)
        except AgentError:
            return False  # the round's backup will say what is wrong
        return (status.present and not status.dirty
                and bool(status.last_backup_snapshot_id) and same_snapshot(status.last_backup_snapshot_id, snapshot_id))

    def _precopy(self, target: Host, snapshot_id: str, round_: int, difference: int | None) -> pb.Operation | None:
        """One PreCopy of ``snapshot_id`` on the target, logged; None (with a warning) when the
        target's agent has no PreCopy."""
        request_id = self._part_request_id("precopy", f"precopy-{round_}")
        try:
            handle = self._client(target).precopy(self.project_id, snapshot_id, precopy_key(self.move_id),
                                                  request_id=request_id)
            operation = self._await("precopy", target, handle)
        except (AgentError, MoveError) as exc:
            code = exc.code.name if isinstance(exc, AgentError) else exc.code
            if code != "UNIMPLEMENTED":
                raise
            self._log("warning", f"target {target.id} cannot pre-copy ({exc}): it restores the whole catch-up "
                      "snapshot after the freeze", {"host": target.id, "round": round_})
            return None
        summary = operation.summary
        held = operation.state == pb.UP_TO_DATE
        self._log("precopy", f"pre-copy round {round_} on {target.id}: snapshot {snapshot_id[:8]} "
                  + ("was held already" if held else
                     f"{summary.restore_mode or 'restored'}, {summary.bytes_fetched} bytes in {summary.files_fetched} "
                     f"files fetched, {summary.files_deleted} deleted"),
                  {"host": target.id, "round": round_, "snapshot_id": summary.snapshot_id or snapshot_id,
                   "state": state_name(operation.state), "restore_mode": summary.restore_mode,
                   "bytes_fetched": summary.bytes_fetched, "files_fetched": summary.files_fetched,
                   "files_deleted": summary.files_deleted, "difference": difference,
                   "operation_id": operation.id})
        return operation

    def _bulk_snapshot(self) -> str:
        """The bulk backup's snapshot, as its step logged it (the newest one)."""
        bulk = [e for e in self._read_log() if e.kind == "backup" and e.data.get("step") == "backup"]
        return bulk[-1].data.get("snapshot_id", "") if bulk else ""

    def _part_request_id(self, step: str, part: str) -> str:
        """The request id of one of several agent operations of ``step`` (its rounds): the same
        while the step is continued by a resumed hub, another when the step starts again."""
        return job_request_id(self.kind, self.move_id, f"{step}-{part}", self._round(step))

    def _step_freeze(self) -> None:
        source, _ = self._hosts()
        if self.move.frozen_at is None:  # a resumed freeze step keeps the window's first start
            self.move = self.store.set_move_frozen_at(self.move_id, utcnow())
        answer = self._client(source).freeze(self.project_id, sentinel_path=SENTINEL_PATH,
                                             sentinel_content=self.sentinel, writers=pb.WRITERS_STOP)
        stopped = [{"pid": s.pid, "uid": s.uid, "command": s.command, "action": s.action, "paths": list(s.paths)}
                   for s in answer.stopped]
        named = ", ".join(f"{s['pid']} ({s['command'][:40]}, {s['action']})" for s in stopped)
        self._log("freeze",
                  f"sentinel written to {SENTINEL_PATH}; project read-only on {source.id}"
                  + (f"; stopped {len(stopped)} process(es): {named}" if stopped else "; no process was writing"),
                  {"host": source.id, "sentinel_path": SENTINEL_PATH, "stopped": stopped, "cgroup": answer.cgroup})

    def _step_final_backup(self) -> None:
        source, _ = self._hosts()
        # Forced: the sentinel alone is a change, and the snapshot must be one taken after the freeze.
        operation = self._backup(source, "final_backup", force=True)
        snapshot_id = operation.summary.snapshot_id
        if not snapshot_id:
            raise MoveError(f"final backup on {source.id} reported no snapshot")
        self.move = self.store.set_move_snapshot(self.move_id, snapshot_id)
        self._log("backup", f"catch-up backup of the frozen project: snapshot {snapshot_id[:8]}",
                  {"snapshot_id": snapshot_id})

    def _backup(self, source: Host, step: str, *, force: bool, request_id: str | None = None) -> pb.Operation:
        handle = self._client(source).backup(
            self.project_id, request_id=request_id or self._request_id(step), force=force,
            purpose="move", tags=[f"move={self.move_id}"],
        )
        return self._await(step, source, handle)

    def _step_sync(self) -> None:
        self._copy_repository("sync", verify=False)
        # Before the freeze: the target opens the copy (its password, its bucket's credentials).
        source, target = self._hosts()
        self._require_target_reads(source, target)

    def _step_final_sync(self) -> None:
        self._copy_repository("final_sync", verify=True)

    def _copy_repository(self, step: str, *, verify: bool) -> None:
        """Copy what the target region's bucket lacks of the repository (listings compared after),
        and with ``verify`` have the target host's agent check the copy as a repository."""
        source, target = self._hosts()
        buckets = self.settings.buckets
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self._log("progress", f"{done}/{total} objects", {
                    "host": "hub", "phase": step, "files_done": done, "files_total": total,
                    "percent": round(100.0 * done / total, 2)})

        try:
            report = copy_repository(buckets[source.region], buckets[target.region], self.project_id,
                                     progress=progress)
        except RepositoryCopyError as exc:
            raise MoveError(f"{step}: {exc}", "UNAVAILABLE") from exc
        self._log("sync", f"repository copied from {source.region} to {target.region}: {report.copied} of "
                  f"{report.objects} objects ({report.copied_bytes} of {report.bytes} bytes) were missing",
                  {"step": step, "from_region": source.region, "to_region": target.region, **report.as_data()})
        if verify:
            handle = self._client(target).verify(
                self.project_id, request_id=self._request_id(step),
                mode=pb.VerifyRequest.REPOSITORY)
            self._await(step, target, handle)
            self._log("verify", f"repository check of the copy in {target.region} passed on {target.id}",
                      {"host": target.id, "objects": report.objects})

    def _step_restore(self) -> None:
        _, target = self._hosts()
        snapshot_id = self.move.snapshot_id
        if not snapshot_id:
            raise MoveError("no snapshot recorded for the restore; retry the move")
        # With the move's pre-copy key: the target brings its pre-copy to this snapshot and places
        # it (restoring whole when it has no usable one, e.g. without a pre-copy step).
        handle = self._client(target).ensure_project(
            self.project_id, request_id=self._request_id("restore"),
            mode=pb.EnsureProjectRequest.REQUIRED, snapshot_id=snapshot_id, precopy_key=precopy_key(self.move_id),
        )
        operation = self._await("restore", target, handle)
        summary = operation.summary
        restored = summary.snapshot_id
        if not same_snapshot(restored, snapshot_id):
            raise MoveError(f"target {target.id} restored snapshot {restored[:8] or 'none'}, not {snapshot_id[:8]}")
        known = fetched_bytes_known(summary)
        self._log("restore", f"{target.id} holds snapshot {snapshot_id[:8]} "
                  f"({summary.restore_mode or 'restore mode not reported'}): "
                  f"{summary.bytes_fetched if known else 'an unreported number of'} bytes in "
                  f"{summary.files_fetched} files fetched, {summary.files_deleted} deleted",
                  {"host": target.id, "snapshot_id": restored, "restore_mode": summary.restore_mode,
                   "bytes_fetched": summary.bytes_fetched, "bytes_known": known,
                   "files_fetched": summary.files_fetched, "files_deleted": summary.files_deleted,
                   "operation_id": operation.id})
        if len(restored) > len(snapshot_id):
            self.move = self.store.set_move_snapshot(self.move_id, restored)  # the full id, from now on

    def _step_verify(self) -> None:
        """The target's receipt names the move's snapshot, and its live home and persist location
        equal that snapshot (Verify SNAPSHOT_TREE), with the move's sentinel where the source
        wrote one. Every plan, offline included: a receipt alone says nothing of the data."""
        _, target = self._hosts()
        client = self._client(target)
        snapshot_id = self.move.snapshot_id or ""
        # Without the agent's scan of the trees (size, newest change): the Verify below walks
        # and compares them whole; the receipt and presence come from its journal.
        status = client.project_status(self.project_id, scan=False)
        receipt = status.last_restore.snapshot_id if status.HasField("last_restore") else ""
        if not status.present or not same_snapshot(receipt, snapshot_id):
            raise MoveError(f"verification failed on {target.id}: it holds "
                            f"{'snapshot ' + receipt[:8] if receipt else 'no restored snapshot'}, "
                            f"not {snapshot_id[:8]}", "DATA_LOSS")
        with_sentinel = self._plan() != "offline"
        sentinel = {"sentinel_path": SENTINEL_PATH, "sentinel_content": self.sentinel} if with_sentinel else {}
        handle = client.verify(self.project_id, request_id=self._request_id("verify"),
                               mode=pb.VerifyRequest.SNAPSHOT_TREE, snapshot_id=snapshot_id, **sentinel)
        try:
            operation = self._await("verify", target, handle)
        except MoveError as exc:
            raise MoveError(f"verification failed: {exc}", exc.code) from exc
        entries = operation.summary.files_processed
        self._log("verify", f"the live trees on {target.id} equal snapshot {snapshot_id[:8]} ({entries} entries"
                  + (", sentinel found)" if with_sentinel else ")"),
                  {"host": target.id, "snapshot_id": snapshot_id, "entries": entries,
                   "bytes": operation.summary.bytes_processed, "sentinel": with_sentinel})

    def _verify_counts(self, target: Host, *, without_sentinel: bool) -> None:
        """Right before placement changes: the target's live trees still hold the snapshot's
        entries and bytes (Verify COUNTS; cheap, the target remembers the listing), less the
        move's sentinel and with it gone when ``without_sentinel``."""
        snapshot_id = self.move.snapshot_id or ""
        sentinel = ({"sentinel_path": SENTINEL_PATH, "sentinel_content": self.sentinel} if without_sentinel
                    else {})
        handle = self._client(target).verify(
            self.project_id, mode=pb.VerifyRequest.COUNTS, snapshot_id=snapshot_id,
            request_id=job_request_id(self.kind, self.move_id, "finalize-counts", self._round("finalize")),
            **sentinel)
        try:
            operation = self._await("finalize", target, handle)
        except MoveError as exc:
            raise MoveError(f"verification before placement failed: {exc}", exc.code) from exc
        self._log("verify", f"{target.id} still holds snapshot {snapshot_id[:8]}'s "
                  f"{operation.summary.files_processed} entries and {operation.summary.bytes_processed} bytes",
                  {"host": target.id, "snapshot_id": snapshot_id, "entries": operation.summary.files_processed,
                   "bytes": operation.summary.bytes_processed})

    def _step_finalize(self) -> None:
        source, target = self._hosts()
        with_sentinel = self._plan() != "offline"
        if with_sentinel:  # the verify needed it; the user's tree does not
            self._remove_target_sentinel(target)
        self._verify_counts(target, without_sentinel=with_sentinel)
        caught_up = caught_up_bytes(self._read_log()) if self._plan() != "offline" else None
        self.move = self.store.complete_move(
            self.move_id, message=f"complete: project {self.project_id} is on {target.id}",
            data={"snapshot_id": self.move.snapshot_id, "target": target.id}, caught_up_bytes=caught_up,
        )
        self._show_unseen()  # the "complete" entry, written by the store with the completion
        try:  # the placement's freshness from now on is the target's
            record_status(self.store, target, self.project_id, self._client(target).project_status(self.project_id))
        except AgentError:
            pass  # the next report of the target records it

    def _remove_target_sentinel(self, target: Host) -> None:
        """Remove the move's sentinel from the target's persist location before the project is
        handed over (Thaw with the sentinel: nothing else changes there). "absent" is a removal
        done before a hub crash; any other file there now (the verify proved the sentinel) is a
        change after the verify: MoveError DATA_LOSS, the file kept."""
        outcome = self._client(target).thaw_removing_sentinel(self.project_id, SENTINEL_PATH, self.sentinel).sentinel
        if outcome not in (SENTINEL_REMOVED, SENTINEL_ABSENT):
            raise MoveError(f"the sentinel {SENTINEL_PATH} on {target.id} {outcome or 'was not looked at'} "
                            "after the verify; it is kept", "DATA_LOSS")
        self._log("sentinel", f"sentinel {SENTINEL_PATH} " + ("removed from" if outcome == SENTINEL_REMOVED
                                                              else "already gone from") + f" {target.id}",
                  {"host": target.id, "sentinel_path": SENTINEL_PATH, "outcome": outcome})

    def _thaw_source(self, source: Host) -> None:
        """Make the source writable again and take the move's sentinel out of its persist location
        (only a file holding exactly this move's sentinel). Raises AgentError."""
        answer = self._client(source).thaw_removing_sentinel(self.project_id, SENTINEL_PATH, self.sentinel)
        self.move = self.store.set_move_frozen_at(self.move_id, None)  # the frozen window ended
        self._log("thaw", f"project writable again on {source.id}", {"host": source.id})
        if answer.sentinel in (SENTINEL_REMOVED, SENTINEL_ABSENT):
            self._log("sentinel", f"sentinel {SENTINEL_PATH} " + ("removed from" if answer.sentinel == SENTINEL_REMOVED
                                                                  else "not on") + f" {source.id}",
                      {"host": source.id, "sentinel_path": SENTINEL_PATH, "outcome": answer.sentinel})
        else:
            self._log("warning", f"{SENTINEL_PATH} on {source.id} was kept: it {answer.sentinel or 'was not looked at'}",
                      {"host": source.id, "sentinel_path": SENTINEL_PATH, "outcome": answer.sentinel})

    # ------------------------------------------------------------ failure

    def _fail(self, exc: BaseException) -> None:
        move = self.store.get_move(self.move_id)
        if not move.active:
            return  # it completed; a later problem (e.g. the source cleanup) is not the move's failure
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, MoveError):
            message = f"{move.step}: {message}"
        try:
            self._undo(move, self._plan())
        finally:
            self.move = self.store.update_move_status(self.move_id, MoveStatus.FAILED, error=message)
            self._log("failed", message, {"step": move.step, "refused": isinstance(exc, MoveRefused),
                                          "loss_minutes": getattr(exc, "loss_minutes", None)})

    def _remove_target_region_copy(self) -> None:
        """A cancelled cross-region move leaves no repository copy in the target region's bucket."""
        _, target = self._hosts()
        remove_region_repository(self.settings.buckets, target.region, self.project_id, self._log,
                                 what="repository copy")

    def _undo(self, move: Move, plan: str | None) -> None:
        """Put the source back in service and remove the target's partial copy (best effort:
        what cannot be undone now is logged and undone by the next attempt or cancel)."""
        if plan is None or move.step not in steps_of(plan):
            return
        steps = steps_of(plan)
        reached = steps.index(move.step)
        source, target = self._hosts()
        placed_on = self.store.get_project(self.project_id).host_id
        if plan != "offline" and reached >= steps.index("freeze") and placed_on == source.id:
            try:
                self._thaw_source(source)
            except AgentError as exc:
                self._log("warning", f"could not thaw the project on {source.id} ({exc}); it stays read-only "
                          "until the move is resumed, retried or cancelled", {"host": source.id})
        if reached >= steps.index(FIRST_UNDONE_STEP[plan]) and placed_on != target.id:
            # The target's pre-copy and partial copy go (DeleteProject takes the project's
            # pre-copies with it); the move's operations still running there are stopped first.
            try:
                self._stop_own_operations(target)
                self._remove_copy(target, "undo", "undo-restore")
                self._log("cleanup", f"pre-copy and partial copy removed from {target.id}", {"host": target.id})
            except (AgentError, MoveError) as exc:
                self._log("warning", f"could not remove the copy on {target.id} ({exc}); the next attempt "
                          "removes it", {"host": target.id})


def clean_source(store: Store, connect: Connect, move: Move, *, observer: Observer | None = None,
                 buckets: Mapping[str, BucketConfig] | None = None, timeout: float | None = None) -> Move:
    """Remove a completed move's source copy (home, persist, local snapshots; never the
    repository), and after a cross-region move the repository in the source region's bucket
    (``buckets``). Never blind: the copy is frozen and proved to hold nothing newer than the moved
    snapshot, or rescued into a snapshot recorded on the move, before it is removed
    (:func:`hub_client.rescue.secure_source_copy`). What fails keeps the cleanup pending for a
    later run, with the copy in place."""
    if move.status != MoveStatus.SUCCEEDED or move.cleanup != Cleanup.PENDING:
        return move
    if store.get_project(move.project_id).host_id == move.source_host:
        return store.set_move_cleanup(move.id, Cleanup.DONE)  # moved back since: that copy is the live one

    def log(kind: str, message: str, data: dict[str, Any]) -> None:
        entry = store.append_movelog(move.id, kind, message, data)
        if observer is not None:
            observer(entry)

    try:
        source = store.get_host(move.source_host)
        client = connect(source)
        secure_source_copy(store, client, move, source, log, timeout=timeout)
        # A fresh request id per run: a failed deletion must be tried again, not returned again.
        handle = client.delete_project(move.project_id, delete_repository=False, request_id=new_request_id())
        operation = handle.wait(timeout)
    except (AgentError, NotFound, RescueFailed) as exc:
        log("warning", f"source cleanup on {move.source_host} postponed, the copy is kept: {exc}",
            {"host": move.source_host})
        return move
    if operation.state not in OK_STATES:
        log("warning", f"source cleanup on {move.source_host} failed: {operation.error.code} "
            f"{operation.error.message}; it is retried later", {"host": move.source_host})
        return move
    log("cleanup", f"source copy removed from {move.source_host}", {"host": move.source_host})
    if move.cross_region:
        region = store.get_host(move.source_host).region
        if store.list_rescues(move_id=move.id) and not carry_rescues(
                buckets or {}, region, store.get_host(move.target_host).region, move.project_id, log):
            return move  # the rescue lives only in the source region's repository: it stays
        if not remove_region_repository(buckets or {}, region, move.project_id, log, what="repository"):
            return move  # the cleanup stays pending: a later run tries again
    return store.set_move_cleanup(move.id, Cleanup.DONE)


def carry_rescues(buckets: Mapping[str, BucketConfig], region: str, target_region: str, project_id: str,
                  log: Callable[[str, str, dict[str, Any]], Any]) -> bool:
    """Copy into ``target_region``'s bucket what the project's repository there lacks of the one
    in ``region`` (a cross-region move's rescue snapshots, written by the source host after the
    move), so that removing the source region's repository destroys no rescue; False (logged)
    when it could not be done."""
    try:
        for name in (region, target_region):
            if name not in buckets:
                raise RepositoryCopyError(f"the hub has no bucket configured for region {name}")
        report = copy_repository(buckets[region], buckets[target_region], project_id)
    except RepositoryCopyError as exc:
        log("warning", f"could not copy the rescue snapshots from {region} to {target_region}, so the repository "
            f"in {region} is kept: {exc}", {"region": region})
        return False
    log("cleanup", f"rescue snapshots copied from {region} to {target_region}: {report.copied} of {report.objects} "
        "objects were missing", {"from_region": region, "to_region": target_region, **report.as_data()})
    return True


def remove_region_repository(buckets: Mapping[str, BucketConfig], region: str, project_id: str,
                             log: Callable[[str, str, dict[str, Any]], Any], *, what: str) -> bool:
    """Delete the project's repository from ``region``'s bucket, logging the outcome; False when
    it could not be (no bucket configured for the region, or the bucket refused)."""
    bucket = buckets.get(region)
    try:
        if bucket is None:
            raise RepositoryCopyError(f"the hub has no bucket configured for region {region}")
        removed = delete_repository(bucket, project_id)
    except RepositoryCopyError as exc:
        log("warning", f"could not remove the {what} in {region}: {exc}", {"region": region})
        return False
    if removed:
        log("cleanup", f"{what} removed from {region} ({removed} objects)",
            {"region": region, "objects": removed})
    return True


def _iso(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if value else "never"
