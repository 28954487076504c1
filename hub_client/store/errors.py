"""The store's exceptions: one base class, so callers can catch every store failure at once."""

from __future__ import annotations


class StoreError(Exception):
    """Any failure of the hub's durable store."""


class NotFound(StoreError, LookupError):
    """The host, project or move named does not exist."""


class MoveInProgress(StoreError):
    """Another move of ``project_id`` is active or holds the project's move lock.

    ``move_id`` names the active move when the store knows it (None for a lock held elsewhere).
    """

    def __init__(self, project_id: str, move_id: str | None = None, detail: str = "") -> None:
        text = f"move in progress for project {project_id}"
        if move_id:
            text += f" (move {move_id})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.project_id = project_id
        self.move_id = move_id


class InvalidTransition(StoreError):
    """A move was asked to change in a way its current status does not allow (e.g. finishing a finished move)."""


class CopyInProgress(StoreError):
    """A copy from or into ``project_id`` is pending or running (``copy_id``), so the project is
    not deleted or moved now."""

    def __init__(self, project_id: str, copy_id: str | None = None, detail: str = "") -> None:
        text = f"copy in progress for project {project_id}"
        if copy_id:
            text += f" (copy {copy_id})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.project_id = project_id
        self.copy_id = copy_id
