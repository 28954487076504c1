"""Where a caller's path may lead inside a project home: the rules of BackupRequest.subpath,
RestoreRequest.target_path and CopyFiles' source_path and target_path, in one place.

Two layers. The lexical rule is :func:`agent.ids.relative_path` (pure; the one every path
field uses): relative, no ".." component, no NUL; it normalises ("a//b/" → "a/b"). The
functions here add what only the filesystem can tell, reading it but changing nothing:

- a *source* (something read: a subpath to back up, a path to copy) must exist, and no
  component but the last may be a symlink, so what the engine or ``cp`` opens is exactly
  the path named (no link can swap in another tree, inside the project or out of it); when
  the last component is a symlink it is copied as a link, and it must resolve inside the
  home all the same;
- a *target* (something written) may pass through symlinks that stay inside the home (its
  parent is used resolved), and an existing symlink at the target itself must resolve
  inside too.

Every refusal is InvalidArgument naming the field; a missing source is NotFound.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent import errors, ids


def relative(value: str, *, field: str) -> str:
    """The normalised, non-empty relative path ``value``; InvalidArgument otherwise (see
    :func:`agent.ids.relative_path`)."""
    return ids.relative_path(value, field=field, allow_empty=False)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def source(home: Path, rel: str, *, field: str, check_link: bool = True) -> Path:
    """The absolute path of the existing entry ``rel`` (already :func:`relative`) in ``home``.

    Raises InvalidArgument when a directory on the way is a symlink or not a directory, or
    (with ``check_link``) when the entry is a symlink that resolves outside the home; NotFound
    when it is missing. Without ``check_link`` a symlink entry is not resolved: for a read-only
    snapshot of the home, where an absolute link would resolve against the live system (the
    link is copied as a link; its target was checked against the live home).
    """
    real_home = os.path.realpath(home)
    current = real_home
    parts = rel.split("/")
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            raise errors.NotFound(f"{field} {rel[:200]!r} does not exist in the project") from None
        if index < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
            raise errors.InvalidArgument(
                f"{field} {rel[:200]!r} passes through {'/'.join(parts[: index + 1])!r}, which is a symlink "
                "or not a directory; name the real path"
            )
    if check_link and stat.S_ISLNK(info.st_mode) and not _inside(os.path.realpath(current), real_home):
        raise errors.InvalidArgument(f"{field} {rel[:200]!r} is a symlink leading out of the project")
    return Path(current)


def target(home: Path, rel: str, *, field: str) -> Path:
    """Where ``rel`` (already :func:`relative`) goes in ``home``: its parent resolved, its own
    name kept (an existing symlink there is replaced or kept, never followed).

    Raises InvalidArgument when the resolved parent is outside the home, or the target is an
    existing symlink that resolves outside it. The target and its parents may be missing.
    """
    real_home = os.path.realpath(home)
    parent, _, name = rel.rpartition("/")
    real_parent = os.path.realpath(os.path.join(real_home, parent)) if parent else real_home
    if not _inside(real_parent, real_home):
        raise errors.InvalidArgument(f"{field} {rel[:200]!r} leads out of the project (through a symlink)")
    where = os.path.join(real_parent, name)
    if os.path.islink(where) and not _inside(os.path.realpath(where), real_home):
        raise errors.InvalidArgument(f"{field} {rel[:200]!r} is a symlink leading out of the project")
    return Path(where)


def nested(source_path: Path, target_path: Path) -> bool:
    """Whether ``target_path`` is ``source_path`` or inside it (both as :func:`source` and
    :func:`target` return them): a copy onto itself or into its own tree."""
    return target_path == source_path or source_path in target_path.parents
