"""Copying a file or directory from one project to another: the steps, their durable record,
and recovery.

Both projects on one host: ``preflight → copy → finalize``, the agent's CopyFiles (a reflink
copy on btrfs, no engine). Between hosts::

    preflight → backup → restore → forget → finalize

``backup`` takes a temporary snapshot of just the source path on the source host (tagged
purpose=copy and copy=<id>); ``restore`` brings that path out of the source project's
repository into staging inside the target project on the target host, and puts it in place by
the on_conflict rule; ``forget`` removes the temporary snapshot. Paths are checked before any
work: by the hub (relative, normalised, no ".."), by the target host (CheckCopyTarget: no
symlink leading out of the project, FAIL's refusal of an existing target) and by the source
host when the backup is asked for (an existing path, no symlink leading out).

Each step is recorded before it starts with a request id derived from the copy and the step,
so a hub that died mid-step joins the agent operation it had started when the copy is resumed.
A failure forgets the temporary snapshot (unless the failure was forgetting it: the files are in
place then, and a resume only forgets). The target is never half-written: the agent builds the
result in staging and renames it into place.
"""

from __future__ import annotations

import posixpath
from typing import Any, Callable

from hub_client.client import AgentClient, AgentError
from hub_client.lease import JobLease
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.steps import JobError, JobRunner, Observer, job_request_id
from hub_client.store import Conflict, Copy, CopyStatus, Host, MovelogEntry, Store

HOST_STEPS = ("preflight", "backup", "restore", "forget", "finalize")
LOCAL_STEPS = ("preflight", "copy", "finalize")
CONFLICT_POLICY = {Conflict.FAIL: pb.FAIL, Conflict.OVERWRITE: pb.OVERWRITE, Conflict.SKIP: pb.SKIP}

Connect = Callable[[Host], AgentClient]


class CopyError(JobError):
    """A copy could not start, or one of its steps failed."""


class CopyRefused(CopyError):
    """Refused before any work; nothing changed on any host."""


# ---------------------------------------------------------------- pure decisions


def copy_path(value: str, *, field: str) -> str:
    """``value`` as a normalised relative path inside a project ("a//b/" → "a/b"); CopyRefused
    (INVALID_ARGUMENT) for an empty, absolute or NUL-carrying path or one with a ".." part."""
    if not value or "\x00" in value:
        raise CopyRefused(f"{field} must be a non-empty path inside the project", "INVALID_ARGUMENT")
    if value.startswith("/"):
        raise CopyRefused(f"{field} {value[:200]!r} must be relative to the project, not absolute",
                          "INVALID_ARGUMENT")
    if ".." in value.split("/"):
        raise CopyRefused(f"{field} {value[:200]!r} must not contain '..'", "INVALID_ARGUMENT")
    normal = posixpath.normpath(value)
    if normal in (".", ""):
        raise CopyRefused(f"{field} {value[:200]!r} names the project itself; name a path inside it",
                          "INVALID_ARGUMENT")
    return normal


def steps_of(copy: Copy) -> tuple[str, ...]:
    return HOST_STEPS if copy.between_hosts else LOCAL_STEPS


def resume_point(copy: Copy) -> tuple[str, bool]:
    """Where a resumed copy starts, and whether it continues a step a stopped hub had started
    (same request id). A crashed hub left the copy RUNNING: its step goes on. A failure at
    ``forget`` had the files in place already: only the forgetting is repeated. Any other failure
    starts again from preflight (its temporary snapshot was forgotten)."""
    if copy.status == CopyStatus.RUNNING and copy.step in steps_of(copy):
        return copy.step, True
    if copy.status == CopyStatus.FAILED and copy.step == "forget":
        return "forget", False
    return "preflight", False


# ---------------------------------------------------------------- the runner


