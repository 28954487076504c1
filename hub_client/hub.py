"""The hub's side of multi-host work: its store, one client per agent, and the move flows.

``Hub`` is what the hub server (or the operator CLI) holds: it registers hosts and projects,
probes agents, and starts, resumes, retries and cancels moves through :mod:`hub_client.move`.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from agent.errors import InvalidArgument
from hub_client import inputs
from hub_client.client import OK_STATES, AgentClient, AgentError, ClientConfig, OperationHandle, RetryPolicy
from hub_client.copying import CopyRefused, CopyRunner, copy_path
from hub_client.freshness import record_host_report, record_status
from hub_client.lease import JobLease, LeaseSettings, new_owner
from hub_client.move import (
    MoveError, MoveRefused, MoveRunner, MoveSettings, Observer, clean_source, possible_loss_minutes, seen_now,
    with_freshness,
)
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store.models import utcnow
from hub_client.store import (
    Conflict, Copy, CopyInProgress, Host, HostBackupStatus, JobKind, Lease, Move, MoveInProgress, MoveStatus, NotFound,
    OfflineLoss, Project, Store,
)

ClientConfigFor = Callable[[str], ClientConfig]


@dataclass(frozen=True)
class DrainReport:
    """A finished drain: the agent's operation and one outcome per project on the host."""

    host_id: str
    operation: pb.Operation
    outcomes: list[pb.ProjectOutcome]

    @property
    def failed(self) -> list[pb.ProjectOutcome]:
        return [o for o in self.outcomes if o.state not in OK_STATES]

    @property
    def backed_up(self) -> list[pb.ProjectOutcome]:
        return [o for o in self.outcomes if o.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS)]

    @property
    def up_to_date(self) -> list[pb.ProjectOutcome]:
        return [o for o in self.outcomes if o.state == pb.UP_TO_DATE]


