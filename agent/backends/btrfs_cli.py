"""btrfs-progs: pure argv builders, output parsers and failure classification.

Nothing in this module starts a process. The builders return argument lists
that the agent runs through :func:`agent.executor.run_process`; the parsers
turn ``btrfs`` output into frozen domain types; :func:`classify_failure` turns
a failed run into an :class:`agent.errors.BucketsError`.

Written against btrfs-progs v6.2 (Debian bookworm) on a loop-device
filesystem; every output format below is recorded under
``tests/unit/samples/btrfs/`` (see the README there for the command behind
each file). Facts this module relies on, all checked on v6.2:

* Every subcommand used here accepts ``--`` before its positional arguments
  (GNU getopt), and the builders put it there, except ``btrfs quota enable``:
  it rejects any option, ``--`` included ("exactly 2 arguments expected, 3
  given"). Every builder therefore also requires *absolute* paths, which can
  never be read as an option, and :func:`quota_enable_args` relies on that
  alone.
* Paths that btrfs prints (``subvolume show``'s first line, ``subvolume list``,
  ``qgroup show``'s Path column) are relative to the filesystem's top-level
  subvolume (id 5), whatever subvolume is mounted where; ``subvolume show`` of
  the top level itself prints ``/`` and the name ``<FS_TREE>``.
* ``subvolume list -o PATH`` lists only the *direct* children of the subvolume
  that contains PATH (those whose "top level" is that subvolume), not
  subvolumes nested deeper; so :func:`subvolume_list_below_args` lists the
  whole filesystem with ``-a`` and :func:`nested_below` walks the "top level"
  links. ``-a`` prefixes some paths with ``<FS_TREE>/``; with the prefix
  removed every path is relative to the top level. Subvolumes deleted but not
  yet cleaned are not listed (only ``-d`` shows them).
* ``subvolume snapshot SOURCE DEST`` creates ``DEST/<basename of SOURCE>`` when
  DEST is an existing directory, like ``cp``; callers must pass a DEST that
  does not exist yet.
* ``subvolume show --raw`` prints the quota group's limits and usage in bytes
  (``-`` for no limit); without ``--raw`` they are human sizes ("5.00GiB"),
  which :func:`parse_subvolume_show` refuses.
* ``qgroup show -re --raw -f PATH`` prints one row: the level-0 qgroup of the
  subvolume that *contains* PATH, so a plain directory yields its enclosing
  subvolume's qgroup (pass ``subvolume_id`` to :func:`parse_qgroup_show` to be
  sure). Limits are bytes or ``none``.
* ``qgroup limit SIZE PATH`` starts its transaction in PATH's own subvolume, so
  once that subvolume is over its limit (or the limit is 0) any change of the
  limit through PATH fails with "Disk quota exceeded". Giving the qgroup id and
  a path in another subvolume (``qgroup limit SIZE 0/ID MOUNTPOINT``) works:
  see the ``qgroupid`` argument of :func:`qgroup_limit_args`. A limit of 0 is a
  zero-byte limit, not "no limit" (that is ``none``).
* ``btrfs`` exits 1 for every failure and prints ``ERROR: ...`` (sometimes
  ``WARNING: ...``) lines on stderr; :data:`STDERR_RULES` match their text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent import errors
from agent.failure_rules import FailureRule, first_match
from agent.failure_rules import rule as _rule

# --------------------------------------------------------------------------
# Domain types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SubvolumeInfo:
    """What ``btrfs subvolume show --raw`` says about one subvolume.

    ``path`` is relative to the filesystem's top-level subvolume (``/`` for
    the top level itself); ``snapshots`` are the paths (same base) of the
    snapshots taken of it that still exist. ``parent_uuid`` is the UUID of the
    subvolume a snapshot was taken of (None for a plain subvolume). The quota
    fields are None when quotas are disabled; a limit is None when unset.
    """

    path: str
    name: str
    uuid: str
    parent_uuid: str | None
    received_uuid: str | None
    subvolume_id: int
    generation: int
    gen_at_creation: int
    parent_id: int
    top_level_id: int
    flags: tuple[str, ...]
    snapshots: tuple[str, ...] = ()
    quota_group: str | None = None
    limit_referenced: int | None = None
    limit_exclusive: int | None = None
    usage_referenced: int | None = None
    usage_exclusive: int | None = None

    @property
    def readonly(self) -> bool:
        return "readonly" in self.flags


@dataclass(frozen=True)
class SubvolumeEntry:
    """One line of ``btrfs subvolume list -a``.

    ``path`` is relative to the filesystem's top-level subvolume (the
    ``<FS_TREE>/`` prefix removed); ``top_level_id`` is the id of the
    subvolume this one lives in.
    """

    subvolume_id: int
    generation: int
    top_level_id: int
    path: str


@dataclass(frozen=True)
class QgroupInfo:
    """One row of ``btrfs qgroup show -re --raw``: sizes in bytes, a limit None when unset.

    ``path`` is btrfs's Path column: the subvolume's path relative to the
    top level, ``<toplevel>`` for 0/5, empty for higher-level qgroups.
    """

    qgroupid: str
    referenced: int
    exclusive: int
    max_referenced: int | None
    max_exclusive: int | None
    path: str = ""


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------

_QGROUPID = re.compile(r"[0-9]+/[0-9]+")
_U64_MAX = 2**64 - 1


def _check_binary(binary: str) -> str:
    if not isinstance(binary, str) or not binary:
        raise ValueError("the btrfs binary must be named")
    return binary


def _check_path(path: str, what: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"the {what} must be a non-empty string")
    if not path.startswith("/"):
        raise ValueError(f"the {what} must be absolute: {path!r}")
    if "\0" in path:
        raise ValueError(f"the {what} must not contain NUL: {path!r}")
    return path


def _check_bool(value: bool, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be True or False, not {value!r}")
    return value


def qgroupid_of(subvolume_id: int) -> str:
    """The level-0 qgroup id of a subvolume: ``256`` → ``"0/256"``. Raises ValueError for a bad id."""
    if isinstance(subvolume_id, bool) or not isinstance(subvolume_id, int) or subvolume_id <= 0:
        raise ValueError(f"not a subvolume id: {subvolume_id!r}")
    return f"0/{subvolume_id}"


# --------------------------------------------------------------------------
# Argv builders
# --------------------------------------------------------------------------


def subvolume_create_args(binary: str, path: str) -> list[str]:
    """``btrfs subvolume create -- PATH``; the parent directory must exist, PATH must not.

    Raises ValueError for an empty binary or a path that is not absolute.
    """
    return [_check_binary(binary), "subvolume", "create", "--", _check_path(path)]


def snapshot_args(binary: str, source: str, dest: str, readonly: bool = True) -> list[str]:
    """``btrfs subvolume snapshot [-r] -- SOURCE DEST``.

    DEST must not exist: btrfs creates ``DEST/<basename of SOURCE>`` when DEST
    is an existing directory. Raises ValueError for paths that are not
    absolute or a non-bool ``readonly``.
    """
    argv = [_check_binary(binary), "subvolume", "snapshot"]
    if _check_bool(readonly, "readonly"):
        argv.append("-r")
    return [*argv, "--", _check_path(source, "snapshot source"), _check_path(dest, "snapshot destination")]


def subvolume_delete_args(binary: str, paths: Sequence[str], commit: bool = False) -> list[str]:
    """``btrfs subvolume delete [--commit-after] -- PATH...``.

    btrfs deletes in argv order, so pass nested subvolumes deepest first (see
    :func:`nested_paths`); a subvolume that still contains another fails with
    "Directory not empty". ``commit`` waits for one transaction commit after
    the last deletion (the space is still freed later, in the background).
    Raises ValueError for no paths, a bare string, or a path that is not absolute.
    """
    if isinstance(paths, str) or not paths:
        raise ValueError("subvolume delete needs a sequence of at least one path")
    argv = [_check_binary(binary), "subvolume", "delete"]
    if _check_bool(commit, "commit"):
        argv.append("--commit-after")
    return [*argv, "--", *(_check_path(p) for p in paths)]


def subvolume_show_args(binary: str, path: str) -> list[str]:
    """``btrfs subvolume show --raw -- PATH`` (quota sizes in bytes); parse with :func:`parse_subvolume_show`."""
    return [_check_binary(binary), "subvolume", "show", "--raw", "--", _check_path(path)]


def subvolume_list_below_args(binary: str, path: str) -> list[str]:
    """``btrfs subvolume list -a -- PATH``: every subvolume of PATH's filesystem.

    ``-o`` would list only the direct children of PATH's subvolume, so the
    whole filesystem is listed and :func:`nested_below` / :func:`nested_paths`
    pick the subvolumes below PATH. Needs root. Parse with
    :func:`parse_subvolume_list`.
    """
    return [_check_binary(binary), "subvolume", "list", "-a", "--", _check_path(path)]


def property_get_ro_args(binary: str, path: str) -> list[str]:
    """``btrfs property get -ts -- PATH ro``; parse with :func:`parse_property_ro`."""
    return [_check_binary(binary), "property", "get", "-ts", "--", _check_path(path), "ro"]


def property_set_ro_args(binary: str, path: str, readonly: bool) -> list[str]:
    """``btrfs property set -ts -- PATH ro true|false``: freeze or thaw a subvolume.

    Raises ValueError for a path that is not absolute or a non-bool ``readonly``.
    """
    value = "true" if _check_bool(readonly, "readonly") else "false"
    return [_check_binary(binary), "property", "set", "-ts", "--", _check_path(path), "ro", value]


def qgroup_limit_args(
    binary: str,
    path: str,
    limit_bytes: int | None,
    *,
    qgroupid: str | None = None,
    exclusive: bool = False,
) -> list[str]:
    """``btrfs qgroup limit [-e] -- SIZE|none [QGROUPID] PATH``.

    Without ``qgroupid`` the limit applies to PATH's subvolume. With it
    (e.g. ``qgroupid_of(info.subvolume_id)``) PATH only names the filesystem;
    pass a path *outside* that subvolume, such as the mount point, to change
    the limit of a subvolume that is already over it (through its own path
    that fails with "Disk quota exceeded"). ``None`` removes the limit; 0 is a
    zero-byte limit. ``exclusive`` limits exclusive instead of referenced
    space. Raises ValueError for a negative or non-int limit, one above 2**64-1,
    a malformed qgroup id or a path that is not absolute.
    """
    if limit_bytes is None:
        size = "none"
    elif isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int):
        raise ValueError(f"a quota limit must be an int of bytes or None, not {limit_bytes!r}")
    elif not 0 <= limit_bytes <= _U64_MAX:
        raise ValueError(f"a quota limit must be between 0 and 2**64-1 bytes: {limit_bytes}")
    else:
        size = str(limit_bytes)
    argv = [_check_binary(binary), "qgroup", "limit"]
    if _check_bool(exclusive, "exclusive"):
        argv.append("-e")
    argv += ["--", size]
    if qgroupid is not None:
        if not isinstance(qgroupid, str) or not _QGROUPID.fullmatch(qgroupid):
            raise ValueError(f"not a qgroup id (level/id): {qgroupid!r}")
        argv.append(qgroupid)
    return [*argv, _check_path(path)]


def qgroup_show_args(binary: str, path: str, *, sync: bool = False) -> list[str]:
    """``btrfs qgroup show -re --raw -f [--sync] -- PATH``: the qgroup of PATH's subvolume.

    Columns: id, referenced, exclusive, max referenced, max exclusive (bytes),
    path. ``sync`` commits the filesystem first so that just-written data is
    counted. Parse with :func:`parse_qgroup_show`.
    """
    argv = [_check_binary(binary), "qgroup", "show", "-re", "--raw", "-f"]
    if _check_bool(sync, "sync"):
        argv.append("--sync")
    return [*argv, "--", _check_path(path)]


def quota_enable_args(binary: str, path: str) -> list[str]:
    """``btrfs quota enable PATH`` — without ``--``, which this subcommand rejects.

    The path must be absolute (so it cannot look like an option); raises
    ValueError otherwise. Data written before quotas were enabled is counted
    only after a rescan, which btrfs starts on its own.
    """
    return [_check_binary(binary), "quota", "enable", _check_path(path)]


def filesystem_sync_args(binary: str, path: str) -> list[str]:
    """``btrfs filesystem sync -- PATH``: commit the transaction of PATH's filesystem."""
    return [_check_binary(binary), "filesystem", "sync", "--", _check_path(path)]


