"""Bringing staged trees that hold one snapshot (a move's pre-copy) to another snapshot while
reading only what differs: the catch-up after a move's freeze, and the later rounds of a
pre-copy.

The staged trees are the agent's own (root-only staging, :class:`agent.backends.base.Staging`),
but what is in them came from the user's snapshot: symlinks there are the user's, so every path
operation in them goes through :mod:`agent.usertree` (never following a symlink).

How, by what the engine can (:func:`way_for`):

- ``"restore-over"`` (rustic, restic >= 0.17): :meth:`Engine.restore_over` over the staged
  trees. Those engines keep a file whose size and mtime match the snapshot; a file whose content
  changed between the two snapshots with its size and mtime kept would survive with the old
  content, so the entries whose content differs are removed from the staging first.
- ``"diff"`` (restic < 0.17): the entries the two snapshots differ in are removed from the
  staging and restored from the new snapshot; the directories above them get the new
  snapshot's metadata back.

Not built yet: the content-diff invalidation and the ``"diff"`` way (issue 18); until then
:func:`bring_to` runs restore-over alone and :func:`way_for` offers no ``"diff"``.
"""

from __future__ import annotations

from collections.abc import Callable

from agent import errors
from agent.backends.base import Staging
from agent.engine.base import RESTORE_OVER, Engine, RestoreStatus, RestoreSummary
from agent.repository import Repository

RESTORE_OVER_WAY = "restore-over"
DIFF_WAY = "diff"


def way_for(features: frozenset[str], *, base_snapshot_id: str | None) -> str | None:
    """How staged trees can be brought to another snapshot with an engine of ``features``:
    ``"restore-over"``, ``"diff"`` (needs the snapshot the trees hold whole, ``base_snapshot_id``),
    or None when only a whole restore into fresh trees can (e.g. restic < 0.17 continuing an
    unfinished restore, which has no base)."""
    if RESTORE_OVER in features:
        return RESTORE_OVER_WAY
    return None


async def bring_to(
    engine: Engine, repo: Repository, staging: Staging, snapshot_id: str, *, base_snapshot_id: str | None,
    on_status: Callable[[RestoreStatus], None] | None = None,
) -> RestoreSummary:
    """Make ``staging``'s trees equal to snapshot ``snapshot_id``. They hold snapshot
    ``base_snapshot_id`` whole, or (None) an unfinished restore of ``snapshot_id`` itself.
    Returns what was fetched and deleted. Raises Unimplemented when the engine has no way
    (:func:`way_for`), a BucketsError on failure (the staging is then in no known state: the
    caller restores whole or discards it)."""
    way = way_for(await engine.features(), base_snapshot_id=base_snapshot_id)
    if way == RESTORE_OVER_WAY:
        return await engine.restore_over(repo, snapshot_id, staging.view, on_status=on_status)
    raise errors.Unimplemented(f"{engine.name} {await engine.version()} cannot bring a restored tree to another "
                               "snapshot incrementally")