class Hub:
    """Takes an open :class:`Store`; ``client_config`` turns an agent address into the client
    settings (TLS, token, deadlines) used for it."""

    def __init__(
        self, store: Store, *, client_config: ClientConfigFor = lambda address: ClientConfig(target=address),
        settings: MoveSettings | None = None, leases: LeaseSettings | None = None, owner: str | None = None,
    ) -> None:
        self.store = store
        self.client_config = client_config
        self.settings = settings or MoveSettings()
        # Every move or copy this hub runs is owned through a lease (``owner``: this process), so
        # a worker (hub_client.worker) takes it over when this process dies mid-way.
        self.leases = leases or LeaseSettings()
        self.owner = owner or new_owner()
        self._clients: dict[str, AgentClient] = {}
        # A worker runs several jobs on one hub, the hub service calls in from many threads (its
        # RPCs and its runner): one client per address.
        self._clients_lock = threading.Lock()

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def client(self, host: Host) -> AgentClient:
        with self._clients_lock:
            client = self._clients.get(host.address)
            if client is None:
                client = self._clients[host.address] = AgentClient(self.client_config(host.address))
            return client

    def job_lease(self, kind: str, job_id: str, claimed: Lease | None = None) -> JobLease:
        """This hub's lease of a move or copy (``claimed``: already claimed by this owner)."""
        return JobLease(self.store, kind, job_id, self.owner, self.leases, claimed=claimed)

    # ------------------------------------------------------------ hosts and projects

    def add_host(self, host_id: str, address: str, region: str, status: str = "running") -> Host:
        """Register (or update) a host; InvalidArgument for a malformed id, address or region."""
        inputs.name(host_id, "host_id")
        inputs.address(address)
        inputs.name(region, "region")
        inputs.name(status, "status")
        return self.store.upsert_host(Host(host_id, address, region, status, None))

    def remove_host(self, host_id: str) -> bool:
        """Forget a host; HostInUse while a project, move, copy or offline-loss record names it."""
        return self.store.delete_host(inputs.name(host_id, "host_id"))

    def probe_host(self, host_id: str, *, deadline: float | None = None) -> tuple[Host, pb.HostStatus | None]:
        """Ask the host's agent for its status and every project's freshness; a host that answers
        is recorded as seen now, and each project placed on it with its freshness as reported
        now (:func:`hub_client.freshness.record_host_report`). ``deadline``: seconds per call and
        no retry (a quick look at many hosts), on a channel of its own."""
        host = self.store.get_host(host_id)
        if deadline is None:
            return self._probe(host, self.client(host))
        config = replace(self.client_config(host.address), deadline=deadline, retry=RetryPolicy(attempts=1))
        with AgentClient(config) as client:
            return self._probe(host, client)

    def _probe(self, host: Host, client: AgentClient) -> tuple[Host, pb.HostStatus | None]:
        try:
            status = client.host_status()
        except AgentError:
            return host, None
        host = seen_now(self.store, host)
        try:
            record_host_report(self.store, host, client.list_projects())
        except AgentError:
            pass  # no report recorded: the projects' freshness ages until the next one
        return host, status

    def refresh_hosts(self) -> dict[str, bool]:
        """Probe every host (:meth:`refresh_host_status`): each one's backup counts and its
        projects' freshness recorded now. Returns whether each host answered."""
        return {host.id: self.refresh_host_status(host.id) is not None for host in self.store.list_hosts()}

    def add_project(self, project_id: str, host_id: str | None, region: str, repository: str = "") -> Project:
        """Register a project where it lives (or say where it lives now). InvalidArgument for a
        malformed id or a host of another region; NotFound for an unknown host; MoveInProgress /
        CopyInProgress when the placement would change under a job that relies on it."""
        inputs.project_id(project_id)
        inputs.name(region, "region")
        if host_id:
            host = self.store.get_host(inputs.name(host_id, "host_id"))
            if host.region != region:
                raise InvalidArgument(f"host {host_id} is in region {host.region}, not {region}", host_id=host_id)
        try:
            existing = self.store.get_project(project_id)
        except NotFound:
            existing = None
        if existing is not None and (existing.host_id, existing.region) != (host_id or None, region):
            # Re-registering says where the project lives now; never under a job that relies on it.
            self._require_no_job(project_id, moving="the placement changes only through the move",
                                 copying="the placement does not change while files are copied from or into "
                                         "the project")
        return self.store.upsert_project(Project(project_id, host_id or None, region, repository))

    def _require_no_job(self, project_id: str, *, moving: str, copying: str) -> None:
        """MoveInProgress (``moving``) while a move of the project is active, CopyInProgress
        (``copying``) while a copy from or into it is pending or running."""
        active = self.store.active_move(project_id)
        if active is not None:
            raise MoveInProgress(project_id, active.id, moving)
        copies = self.store.list_copies(project_id=project_id, blocking=True)
        if copies:
            raise CopyInProgress(project_id, copies[0].id, copying)

    def remove_project(self, project_id: str) -> bool:
        """Forget a project's record (its files and backups stay where they are: `delete` removes
        those); MoveInProgress / CopyInProgress while a job works on it."""
        return self.store.delete_project(inputs.project_id(project_id))

    def refresh_project(self, project_id: str) -> Project:
        """Copy the project's last backup and last change from the agent of its host into the store."""
        project = self.store.get_project(project_id)
        if project.host_id is None:
            return project
        host = self.store.get_host(project.host_id)
        status = self.client(host).project_status(project_id)
        if not project.repository and status.repository_location:
            self.store.upsert_project(replace(project, repository=status.repository_location))
        return record_status(self.store, host, project_id, status) or self.store.get_project(project_id)

    def refresh_host_status(self, host_id: str) -> HostBackupStatus | None:
        """Record the host's project counts from its agent (keeping ``failing`` from the last
        drain); None when the agent does not answer."""
        return self.refresh_host(host_id)[0]

    def refresh_host(self, host_id: str, *, deadline: float | None = None,
                     ) -> tuple[HostBackupStatus | None, pb.HostStatus | None]:
        """:meth:`refresh_host_status`, and the agent's whole answer (its RPO figures are shown
        as answered, not stored); (None, None) when the agent does not answer. ``deadline``: as
        :meth:`probe_host`."""
        host, status = self.probe_host(host_id, deadline=deadline)
        if status is None:
            return None, None
        previous = self.store.host_backup_status(host.id)
        return self.store.set_host_backup_status(HostBackupStatus(
            host.id, status.projects, status.dirty, status.up_to_date, status.never_backed_up,
            previous.failing if previous is not None else 0, utcnow())), status

    def set_host_status(self, host_id: str, status: str) -> Host:
        return self.store.update_host(host_id, status=status)

    def force_off(self, host_id: str) -> list[OfflineLoss]:
        """Take a host out of service without draining it: mark it ``off`` and record every
        project on it whose newest changes are not backed up, with the window of possible loss
        (from its agent when it answers, else from the store)."""
        host = self.set_host_status(host_id, "off")
        losses = []
        now = utcnow()
        for project in self.store.list_projects(host_id=host.id):
            try:
                status = self.client(host).project_status(project.id)
                project = record_status(self.store, host, project.id, status) or with_freshness(project, status)
                dirty = status.dirty or project.last_backup is None
            except AgentError:
                dirty = project.last_backup is None or (
                    project.last_edited is not None and project.last_edited > project.last_backup)
            if dirty:
                losses.append(OfflineLoss(host.id, project.id, project.last_backup, project.last_edited,
                                          possible_loss_minutes(project.last_backup, project.last_edited), now))
        self.store.record_offline_losses(losses)
        return losses

    def drain(self, host_id: str, *, concurrency: int = 2,
              observer: Callable[[pb.ProgressEvent], None] | None = None) -> DrainReport:
        """Prepare a host to be turned off: mark it ``draining`` (no move targets it any more),
        have its agent back up every dirty project (``concurrency`` at once, going on past
        failures), and record the outcome: the host's backup status (``failing`` = projects whose
        backup failed) and each known project's freshness."""
        host = self.set_host_status(host_id, "draining")
        client = self.client(host)
        handle = client.drain(concurrency=concurrency)
        for event in handle.progress():
            if observer is not None:
                observer(event)
        operation = handle.refresh()
        outcomes = list(operation.summary.projects)
        failed = [o for o in outcomes if o.state not in OK_STATES]
        try:
            status = client.host_status()
            counts = (status.projects, status.dirty, status.up_to_date, status.never_backed_up)
        except AgentError:
            counts = (len(outcomes), len(failed), len(outcomes) - len(failed), 0)
        self.store.set_host_backup_status(HostBackupStatus(host.id, *counts, len(failed), utcnow()))
        known = {p.id for p in self.store.list_projects(host_id=host.id)}
        for outcome in outcomes:
            if outcome.project_id in known:
                try:
                    self.refresh_project(outcome.project_id)
                except AgentError:
                    pass  # the freshness stays as it was; the drain's outcome is recorded anyway
        return DrainReport(host.id, operation, outcomes)

    # ------------------------------------------------------------ deletion

    def delete_project(self, project_id: str, *, observer: Callable[[str], None] | None = None) -> bool:
        """Delete the project everywhere: its home, persist and local snapshots on its host, every
        object of its repository, and its records in the store. Refused (MoveInProgress) while a
        move of it is active; False when it was already gone. The store records go last, so a
        failure on the host leaves them for a second attempt."""
        try:
            project = self.store.get_project(project_id)
        except NotFound:
            return False
        self._require_no_job(project_id, moving="a project is not deleted while it moves",
                             copying="a project is not deleted while files are copied from or into it")
        host = self._deleting_host(project)
        self._finished(f"deleting project {project_id} on {host.id}",
                       self.client(host).delete_project(project_id, delete_repository=True), observer)
        return self.store.delete_project(project_id)

    def _finished(self, what: str, handle: OperationHandle,
                  observer: Callable[[str], None] | None = None) -> pb.Operation:
        """Wait for an agent operation (``what`` it does, for the observer and the error); raises
        MoveError with the agent's status code unless it succeeded."""
        if observer is not None:
            observer(f"{what} (operation {handle.id})")
        operation = handle.wait(self.settings.operation_timeout)
        if operation.state not in OK_STATES:
            raise MoveError(f"{what} failed: {operation.error.code} {operation.error.message}", operation.error.code)
        return operation

    def _deleting_host(self, project: Project) -> Host:
        """The project's host; for an unplaced project, any running host of its region (its agent
        can still remove the repository)."""
        if project.host_id is not None:
            return self.store.get_host(project.host_id)
        for host in self.store.list_hosts(region=project.region):
            if host.status == "running":
                return host
        raise MoveError(f"project {project.id} has no host and region {project.region} no running host "
                        "to delete its repository from")

    # ------------------------------------------------------------ copies

    def copy(self, source_project: str, source_path: str, target_project: str, target_path: str, *,
             on_conflict: str = Conflict.FAIL, observer: Observer | None = None,
             before_step: Callable[[str], None] | None = None) -> Copy:
        """Copy ``source_path`` of one project to ``target_path`` of another (or the same) and
        return the finished copy; raises CopyRefused (INVALID_ARGUMENT …) before any work for a
        bad path, rule or placement, CopyError when a step fails (the copy stays recorded as
        failed, its temporary snapshot forgotten)."""
        source_path = copy_path(source_path, field="source_path")
        target_path = copy_path(target_path, field="target_path")
        if on_conflict not in Conflict.ALL:
            raise CopyRefused(f"on_conflict must be one of {', '.join(sorted(Conflict.ALL))}, not {on_conflict!r}",
                              "INVALID_ARGUMENT")
        hosts = []
        for project_id in (source_project, target_project):
            project = self.store.get_project(project_id)
            if project.host_id is None:
                raise CopyRefused(f"project {project_id} is not placed on any host", "FAILED_PRECONDITION")
            hosts.append(project.host_id)
        copy = self.store.create_copy(source_project, source_path, target_project, target_path, on_conflict,
                                      source_host=hosts[0], target_host=hosts[1])
        return self.copy_runner(copy.id, observer=observer, before_step=before_step).start()

    def copy_runner(self, copy_id: str, *, observer: Observer | None = None,
                    before_step: Callable[[str], None] | None = None, lease: JobLease | None = None) -> CopyRunner:
        return CopyRunner(self.store, self.client, copy_id, observer=observer, before_step=before_step,
                          operation_timeout=self.settings.operation_timeout,
                          lease=lease or self.job_lease(JobKind.COPY, copy_id))

    def resume_copy(self, copy_id: str, **hooks) -> Copy:
        return self.copy_runner(copy_id, **hooks).resume()

    def cancel_copy(self, copy_id: str, **hooks) -> Copy:
        return self.copy_runner(copy_id, **hooks).cancel()

    # ------------------------------------------------------------ clones

    def clone(self, source_project: str, *, clone_id: str | None = None, host_id: str | None = None,
              observer: Callable[[str], None] | None = None) -> Project:
        """Make a new project holding a copy of ``source_project`` (home and persist, as of a
        backup taken now) on ``host_id`` (default: the source's host), and back it up once into
        its own repository. The clone keeps the source's backup region, and so its bucket: a host
        of another region is refused. Repeating a clone id joins the agent operations it started;
        on failure the clone's partial copy is deleted on its host and nothing is recorded."""
        source = self.store.get_project(source_project)
        if source.host_id is None:
            raise MoveRefused(f"project {source_project} is not placed on any host")
        host = self.store.get_host(host_id or source.host_id)
        if host.region != source.region:
            raise MoveRefused(f"a clone keeps its source's region {source.region} (and bucket); host {host.id} "
                              f"is in {host.region}")
        clone_id = clone_id or str(uuid.uuid4())
        source_client, clone_client = self.client(self.store.get_host(source.host_id)), self.client(host)
        backup = self._finished(f"clone {clone_id}: backup of {source_project}", source_client.backup(
            source_project, request_id=f"clone:{clone_id}:backup", purpose="backup", tags=[f"clone={clone_id}"]),
            observer)
        snapshot_id = backup.summary.snapshot_id
        if not snapshot_id:
            raise MoveError(f"clone {clone_id}: the backup of {source_project} reported no snapshot")
        try:
            self._finished(f"clone {clone_id}: restore of {snapshot_id[:8]} on {host.id}", clone_client.restore(
                clone_id, snapshot_id, request_id=f"clone:{clone_id}:restore", source_project_id=source_project),
                observer)
            self._finished(f"clone {clone_id}: its first backup", clone_client.backup(
                clone_id, request_id=f"clone:{clone_id}:first-backup", purpose="backup"), observer)
            status = clone_client.project_status(clone_id)
        except (AgentError, MoveError):
            try:
                clone_client.delete_project(clone_id, delete_repository=True).wait(self.settings.operation_timeout)
            except AgentError:
                pass  # the error below is the one to report; the partial clone is not in the store
            raise
        return self.store.upsert_project(with_freshness(
            Project(clone_id, host.id, source.region, status.repository_location), status))

    # ------------------------------------------------------------ moves

    def runner(self, move_id: str, *, observer: Observer | None = None,
               before_step: Callable[[str], None] | None = None, lease: JobLease | None = None) -> MoveRunner:
        return MoveRunner(self.store, self.client, move_id, settings=self.settings, observer=observer,
                          before_step=before_step, lease=lease or self.job_lease(JobKind.MOVE, move_id))

    def move(self, project_id: str, target_host: str, *, force: bool = False, observer: Observer | None = None,
             before_step: Callable[[str], None] | None = None, clean_now: bool = True,
             cross_region: bool = False, force_target: bool = False) -> Move:
        """Move the project to ``target_host`` and return the finished move; raises MoveError
        (the move stays recorded as failed) or MoveInProgress (another move of it is active).

        ``force`` accepts the loss of edits newer than the project's last backup (its source host
        down); ``force_target`` allows a target host that is draining or was not seen recently.
        Neither implies the other.

        A move to the same target that preflight refused is taken up again (with ``force`` and
        ``force_target`` as given) instead of starting another record. The move is complete when the project is
        placed on the target; the source copy's removal is scheduled then, and done right away
        unless ``clean_now`` is False (then :meth:`run_cleanups` does it later).

        ``cross_region`` asks for the slower, explicit path to a host of another region: the
        repository is copied into that region's bucket (``settings.buckets``) and checked there,
        and the project's region changes with its placement; the source region's repository is
        removed with the source copy, after completion."""
        project = self.store.get_project(project_id)
        self.store.get_host(target_host)  # NotFound naming the target itself
        if project.host_id is None:
            raise MoveRefused(f"project {project_id} has no placement to move from")
        if project.host_id == target_host:
            raise MoveRefused(f"project {project_id} is already on {target_host}")
        active = self.store.active_move(project_id)
        runner_hooks = {"observer": observer, "before_step": before_step}
        refused = (active is not None and active.status == MoveStatus.FAILED and active.step == "preflight")
        if refused and active.target_host == target_host and active.cross_region == cross_region:
            move = self.runner(active.id, **runner_hooks).retry(force=force, force_target=force_target)
        else:
            if refused:  # asked again differently: the refused record (nothing was done) gives way,
                # and its "cancelled" entry goes to the caller's observer too: said, not silent.
                self.runner(active.id, observer=observer).cancel()
            move = self.store.create_move(project_id, project.host_id, target_host, force=force,
                                          cross_region=cross_region, force_target=force_target)
            move = self.runner(move.id, **runner_hooks).start()
        return self._scheduled_cleanup(move, observer, clean_now)

    def start_move(self, move_id: str, *, clean_now: bool = True, **hooks) -> Move:
        """Run a recorded PENDING move (``Store.create_move``) from its preflight; as :meth:`move`
        after the record is made."""
        return self._scheduled_cleanup(self.runner(move_id, **hooks).start(), hooks.get("observer"), clean_now)

    def resume(self, move_id: str, *, clean_now: bool = True, **hooks) -> Move:
        return self._scheduled_cleanup(self.runner(move_id, **hooks).resume(), hooks.get("observer"), clean_now)

    def retry(self, move_id: str, *, force: bool | None = None, force_target: bool | None = None,
              clean_now: bool = True, **hooks) -> Move:
        """Start a failed move again from preflight; ``force``/``force_target`` None: as it had them."""
        move = self.runner(move_id, **hooks).retry(force=force, force_target=force_target)
        return self._scheduled_cleanup(move, hooks.get("observer"), clean_now)

    def cancel(self, move_id: str, **hooks) -> Move:
        return self.runner(move_id, **hooks).cancel()

    def _scheduled_cleanup(self, move: Move, observer: Observer | None, now: bool) -> Move:
        if now:
            move = clean_source(self.store, self.client, move, observer=observer, buckets=self.settings.buckets,
                                timeout=self.settings.operation_timeout)
        return move

    def run_cleanups(self, observer: Observer | None = None) -> list[Move]:
        """Remove the source copies of completed moves whose cleanup is still pending; returns the
        moves still pending afterwards."""
        for move in self.store.pending_cleanups():
            clean_source(self.store, self.client, move, observer=observer, buckets=self.settings.buckets,
                         timeout=self.settings.operation_timeout)
        return self.store.pending_cleanups()