def version_args(binary: str) -> list[str]:
    """``btrfs --version``; parse with :func:`parse_version`."""
    return [_check_binary(binary), "--version"]


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------


def _internal(what: str, stdout: str, why: str = "") -> errors.Internal:
    detail = f"{why}: {stdout[:2000]}" if why else stdout[:2000]
    return errors.Internal(f"btrfs {what} printed output that cannot be parsed", detail=detail)


def _int(value: str, key: str) -> int:
    if not re.fullmatch(r"[0-9]+", value):
        raise ValueError(f"{key} is not a number of bytes: {value!r}")
    return int(value)


def _optional(value: str) -> str | None:
    return None if value in ("", "-") else value


def _optional_int(value: str, key: str) -> int | None:
    return None if value in ("", "-", "none") else _int(value, key)


_SHOW_REQUIRED = (
    "Name",
    "UUID",
    "Parent UUID",
    "Subvolume ID",
    "Generation",
    "Gen at creation",
    "Parent ID",
    "Top level ID",
    "Flags",
)


def parse_subvolume_show(stdout: str) -> SubvolumeInfo:
    """Parse ``btrfs subvolume show --raw`` output.

    The first line is the path (relative to the top level); then one
    tab-indented ``Key: value`` line per field, the ``Snapshot(s):`` list (one
    deeper-indented path per line) and, with quotas enabled, ``Quota group``
    and its limits and usage. Unknown keys are ignored. Raises
    :class:`agent.errors.Internal` when a field is missing or a size is not
    in bytes (output of ``show`` without ``--raw``).
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines or lines[0].startswith("\t"):
        raise _internal("subvolume show", stdout, "no path line")
    fields: dict[str, str] = {}
    snapshots: list[str] = []
    in_snapshots = False
    for line in lines[1:]:
        if in_snapshots and line.startswith("\t\t"):
            snapshots.append(line.lstrip("\t"))
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise _internal("subvolume show", stdout, f"unexpected line {line!r}")
        key = key.strip()
        in_snapshots = key == "Snapshot(s)"
        fields[key] = value.strip()
    missing = [key for key in _SHOW_REQUIRED if key not in fields]
    if missing:
        raise _internal("subvolume show", stdout, f"missing {', '.join(missing)}")
    try:
        flags = fields["Flags"]
        return SubvolumeInfo(
            path=lines[0],
            name=fields["Name"],
            uuid=fields["UUID"],
            parent_uuid=_optional(fields["Parent UUID"]),
            received_uuid=_optional(fields.get("Received UUID", "-")),
            subvolume_id=_int(fields["Subvolume ID"], "Subvolume ID"),
            generation=_int(fields["Generation"], "Generation"),
            gen_at_creation=_int(fields["Gen at creation"], "Gen at creation"),
            parent_id=_int(fields["Parent ID"], "Parent ID"),
            top_level_id=_int(fields["Top level ID"], "Top level ID"),
            flags=() if flags == "-" else tuple(f.strip() for f in flags.split(",") if f.strip()),
            snapshots=tuple(snapshots),
            quota_group=_optional(fields.get("Quota group", "-")),
            limit_referenced=_optional_int(fields.get("Limit referenced", "-"), "Limit referenced"),
            limit_exclusive=_optional_int(fields.get("Limit exclusive", "-"), "Limit exclusive"),
            usage_referenced=_optional_int(fields.get("Usage referenced", "-"), "Usage referenced"),
            usage_exclusive=_optional_int(fields.get("Usage exclusive", "-"), "Usage exclusive"),
        )
    except ValueError as exc:
        raise _internal("subvolume show", stdout, str(exc)) from exc


_LIST_LINE = re.compile(r"ID ([0-9]+) gen ([0-9]+) top level ([0-9]+) path (.*)")
_FS_TREE = "<FS_TREE>/"


def parse_subvolume_list(stdout: str) -> list[SubvolumeEntry]:
    """Parse ``btrfs subvolume list -a`` (or ``-o``) output, in btrfs's order.

    Paths come back relative to the filesystem's top-level subvolume (the
    ``<FS_TREE>/`` prefix that ``-a`` puts on some of them is removed). Empty
    output is an empty list. Raises :class:`agent.errors.Internal` for a line
    of another shape.
    """
    entries: list[SubvolumeEntry] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        m = _LIST_LINE.fullmatch(line)
        if m is None:
            raise _internal("subvolume list", stdout, f"unexpected line {line!r}")
        path = m.group(4)
        if path.startswith(_FS_TREE):
            path = path[len(_FS_TREE):]
        entries.append(
            SubvolumeEntry(
                subvolume_id=int(m.group(1)),
                generation=int(m.group(2)),
                top_level_id=int(m.group(3)),
                path=path,
            )
        )
    return entries


def nested_below(entries: Iterable[SubvolumeEntry], subvolume_id: int) -> list[SubvolumeEntry]:
    """The subvolumes nested (at any depth) in subvolume ``subvolume_id``, deepest first.

    Follows the "top level" links, so a subvolume inside a plain directory of
    the subvolume counts too. Every entry comes before the subvolume that
    contains it (siblings in path order), which is the order
    ``btrfs subvolume delete`` needs.
    """
    children: dict[int, list[SubvolumeEntry]] = {}
    for entry in entries:
        if entry.subvolume_id != entry.top_level_id:
            children.setdefault(entry.top_level_id, []).append(entry)
    result: list[SubvolumeEntry] = []
    seen: set[int] = {subvolume_id}

    def visit(parent: int) -> None:
        for child in sorted(children.get(parent, ()), key=lambda e: e.path):
            if child.subvolume_id in seen:
                continue
            seen.add(child.subvolume_id)
            visit(child.subvolume_id)
            result.append(child)

    visit(subvolume_id)
    return result


def nested_paths(path: str, info: SubvolumeInfo, entries: Iterable[SubvolumeEntry]) -> list[str]:
    """Absolute paths of the subvolumes nested in the subvolume at ``path``, deepest first.

    ``path`` is the subvolume's absolute path as the agent sees it, ``info``
    its :func:`parse_subvolume_show` result (whose ``path`` and every entry's
    ``path`` are relative to the top level), ``entries`` the
    :func:`parse_subvolume_list` result. Raises ValueError for a relative
    ``path`` and :class:`agent.errors.Internal` if an entry's path is not
    below ``info.path``.
    """
    base = _check_path(path).rstrip("/")
    top = "" if info.path == "/" else info.path.strip("/") + "/"
    result = []
    for entry in nested_below(entries, info.subvolume_id):
        if not entry.path.startswith(top):
            raise errors.Internal(
                "btrfs subvolume list named a nested subvolume outside its parent",
                detail=f"{entry.path!r} is not below {info.path!r}",
            )
        result.append(base + "/" + entry.path[len(top):])
    return result


_PROPERTY_RO = re.compile(r"^ro=(true|false)$", re.MULTILINE)


def parse_property_ro(stdout: str) -> bool:
    """``"ro=true"`` → True, ``"ro=false"`` → False; raises :class:`agent.errors.Internal` otherwise."""
    m = _PROPERTY_RO.search(stdout)
    if m is None:
        raise _internal("property get", stdout, "no ro=true|false line")
    return m.group(1) == "true"


_QGROUP_HEADER = ["Qgroupid", "Referenced", "Exclusive", "Max", "referenced", "Max", "exclusive"]


def parse_qgroup_show(stdout: str, *, subvolume_id: int | None = None) -> QgroupInfo:
    """Parse ``btrfs qgroup show -re --raw [-f]`` output into one qgroup.

    With ``subvolume_id`` the row of qgroup ``0/<subvolume_id>`` is returned
    (:class:`agent.errors.NotFound` if there is none, e.g. because ``-f`` was
    given a path whose subvolume is another one); without it the output must
    hold exactly one row (what ``-f`` prints). Raises
    :class:`agent.errors.Internal` for output of another shape (other
    columns, human sizes).
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].split()[: len(_QGROUP_HEADER)] != _QGROUP_HEADER:
        raise _internal("qgroup show", stdout, "not the header of qgroup show -re")
    if set(lines[1].replace(" ", "")) != {"-"}:
        raise _internal("qgroup show", stdout, "no separator line")
    rows: list[QgroupInfo] = []
    try:
        for line in lines[2:]:
            parts = line.split(None, 5)
            if len(parts) < 5 or not _QGROUPID.fullmatch(parts[0]):
                raise ValueError(f"unexpected line {line!r}")
            rows.append(
                QgroupInfo(
                    qgroupid=parts[0],
                    referenced=_int(parts[1], "Referenced"),
                    exclusive=_int(parts[2], "Exclusive"),
                    max_referenced=_optional_int(parts[3], "Max referenced"),
                    max_exclusive=_optional_int(parts[4], "Max exclusive"),
                    path=parts[5].strip() if len(parts) > 5 else "",
                )
            )
    except ValueError as exc:
        raise _internal("qgroup show", stdout, str(exc)) from exc
    if subvolume_id is not None:
        wanted = qgroupid_of(subvolume_id)
        for row in rows:
            if row.qgroupid == wanted:
                return row
        raise errors.NotFound(f"btrfs has no quota group {wanted}", detail=stdout[:2000])
    if len(rows) != 1:
        raise _internal("qgroup show", stdout, f"{len(rows)} rows where one was expected")
    return rows[0]


