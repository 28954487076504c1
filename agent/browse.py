"""Browsing a backup: the pure rules behind ListFiles and ReadFile.

Nothing here starts a process or touches a file. The engine driver lists a
snapshot's tree (:class:`agent.engine.base.TreeNode`, absolute paths inside
the snapshot such as ``/project/src/a.txt``) and reads file contents; this
module decides everything in between:

- :func:`snapshot_path` validates a path a caller gives and maps it into the
  snapshot (``"src/a.txt"`` → ``"/project/src/a.txt"``);
- :func:`list_page` picks, orders and pages the entries below a directory,
  down to a depth, with an opaque page token;
- :func:`check_readable` decides whether a node may be read, following
  symlinks that stay inside their root and refusing those that point out;
- :func:`read_limit` and :func:`read_result` cap the content and flag binary
  data.

Roots. A layout-v2 snapshot has two roots, ``/project`` and ``/persist``
(the agent backs up the relative paths ``project`` and ``persist`` of a view
directory, so restic stores them at the top of the snapshot tree). Caller
paths are relative to one root, chosen by the ``root`` argument: ``"project"``
(the default: the project home, what a file explorer shows), ``"persist"``, or
:data:`SNAPSHOT_ROOT` (``""``), where the path is relative to the snapshot
itself and starts with ``project/`` or ``persist/`` (the form the
ListFilesRequest.path comment in ``protos/`` uses). A root argument was chosen
over a ``persist:`` prefix because ':' is a legal character in file names.
Returned entry paths are relative to the same root.

Symlinks are confined to the root they live in: a link in ``/project`` whose
target is absolute (it names a path of the host, not of the snapshot) or
climbs above ``/project`` with ``..`` is an escape, reported as
InvalidArgument, even where the climb would come back down.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping
import dataclasses

from agent import errors, ids
from agent.engine.base import TreeNode

ROOTS = ("project", "persist")
DEFAULT_ROOT = "project"
SNAPSHOT_ROOT = ""  # ``root`` value: paths are relative to the snapshot itself

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000  # larger requests are lowered to this (AIP-158)
DEFAULT_DEPTH = 1
MAX_DEPTH = 10  # larger requests are refused: a clipped subtree would look complete
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_SYMLINK_HOPS = 8
BINARY_SNIFF_BYTES = 8192

_TOKEN_VERSION = 1


# One ListFiles entry: a TreeNode whose ``path`` is relative to the root ("src/a.txt").
Entry = TreeNode


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def root_path(root: str = DEFAULT_ROOT) -> str:
    """The absolute snapshot path of ``root``: "/project", "/persist" or "/"."""
    if root == SNAPSHOT_ROOT:
        return "/"
    if root not in ROOTS:
        raise ValueError(f"root must be one of {ROOTS} or '': {root!r}")
    return "/" + root


def snapshot_path(user_path: str, *, root: str = DEFAULT_ROOT) -> str:
    """Validate ``user_path`` (relative to ``root``) and return its absolute snapshot path.

    ``""`` names the root itself. One trailing '/' is accepted ("src/").
    Raises :class:`agent.errors.InvalidArgument`, naming the problem, for a
    path that is not a string, is absolute, contains a NUL byte, an empty
    component ("a//b"), a "." or ".." component, a component longer than 255 bytes
    (:data:`agent.ids.NAME_MAX`), or is longer than
    :data:`MAX_PATH_BYTES`; with :data:`SNAPSHOT_ROOT`, also for a path whose
    first component is not "project" or "persist". Raises ValueError for an
    unknown ``root`` (a bug of the caller, not of the user).

    Examples: ``snapshot_path("src/a.txt")`` → ``"/project/src/a.txt"``;
    ``snapshot_path("")`` → ``"/project"``;
    ``snapshot_path("persist/db", root="")`` → ``"/persist/db"``.
    """
    base = root_path(root)
    if not isinstance(user_path, str):
        raise errors.InvalidArgument("path must be a string")
    if "\x00" in user_path:
        raise errors.InvalidArgument("path contains a NUL byte")
    if len(user_path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise errors.InvalidArgument(f"path is longer than {MAX_PATH_BYTES} bytes")
    if user_path.startswith("/"):
        raise errors.InvalidArgument(
            f"path must be relative to the {_root_word(root)}, not absolute: {user_path!r}"
        )
    text = user_path[:-1] if user_path.endswith("/") else user_path
    if not text:  # "" (a lone "/" was refused as absolute above)
        return base
    parts = text.split("/")
    for part in parts:
        if part == "":
            raise errors.InvalidArgument(f"path has an empty component ('//'): {user_path!r}")
        if part == "..":
            raise errors.InvalidArgument(f"path has a '..' component: {user_path!r}")
        if part == ".":
            raise errors.InvalidArgument(f"path has a '.' component: {user_path!r}")
    ids.check_name_lengths(text)
    if root == SNAPSHOT_ROOT and parts[0] not in ROOTS:
        raise errors.InvalidArgument(
            f"path must start with 'project/' or 'persist/': {user_path!r}"
        )
    return base.rstrip("/") + "/" + "/".join(parts)


def relative_path(path: str, root: str = DEFAULT_ROOT) -> str:
    """``"/project/src/a.txt"`` → ``"src/a.txt"`` for root "project"; the root itself → ``""``.

    Raises ValueError if ``path`` is not at or below the root.
    """
    base = root_path(root)
    if path == base:
        return ""
    prefix = base.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path!r} is not inside {base!r}")
    return path[len(prefix):]


def _root_word(root: str) -> str:
    return "snapshot root" if root == SNAPSHOT_ROOT else f"{root} root"


def _components(path: str) -> tuple[str, ...]:
    """Components of an absolute snapshot path: "/" → (), "/a/b" → ("a", "b")."""
    return tuple(p for p in path.split("/") if p)


def _is_canonical(path: str) -> bool:
    if not path.startswith("/"):
        return False
    if path == "/":
        return True
    parts = path[1:].split("/")
    return all(p not in ("", ".", "..") for p in parts) and "\x00" not in path


def to_entry(node: TreeNode, root: str = DEFAULT_ROOT) -> Entry:
    """The :class:`Entry` of ``node``, its path made relative to ``root``."""
    return dataclasses.replace(node, path=relative_path(node.path, root))


# --------------------------------------------------------------------------
# ListFiles
# --------------------------------------------------------------------------


def effective_depth(depth: int) -> int:
    """0 (proto3 unset) → :data:`DEFAULT_DEPTH`; 1..:data:`MAX_DEPTH` as given; else InvalidArgument."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise errors.InvalidArgument("depth must be an integer")
    if depth == 0:
        return DEFAULT_DEPTH
    if depth < 0:
        raise errors.InvalidArgument(f"depth must not be negative: {depth}")
    if depth > MAX_DEPTH:
        raise errors.InvalidArgument(f"depth must be at most {MAX_DEPTH}: {depth}")
    return depth