class CopyRunner(JobRunner):
    """Runs (starts, resumes, cancels) one copy; ``observer`` sees each copylog entry as it is
    written, ``before_step`` gets a step's name after it is recorded and before its work."""

    kind = "copy"
    error = CopyError

    def __init__(self, store: Store, connect: Connect, copy_id: str, *, observer: Observer | None = None,
                 before_step: Callable[[str], None] | None = None, operation_timeout: float | None = None,
                 lease: JobLease | None = None) -> None:
        super().__init__(copy_id, observer=observer, before_step=before_step, operation_timeout=operation_timeout,
                         lease=lease)
        self.store = store
        self.connect = connect
        self.copy_id = copy_id
        self.copy = store.get_copy(copy_id)

    def start(self) -> Copy:
        return self._run("start")

    def resume(self) -> Copy:
        return self._run("resume")

    def cancel(self) -> Copy:
        with self.store.move_lock(self.copy.target_project), self._leased():
            copy = self._require_unfinished("cancel")
            self._forget_temporary(copy)
            cancelled = self.store.update_copy_status(self.copy_id, CopyStatus.CANCELLED, error=copy.error)
            self._log("cancelled", "copy cancelled")
            return cancelled

    def _run(self, how: str) -> Copy:
        # The target project's lock: one runner per copy, and no move of the target meanwhile.
        with self.store.move_lock(self.copy.target_project), self._leased():
            copy = self._require_unfinished(how)
            if how == "start" and copy.status != CopyStatus.PENDING:
                raise CopyError(f"copy {self.copy_id} has started already; resume it")
            start, continuing = resume_point(copy)
            self.copy = self.store.update_copy_status(self.copy_id, CopyStatus.RUNNING, new_attempt=True)
            self._attempt(self.copy.attempts, how, start, continuing, {})
            return self.store.get_copy(self.copy_id)

    def _needs_owner(self) -> bool:
        return self.store.get_copy(self.copy_id).status in CopyStatus.BLOCKING

    def _finished(self) -> bool:
        return not self.store.get_copy(self.copy_id).unfinished

    def _require_unfinished(self, what: str) -> Copy:
        copy = self.store.get_copy(self.copy_id)
        if not copy.unfinished:
            raise CopyError(f"copy {self.copy_id} is {copy.status}; there is nothing to {what}")
        self.copy = copy
        return copy

    # ------------------------------------------------------------ the job's log and steps

    def _append(self, kind: str, message: str, data: dict[str, Any] | None) -> MovelogEntry:
        return self.store.append_copylog(self.copy_id, kind, message, data)

    def _read_log(self, after_seq: int = 0) -> list[MovelogEntry]:
        return self.store.copylog(self.copy_id, after_seq=after_seq)

    def _record_step(self, step: str) -> None:
        self.copy = self.store.update_copy_step(self.copy_id, step)

    def _steps(self) -> tuple[str, ...]:
        return steps_of(self.copy)

    def _current_step(self) -> str:
        return self.copy.step

    def _hosts(self) -> tuple[Host, Host]:
        return self.store.get_host(self.copy.source_host), self.store.get_host(self.copy.target_host)

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """An agent call whose refusal arrives before any work: its code is the copy's."""
        try:
            return call()
        except AgentError as exc:
            refused = exc.code.name in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION")
            raise (CopyRefused if refused else CopyError)(f"{what}: {exc.message}", exc.code.name) from exc

    # ------------------------------------------------------------ the steps

    def _step_preflight(self) -> None:
        copy = self.copy
        copy_path(copy.source_path, field="source_path")
        copy_path(copy.target_path, field="target_path")
        for project_id, host_id in ((copy.source_project, copy.source_host), (copy.target_project, copy.target_host)):
            placed = self.store.get_project(project_id).host_id
            if placed != host_id:
                raise CopyRefused(f"project {project_id} is on {placed}, not on {host_id} as when the copy was made; "
                                  "start a new copy", "FAILED_PRECONDITION")
            moving = self.store.active_move(project_id)
            if moving is not None:
                raise CopyRefused(f"project {project_id} has an active move ({moving.id}); copy after it",
                                  "FAILED_PRECONDITION")
        source, target = self._hosts()
        exists = self._call(f"target {copy.target_project}:{copy.target_path} on {target.id}", lambda: self.connect(
            target).check_copy_target(copy.target_project, copy.target_path, CONFLICT_POLICY[copy.on_conflict]))
        status = self._call(f"source project on {source.id}",
                            lambda: self.connect(source).project_status(copy.source_project))
        if not status.present:
            raise CopyRefused(f"project {copy.source_project} is not on {source.id}", "NOT_FOUND")
        how = "on one host (CopyFiles)" if not copy.between_hosts else f"through a temporary snapshot to {target.id}"
        self._log("plan", f"copy {copy.source_project}:{copy.source_path} → {copy.target_project}:"
                  f"{copy.target_path} {how}; target {'exists' if exists else 'is free'} ({copy.on_conflict})",
                  {"between_hosts": copy.between_hosts, "target_exists": exists})

    def _step_copy(self) -> None:
        copy = self.copy
        _, target = self._hosts()
        handle = self._call("copy", lambda: self.connect(target).copy_files(
            copy.source_project, copy.source_path, copy.target_project, copy.target_path,
            request_id=self._request_id("copy"), on_conflict=CONFLICT_POLICY[copy.on_conflict]))
        self._await("copy", target, handle)

    def _step_backup(self) -> None:
        copy = self.copy
        source, _ = self._hosts()
        handle = self._call(f"source {copy.source_project}:{copy.source_path} on {source.id}", lambda: self.connect(
            source).backup(copy.source_project, request_id=self._request_id("backup"), subpath=copy.source_path,
                           purpose="copy", tags=[f"copy={copy.id}"]))
        operation = self._await("backup", source, handle)
        snapshot_id = operation.summary.snapshot_id
        if not snapshot_id:
            raise CopyError(f"the backup of {copy.source_path} on {source.id} reported no snapshot")
        self.copy = self.store.set_copy_snapshot(self.copy_id, snapshot_id)
        self._log("backup", f"temporary snapshot {snapshot_id[:8]} of {copy.source_path}",
                  {"snapshot_id": snapshot_id, "files": operation.summary.files_processed,
                   "bytes": operation.summary.bytes_processed})

    def _step_restore(self) -> None:
        copy = self.copy
        _, target = self._hosts()
        handle = self._call(f"target {copy.target_project}:{copy.target_path} on {target.id}", lambda: self.connect(
            target).restore(copy.target_project, copy.snapshot_id or "", request_id=self._request_id("restore"),
                            subpath=copy.source_path, target_path=copy.target_path,
                            source_project_id=copy.source_project, on_conflict=CONFLICT_POLICY[copy.on_conflict]))
        self._await("restore", target, handle)

    def _step_forget(self) -> None:
        source, _ = self._hosts()
        snapshot_id = self.copy.snapshot_id
        if snapshot_id:
            handle = self.connect(source).forget(self.copy.source_project, request_id=self._request_id("forget"),
                                                 snapshot_ids=[snapshot_id])
            try:
                self._await("forget", source, handle)
            except CopyError as exc:
                if exc.code != "NOT_FOUND":
                    raise  # NOT_FOUND: an earlier attempt forgot it and lost the answer
            self.copy = self.store.set_copy_snapshot(self.copy_id, None)
            self._log("forget", f"temporary snapshot {snapshot_id[:8]} forgotten", {"snapshot_id": snapshot_id})

    def _step_finalize(self) -> None:
        copy = self.copy
        self.copy = self.store.complete_copy(
            self.copy_id, message=f"complete: {copy.source_project}:{copy.source_path} is in "
            f"{copy.target_project}:{copy.target_path}", data={})
        self._show_unseen()  # the "complete" entry, written by the store with the completion

    # ------------------------------------------------------------ failure

    def _fail(self, exc: BaseException) -> None:
        copy = self.store.get_copy(self.copy_id)
        if not copy.unfinished:
            return
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, JobError):
            message = f"{copy.step}: {message}"
        try:
            if copy.step != "forget":
                self._forget_temporary(copy)
        finally:
            self.copy = self.store.update_copy_status(self.copy_id, CopyStatus.FAILED, error=message)
            code = getattr(exc, "code", "")  # an AgentError's is a grpc.StatusCode: the log takes its name
            self._log("failed", message, {"step": copy.step, "code": getattr(code, "name", code),
                                          "refused": isinstance(exc, CopyRefused)})

    def _forget_temporary(self, copy: Copy) -> None:
        """Forget the copy's temporary snapshot, if it made one (best effort: an unreachable
        source keeps it, and the warning says so)."""
        if not copy.snapshot_id:
            return
        source, _ = self._hosts()
        try:
            handle = self.connect(source).forget(copy.source_project, snapshot_ids=[copy.snapshot_id],
                                                 request_id=job_request_id(self.kind, self.copy_id, "undo",
                                                                           copy.attempts))
            self._await("undo", source, handle)
        except (AgentError, CopyError) as exc:
            self._log("warning", f"could not forget the temporary snapshot {copy.snapshot_id[:8]} on {source.id} "
                      f"({exc}); forget it there by hand or resume the copy", {"snapshot_id": copy.snapshot_id})
            return
        self.copy = self.store.set_copy_snapshot(self.copy_id, None)
        self._log("forget", f"temporary snapshot {copy.snapshot_id[:8]} forgotten", {"snapshot_id": copy.snapshot_id})
