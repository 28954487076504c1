"""Where a caller's path may lead inside a project home: the rules of BackupRequest.subpath,
RestoreRequest.target_path and CopyFiles' source_path and target_path, in one place.

Two layers. The lexical rule is :func:`agent.ids.relative_path` (pure; the one every path
field uses): relative, no ".." component, no NUL; it normalises ("a//b/" → "a/b"). The
functions here add what only the filesystem can tell, reading it but changing nothing, and
they look only through directory descriptors (:mod:`agent.usertree`), never by resolving a
path:

- a *source* (something read: a subpath to back up, a path to copy) must exist, and no
  component but the last may be a symlink, so what the engine or ``cp`` opens is exactly
  the path named; when the last component is a symlink it is copied as a link, and (with
  ``check_link``) it must resolve inside the home all the same;
- a *target* (something written) may not pass through any symlink either (a link inside the
  home is refused too: the agent writes only where the path names, never where a link the
  user can change points), and an existing symlink at the target itself (replaced or kept,
  never followed) must resolve inside the home.

Every refusal is InvalidArgument naming the field; a missing source is NotFound; a home that
is a symlink or not a directory is FailedPrecondition.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agent import errors, ids, usertree


def relative(value: str, *, field: str) -> str:
    """The normalised, non-empty relative path ``value``; InvalidArgument otherwise (see
    :func:`agent.ids.relative_path`)."""
    return ids.relative_path(value, field=field, allow_empty=False)


def source_at(root: int, rel: str, *, field: str, check_link: bool = True) -> os.stat_result:
    """Check the existing entry ``rel`` (already :func:`relative`) below the open home ``root``;
    returns its lstat.

    Raises InvalidArgument when a directory on the way is a symlink or not a directory, or
    (with ``check_link``) when the entry is a symlink that resolves outside the home; NotFound
    when it is missing. Without ``check_link`` a symlink entry is not resolved: for a read-only
    snapshot of the home, where an absolute link would resolve against the live system (the
    link is copied as a link; its target was checked against the live home).
    """
    try:
        info = usertree.lstat(root, rel)
    except OSError as exc:
        raise _refusal(exc, field, rel) from None
    if info is None:
        raise errors.PathNotFound(f"{field} {rel[:200]!r} does not exist in the project", path=rel, field=field)
    if check_link and stat.S_ISLNK(info.st_mode) and not _resolves_beneath(root, rel):
        raise errors.InvalidArgument(f"{field} {rel[:200]!r} is a symlink leading out of the project")
    return info


def target_at(root: int, rel: str, *, field: str) -> os.stat_result | None:
    """Check where ``rel`` (already :func:`relative`) goes below the open home ``root``; returns
    the lstat of what is there now (None: nothing).

    Raises InvalidArgument when an existing directory on the way is a symlink or not a
    directory, or the target is an existing symlink that resolves outside the home. The target
    and its parents may be missing.
    """
    parts = rel.split("/")
    directory = os.dup(root)
    try:
        for depth, part in enumerate(parts[:-1]):
            try:
                following = usertree.open_dir(directory, part)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _refusal(exc, field, "/".join(parts[: depth + 1]), whole=rel) from None
            os.close(directory)
            directory = following
        try:
            info = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode) and not _resolves_beneath(root, rel):
            raise errors.InvalidArgument(f"{field} {rel[:200]!r} is a symlink leading out of the project")
        return info
    finally:
        os.close(directory)


def check_source(home: Path, rel: str, *, field: str, check_link: bool = True) -> os.stat_result:
    """:func:`source_at` on the home ``home`` (opened by :func:`agent.usertree.open_root`)."""
    root = usertree.open_root(home)
    try:
        return source_at(root, rel, field=field, check_link=check_link)
    finally:
        os.close(root)


def check_target(home: Path, rel: str, *, field: str) -> os.stat_result | None:
    """:func:`target_at` on the home ``home`` (opened by :func:`agent.usertree.open_root`)."""
    root = usertree.open_root(home)
    try:
        return target_at(root, rel, field=field)
    finally:
        os.close(root)


def nested(source_rel: str, target_rel: str) -> bool:
    """Whether ``target_rel`` is ``source_rel`` or inside it (both normalised by :func:`relative`;
    no symlink is allowed on either's way, so the names alone tell): a copy onto itself or into
    its own tree."""
    return target_rel == source_rel or target_rel.startswith(source_rel + "/")


def _resolves_beneath(root: int, rel: str) -> bool:
    """Whether the symlink ``rel`` below the open home ``root`` resolves to something inside it
    (RESOLVE_BENEATH: relative links that stay inside; an absolute one never does). A dangling
    link counts as inside: nothing is there to lead to."""
    try:
        fd = usertree.openat2(root, rel, os.O_PATH,
                              resolve=usertree.RESOLVE_BENEATH | usertree.RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR)
    os.close(fd)
    return True


def _refusal(exc: OSError, field: str, where: str, *, whole: str | None = None) -> errors.BucketsError:
    shown = (whole or where)[:200]
    if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
        return errors.InvalidArgument(
            f"{field} {shown!r} passes through {where[:200]!r}, which is a symlink or not a directory; "
            "name the real path"
        )
    return usertree.os_error(exc, field, shown)