_VERSION = re.compile(r"btrfs-progs v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(stdout: str) -> tuple[int, int, int]:
    """``"btrfs-progs v6.2"`` → ``(6, 2, 0)``; ``"btrfs-progs v6.6.3"`` → ``(6, 6, 3)``.

    Raises :class:`agent.errors.Internal` if no version is found.
    """
    m = _VERSION.search(stdout)
    if m is None:
        raise errors.Internal("cannot read the btrfs-progs version", detail=stdout[:500])
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------


# First match wins. The order matters where btrfs prints two lines for one
# failure: "not a btrfs filesystem: P" is followed by "can't access 'P'", so
# the filesystem row comes before the not-found row; a missing quota group
# ("unable to limit requested quota group: No such file or directory") is
# named before the generic not-found row. Every errno text is matched as
# strerror() prints it, which is what btrfs-progs' "%m" produces.
STDERR_RULES: tuple[FailureRule, ...] = (
    _rule(r"quotas? not enabled", errors.FailedPrecondition, "quotas are not enabled on the filesystem"),
    _rule(r"Disk quota exceeded", errors.ResourceExhausted, "the subvolume's quota is exceeded"),
    _rule(r"No space left on device", errors.ResourceExhausted, "no space left on the filesystem"),
    _rule(
        r"Read-only file system",
        errors.FailedPrecondition,
        "read-only (a read-only snapshot or a read-only mount)",
    ),
    _rule(r"Operation not permitted|Permission denied", errors.PermissionDenied, "operation not permitted"),
    _rule(
        r"not a btrfs filesystem|Inappropriate ioctl for device",
        errors.FailedPrecondition,
        "the path is not on a btrfs filesystem",
        re.IGNORECASE,
    ),
    _rule(
        r"unable to limit requested quota group: No such file or directory",
        errors.NotFound,
        "no such quota group",
    ),
    _rule(
        r"not a (?:btrfs )?subvolume|Could not get subvolume flags: Invalid argument",
        errors.NotFound,
        "not a subvolume",
        re.IGNORECASE,
    ),
    _rule(r"No such file or directory|can't access '", errors.NotFound, "no such file or directory"),
    _rule(
        r"target path already exists|File exists|exists and it is not a directory",
        errors.AlreadyExists,
        "the target path already exists",
    ),
    _rule(
        r"Directory not empty",
        errors.FailedPrecondition,
        "the subvolume still contains other subvolumes",
    ),
    _rule(
        r"not deleting default subvolume",
        errors.FailedPrecondition,
        "it is the filesystem's default subvolume",
    ),
)


def classify_failure(returncode: int, stderr_tail: str, action: str) -> errors.BucketsError:
    """Turn a failed btrfs run into the agent error to raise.

    ``action`` names the subcommand ("subvolume delete", "qgroup limit" …) and
    appears in the short message, e.g. "btrfs subvolume delete failed: not a
    subvolume"; the stderr tail (which names the path) goes into ``detail``.
    The first matching row of :data:`STDERR_RULES` decides; a run killed by a
    signal or with an unknown message is :class:`agent.errors.Internal`.
    Raises ValueError for exit code 0.
    """
    if returncode == 0:
        raise ValueError("btrfs exit code 0 is not a failure")
    detail = stderr_tail.strip()
    if returncode < 0:
        return errors.Internal(f"btrfs {action} was killed by signal {-returncode}", detail=detail)
    matched = first_match(STDERR_RULES, stderr_tail)
    if matched is not None:
        return matched.error(f"btrfs {action} failed: {matched.message}", detail=detail)
    return errors.Internal(f"btrfs {action} failed with exit code {returncode}", detail=detail)
