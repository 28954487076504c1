"""Where an engine backs up from: the backup view root, the same path on every host.

restic records a snapshot's ``paths`` as the absolute paths of what it was given, and finds a
backup's parent among the snapshots of the same host name and paths. The engine runs in the
view root (``project`` and ``persist`` mounted in its own mount namespace, see
:mod:`agent.backends.bindexec`), so that root's path is what every snapshot records. Under the
agent's state dir it would differ between hosts (and after a state dir change): a project moved
to another host would find no parent and be read in full, and its snapshots would name the host's
directories. So an agent running as root backs up from :data:`FIXED_ROOT` on every host.

The mount points there are shared by every engine run of every agent on the host: each run
mounts its own trees on them in its private namespace, which nothing else sees, so concurrent
backups of different projects (of one agent or of two) do not meet. The directories are made
once and never removed by the agent; nothing but empty mount points may be in them.

Not root (an unprivileged user namespace: laptops, CI without root), the agent cannot make
:data:`FIXED_ROOT` and keeps a view per project under its state dir, whose path its snapshots
then record (README).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from agent.ids import project_dir_name

log = structlog.get_logger("agent.backends.views")

# In /run (the unit's RuntimeDirectory=buckets): never a directory an engine needs (a repository,
# a cache or a temporary directory may be under /tmp, /mnt, /srv or the state dir).
FIXED_ROOT = Path("/run/buckets/view")
ROOT_NAMES = ("project", "persist")

STATE_DIR_LIMITATION = (
    "backup view under the state dir (the agent is not root, or {root} could not be made): restic "
    "snapshots record that path, so a project moved to a host with another state dir is read in full "
    "at its first backup there"
)


def prepare_fixed_root(root: Path = FIXED_ROOT) -> None:
    """Make ``root`` (mode 0700, its parent 0755 when missing) with its empty ``project`` and
    ``persist`` mount points, keeping what exists. Raises OSError when that cannot be done, or
    when ``root``, its parent or a mount point is there but is a symlink, not a directory, or
    not owned by root, or a mount point is not empty (it would be backed up as a project's tree
    when the project lacks one)."""
    root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    _require_own_directory(root.parent)
    root.mkdir(mode=0o700, exist_ok=True)
    _require_own_directory(root)
    for name in ROOT_NAMES:
        mount_point = root / name
        mount_point.mkdir(mode=0o700, exist_ok=True)
        _require_own_directory(mount_point)
        if any(os.scandir(mount_point)):
            raise OSError(f"{mount_point} is not empty: it must be an empty mount point")


def _require_own_directory(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise OSError(f"{path} is not a directory owned by root")


def backup_roots(state_views: Path, *, privileged: bool | None = None) -> tuple[Path | None, str | None]:
    """(the fixed view root, or None for a view per project under ``state_views``; the limitation
    to report when there is no fixed root). ``privileged``: whether the agent runs as root (None:
    ask the process). Makes the fixed root (:func:`prepare_fixed_root`); logs why not when it
    cannot."""
    if privileged is None:
        privileged = os.geteuid() == 0
    if not privileged:
        return None, STATE_DIR_LIMITATION.format(root=FIXED_ROOT)
    try:
        prepare_fixed_root()
    except OSError as exc:
        log.warning("views.fixed_root_unavailable", root=str(FIXED_ROOT), error=str(exc))
        return None, STATE_DIR_LIMITATION.format(root=FIXED_ROOT)
    return FIXED_ROOT, None


def backup_view_root(fixed: Path | None, state_views: Path, project_id: str) -> Path:
    """The directory a backup of ``project_id`` runs in: ``fixed`` when there is one, else the
    project's own view under ``state_views``. Makes the mount points when missing."""
    root = fixed if fixed is not None else state_views / project_dir_name(project_id)
    for name in ROOT_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root