def effective_page_size(page_size: int) -> int:
    """0 (unset) → :data:`DEFAULT_PAGE_SIZE`; above :data:`MAX_PAGE_SIZE` → that maximum; negative → InvalidArgument."""
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise errors.InvalidArgument("page_size must be an integer")
    if page_size < 0:
        raise errors.InvalidArgument(f"page_size must not be negative: {page_size}")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def _listing_id(scope: str, base_path: str, depth: int) -> str:
    material = json.dumps([scope, base_path, depth], ensure_ascii=True)
    return hashlib.sha256(material.encode("ascii")).hexdigest()[:16]


def _encode_token(listing: str, key: tuple[str, ...], ordinal: int) -> str:
    raw = json.dumps({"v": _TOKEN_VERSION, "l": listing, "k": list(key), "n": ordinal},
                     ensure_ascii=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def _decode_token(token: str, listing: str) -> tuple[tuple[str, ...], int]:
    """The (key, ordinal) of the last entry a previous page returned."""
    malformed = errors.InvalidArgument("page_token is malformed")
    if not isinstance(token, str) or len(token) > 4 * (MAX_PATH_BYTES + 256):
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise malformed from exc
    if (
        not isinstance(data, dict)
        or data.get("v") != _TOKEN_VERSION
        or not isinstance(data.get("l"), str)
        or not isinstance(data.get("k"), list)
        or not all(isinstance(p, str) for p in data["k"])
        or isinstance(data.get("n"), bool)
        or not isinstance(data.get("n"), int)
        or data["n"] < 0
    ):
        raise malformed
    if data["l"] != listing:
        raise errors.InvalidArgument(
            "page_token belongs to a different listing (snapshot, path or depth changed)"
        )
    return tuple(data["k"]), data["n"]


def list_page(
    nodes: Iterable[TreeNode],
    base_path: str,
    depth: int = 0,
    page_size: int = 0,
    page_token: str = "",
    *,
    root: str = DEFAULT_ROOT,
    scope: str = "",
) -> tuple[list[Entry], str]:
    """One page of the entries below ``base_path``, and the token of the next page ("" at the end).

    ``nodes`` is the engine's listing (any superset of the wanted subtree, in
    any order); ``base_path`` the absolute snapshot path from
    :func:`snapshot_path` with the same ``root``. The entries are the nodes
    strictly below ``base_path``, at most ``depth`` levels down (0 means 1:
    direct children), with paths relative to ``root``.

    Order: by path components (a directory comes right before its contents,
    names compare by code point, which is UTF-8 byte order), so pages are
    stable for an immutable snapshot. Nodes with the same path (never in one
    restic tree) keep their input order and are each returned once.

    ``page_token`` is opaque to callers: base64 of the last returned path and
    a fingerprint of ``scope`` (the caller passes e.g. snapshot id and root),
    ``base_path`` and the depth; a token of another listing is
    InvalidArgument, so is a malformed one. ``page_size`` may change between
    pages.

    A ``base_path`` that names a file, symlink or other non-directory gives
    that one entry (as ls(1) does); symlinks are not followed. A
    ``base_path`` that is neither among the nodes nor a parent of one is
    NotFound. Raises InvalidArgument for a bad depth or page size.
    """
    depth = effective_depth(depth)
    size = effective_page_size(page_size)
    if not _is_canonical(base_path):
        raise ValueError(f"base_path must be a canonical absolute path: {base_path!r}")
    relative_path(base_path, root)  # ValueError if base_path lies outside the root

    base_key = _components(base_path)
    cut = len(base_key)
    base_node: TreeNode | None = None
    below: list[TreeNode] = []
    deeper = False  # nodes beyond the depth still prove that base_path exists
    for node in nodes:
        if not _is_canonical(node.path):
            continue
        key = _components(node.path)
        if key == base_key:
            if base_node is None:
                base_node = node
        elif len(key) > cut and key[:cut] == base_key:
            if len(key) - cut <= depth:
                below.append(node)
            else:
                deeper = True
    if base_node is None and not below and not deeper and base_path != "/":
        raise errors.PathNotFound(
            f"path not found in the snapshot: {relative_path(base_path, root)!r}",
            path=relative_path(base_path, root),
        )
    if base_node is not None and base_node.type != "dir":
        candidates = [base_node]
    else:
        candidates = below

    keyed = sorted(((_components(n.path), n) for n in candidates), key=lambda kn: kn[0])
    ordered: list[tuple[tuple[tuple[str, ...], int], TreeNode]] = []
    previous: tuple[str, ...] | None = None
    ordinal = 0
    for key, node in keyed:
        ordinal = ordinal + 1 if key == previous else 0
        previous = key
        ordered.append(((key, ordinal), node))

    listing = _listing_id(scope, base_path, depth)
    start = 0
    if page_token:
        after = _decode_token(page_token, listing)
        start = bisect_right([k for k, _ in ordered], after)
    page = ordered[start:start + size]
    entries = [to_entry(node, root) for _, node in page]
    next_token = ""
    if start + size < len(ordered) and page:
        (last_key, last_ordinal), _ = page[-1]
        next_token = _encode_token(listing, last_key, last_ordinal)
    return entries, next_token


# --------------------------------------------------------------------------
# ReadFile
# --------------------------------------------------------------------------


def _confinement(path: str) -> tuple[str, ...]:
    """The root a node lives in, as components: ("project",) or ("persist",)."""
    key = _components(path)
    if not key or key[0] not in ROOTS:
        raise errors.InvalidArgument(f"{path!r} is outside the snapshot's project and persist roots")
    return key[:1]


def symlink_target_path(node: TreeNode) -> str:
    """The absolute snapshot path a symlink points to, resolved lexically.

    The target is taken relative to the link's directory. Raises
    InvalidArgument if it is absolute (a path of the host, not of the
    snapshot) or if a '..' climbs above the root the link lives in; raises
    :class:`agent.errors.Internal` if the node carries no target (the
    driver's listing had none, e.g. restic ``ls`` — use ``find``).
    """
    if node.type != "symlink":
        raise ValueError(f"not a symlink: {node.path!r}")
    target = node.link_target
    if not target:
        raise errors.Internal(f"the target of symlink {node.path!r} is unknown")
    if target.startswith("/"):
        raise errors.InvalidArgument(
            f"symlink {_display(node.path)!r} points to an absolute path outside the backup"
        )
    if "\x00" in target:
        raise errors.InvalidArgument(f"symlink {_display(node.path)!r} has a malformed target")
    root = _confinement(node.path)
    current = list(_components(node.path)[:-1])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(current) <= len(root):
                raise errors.InvalidArgument(
                    f"symlink {_display(node.path)!r} points outside the {root[0]} root"
                )
            current.pop()
            continue
        current.append(part)
    return "/" + "/".join(current)


def check_readable(node: TreeNode, nodes_by_path: Mapping[str, TreeNode]) -> TreeNode:
    """The regular-file node ReadFile of ``node`` reads, following symlinks.

    A file is returned as it is. A symlink is followed
    (:func:`symlink_target_path`) to the node of its target in
    ``nodes_by_path`` (absolute snapshot path → node), at most
    :data:`MAX_SYMLINK_HOPS` times; the target must stay inside the link's
    root. Raises:

    - InvalidArgument: a symlink pointing out of its root or to an absolute
      path, too many levels of symlinks, a directory, or another
      non-regular file (fifo, socket, device);
    - NotFound: a symlink whose target is not in ``nodes_by_path`` (dangling,
      or reached through a directory symlink the driver did not list);
    - Internal: a symlink without a known target.
    """
    current = node
    for _ in range(MAX_SYMLINK_HOPS + 1):
        if current.type == "file":
            return current
        if current.type == "dir":
            raise errors.InvalidArgument(f"{_display(current.path)!r} is a directory, not a file")
        if current.type != "symlink":
            raise errors.InvalidArgument(f"{_display(current.path)!r} is not a regular file")
        target = symlink_target_path(current)
        found = nodes_by_path.get(target)
        if found is None:
            raise errors.PathNotFound(
                f"symlink {_display(current.path)!r} points to {_display(target)!r}, "
                "which is not in the snapshot"
            )
        current = found
    raise errors.InvalidArgument(
        f"too many levels of symbolic links at {_display(node.path)!r} (more than {MAX_SYMLINK_HOPS})"
    )


def _display(path: str) -> str:
    """A snapshot path as callers know it: relative to its root when inside one."""
    key = _components(path)
    if len(key) >= 1 and key[0] in ROOTS:
        return "/".join(key[1:]) or key[0]
    return path


def read_limit(requested: int, limit: int) -> int:
    """The byte cap of one ReadFile: 0 (unset) → ``limit``; above ``limit`` → ``limit``; negative → InvalidArgument."""
    if limit <= 0:
        raise ValueError(f"the configured read limit must be positive: {limit}")
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise errors.InvalidArgument("max_bytes must be an integer")
    if requested < 0:
        raise errors.InvalidArgument(f"max_bytes must not be negative: {requested}")
    if requested == 0:
        return limit
    return min(requested, limit)


def is_binary(content: bytes, *, complete: bool = True) -> bool:
    """True for a NUL byte in the first :data:`BINARY_SNIFF_BYTES` or invalid UTF-8.

    With ``complete`` False (the content was cut), a multi-byte UTF-8
    sequence cut at the very end is not held against it.
    """
    if b"\x00" in content[:BINARY_SNIFF_BYTES]:
        return True
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        decoder.decode(content, final=complete)
    except UnicodeDecodeError:
        return True
    return False


def read_result(data: bytes, size: int, max_bytes: int) -> tuple[bytes, bool, bool]:
    """``(content, truncated, binary)`` of a file of ``size`` bytes of which ``data`` was read.

    ``content`` is at most ``max_bytes`` of ``data``; ``truncated`` is True
    when it is shorter than the file (``size``) or than what was read;
    ``binary`` follows :func:`is_binary`, judged on ``content``. ``data`` may
    be longer than ``max_bytes`` (the driver may read one byte more to learn
    that the file goes on). Raises ValueError for a ``max_bytes`` below 1 or
    a negative ``size``.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive: {max_bytes}")
    if size < 0:
        raise ValueError(f"size must not be negative: {size}")
    content = bytes(data[:max_bytes])
    truncated = len(content) < max(size, len(data))
    return content, truncated, is_binary(content, complete=not truncated)
