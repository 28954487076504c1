"""restic: pure argv builders, output parsers and failure classification.

Nothing in this module starts a process. The builders return argument lists
for the one executor; the parsers turn restic's output into frozen domain
types; :func:`classify_failure` turns a failed run into an
:class:`agent.errors.BucketsError`.

Written against restic 0.14.0 (Debian bookworm), whose output is recorded
under ``tests/unit/samples/restic/``, and kept compatible with restic >= 0.17,
which adds dedicated exit codes (10, 11, 12) and JSON error messages.

Every builder puts the repository options first, in this fixed order::

    [binary, "-r", repository, "--password-file", FILE, "--cache-dir", DIR | "--no-cache", *extra]

and ends the options with ``--`` before positional arguments that come from
callers (paths, snapshot ids), so that nothing positional is ever read as a
flag. The repository password never appears in argv: it is read by restic
from ``password_file`` (or from the environment the executor prepares).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent import errors
from agent.failure_rules import FailureRule, first_match
from agent.failure_rules import rule as _rule
from agent.engine import json_fields
from agent.engine.base import (
    BackupItemError,
    BackupStatus,
    BackupSummary,
    DiffEntry,
    RestoreSize,
    RestoreStatus,
    RestoreSummary,
    Snapshot,
    TreeNode,
)

# Exit codes that are not failures. 3 means the snapshot was written but some
# source files could not be read (restic >= 0.17 also uses it when `forget`
# could not remove every snapshot); callers report it as a warning.
EXIT_OK = 0
EXIT_INCOMPLETE = 3

# --------------------------------------------------------------------------
# Domain types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CommonOptions:
    """Options every restic invocation on one repository carries.

    ``cache_dir`` None means ``--no-cache``; ``password_file`` None means the
    password comes from the environment (``RESTIC_PASSWORD``) set by the
    executor. ``extra`` is appended verbatim, e.g. ``("-o", "s3.connections=8")``.
    """

    repository: str
    cache_dir: str | None
    password_file: str | None
    extra: tuple[str, ...] = ()


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------

# Full ids are 64 hex digits; restic prints 8-digit short ids. Any prefix of at
# least 8 digits is accepted; "latest" is refused on purpose: the agent always
# names the exact snapshot it means.
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{8,64}")

# --read-data-subset forms restic 0.14 accepts: "n/t", "x%" / "x.y%", or a
# size in bytes with an optional k/m/g/t suffix.
_SUBSET_PART = re.compile(r"([0-9]+)/([0-9]+)")
_SUBSET_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
_SUBSET_SIZE = re.compile(r"([0-9]+)[kKmMgGtT]?")


def _check_snapshot_id(snapshot_id: str) -> str:
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise ValueError(f"not a restic snapshot id: {snapshot_id!r}")
    return snapshot_id


def _check_tag(tag: str) -> str:
    # restic splits a --tag value on ',', so a comma would silently turn one
    # tag into two.
    if not isinstance(tag, str) or not tag:
        raise ValueError("a restic tag must not be empty")
    if "," in tag:
        raise ValueError(f"a restic tag must not contain ',': {tag!r}")
    return tag


def check_read_data_subset(subset: str, size_pattern: re.Pattern[str] = _SUBSET_SIZE) -> str:
    """Return ``subset`` if it is "n/t", "x%" or a size that ``size_pattern`` accepts; raises ValueError.

    Shared with rustic, whose size syntax is wider (it is passed in)."""
    if m := _SUBSET_PART.fullmatch(subset):
        n, t = int(m.group(1)), int(m.group(2))
        if 1 <= n <= t:
            return subset
    elif m := _SUBSET_PERCENT.fullmatch(subset):
        if 0 < float(m.group(1)) <= 100:
            return subset
    elif m := size_pattern.fullmatch(subset):
        if int(m.group(1)) > 0:
            return subset
    raise ValueError(
        f"read_data_subset must be 'n/t' (1 <= n <= t), 'x%' (0 < x <= 100) "
        f"or a size such as '500M': {subset!r}"
    )


# --------------------------------------------------------------------------
# Argv builders
# --------------------------------------------------------------------------


def _common(binary: str, common: CommonOptions) -> list[str]:
    if not binary:
        raise ValueError("the restic binary must be named")
    if not common.repository:
        raise ValueError("the repository must be named")
    argv = [binary, "-r", common.repository]
    if common.password_file is not None:
        argv += ["--password-file", common.password_file]
    if common.cache_dir is not None:
        argv += ["--cache-dir", common.cache_dir]
    else:
        argv.append("--no-cache")
    argv.extend(common.extra)
    return argv


def init_args(binary: str, common: CommonOptions) -> list[str]:
    """``restic init``: create the repository."""
    return [*_common(binary, common), "init"]


def backup_args(
    binary: str,
    common: CommonOptions,
    *,
    paths: Sequence[str],
    host: str,
    tags: Sequence[str],
    parent: str | None = None,
    exclude_caches: bool = False,
) -> list[str]:
    """``restic backup --json``: one ``--tag`` per tag, paths after ``--``.

    Raises ValueError for no paths, an empty host, a tag that is empty or
    contains ',', or a malformed parent id.
    """
    if isinstance(paths, str) or not paths:
        raise ValueError("backup needs at least one path")
    if any(not p for p in paths):
        raise ValueError("backup paths must not be empty")
    if not host:
        raise ValueError("backup needs a host name")
    argv = [*_common(binary, common), "backup", "--json", "--host", host]
    for tag in tags:
        argv += ["--tag", _check_tag(tag)]
    if parent is not None:
        argv += ["--parent", _check_snapshot_id(parent)]
    if exclude_caches:
        argv.append("--exclude-caches")
    return [*argv, "--", *paths]


def backup_paths(subpath: str = "") -> list[str]:
    """What a backup gives restic, relative to the view root (the engine runs there): the two
    roots ``project`` and ``persist``, or ``project/<subpath>`` only, which restic stores at
    ``/project/<subpath>`` (so a restore of that path finds it where a whole backup has it).

    Raises ValueError for a subpath that is absolute, not normalised or climbs with "..".
    """
    if not subpath:
        return ["project", "persist"]
    parts = subpath.split("/")
    if subpath.startswith("/") or "\x00" in subpath or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"a backup subpath must be relative and normalised: {subpath!r}")
    return [f"project/{subpath}"]


# Listing commands take no lock. Two lockers race on S3: one lists the other's
# lock, the other deletes it, and restic 0.14 then retries loading the missing
# lock file for about 45 s (restic issue #1523). Reads need no lock: a snapshot
# that vanishes meanwhile is simply not listed.
READ_ONLY = ("--no-lock",)


def snapshots_args(
    binary: str,
    common: CommonOptions,
    *,
    host: str | None = None,
    tags: Sequence[str] = (),
    ids: Sequence[str] = (),
) -> list[str]:
    """``restic --no-lock snapshots --json``, optionally filtered.

    ``tags`` are passed as one comma-joined ``--tag`` list, which restic reads
    as "carries every one of these tags". Raises ValueError for a bad tag or id.
    """
    argv = [*_common(binary, common), *READ_ONLY, "snapshots", "--json"]
    if host is not None:
        if not host:
            raise ValueError("host filter must not be empty")
        argv += ["--host", host]
    if tags:
        argv += ["--tag", ",".join(_check_tag(t) for t in tags)]
    if ids:
        argv += ["--", *(_check_snapshot_id(i) for i in ids)]
    return argv


# restic >= 0.17 ``restore --overwrite`` behaviours.
OVERWRITE_MODES = frozenset({"always", "if-changed", "if-newer", "never"})


def restore_args(
    binary: str,
    common: CommonOptions,
    *,
    snapshot_id: str,
    target: str,
    include: Sequence[str] = (),
    verify: bool = False,
    json_output: bool = False,
    overwrite: str | None = None,
    delete: bool = False,
) -> list[str]:
    """``restic restore [--json] --target T [--overwrite MODE] [--delete] [--include P]... [--verify] -- ID``.

    ``json_output``, ``overwrite`` and ``delete`` exist from restic 0.17 (the caller probes
    the version): ``--json`` prints status lines and a summary (:func:`parse_restore_line`),
    ``--overwrite if-changed --delete`` makes an existing target equal to the snapshot,
    rewriting only files whose size or mtime differ and deleting what the snapshot lacks.
    Raises ValueError for a malformed id, an empty target or include pattern, an unknown
    overwrite mode, or ``delete`` with include patterns (it would delete everything else).
    """
    if not target:
        raise ValueError("restore needs a target directory")
    if overwrite is not None and overwrite not in OVERWRITE_MODES:
        raise ValueError(f"unknown restore overwrite mode: {overwrite!r}")
    if delete and include:
        raise ValueError("restore --delete with include patterns would delete what they leave out")
    argv = [*_common(binary, common), "restore"]
    if json_output:
        argv.append("--json")
    argv += ["--target", target]
    if overwrite is not None:
        argv += ["--overwrite", overwrite]
    if delete:
        argv.append("--delete")
    for pattern in include:
        if not pattern:
            raise ValueError("include patterns must not be empty")
        argv += ["--include", pattern]
    if verify:
        argv.append("--verify")
    return [*argv, "--", _check_snapshot_id(snapshot_id)]


def check_args(
    binary: str,
    common: CommonOptions,
    *,
    read_data: bool = False,
    read_data_subset: str | None = None,
) -> list[str]:
    """``restic check [--read-data | --read-data-subset S]``.

    Raises ValueError if both are given or the subset is malformed.
    """
    argv = [*_common(binary, common), "check"]
    if read_data and read_data_subset is not None:
        raise ValueError("read_data and read_data_subset exclude each other")
    if read_data:
        argv.append("--read-data")
    elif read_data_subset is not None:
        argv += ["--read-data-subset", check_read_data_subset(read_data_subset)]
    return argv


def unlock_args(binary: str, common: CommonOptions) -> list[str]:
    """``restic unlock``: remove stale locks only (never ``--remove-all``).

    restic 0.14 calls a lock stale when it is older than 30 minutes (a live restic refreshes
    its locks every 5 minutes), or when it was written on this host (its ``hostname`` equals
    this host's ``os.Hostname()``) by a ``pid`` that no longer exists (signal 0 fails). So a
    live process's lock, here or on another host, is never removed; a dead process's lock on
    another host only after 30 minutes.
    """
    return [*_common(binary, common), "unlock"]


# The subcommands the agent runs that write a lock file (backup and restore a shared one, check,
# forget and prune an exclusive one); the listing commands run with READ_ONLY, init locks nothing.
LOCKING_COMMANDS = frozenset({"backup", "restore", "check", "forget", "prune"})

# Failures after which a restic may have died holding its lock: stopped by the agent (cancelled,
# timed out, too much output), killed by a signal or crashed (Internal), or out of space while
# it ran. restic removes its own lock on every failure it reports itself (wrong password,
# missing repository, "locked"); an unreachable repository (Unavailable, a stall) cannot be
# unlocked now either, so the next exclusive command or Verify removes that lock.
_MAY_LEAVE_LOCK = (errors.Cancelled, errors.DeadlineExceeded, errors.Internal, errors.ResourceExhausted)


def may_leave_lock(action: str, error: BaseException) -> bool:
    """Whether a run of ``action`` that ended with ``error`` may have left its lock behind, so
    that ``restic unlock`` should follow. ``asyncio.CancelledError`` counts as stopped."""
    if action not in LOCKING_COMMANDS:
        return False
    return isinstance(error, (asyncio.CancelledError, *_MAY_LEAVE_LOCK))


def stats_restore_size_args(binary: str, common: CommonOptions, snapshot_id: str) -> list[str]:
    """``restic --no-lock stats --json --mode restore-size -- ID``."""
    return [
        *_common(binary, common),
        *READ_ONLY,
        "stats",
        "--json",
        "--mode",
        "restore-size",
        "--",
        _check_snapshot_id(snapshot_id),
    ]


def cat_config_args(binary: str, common: CommonOptions) -> list[str]:
    """``restic cat config``: cheap probe that the repository exists and opens."""
    return [*_common(binary, common), "cat", "config"]


@dataclass(frozen=True)
class KeepPolicy:
    """How many snapshots each rule keeps (restic ``--keep-*``); 0 = the rule is off."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def flags(self) -> list[str]:
        flags = []
        for name in ("last", "hourly", "daily", "weekly", "monthly"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"keep_{name} must be a count >= 0, got {value!r}")
            if value:
                flags += [f"--keep-{name}", str(value)]
        if not flags:
            raise ValueError("a keep policy needs at least one rule above 0 (it would forget every snapshot)")
        return flags


def forget_plan_args(binary: str, common: CommonOptions, *, host: str, policy: KeepPolicy) -> list[str]:
    """``restic forget --json --dry-run --host H --group-by host --keep-...``: what the policy would
    remove, without removing it. Grouped by host only: snapshot paths name the view root the
    engine ran in, which differed between agents before the fixed one (agent/backends/views.py)
    and still does for an agent that is not root, and must not split one project's history."""
    if not host or host.startswith("-"):
        raise ValueError(f"forget needs a host name, got {host!r}")
    return [*_common(binary, common), "forget", "--json", "--dry-run", "--host", host, "--group-by", "host",
            *policy.flags()]


def parse_forget_plan(stdout: str) -> tuple[list[Snapshot], list[Snapshot]]:
    """(keep, remove) of ``forget --json --dry-run``: groups of ``{"keep": [...], "remove": [...] | null}``.

    Empty output (no snapshot of the host) is ([], []). Raises :class:`agent.errors.Internal`
    on anything else.
    """
    if not stdout.strip():
        return [], []
    try:
        groups = json.loads(stdout)
        if not isinstance(groups, list):
            raise TypeError("not a JSON list")
        keep: list[Snapshot] = []
        remove: list[Snapshot] = []
        for group in groups:
            if not isinstance(group, dict):
                raise TypeError("a group is not an object")
            keep += [_snapshot(s) for s in group.get("keep") or []]
            remove += [_snapshot(s) for s in group.get("remove") or []]
        return keep, remove
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal("restic forget printed output that is not a forget plan",
                              detail=f"{exc}: {stdout[:2000]}") from exc


def prune_args(binary: str, common: CommonOptions) -> list[str]:
    """``restic prune``: remove the data no snapshot references any more."""
    return [*_common(binary, common), "prune"]


def forget_args(binary: str, common: CommonOptions, snapshot_ids: Sequence[str]) -> list[str]:
    """``restic forget -- ID...`` (no prune). Raises ValueError for no or bad ids."""
    if isinstance(snapshot_ids, str) or not snapshot_ids:
        raise ValueError("forget needs at least one snapshot id")
    return [*_common(binary, common), "forget", "--", *(_check_snapshot_id(i) for i in snapshot_ids)]


def _check_snapshot_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{what} path must be absolute inside the snapshot: {path!r}")
    if "\x00" in path:
        raise ValueError(f"{what} path must not contain NUL: {path!r}")
    return path


def ls_args(
    binary: str,
    common: CommonOptions,
    snapshot_id: str,
    path: str | None = None,
    *,
    recursive: bool = False,
) -> list[str]:
    """``restic --no-lock ls --json [--recursive] -- ID [PATH]``.

    ``path`` must be absolute inside the snapshot (restic 0.14 itself refuses
    a relative one: "All path filters must be absolute"). restic reads it as
    a directory filter: without ``recursive`` it prints PATH's own node and
    its direct children, with ``recursive`` PATH and its whole subtree; a
    PATH naming a file prints that file, a missing PATH nothing but the
    snapshot line. Without a path restic lists the whole snapshot.
    """
    argv = [*_common(binary, common), *READ_ONLY, "ls", "--json"]
    if recursive:
        argv.append("--recursive")
    argv += ["--", _check_snapshot_id(snapshot_id)]
    if path is not None:
        argv.append(_check_snapshot_path(path, "ls"))
    return argv


# restic matches find patterns as globs: Go's path.Match per component, plus
# "**" across components; a backslash makes the next character literal.
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def find_pattern(path: str) -> str:
    """An absolute snapshot path as a ``restic find`` pattern matching exactly that path.

    ``"/project/x*[y]?.txt"`` → ``"/project/x\\*\\[y\\]\\?.txt"``. A leading '/'
    anchors the pattern at the snapshot root (without it restic matches any
    path that ends so). Raises ValueError for a relative path.
    """
    return _GLOB_SPECIAL.sub(r"\\\1", _check_snapshot_path(path, "find"))


def find_args(binary: str, common: CommonOptions, snapshot_id: str, paths: Sequence[str]) -> list[str]:
    """``restic --no-lock find --json --snapshot ID -- PATTERN...`` for exact snapshot paths.

    restic's ``ls --json`` carries no symlink target; ``find --json`` does
    ("linktarget"), so this is how the target of a symlink is learnt. Each
    path is escaped by :func:`find_pattern`; restic prints the nodes that
    match any of them, and for a directory everything below it as well.
    Raises ValueError for no paths, a relative path or a bad id.
    """
    if isinstance(paths, str) or not paths:
        raise ValueError("find needs at least one path")
    patterns = [find_pattern(p) for p in paths]
    return [
        *_common(binary, common),
        *READ_ONLY,
        "find",
        "--json",
        "--snapshot",
        _check_snapshot_id(snapshot_id),
        "--",
        *patterns,
    ]


def diff_args(binary: str, common: CommonOptions, base_snapshot_id: str, snapshot_id: str) -> list[str]:
    """``restic --no-lock diff --json --metadata -- BASE ID``: one "change" line per entry the
    snapshots differ in (:func:`parse_diff`). ``--metadata`` (restic 0.14 has it) adds the
    entries whose node metadata alone changed. Raises ValueError for a malformed id."""
    return [*_common(binary, common), *READ_ONLY, "diff", "--json", "--metadata", "--",
            _check_snapshot_id(base_snapshot_id), _check_snapshot_id(snapshot_id)]


# restic diff's modifier characters (its --help): + added, - removed, T type changed, M content
# modified, ? content changed while all metadata is the same (newer versions), U metadata only.
_DIFF_MODIFIERS = frozenset("+-TMU?")


def _diff_change(modifier: str) -> str:
    """A restic diff modifier ("+", "-", "M", "TU", "U", "M?" …) as a DiffEntry change."""
    if not modifier or not set(modifier) <= _DIFF_MODIFIERS:
        raise ValueError(f"unknown diff modifier {modifier!r}")
    if modifier == "+":
        return "added"
    if modifier == "-":
        return "removed"
    if "+" in modifier or "-" in modifier:
        raise ValueError(f"unknown diff modifier {modifier!r}")
    if "T" in modifier:
        return "type"
    if "M" in modifier or "?" in modifier:
        return "content"
    return "metadata"


def parse_diff(stdout: str) -> list[DiffEntry]:
    """Parse ``restic diff --json --metadata`` (:func:`diff_args`): its "change" lines, in
    restic's order, ending with one "statistics" line.

    restic 0.14.0 and 0.18.1 print the same (recorded in
    ``tests/unit/samples/restic/diff_*_v0.14.0.stdout.jsonl`` and ``…_v0.18.1…``):
    ``{"message_type":"change","path":"/project/a/","modifier":"TU"}``, the path absolute, a
    directory's (in the newer snapshot; the older one for "-") ending in "/", names as they are
    (JSON escapes a newline). restic compares files by their data blob lists ("M"), so a content
    change with size and mtime kept is listed. Below a type-changed directory nothing is listed;
    every entry inside an added or removed directory is. Raises :class:`agent.errors.Internal` for
    a line that is not such an object, an unknown modifier, or no statistics line (a run that
    did not finish)."""
    try:
        entries: list[DiffEntry] = []
        finished = False
        for msg in json_fields.json_objects(stdout):
            kind = msg.get("message_type")
            if kind == "statistics":
                finished = True
            elif kind == "change":
                if finished:
                    raise TypeError("a change after the statistics")
                raw = msg["path"]
                if not isinstance(raw, str) or not raw.startswith("/") or "\x00" in raw:
                    raise TypeError(f"change path {raw!r} is not absolute")
                path = raw.rstrip("/")
                if not path or any(part in ("", ".", "..") for part in path.split("/")[1:]):
                    raise TypeError(f"change path {raw!r} is not normalised")
                modifier = msg["modifier"]
                if not isinstance(modifier, str):
                    raise TypeError("modifier is not a string")
                entries.append(DiffEntry(path=path, change=_diff_change(modifier), is_dir=raw.endswith("/")))
            else:
                raise TypeError(f"unknown message type {kind!r}")
        if not finished:
            raise TypeError("no statistics line: the diff did not finish")
        return entries
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal("restic diff printed output that is not a list of changes",
                              detail=f"{exc}: {stdout[:2000]}") from exc


# Include patterns of one ``restic restore`` (restic matches every node against each, so a few
# hundred keep a run cheap) and their total length (far below ARG_MAX).
INCLUDE_BATCH = 500
INCLUDE_BATCH_CHARS = 256 * 1024


def include_batches(paths: Sequence[str]) -> list[list[str]]:
    """``paths`` (absolute in a snapshot) as ``--include`` patterns matching exactly them and
    what is below them (:func:`find_pattern`). restic's include filter (internal/filter/filter.go,
    the same from 0.14): the pattern is cleaned and split on "/", a component without any of
    ``\\[]*?`` is compared as it is, any other with Go's filepath.Match (a backslash makes the next
    character literal); an absolute pattern matches a path whose leading components it matches,
    so a directory's pattern takes everything below it. Split into batches of at most
    :data:`INCLUDE_BATCH` patterns and :data:`INCLUDE_BATCH_CHARS` characters. Raises
    ValueError for a relative path or "/"."""
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path in paths:
        if not path.strip("/"):
            raise ValueError("restoring the snapshot root is a whole restore, not a path")
        pattern = find_pattern(path)
        if current and (len(current) >= INCLUDE_BATCH or size + len(pattern) > INCLUDE_BATCH_CHARS):
            batches.append(current)
            current, size = [], 0
        current.append(pattern)
        size += len(pattern)
    if current:
        batches.append(current)
    return batches


def dump_args(binary: str, common: CommonOptions, snapshot_id: str, path: str) -> list[str]:
    """``restic --no-lock dump -- ID PATH``: the content of one file, on stdout.

    restic 0.14 writes a file's bytes as they are, but a directory as a tar
    archive of it, so callers make sure PATH is a regular file first
    (:func:`agent.browse.check_readable`). For a symlink, a path through a
    directory symlink or a missing path restic exits 2 ("should be a file,
    but is a \"symlink\"", "should be a dir, …", "not found in snapshot"),
    see :data:`STDERR_RULES`. ``path`` must be absolute and not "/" (the whole
    snapshot as a tar archive). Raises ValueError otherwise or for a bad id.
    """
    if path == "/" or (isinstance(path, str) and not path.strip("/")):
        raise ValueError("dump of the snapshot root would write the whole snapshot as an archive")
    return [
        *_common(binary, common),
        *READ_ONLY,
        "dump",
        "--",
        _check_snapshot_id(snapshot_id),
        _check_snapshot_path(path, "dump"),
    ]


def version_args(binary: str) -> list[str]:
    """``restic version``."""
    if not binary:
        raise ValueError("the restic binary must be named")
    return [binary, "version"]


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------

# restic clears the terminal line with ESC[2K before a status line when it
# thinks it writes to a terminal.
_ANSI_CSI = json_fields.ANSI_CSI


_int = json_fields.int_field
_float = json_fields.float_field
_str = json_fields.str_field
_strs = json_fields.strs_field


def _error_text(error: object) -> str:
    """The message of a backup "error" object.

    restic >= 0.17 writes ``{"message": "..."}``. restic 0.14 serialises the Go
    error value itself: ``{"Op": "open", "Path": "...", "Err": 13}`` for an
    ``*os.PathError`` and ``{}`` for error types without exported fields.
    """
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return ""
    message = error.get("message")
    if isinstance(message, str) and message:
        return message
    op, path, err = error.get("Op"), error.get("Path"), error.get("Err")
    if isinstance(err, int) and not isinstance(err, bool):
        reason = os.strerror(err) if err in errno.errorcode else f"errno {err}"
    elif isinstance(err, str):
        reason = err
    else:
        reason = ""
    head = " ".join(str(p) for p in (op, path) if isinstance(p, str) and p)
    if head and reason:
        return f"{head}: {reason}"
    if head or reason:
        return head or reason
    return "restic gave no error text"


def parse_backup_line(line: str) -> BackupStatus | BackupSummary | BackupItemError | None:
    """Parse one line of ``restic backup --json`` stdout or stderr.

    Returns None for anything that is not a JSON object of a known message
    type (plain text, "verbose_status", truncated lines …); never raises.
    """
    msg = json_fields.json_object_line(line)
    if msg is None:
        return None
    try:
        kind = msg.get("message_type")
        if kind == "status":
            remaining = msg.get("seconds_remaining")
            return BackupStatus(
                percent=_float(msg, "percent_done") * 100.0,
                files_done=_int(msg, "files_done"),
                files_total=_int(msg, "total_files"),
                bytes_done=_int(msg, "bytes_done"),
                bytes_total=_int(msg, "total_bytes"),
                seconds_elapsed=_float(msg, "seconds_elapsed"),
                seconds_remaining=None if remaining is None else _float(msg, "seconds_remaining"),
                current_files=_strs(msg, "current_files"),
            )
        if kind == "summary":
            return BackupSummary(
                snapshot_id=_str(msg, "snapshot_id"),
                files_new=_int(msg, "files_new"),
                files_changed=_int(msg, "files_changed"),
                files_unmodified=_int(msg, "files_unmodified"),
                data_added=_int(msg, "data_added"),
                total_files_processed=_int(msg, "total_files_processed"),
                total_bytes_processed=_int(msg, "total_bytes_processed"),
                total_duration=_float(msg, "total_duration"),
            )
        if kind == "error":
            return BackupItemError(
                item=_str(msg, "item"),
                during=_str(msg, "during"),
                message=_error_text(msg.get("error")),
            )
        return None
    except (ValueError, TypeError, RecursionError):
        return None


def parse_restore_line(line: str) -> RestoreStatus | RestoreSummary | None:
    """Parse one line of ``restic restore --json`` stdout (restic >= 0.17).

    restic 0.18.1 prints ``{"message_type":"status","seconds_elapsed":…,"percent_done":…,
    "total_files":…,"files_restored":…,"total_bytes":…,"bytes_restored":…}`` lines and ends
    with ``"message_type":"summary"`` (the same fields, plus ``files_skipped``,
    ``files_deleted`` and ``bytes_skipped`` when not zero); recorded in
    ``tests/unit/samples/restic/restore_v0.18.1.stdout.jsonl``. Returns None for anything
    else (plain text, "verbose_status", truncated lines …); never raises.
    """
    msg = json_fields.json_object_line(line)
    if msg is None:
        return None
    try:
        kind = msg.get("message_type")
        if kind == "status":
            return RestoreStatus(
                percent=_float(msg, "percent_done") * 100.0,
                files_done=_int(msg, "files_restored"),
                files_total=_int(msg, "total_files"),
                bytes_done=_int(msg, "bytes_restored"),
                bytes_total=_int(msg, "total_bytes"),
                seconds_elapsed=_float(msg, "seconds_elapsed"),
            )
        if kind == "summary":
            return RestoreSummary(
                files_total=_int(msg, "total_files"),
                files_restored=_int(msg, "files_restored"),
                files_skipped=_int(msg, "files_skipped"),
                files_deleted=_int(msg, "files_deleted"),
                bytes_total=_int(msg, "total_bytes"),
                bytes_restored=_int(msg, "bytes_restored"),
                bytes_skipped=_int(msg, "bytes_skipped"),
                seconds_elapsed=_float(msg, "seconds_elapsed"),
            )
        return None
    except (ValueError, TypeError, RecursionError):
        return None


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("time is not a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$"
)


def parse_time_ns(value: object) -> int:
    """An RFC 3339 time as restic prints it ("2020-01-02T03:04:05.123456789+01:00", up to nine
    fraction digits) → nanoseconds since the epoch, exactly (a datetime keeps microseconds
    only). Raises TypeError for anything else."""
    if not isinstance(value, str) or not (match := _TIME.match(value)):
        raise TypeError("time is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    try:
        whole = int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) - offset
    except ValueError as exc:
        raise TypeError(f"time out of range: {exc}") from None
    return whole * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def _optional_id(obj: dict, key: str) -> int | None:
    if key not in obj:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{key} is not an id")
    return value


def _snapshot(obj: object) -> Snapshot:
    if not isinstance(obj, dict):
        raise TypeError("snapshot is not an object")
    snapshot_id = obj["id"]
    if not isinstance(snapshot_id, str) or not snapshot_id:
        raise TypeError("snapshot id missing")
    short_id = _str(obj, "short_id") or snapshot_id[:8]
    return Snapshot(
        id=snapshot_id,
        short_id=short_id,
        time=_parse_time(obj["time"]),
        hostname=_str(obj, "hostname"),
        paths=_strs(obj, "paths"),
        tags=_strs(obj, "tags"),
        tree=_str(obj, "tree"),
        username=_str(obj, "username"),
    )


def parse_snapshots(stdout: str) -> list[Snapshot]:
    """Parse ``restic snapshots --json`` output, in restic's order.

    Accepts the plain list and the ``--group-by`` shape
    ``[{"group_key": ..., "snapshots": [...]}]``. Raises
    :class:`agent.errors.Internal` on anything else.
    """
    try:
        data = json.loads(stdout)
        if not isinstance(data, list):
            raise TypeError("not a JSON list")
        result: list[Snapshot] = []
        for entry in data:
            if isinstance(entry, dict) and "snapshots" in entry and "id" not in entry:
                result.extend(_snapshot(s) for s in entry["snapshots"] or [])
            else:
                result.append(_snapshot(entry))
        return result
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal(
            "restic snapshots printed output that is not a snapshot list",
            detail=f"{exc}: {stdout[:2000]}",
        ) from exc


def parse_restore_size(stdout: str) -> RestoreSize:
    """Parse ``restic stats --json --mode restore-size``; raises Internal if malformed."""
    try:
        data = json.loads(stdout)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if "total_size" not in data or "total_file_count" not in data:
            raise KeyError("total_size/total_file_count missing")
        return RestoreSize(
            total_bytes=_int(data, "total_size"),
            total_files=_int(data, "total_file_count"),
        )
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal(
            "restic stats printed output that is not a restore size",
            detail=f"{exc}: {stdout[:2000]}",
        ) from exc


# Go's os.FileMode, as restic prints "mode": the permission bits are the low
# nine; type and special bits sit high (ModeDir 1<<31, ModeSymlink 1<<27,
# ModeNamedPipe 1<<25, ModeSetuid 1<<23, ModeSetgid 1<<22, ModeSticky 1<<20).
_GO_MODE_SPECIAL = ((1 << 23, 0o4000), (1 << 22, 0o2000), (1 << 20, 0o1000))
_NODE_TYPES = {"file": "file", "dir": "dir", "symlink": "symlink"}


def _posix_mode(obj: dict, key: str = "mode") -> int:
    """Go os.FileMode → POSIX permission bits (0o7777)."""
    go_mode = _int(obj, key)
    if go_mode < 0 or go_mode >= 1 << 32:
        raise TypeError(f"{key} is not a Go file mode")
    mode = go_mode & 0o777
    for go_bit, posix_bit in _GO_MODE_SPECIAL:
        if go_mode & go_bit:
            mode |= posix_bit
    return mode


def _tree_node(obj: object) -> TreeNode:
    """A node object of ``ls --json`` or a match of ``find --json``."""
    if not isinstance(obj, dict):
        raise TypeError("node is not an object")
    path = obj["path"]
    if not isinstance(path, str) or not path.startswith("/"):
        raise TypeError("node path is not absolute")
    kind = obj["type"]
    if not isinstance(kind, str) or not kind:
        raise TypeError("node type missing")
    # find --json (0.14) has no "name"; it is the last path component.
    name = _str(obj, "name") or path.rsplit("/", 1)[-1]
    # restic names the target "linktarget"; its documentation says "link_target".
    link_target = _str(obj, "linktarget") or _str(obj, "link_target")
    return TreeNode(
        path=path,
        name=name,
        type=_NODE_TYPES.get(kind, "other"),
        size=_int(obj, "size"),
        mode=_posix_mode(obj),
        mtime=_parse_time(obj["mtime"]),
        link_target=link_target if kind == "symlink" else "",
        raw_type=kind,
        uid=_optional_id(obj, "uid"),
        gid=_optional_id(obj, "gid"),
        mtime_ns=parse_time_ns(obj["mtime"]),
    )


def tree_node(obj: object) -> TreeNode:
    """One node object of restic's repository format with its ``path`` added (what ``ls --json``
    and ``find --json`` print; the rustic driver reads tree blobs through it). Raises
    TypeError/KeyError/ValueError when a field is missing or mistyped."""
    return _tree_node(obj)


def parse_ls(stdout: str) -> list[TreeNode]:
    """Parse ``restic ls --json``: the nodes after the snapshot line, in restic's order.

    restic 0.14 prints one JSON object per line: first the snapshot
    (``"struct_type": "snapshot"``), then one ``"struct_type": "node"`` per
    node, its path absolute inside the snapshot; restic >= 0.17 adds
    ``message_type`` with the same values. Nodes carry no symlink target
    (see :func:`find_args`). Objects of other types are skipped.

    An empty output is what restic 0.14 prints (exit code 0, "Ignoring …: no
    matching ID found for prefix" on stderr) for a snapshot id that matches
    nothing: :class:`agent.errors.NotFound`. Anything else that is not this
    shape (a line that is not a JSON object, a node before the snapshot
    line, a node with a missing or mistyped field) raises
    :class:`agent.errors.Internal`.
    """
    if not stdout.strip():
        raise errors.SnapshotNotFound("restic ls found no snapshot with this id")
    try:
        nodes: list[TreeNode] = []
        seen_snapshot = False
        for msg in json_fields.json_objects(stdout):
            kind = msg.get("message_type") or msg.get("struct_type")
            if kind == "snapshot":
                seen_snapshot = True
            elif kind == "node":
                if not seen_snapshot:
                    raise TypeError("node before the snapshot line")
                nodes.append(_tree_node(msg))
        if not seen_snapshot:
            raise TypeError("no snapshot line")
        return nodes
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal(
            "restic ls printed output that is not a node listing",
            detail=f"{exc}: {stdout[:2000]}",
        ) from exc


def parse_find(stdout: str) -> list[TreeNode]:
    """Parse ``restic find --json``: the matches of every snapshot, in restic's order.

    restic prints one JSON array of ``{"matches": [...], "hits": n,
    "snapshot": id}``, ``[]`` when nothing matched. Match objects are nodes
    with the symlink target ("linktarget") and without "name". Raises
    :class:`agent.errors.Internal` on anything else.
    """
    try:
        data = json.loads(stdout)
        if not isinstance(data, list):
            raise TypeError("not a JSON list")
        nodes: list[TreeNode] = []
        for entry in data:
            if not isinstance(entry, dict):
                raise TypeError("snapshot entry is not an object")
            matches = entry["matches"]
            if not isinstance(matches, list):
                raise TypeError("matches is not a list")
            nodes.extend(_tree_node(m) for m in matches)
        return nodes
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal(
            "restic find printed output that is not a match list",
            detail=f"{exc}: {stdout[:2000]}",
        ) from exc


# The oldest restic whose output this module was recorded from (Debian bookworm).
MIN_SUPPORTED_VERSION: tuple[int, int, int] = (0, 14, 0)

# Feature → first restic version that has it (restic CHANGELOG.md).
FEATURES_BY_VERSION: dict[str, tuple[int, int, int]] = {
    # backup --json: NDJSON status lines and a summary line (0.9.5)
    "json-progress": (0, 9, 5),
    # check --read-data-subset in all three forms: n/t, x% (0.12.0) and a size (0.14.0)
    "read-data-subset": (0, 14, 0),
    # restore --json: status and summary lines (0.17.0); the restore's progress events come from
    # them, and its success needs the summary line.
    "restore-json-progress": (0, 17, 0),
    # restore --overwrite if-changed --delete (0.17.0): restore over an existing tree, reading
    # only what differs (Engine.restore_over).
    "restore-over": (0, 17, 0),
    # diff --json --metadata (both recorded from 0.14.0) and restore --include of escaped exact
    # paths: Engine.diff and Engine.restore_paths, the "diff" way of a move's catch-up.
    "snapshot-diff": (0, 14, 0),
    # --json prints a fatal error as {"message_type":"exit_error","code":…,"message":…} on stderr
    # (restic 0.17.0's changelog; recorded here from 0.18.1). classify_failure reads it wherever
    # present, whatever the version: the flag only tells the hub.
    "json-errors": (0, 17, 0),
}


def features(version: tuple[int, int, int]) -> frozenset[str]:
    """The features of restic ``version``; Unimplemented below :data:`MIN_SUPPORTED_VERSION`."""
    if tuple(version) < MIN_SUPPORTED_VERSION:
        raise errors.Unimplemented(
            "restic {}.{}.{} is older than the oldest supported version {}.{}.{}".format(
                *version, *MIN_SUPPORTED_VERSION
            )
        )
    return frozenset(name for name, first in FEATURES_BY_VERSION.items() if tuple(version) >= first)


_VERSION = re.compile(r"^restic\s+v?(\d+)\.(\d+)\.(\d+)", re.MULTILINE)


def parse_version(stdout: str) -> tuple[int, int, int]:
    """``"restic 0.14.0 compiled with go1.19.8 on linux/amd64"`` → ``(0, 14, 0)``.

    Raises :class:`agent.errors.Internal` if no version is found.
    """
    m = _VERSION.search(stdout)
    if m is None:
        raise errors.Internal("cannot read the restic version", detail=stdout[:500])
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


# Lines of `restic check` that are progress or chatter, not damage. Hints
# printed on stdout ("pack X: not referenced in any index", "additional files
# were found") are non-critical and are never reported as errors.
_CHECK_NOISE = re.compile(
    r"^(?:"
    r"using temporary cache in "
    r"|unable to create temporary directory for cache"
    r"|error removing temporary cache directory"
    r"|create exclusive lock for repository"
    r"|load indexes"
    r"|check all packs"
    r"|check snapshots, trees and blobs"
    r"|read all data"
    r"|read group #"
    r"|\[\d+:\d+(?::\d+)?\]"
    r"|duration: "
    r"|no errors were found"
    r"|Fatal: repository contains errors"
    r"|signal .* received, cleaning up"
    r")"
)
_CHECK_STDOUT_ERROR = re.compile(r"^(?:error\b|Error\b|Fatal: )")


def parse_check_output(stdout: str, stderr: str) -> list[str]:
    """The damage ``restic check`` reported, one line per problem.

    restic 0.14 writes each problem to stderr (pack errors bare, structure
    errors as ``error: ...`` or ``error for tree X:`` followed by indented
    lines, which are joined into ``error for tree X: <problem>``). Progress,
    chatter and the closing "Fatal: repository contains errors" are dropped;
    stdout contributes only lines that start like an error.
    """
    found: list[str] = []

    def scan(lines: Iterable[str], keep: re.Pattern[str] | None) -> None:
        tree_header: str | None = None
        for raw in lines:
            line = _ANSI_CSI.sub("", raw).rstrip()
            if not line.strip():
                tree_header = None
                continue
            if tree_header is not None and line[:1].isspace():
                found.append(f"{tree_header}: {line.strip()}")
                continue
            tree_header = None
            text = line.strip()
            if _CHECK_NOISE.match(text):
                continue
            if keep is not None and not keep.match(text):
                continue
            if text.startswith("error for tree ") and text.endswith(":"):
                tree_header = text[:-1]
                continue
            found.append(text)

    scan(stderr.splitlines(), None)
    scan(stdout.splitlines(), _CHECK_STDOUT_ERROR)
    return found


_DAMAGED_PACK = re.compile(r"(?:Pack ID does not match, want |\bpack )([0-9a-f]{64})\b")
_PACK_SNAPSHOT = re.compile(r'which belongs to snapshot ([0-9a-f]{64})|"snapshot":"([0-9a-f]{64})"')


def damaged_packs(damage: Iterable[str]) -> list[str]:
    """The pack ids named in ``restic check`` damage lines (:func:`parse_check_output`), in order,
    without repeats: "Pack ID does not match, want <id>, got ..." and "pack <id>: ..."."""
    found: list[str] = []
    for line in damage:
        for pack in _DAMAGED_PACK.findall(line):
            if pack not in found:
                found.append(pack)
    return found


def find_packs_args(binary: str, common: CommonOptions, pack_ids: Sequence[str]) -> list[str]:
    """``restic --no-lock find --json --pack ID...``: the snapshots that use blobs of these packs.
    Raises ValueError for no ids or a malformed one."""
    if isinstance(pack_ids, str) or not pack_ids:
        raise ValueError("find --pack needs at least one pack id")
    for pack in pack_ids:
        if not re.fullmatch(r"[0-9a-f]{64}", pack):
            raise ValueError(f"not a pack id: {pack!r}")
    return [*_common(binary, common), *READ_ONLY, "find", "--json", "--pack", *pack_ids]


def parse_pack_snapshots(stdout: str) -> list[str]:
    """Snapshot ids (full) in the output of :func:`find_packs_args`, in order, without repeats.

    restic 0.14 prints a JSON list of the blobs found (each with its "snapshot"); a damaged tree
    it cannot load is reported on stdout as "Unable to load tree X / ... which belongs to
    snapshot Y" (outside the JSON), and that snapshot is affected too.
    """
    found: list[str] = []
    for match in _PACK_SNAPSHOT.finditer(stdout):
        snapshot = match.group(1) or match.group(2)
        if snapshot not in found:
            found.append(snapshot)
    return found


def tag_map(tags: Iterable[str]) -> dict[str, str]:
    """``["layout=v2", "purpose=backup"]`` → ``{"layout": "v2", "purpose": "backup"}``.

    Splits on the first '='; tags without '=' (or with an empty key) are
    ignored; for a repeated key the last one wins.
    """
    result: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if sep and key:
            result[key] = value
    return result


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------


# restic >= 0.17: the exit code alone decides (cmd/restic/main.go).
EXIT_CODE_RULES: dict[int, tuple[type[errors.BucketsError], str]] = {
    10: (errors.NotFound, "repository does not exist"),
    11: (errors.Unavailable, "repository is locked"),
    12: (errors.FailedPrecondition, "wrong repository password"),
    130: (errors.Cancelled, "interrupted"),
}

# restic 0.14 exits 1 for nearly every failure (dump: 2), so the stderr text decides. First
# match wins, and the order matters: restic 0.14 appends "Is there a
# repository at the following location?" to *every* failure to open the
# config file, including refused S3 credentials and unreachable endpoints, so
# the not-found row comes last; and it prefixes *every* failure to write a
# lock file with "unable to create lock in backend", so the lock row comes
# after the network and disk rows that name the real cause.
STDERR_RULES: tuple[FailureRule, ...] = (
    _rule(r"wrong password or no key found", errors.FailedPrecondition, "wrong repository password"),
    _rule(
        r"InvalidAccessKeyId|The AWS Access Key Id you provided does not exist"
        r"|SignatureDoesNotMatch|The request signature we calculated does not match"
        r"|AccessDenied|Access Denied",
        errors.PermissionDenied,
        "the S3 credentials were refused by the storage endpoint",
    ),
    _rule(
        r"connection refused|no such host|i/o timeout|dial tcp|503 Service Unavailable"
        r"|Client\.Timeout|connection reset|no route to host|network is unreachable"
        r"|TLS handshake timeout|SlowDown|Please reduce your request rate",
        errors.Unavailable,
        "repository storage is unreachable",
    ),
    _rule(
        r"no space left on device|disk quota exceeded",
        errors.ResourceExhausted,
        "no space left (disk or quota full)",
        re.IGNORECASE,
    ),
    _rule(
        r"unable to create lock|repository is already locked",
        errors.Unavailable,
        "repository is locked",
    ),
    _rule(
        r"ciphertext verification failed|\bMAC\b|(?i:\bdecrypt)|invalid data returned",
        errors.DataLoss,
        "repository data failed verification",
    ),
    _rule(r"Fatal: repository contains errors", errors.DataLoss, "repository check found errors"),
    _rule(r"config file already exists", errors.AlreadyExists, "repository already exists"),
    # init at a local path that cannot be made (a missing or read-only parent, /proc ...); a
    # full disk was caught above.
    _rule(r"create repository at .* failed", errors.FailedPrecondition, "the repository cannot be created there"),
    # A snapshot id that matches nothing (restore and dump exit 1; ls and
    # find print only "Ignoring ..." and exit 0), then the paths dump cannot
    # dump (exit code 2).
    _rule(r"no matching ID found for prefix", errors.NotFound, "snapshot does not exist"),
    _rule(r"not found in snapshot", errors.NotFound, "path does not exist in the snapshot"),
    _rule(r"should be a \w+, but is a", errors.InvalidArgument, "path is not a regular file"),
    _rule(
        r"Is there a repository at the following location\?|unable to open config file"
        r"|repository does not exist",
        errors.NotFound,
        "repository does not exist",
    ),
)


@dataclass(frozen=True)
class ExitError:
    """restic >= 0.17's structured fatal error: ``--json`` prints it as the last stderr line,
    ``{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}``
    (recorded from 0.18.1 under ``tests/unit/samples/restic/*_v0.18.1.stderr``)."""

    code: int
    message: str


def parse_exit_error(stderr: str) -> ExitError | None:
    """The last ``exit_error`` object on its own line of ``stderr``, or None (restic < 0.17,
    no ``--json``, a truncated line). Never raises."""
    for line in reversed(stderr.splitlines()):
        if '"exit_error"' not in line:
            continue
        msg = json_fields.json_object_line(line)
        if msg is not None and msg.get("message_type") == "exit_error":
            code, message = msg.get("code"), msg.get("message")
            if isinstance(code, int) and not isinstance(code, bool) and isinstance(message, str):
                return ExitError(code=code, message=message)
    return None


# A restic stopped by SIGINT/SIGTERM ends its failing step with "context canceled": its exit_error
# then names that step (e.g. "unable to open config file: context canceled / Is there a repository
# at the following location?"), never a cause; the lines before it may name one (recorded:
# s3_connection_refused_sigint_v0.18.1.stderr).
_CONTEXT_CANCELED = re.compile(r"\bcontext canceled\b")


def _without_exit_errors(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if '"exit_error"' not in line)


def classify_failure(returncode: int, stderr_tail: str, *, action: str) -> errors.BucketsError:
    """Turn a failed restic run into the agent error to raise.

    ``action`` is the restic subcommand ("backup", "restore" …) and appears in
    the short message, e.g. "restic backup failed: repository is locked"; the
    stderr tail goes into ``detail``. restic >= 0.17 exit codes 10/11/12/130
    decide on their own; then restic >= 0.17's JSON ``exit_error`` message
    (:func:`parse_exit_error`), where present, is matched against
    :data:`STDERR_RULES` alone; otherwise the first row matching the whole tail
    decides; anything else is :class:`errors.Internal` (restic's words stay in
    ``detail``, as every stderr text does). An ``exit_error`` of an interrupted restic
    ("context canceled") names no cause: the lines before it are judged, and
    failing a match the run "was stopped by a signal".

    Exit code 3 (:data:`EXIT_INCOMPLETE`) is not a failure of ``backup``: the
    snapshot was written and the caller reports a warning without calling
    this. Should 3 reach here anyway (restic >= 0.17 ``forget`` uses it for
    "failed to remove one or more snapshots"), the stderr rules still apply and
    the fallback says the run was incomplete. Raises ValueError for exit code 0.
    """
    if returncode == EXIT_OK:
        raise ValueError("restic exit code 0 is not a failure")
    detail = stderr_tail.strip()
    if returncode in EXIT_CODE_RULES:
        cls, short = EXIT_CODE_RULES[returncode]
        return cls(f"restic {action} failed: {short}", detail=detail)
    exit_error = parse_exit_error(stderr_tail)
    interrupted = exit_error is not None and _CONTEXT_CANCELED.search(exit_error.message) is not None
    if exit_error is not None and not interrupted:
        # restic's own words for why it stopped: judged alone, so that a file name or a retried
        # request in the lines before cannot decide.
        matched = first_match(STDERR_RULES, exit_error.message)
        if matched is not None:
            return matched.error(f"restic {action} failed: {matched.message}", detail=detail)
    matched = first_match(STDERR_RULES, _without_exit_errors(stderr_tail) if interrupted else stderr_tail)
    if matched is not None:
        return matched.error(f"restic {action} failed: {matched.message}", detail=detail)
    if interrupted:
        return errors.Internal(f"restic {action} was stopped by a signal before it finished", detail=detail)
    if returncode < 0:
        return errors.Internal(f"restic {action} was killed by signal {-returncode}", detail=detail)
    if returncode == EXIT_INCOMPLETE:
        return errors.Internal(f"restic {action} finished incomplete (exit code 3)", detail=detail)
    return errors.Internal(f"restic {action} failed with exit code {returncode}", detail=detail)


_FULL_ID = re.compile(r"[0-9a-f]{64}")


def snapshot_ids_with_prefix(names: Iterable[str], prefix: str) -> list[str]:
    """The names among ``names`` (a repository's ``snapshots/`` files) that are full snapshot ids
    (64 lowercase hex digits) starting with ``prefix``."""
    return sorted(n for n in names if n.startswith(prefix) and _FULL_ID.fullmatch(n))
