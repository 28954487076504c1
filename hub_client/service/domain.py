"""What each Hub call does, on :class:`hub_client.hub.Hub` (no proto types): checks, then the
library. Blocking: the servicer runs these in threads.

Moves and copies are recorded here and run by the :class:`~hub_client.service.runner.Runner`.
A StartMove's / StartCopy's ``request_id`` names its job: the job's id is derived from it
(:func:`job_id_for`), so the same request id finds the same job in the store — across
restarts and hub processes sharing the store — and a repeat with other parameters is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from agent.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument, RequestIdReused
from hub_client.copying import CopyRefused, copy_path
from hub_client.hub import DrainReport, Hub
from hub_client.regions import order_regions
from hub_client.service import convert
from hub_client.service.runner import COPY, MOVE, Runner
from hub_client.store import (
    Copy, CopyInProgress, CopyStatus, Host, HostBackupStatus, Move, MoveInProgress, MoveStatus, NotFound, OfflineLoss, Project,
    Rescue,
)
from hub_client.proto.buckets.v1 import agent_pb2 as apb

# Seconds a Resume/Retry call waits for the job's attempt to begin on a worker.
BEGIN_WAIT = 30.0
_NAMESPACE = uuid.UUID("6d1b7c52-3f0e-4a8e-9a43-0c2f1b8e5d77")


def job_id_for(kind: str, request_id: str) -> str:
    """The id of the ``kind`` job a caller's ``request_id`` starts (a name-based uuid)."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{request_id}"))


@dataclass(frozen=True)
class HostView:
    host: Host
    backup: HostBackupStatus | None
    probed: bool
    answer: apb.HostStatus | None


