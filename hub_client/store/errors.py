"""The store's exceptions: one base class, so callers can catch every store failure at once."""

from __future__ import annotations


class StoreError(Exception):
    """Any failure of the hub's durable store."""


class NotFound(StoreError, LookupError):
    """The host, project or move named does not exist."""


class _InProgress(StoreError):
    """A job (``noun``: move, copy) of ``project_id`` is under way, named by ``job_id`` when known."""

    noun = ""

    def __init__(self, project_id: str, job_id: str | None = None, detail: str = "") -> None:
        text = f"{self.noun} in progress for project {project_id}"
        if job_id:
            text += f" ({self.noun} {job_id})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.project_id = project_id
        self.job_id = job_id


class MoveInProgress(_InProgress):
    """Another move of ``project_id`` is active or holds the project's move lock.

    ``move_id`` names the active move when the store knows it (None for a lock held elsewhere).
    """

    noun = "move"

    @property
    def move_id(self) -> str | None:
        return self.job_id


class InvalidTransition(StoreError):
    """A move was asked to change in a way its current status does not allow (e.g. finishing a finished move)."""


class CopyInProgress(_InProgress):
    """A copy from or into ``project_id`` is pending or running (``copy_id``), so the project is
    not deleted or moved now."""

    noun = "copy"

    @property
    def copy_id(self) -> str | None:
        return self.job_id


class LeaseHeld(StoreError):
    """Another hub process owns the job (``kind`` move or copy, ``job_id``) through a lease
    that has not lapsed: ``owner`` until ``expires_at``."""

    def __init__(self, kind: str, job_id: str, owner: str, expires_at: object) -> None:
        super().__init__(f"{kind} {job_id} is owned by hub process {owner} (lease until {expires_at}); "
                         "it is taken over only when that lease lapses")
        self.kind = kind
        self.job_id = job_id
        self.owner = owner
        self.expires_at = expires_at


class LeaseLost(StoreError):
    """This hub process no longer owns the job: its lease was taken over by another process (or
    released). The process must stop acting on the job at once: no further step, no undo."""

    def __init__(self, kind: str, job_id: str, owner: str, detail: str = "") -> None:
        text = f"hub process {owner} lost the lease of {kind} {job_id}"
        super().__init__(text + (f": {detail}" if detail else ""))
        self.kind = kind
        self.job_id = job_id
        self.owner = owner


class HostInUse(StoreError):
    """A host that a project's placement, a move, a copy or an offline-loss record names is not removed."""

    def __init__(self, host_id: str, named_by: str) -> None:
        super().__init__(f"host {host_id} is named by {named_by}; a host is removed only when nothing names it "
                         "(move its projects away first)")
        self.host_id = host_id
        self.named_by = named_by
