"""Comparing a live tree with a snapshot's listing: pure functions over manifests.

A *manifest* maps a path relative to the snapshot roots ("project", "project/src/a.txt",
"persist/db": ``project/`` is the home, ``persist/`` the persist location, the roots
themselves included) to its :class:`Entry`. The snapshot side is built from the engine's
listing (:func:`manifest_from_nodes`), the live side by :mod:`agent.live_tree`. Nothing here
touches a file or a process.

What is compared, and why exactly so (restic 0.14 restores every one of these as stored:
mode with setuid/setgid/sticky, owner, mtime to the nanosecond also of directories and
symlinks, symlink targets, fifos and device nodes; the roots' own metadata too):

- presence and type of every entry, on both sides (missing and extra entries);
- the size of regular files (a directory's or symlink's size is not in the listing);
- the permission bits (0o7777);
- the owner (uid, gid) where both sides have it;
- the mtime to the precision the snapshot keeps (``Entry.mtime_step_ns``);
- a symlink's target.

Not compared, each for a reason: a directory's size and a symlink's size (not in the listing;
the symlink's target is); atime and ctime (no restore can set ctime, and reading sets atime);
extended attributes, device numbers and which paths are hard links of each other (restic's
listing does not print them). Sockets are never in a snapshot (restic skips them), so a live
socket is an extra entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.engine.base import TreeNode

ROOTS = ("project", "persist")
# The order a report names differences in: what loses data first, metadata last.
KIND_ORDER = ("missing", "extra", "type", "size", "link target", "mode", "owner", "mtime")
REPORTED = 5


@dataclass(frozen=True)
class Entry:
    """One node of a manifest. ``type`` is "file", "dir", "symlink", or the special file's kind
    as restic names it ("fifo", "chardev", "dev", "socket"). ``size`` counts for files only;
    ``mode`` is the permission bits; ``uid``/``gid`` are None where unknown; ``mtime_ns`` is
    nanoseconds since the epoch and ``mtime_step_ns`` the precision it is known to (1 for a
    live tree); ``link_target`` is a symlink's target, "" for every other type."""

    type: str
    size: int
    mode: int
    mtime_ns: int
    uid: int | None = None
    gid: int | None = None
    link_target: str = ""
    mtime_step_ns: int = 1


@dataclass(frozen=True)
class Difference:
    """What differs at ``path``: ``kind`` is one of :data:`KIND_ORDER`; ``detail`` says how."""

    path: str
    kind: str
    detail: str = ""

    def describe(self) -> str:
        return f"{self.path}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Counts:
    """Entries (the roots included) and bytes of regular files of a manifest."""

    entries: int
    bytes: int


def relative(snapshot_path: str) -> str | None:
    """A snapshot path ("/project/a") as a manifest path ("project/a"); None outside the two roots."""
    path = snapshot_path.strip("/")
    if path.split("/", 1)[0] not in ROOTS:
        return None
    return path


def _datetime_ns(node: TreeNode) -> int:
    moment = node.mtime
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


def entry_of_node(node: TreeNode) -> Entry:
    """The manifest entry of one snapshot node; its mtime exact where the listing gave
    nanoseconds (``TreeNode.mtime_ns``), else to the microsecond."""
    kind = node.raw_type if node.type == "other" and node.raw_type else node.type
    exact = node.mtime_ns is not None
    return Entry(
        type=kind,
        size=node.size if kind == "file" else 0,
        mode=node.mode,
        mtime_ns=node.mtime_ns if exact else _datetime_ns(node),
        uid=node.uid,
        gid=node.gid,
        link_target=node.link_target if kind == "symlink" else "",
        mtime_step_ns=1 if exact else 1000,
    )


def manifest_from_nodes(nodes: Iterable[TreeNode]) -> dict[str, Entry]:
    """The manifest of a snapshot's listing: every node below ``/project`` and ``/persist`` (the
    roots included); nodes elsewhere are left out."""
    manifest: dict[str, Entry] = {}
    for node in nodes:
        path = relative(node.path)
        if path is not None:
            manifest[path] = entry_of_node(node)
    return manifest


def counts_of(manifest: Mapping[str, Entry]) -> Counts:
    return Counts(entries=len(manifest),
                  bytes=sum(entry.size for entry in manifest.values() if entry.type == "file"))


def _entry_differences(path: str, expected: Entry, live: Entry) -> list[Difference]:
    if expected.type != live.type:
        return [Difference(path, "type", f"{live.type}, {expected.type} in the snapshot")]
    found: list[Difference] = []
    if expected.type == "file" and expected.size != live.size:
        found.append(Difference(path, "size", f"{live.size} bytes, {expected.size} in the snapshot"))
    if expected.type == "symlink" and expected.link_target != live.link_target:
        found.append(Difference(path, "link target",
                                f"{live.link_target[:200]!r}, {expected.link_target[:200]!r} in the snapshot"))
    if expected.mode != live.mode:
        found.append(Difference(path, "mode", f"{live.mode:04o}, {expected.mode:04o} in the snapshot"))
    owners = [(name, e, l) for name, e, l in (("uid", expected.uid, live.uid), ("gid", expected.gid, live.gid))
              if e is not None and l is not None and e != l]
    if owners:
        found.append(Difference(path, "owner", ", ".join(f"{n} {l}, {e} in the snapshot" for n, e, l in owners)))
    step = max(expected.mtime_step_ns, live.mtime_step_ns, 1)
    if expected.mtime_ns // step != live.mtime_ns // step:
        found.append(Difference(path, "mtime", f"{_ns_text(live.mtime_ns)}, {_ns_text(expected.mtime_ns)} "
                                               "in the snapshot"))
    return found


def _ns_text(value: int) -> str:
    seconds, nanos = divmod(value, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


def compare(expected: Mapping[str, Entry], live: Mapping[str, Entry]) -> list[Difference]:
    """Every difference between the snapshot's manifest ``expected`` and the ``live`` one, in
    report order (:data:`KIND_ORDER`, then path). Below a missing, extra or retyped directory
    only that directory is named: its contents differ with it."""
    found: list[Difference] = []
    for path in sorted(expected.keys() | live.keys()):
        want, have = expected.get(path), live.get(path)
        if want is None:
            found.append(Difference(path, "extra", f"a {have.type} not in the snapshot"))
        elif have is None:
            found.append(Difference(path, "missing", f"a {want.type} in the snapshot"))
        else:
            found.extend(_entry_differences(path, want, have))
    covered = {d.path for d in found if d.kind in ("missing", "extra", "type")}
    found = [d for d in found if not _below_any(d.path, covered)]
    return sorted(found, key=lambda d: (KIND_ORDER.index(d.kind), d.path))


def _below_any(path: str, covered: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in covered for i in range(1, len(parts)))


def compare_counts(expected: Counts, live: Counts) -> list[str]:
    """What differs between the snapshot's counts and the live ones, in words ([] when equal)."""
    found = []
    if expected.entries != live.entries:
        found.append(f"{live.entries} entries, {expected.entries} in the snapshot")
    if expected.bytes != live.bytes:
        found.append(f"{live.bytes} bytes in files, {expected.bytes} in the snapshot")
    return found


def describe(differences: list[Difference], *, limit: int = REPORTED) -> str:
    """The first ``limit`` differences in words, and how many more there are."""
    shown = "; ".join(d.describe() for d in differences[:limit])
    more = len(differences) - limit
    return shown + (f"; and {more} more" if more > 0 else "")