class HubService:
    """The Hub calls over ``hub``; ``runner`` runs moves and copies; ``freshness_bound`` is how old
    a project's recorded figures may be before they are reported stale."""

    def __init__(self, hub: Hub, runner: Runner, *, freshness_bound: timedelta) -> None:
        self.hub = hub
        self.store = hub.store
        self.runner = runner
        self.freshness_bound = freshness_bound

    # ------------------------------------------------------------ hosts

    def add_host(self, host_id: str, address: str, region: str, status: str) -> HostView:
        """Register (or update) the host, then probe its agent once: an answer records it as
        seen now (a move targets only a host seen recently) with its projects' freshness."""
        convert.name(host_id, "host_id")
        convert.address(address)
        convert.name(region, "region")
        if status:
            convert.name(status, "status")
        self.hub.add_host(host_id, address, region, status or "running")
        return self.host_view(host_id, probe=True)

    def host_view(self, host_id: str, probe: bool) -> HostView:
        convert.name(host_id, "host_id")
        if probe:
            backup, answer = self.hub.refresh_host(host_id)
            return HostView(self.store.get_host(host_id), backup or self.store.host_backup_status(host_id), True,
                            answer)
        host = self.store.get_host(host_id)
        return HostView(host, self.store.host_backup_status(host_id), False, None)

    def list_hosts(self, region: str, probe: bool) -> list[HostView]:
        if region:
            convert.name(region, "region")
        return [self.host_view(host.id, probe) for host in self.store.list_hosts(region=region or None)]

    def drain(self, host_id: str, concurrency: int) -> DrainReport:
        convert.name(host_id, "host_id")
        if concurrency > 64:
            raise InvalidArgument(f"concurrency must be at most 64, got {concurrency}")
        self.store.get_host(host_id)
        return self.hub.drain(host_id, concurrency=concurrency or 2)

    def undrain(self, host_id: str) -> Host:
        convert.name(host_id, "host_id")
        return self.hub.set_host_status(host_id, "running")

    def force_off(self, host_id: str) -> tuple[Host, list[OfflineLoss]]:
        convert.name(host_id, "host_id")
        losses = self.hub.force_off(host_id)
        return self.store.get_host(host_id), losses

    def remove_host(self, host_id: str) -> bool:
        return self.hub.remove_host(host_id)

    # ------------------------------------------------------------ projects

    def add_project(self, project_id: str, host_id: str, region: str, repository: str) -> Project:
        return self.hub.add_project(project_id, host_id or None, region, repository)

    def _maybe_project(self, project_id: str) -> Project | None:
        try:
            return self.store.get_project(project_id)
        except NotFound:
            return None

    def get_project(self, project_id: str) -> Project:
        return self.store.get_project(convert.project_id(project_id))

    def list_projects(self, host_id: str, region: str, page_size: int, page_token: str) -> tuple[list[Project], str]:
        """One page of projects in id order; the token is the last id of the page before."""
        if host_id:
            convert.name(host_id, "host_id")
        if region:
            convert.name(region, "region")
        if page_token and (len(page_token) > 128 or not page_token.isprintable()):
            raise InvalidArgument("page_token must be the next_page_token of the page before")
        # One more than the page: whether there is a next page, without a count of all.
        projects = self.store.list_projects(host_id=host_id or None, region=region or None,
                                            after=page_token or None, limit=page_size + 1 if page_size else None)
        if page_size and len(projects) > page_size:
            projects = projects[:page_size]
            return projects, projects[-1].id
        return projects, ""

    def refresh(self, project_id: str, host_id: str) -> tuple[dict[str, bool], list[Project]]:
        """Ask agents for their projects' freshness now: one project, one host, or every host.
        Returns whether each host asked answered, and the projects as recorded afterwards."""
        if project_id:
            convert.project_id(project_id)
            project = self.store.get_project(project_id)
            if project.host_id is None:
                return {}, [project]
            return {project.host_id: True}, [self.hub.refresh_project(project_id)]
        if host_id:
            convert.name(host_id, "host_id")
            answered = {host_id: self.hub.refresh_host_status(host_id) is not None}
            return answered, self.store.list_projects(host_id=host_id)
        answered = self.hub.refresh_hosts()
        return answered, [p for h in answered for p in self.store.list_projects(host_id=h)]

    def delete_project(self, project_id: str) -> bool:
        return self.hub.delete_project(convert.project_id(project_id))

    def clone(self, project_id: str, clone_id: str, host_id: str) -> Project:
        """Clone ``project_id`` as ``clone_id`` (a new uuid when empty) on ``host_id`` (default:
        the source's host). A clone id that names a finished clone of the same request (same
        region, the host asked for) returns it: a broken-off call can be repeated; any other
        project of that id is ALREADY_EXISTS."""
        convert.project_id(project_id)
        if host_id:
            convert.name(host_id, "host_id")
            self.store.get_host(host_id)
        if clone_id:
            convert.project_id(clone_id, "clone_id")
            existing = self._maybe_project(clone_id)
            if existing is not None:
                source = self.store.get_project(project_id)
                same = (clone_id != project_id and existing.region == source.region
                        and existing.host_id == (host_id or source.host_id))
                if not same:
                    raise AlreadyExists(f"project {clone_id} exists already (on {existing.host_id}, region "
                                        f"{existing.region}); choose another clone_id")
                return existing
        return self.hub.clone(project_id, clone_id=clone_id or None, host_id=host_id or None)

    # ------------------------------------------------------------ moves

    def start_move(self, request_id: str, project_id: str, target_host: str, force: bool,
                   cross_region: bool, force_target: bool = False) -> Move:
        """Record the move the request names (or find it: the same request id) and have the
        runner start it; returns the move as recorded now. The same request id with another
        target, cross_region, force or force_target (as the move was created) is RequestIdReused."""
        convert.request_id(request_id)
        convert.project_id(project_id)
        convert.name(target_host, "target_host")
        move_id = job_id_for(MOVE, request_id)
        asked = {"project_id": project_id, "target_host": target_host, "cross_region": cross_region,
                 "force": bool(force), "force_target": bool(force_target)}
        existing = self._same_request(self.store.get_move, move_id, asked, self._move_as_asked)
        if existing is not None:
            return existing
        project = self.store.get_project(project_id)
        target = self.store.get_host(target_host)
        if project.host_id is None:
            raise FailedPrecondition(f"project {project_id} has no placement to move from")
        if project.host_id == target_host:
            raise FailedPrecondition(f"project {project_id} is already on {target_host}")
        if cross_region != (target.region != project.region):
            raise InvalidArgument(
                f"host {target_host} is in region {target.region} and project {project_id} in {project.region}: "
                + ("cross_region must be set to move it there" if not cross_region
                   else "cross_region is only for a host of another region"))
        try:
            move = self.store.create_move(project_id, project.host_id, target_host, force=force, move_id=move_id,
                                          cross_region=cross_region, force_target=force_target)
        except MoveInProgress as exc:
            if exc.move_id == move_id:  # the same request, a moment earlier
                return self._same_request(self.store.get_move, move_id, asked, self._move_as_asked)
            raise
        except Exception:  # the move id taken by the same request a moment earlier
            again = self._same_request(self.store.get_move, move_id, asked, self._move_as_asked)
            if again is None:
                raise
            return again
        self.runner.submit(MOVE, move.id, "start")
        return move

    def _move_as_asked(self, move: Move) -> dict[str, Any]:
        first = next((entry for entry in self.store.movelog(move.id) if entry.kind == "attempt"), None)
        return convert.move_parameters(move, first.data if first is not None else None)

    def _same_request(self, get: Callable[[str], Any], job_id: str, asked: dict[str, Any],
                      recorded: Callable[[Any], dict[str, Any]]) -> Any | None:
        try:
            job = get(job_id)
        except NotFound:
            return None
        stored = {key: value for key, value in recorded(job).items() if key in asked}
        if stored != asked:
            different = ", ".join(f"{key} {stored[key]!r} (asked {asked[key]!r})"
                                  for key in asked if stored[key] != asked[key])
            raise RequestIdReused(f"request_id names job {job_id} with other parameters: {different}",
                                  job_id=job_id)
        return job

    def get_move(self, move_id: str) -> Move:
        return self.store.get_move(convert.job_id(move_id, "move_id"))

    def list_moves(self, project_id: str, active_only: bool) -> list[Move]:
        if project_id:
            convert.project_id(project_id)
        return self.store.list_moves(project_id=project_id or None, active=True if active_only else None)

    def cancel_move(self, move_id: str) -> Move:
        move = self.get_move(move_id)
        self._not_running_here(MOVE, move.id)
        return self.hub.cancel(move.id)

    def resume_move(self, move_id: str) -> Move:
        move = self.get_move(move_id)
        self._require_active_move(move, "resume")
        return self._begun(self.runner.submit(MOVE, move.id, "resume"), self.store.get_move, move.id)

    def _begun(self, begun, get: Callable[[str], Any], job_id: str) -> Any:
        """The job once its new attempt is recorded (so a FollowLog opened after this answer
        does not end at the previous attempt's ending); at most BEGIN_WAIT seconds, as recorded
        then when all workers are busy."""
        begun.wait(BEGIN_WAIT)
        return get(job_id)

    def retry_move(self, move_id: str, force: bool | None, force_target: bool | None = None) -> Move:
        move = self.get_move(move_id)
        self._require_active_move(move, "retry")
        if move.status != MoveStatus.FAILED:
            raise FailedPrecondition(f"move {move.id} is {move.status}; only a failed move is retried "
                                     "(resume a stopped one)")
        return self._begun(self.runner.submit(MOVE, move.id, "retry", force=force,
                                                             force_target=force_target), self.store.get_move, move.id)

    def _require_active_move(self, move: Move, what: str) -> None:
        if not move.active:
            raise FailedPrecondition(f"move {move.id} is {move.status}; there is nothing to {what}")
        self._not_running_anywhere(MOVE, move.id, move.project_id)

    def _not_running_here(self, kind: str, job_id: str) -> None:
        if self.runner.running(job_id):
            raise Conflict(f"{kind} {job_id} is running in this hub process; follow its log",
                           **{f"{kind}_id": job_id})

    def _not_running_anywhere(self, kind: str, job_id: str, project_id: str) -> None:
        """ABORTED when this process or another one sharing the store runs the job now (it holds
        the project's move lock); the runner's own attempt would only find that out later."""
        self._not_running_here(kind, job_id)
        with self.store.move_lock(project_id):  # raises MoveInProgress (ABORTED) when held elsewhere
            pass

    # ------------------------------------------------------------ copies

    def start_copy(self, request_id: str, source_project: str, source_path: str, target_project: str,
                   target_path: str, policy: int) -> Copy:
        convert.request_id(request_id)
        convert.project_id(source_project, "source_project")
        convert.project_id(target_project, "target_project")
        rule = convert.conflict_rule(policy)
        try:
            source_path = copy_path(source_path, field="source_path")
            target_path = copy_path(target_path, field="target_path")
        except CopyRefused as exc:
            raise InvalidArgument(str(exc)) from None
        copy_id = job_id_for(COPY, request_id)
        asked = {"source_project": source_project, "source_path": source_path, "target_project": target_project,
                 "target_path": target_path, "on_conflict": rule}
        existing = self._same_request(self.store.get_copy, copy_id, asked, convert.copy_parameters)
        if existing is not None:
            return existing
        hosts = []
        for project_id in (source_project, target_project):
            project = self.store.get_project(project_id)
            if project.host_id is None:
                raise FailedPrecondition(f"project {project_id} is not placed on any host")
            hosts.append(project.host_id)
        try:
            copy = self.store.create_copy(source_project, source_path, target_project, target_path, rule,
                                          source_host=hosts[0], target_host=hosts[1], copy_id=copy_id)
        except Exception:
            again = self._same_request(self.store.get_copy, copy_id, asked, convert.copy_parameters)
            if again is None:
                raise
            return again
        self.runner.submit(COPY, copy.id, "start")
        return copy

    def get_copy(self, copy_id: str) -> Copy:
        return self.store.get_copy(convert.job_id(copy_id, "copy_id"))

    def list_copies(self, project_id: str, active_only: bool) -> list[Copy]:
        if project_id:
            convert.project_id(project_id)
        return self.store.list_copies(project_id=project_id or None, blocking=True if active_only else None)

    def cancel_copy(self, copy_id: str) -> Copy:
        copy = self.get_copy(copy_id)
        self._not_running_here(COPY, copy.id)
        return self.hub.cancel_copy(copy.id)

    def resume_copy(self, copy_id: str, what: str = "resume") -> Copy:
        copy = self.get_copy(copy_id)
        if not copy.unfinished:
            raise FailedPrecondition(f"copy {copy.id} is {copy.status}; there is nothing to {what}")
        if what == "retry" and copy.status != CopyStatus.FAILED:
            raise FailedPrecondition(f"copy {copy.id} is {copy.status}; only a failed copy is retried")
        self._not_running_anywhere(COPY, copy.id, copy.target_project)
        return self._begun(self.runner.submit(COPY, copy.id, "resume"), self.store.get_copy, copy.id)

    # ------------------------------------------------------------ rescues and regions

    def list_rescues(self, project_id: str, move_id: str) -> list[Rescue]:
        if project_id:
            convert.project_id(project_id)
        if move_id:
            convert.job_id(move_id, "move_id")
        return self.store.list_rescues(project_id=project_id or None, move_id=move_id or None)

    @staticmethod
    def regions(location: str) -> list[str]:
        try:
            return order_regions(location)
        except (ValueError, KeyError) as exc:
            raise InvalidArgument(f"location must be an ISO country code or 'lat,lon': {exc}") from None
