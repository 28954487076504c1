"""rustic: profile rendering, pure argv builders, output parsers, failure classification.

Nothing in this module starts a process. :func:`render_profile` writes the
TOML profile the executor stores in a 0600 file; the builders return argument
lists for the one executor; the parsers turn rustic's output into the frozen
domain types of :mod:`agent.engine.restic_args` (rustic writes the same
repository format and the agent reports the same things); and
:func:`classify_failure` turns a failed run into an
:class:`agent.errors.BucketsError`.

Written against the sources of rustic v0.9.0 … v0.11.4 (github.com/rustic-rs/
rustic, tags of the same names) and rustic_core 0.4 … 0.12
(github.com/rustic-rs/rustic_core), and checked against the real rustic 0.11.4
(``scripts/tools.sh``): the ``*_v0.11.4.*`` samples under ``tests/unit/samples/rustic/``
are recorded from it; those of older versions are written by hand from the sources.
What the real 0.11.4 does that the sources did not show: SIGINT/SIGTERM end the run
with exit code **0** (see :func:`interrupted_error`), so success is read from the output
(a backup summary, "restore done."); a key listing the storage refused ends as C002
(wrong password); with ``--json-progress`` the status lines carry whole seconds.
Facts this module relies on:

* ``-P/--use-profile P`` reads ``P + ".toml"``: rustic joins that file name
  onto its config directory, ``/etc/rustic`` and ``.`` and uses the first that
  exists (``src/config.rs`` ``merge_profile``/``get_config_paths``). Joining an
  absolute path replaces the directory, so ``-P /run/x/p`` reads exactly
  ``/run/x/p.toml``. rustic < 0.11.1 appends ``.toml`` even when the name
  already ends in it, so the builders always pass the path *without* the
  suffix. A missing profile is only a warning ("using no config file, none of
  these exist: …"); the run then fails with "No repository given". With ``-P``
  the default profile ``rustic.toml`` is not read.
* rustic exits 0 or 1 (abscissa ``Shutdown::Crash``); clap usage errors exit 2;
  release builds set ``panic = "abort"`` (Cargo.toml), so a panic — e.g. a
  failed write during restore, which rustic_core ``commands/restore.rs``
  unwraps — kills the process with SIGABRT. The final error is printed as
  ``error: <message>`` on stderr; log records as ``[LEVEL] message``.
* ``rustic check`` before 0.10.1 logs damage as ``[ERROR]`` lines and still
  exits 0: callers must read :func:`parse_check_output` as well as the exit code.
* Snapshot tags are a sorted set (``StringList(BTreeSet<String>)``): rustic
  returns them sorted and de-duplicated, and splits every ``--tag`` value on ','.

Every builder starts with the same prefix::

    [binary, "-P", PROFILE_WITHOUT_.toml, "--no-progress" | "--json-progress" "--progress-interval" "500ms",
     subcommand, ...]

and puts ``--`` before positional arguments that come from callers (paths,
snapshot ids), so nothing positional is read as a flag. Secrets never appear in
argv; they live in the profile file only.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent import errors
from agent.failure_rules import FailureRule, first_match
from agent.failure_rules import rule as _rule
from agent.engine import json_fields
from agent.engine import restic_args as ra
from agent.engine.base import (
    BackupStatus, BackupSummary, DiffEntry, RestoreSize, RestoreSummary, Snapshot, TreeNode,
)
from agent.engine.restic_args import backup_paths, check_read_data_subset

# --------------------------------------------------------------------------
# Versions and features
# --------------------------------------------------------------------------

# The oldest rustic this module was checked against; older versions are refused.
MIN_SUPPORTED_VERSION: tuple[int, int, int] = (0, 9, 0)

# Feature → first rustic version that has it (source file in the rustic repo
# at that tag, unless rustic_core is named).
FEATURES_BY_VERSION: dict[str, tuple[int, int, int]] = {
    # backup --as-path PATH (src/commands/backup.rs; present at every tag from v0.4.0).
    # With more than one source rustic refuses: "as-path only works with a
    # single source!" (v0.9.0 says "... single target!").
    "as-path": (0, 4, 0),
    # backup --no-scan (src/commands/backup.rs, first at v0.7.0)
    "no-scan": (0, 7, 0),
    # check --read-data-subset (rustic_core CheckOptions, rustic_core 0.5 = rustic v0.9.1);
    # clap `requires = "read_data"`, so it is always passed with --read-data.
    "read-data-subset": (0, 9, 1),
    # rustic_core 0.7 error type: "`rustic_core` experienced an error related
    # to ..." with codes C001 (MAC), C002 (password), C003 (verification).
    "error-codes": (0, 9, 5),
    # snapshots --json prints [{"group_key": ..., "snapshots": [...]}] (or a
    # flat list when ungrouped) instead of [[group, [...]]] (src/commands/snapshots.rs)
    "snapshots-group-key-json": (0, 10, 0),
    # check exits 1 with "check found errors!" (src/commands/check.rs calls is_ok())
    "check-fails-on-errors": (0, 10, 1),
    # -P NAME.toml no longer becomes NAME.toml.toml (PR #1687)
    "profile-toml-suffix": (0, 11, 1),
    # global --json-progress: NDJSON status lines + a summary line on stdout (PR #1751)
    "json-progress": (0, 11, 3),
    # `rustic version` subcommand (PR #1738); `rustic --version` works everywhere
    "version-command": (0, 11, 3),
    # restore over an earlier restore: incremental (size+mtime, then chunk by chunk) with --delete
    # (rustic_core RestoreOptions). Checked on the running 0.11.4 only, so claimed from there.
    "restore-over": (0, 11, 4),
    # Engine.diff from tree blobs (cat tree-blob: node "content" blob ids, directory "subtree"
    # ids) and Engine.restore_paths; checked on the running 0.11.4 only.
    "snapshot-diff": (0, 11, 4),
    # Engine.restore_paths in one run: restore of the whole snapshot with a --glob pair per path
    # reads and writes only those (restore_paths_args); checked on the running 0.11.4 only.
    "restore-paths": (0, 11, 4),
}


def features(version: tuple[int, int, int]) -> frozenset[str]:
    """The features of rustic ``version`` (from :func:`parse_version`).

    Raises :class:`agent.errors.Unimplemented` for versions older than
    :data:`MIN_SUPPORTED_VERSION`.
    """
    if tuple(version) < MIN_SUPPORTED_VERSION:
        raise errors.Unimplemented(
            "rustic {}.{}.{} is older than the oldest supported version {}.{}.{}".format(
                *version, *MIN_SUPPORTED_VERSION
            )
        )
    return frozenset(name for name, first in FEATURES_BY_VERSION.items() if tuple(version) >= first)


def _require(feats: frozenset[str], feature: str) -> None:
    if feature not in feats:
        raise errors.Unimplemented(f"this rustic version has no {feature}")


# --------------------------------------------------------------------------
# Profile (TOML)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalRepository:
    """A repository in a local directory; ``path`` must be absolute."""

    path: str


@dataclass(frozen=True)
class S3Repository:
    """An S3-compatible bucket through rustic's opendal backend (``opendal:s3``).

    Option names are opendal's ``S3Config`` fields (opendal
    ``core/src/services/s3/config.rs``): ``bucket``, ``root``, ``endpoint``,
    ``region``, ``access_key_id``, ``secret_access_key``. ``isolated`` writes
    ``disable_config_load`` and ``disable_ec2_metadata`` so opendal takes
    credentials from the profile only (never ``AWS_*``, ``~/.aws`` or instance
    metadata). ``options`` are further ``[repository.options]`` entries, e.g.
    ``(("connections", "8"), ("retry", "5"))`` (rustic_backend ``opendal.rs``).
    """

    bucket: str
    root: str
    endpoint: str
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    isolated: bool = True
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Profile:
    """Everything rustic needs to open one repository.

    ``cache_dir`` None means ``no-cache = true``. ``master_key`` (the JSON ``cat masterkey``
    prints) replaces the password in the profile: rustic then skips deriving the key from the
    password, which costs more than a small command itself. Secrets are kept out of ``repr()``.
    """

    repository: LocalRepository | S3Repository
    password: str = field(repr=False)
    cache_dir: str | None = None
    master_key: str | None = field(default=None, repr=False)


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_S3_FIXED_KEYS = frozenset(
    {"bucket", "root", "endpoint", "region", "access_key_id", "secret_access_key",
     "disable_config_load", "disable_ec2_metadata"}
)


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string, quotes included.

    Escapes '"', '\\' and every control character (TOML 1.0 forbids raw
    control characters other than tab, and DEL, in basic strings). Raises
    ValueError for text that is not valid Unicode (lone surrogates).
    """
    if not isinstance(value, str):
        raise TypeError("a TOML string must be a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("TOML strings must be valid Unicode") from exc
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _nonempty(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must not be empty")
    return value


def _local_location(path: str) -> str:
    _nonempty(path, "the repository path")
    if not path.startswith("/"):
        raise ValueError(f"the repository path must be absolute: {path!r}")
    # rustic_backend util.rs splits the location at the first ':' into
    # "<backend>:<path>", so a bare path containing ':' needs the explicit
    # "local:" backend.
    return f"local:{path}" if ":" in path else path


def render_profile(profile: Profile) -> str:
    """The TOML text of ``profile`` for ``rustic -P``.

    Layout (rustic ``config/README.md``, ``config/services/s3_aws.toml``)::

        [repository]
        repository = "/srv/repo"            # or "opendal:s3"
        password = "..."
        cache-dir = "/var/cache/..."        # or: no-cache = true

        [repository.options]                # S3 only; values are strings
        bucket = "..."
        ...

    Raises ValueError for an empty password, a relative local path, an empty
    S3 field, or an extra option whose key is not a bare TOML key or clashes
    with a fixed one.
    """
    _nonempty(profile.password, "the repository password")
    repo = profile.repository
    lines = ["# rustic profile written by the buckets agent", "[repository]"]
    if isinstance(repo, LocalRepository):
        lines.append(f"repository = {toml_string(_local_location(repo.path))}")
    elif isinstance(repo, S3Repository):
        lines.append(f"repository = {toml_string('opendal:s3')}")
    else:
        raise TypeError("repository must be a LocalRepository or an S3Repository")
    if profile.master_key is not None:
        lines.append(f"key = {toml_string(_nonempty(profile.master_key, 'the master key'))}")
    else:
        lines.append(f"password = {toml_string(profile.password)}")
    if profile.cache_dir is None:
        lines.append("no-cache = true")
    else:
        if not profile.cache_dir.startswith("/"):
            raise ValueError(f"cache_dir must be absolute: {profile.cache_dir!r}")
        lines.append(f"cache-dir = {toml_string(profile.cache_dir)}")
    if isinstance(repo, S3Repository):
        options: list[tuple[str, str]] = [
            ("bucket", _nonempty(repo.bucket, "the bucket")),
            ("root", _nonempty(repo.root, "the repository root")),
            ("endpoint", _nonempty(repo.endpoint, "the endpoint")),
            ("region", _nonempty(repo.region, "the region")),
            ("access_key_id", _nonempty(repo.access_key_id, "the access key id")),
            ("secret_access_key", _nonempty(repo.secret_access_key, "the secret access key")),
        ]
        if repo.isolated:
            options += [("disable_config_load", "true"), ("disable_ec2_metadata", "true")]
        seen = set()
        for key, value in repo.options:
            if not isinstance(key, str) or not _BARE_KEY.fullmatch(key):
                raise ValueError(f"not a plain option name: {key!r}")
            if key in _S3_FIXED_KEYS or key in seen:
                raise ValueError(f"option {key!r} is set twice")
            if not isinstance(value, str):
                raise ValueError(f"option {key!r} must be a string (rustic reads strings only)")
            seen.add(key)
            options.append((key, value))
        lines += ["", "[repository.options]"]
        lines += [f"{key} = {toml_string(value)}" for key, value in options]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------

# Any hex prefix of at least 8 digits; "latest" is refused on purpose: the
# agent always names the exact snapshot it means.
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{8,64}")

# read-data-subset forms accepted by rustic_core ReadSubsetOption::from_str
# (commands/check.rs) that are also restic's: "n/m", "x%" and a size. rustic
# reads "n/m" as part n % m, so 1/m … m/m still cover every part once.
_SUBSET_SIZE = re.compile(r"([0-9]+)(?:[kKmMgGtT](?:i?B)?)?")
# prune --max-unused: rustic_core LimitOption ("unlimited", "x%" or a size)
_LIMIT = re.compile(r"unlimited|[0-9]+(?:\.[0-9]+)?%|[0-9]+(?:[kKmMgGtT](?:i?B)?)?")


def _check_snapshot_id(snapshot_id: str) -> str:
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise ValueError(f"not a snapshot id: {snapshot_id!r}")
    return snapshot_id


def _check_word(value: str, what: str) -> str:
    """A value passed after a flag: not empty, and not mistakable for a flag."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must not be empty")
    if value.startswith("-"):
        raise ValueError(f"{what} must not start with '-': {value!r}")
    return value


def _check_tag(tag: str) -> str:
    # rustic splits every --tag value on ',' (StringList::from_str).
    _check_word(tag, "a tag")
    if "," in tag:
        raise ValueError(f"a tag must not contain ',': {tag!r}")
    return tag


def _check_read_data_subset(subset: str) -> str:
    return check_read_data_subset(subset, _SUBSET_SIZE)


def profile_arg(profile_path: str) -> str:
    """The ``-P`` value for the profile file ``profile_path``.

    ``profile_path`` must be absolute and end in ".toml"; the suffix is cut
    because rustic < 0.11.1 always appends it. Raises ValueError otherwise.
    """
    if not isinstance(profile_path, str) or not profile_path.startswith("/"):
        raise ValueError(f"the profile path must be absolute: {profile_path!r}")
    if not profile_path.endswith(".toml") or profile_path.endswith("/.toml"):
        raise ValueError(f"the profile file must be named *.toml: {profile_path!r}")
    return profile_path[: -len(".toml")]


# --------------------------------------------------------------------------
# Argv builders
# --------------------------------------------------------------------------


# rustic writes --json-progress status lines every 10 s unless told otherwise (humantime).
PROGRESS_INTERVAL = "500ms"  # events at least every 0.5 s while a backup runs (the CLI bar moves)


def _common(binary: str, profile_path: str, *, json_progress: bool = False) -> list[str]:
    if not binary:
        raise ValueError("the rustic binary must be named")
    progress = ["--json-progress", "--progress-interval", PROGRESS_INTERVAL] if json_progress else ["--no-progress"]
    return [binary, "-P", profile_arg(profile_path), *progress]


def init_args(binary: str, profile_path: str) -> list[str]:
    """``rustic init``: create the repository the profile names."""
    return [*_common(binary, profile_path), "init"]


def backup_args(
    binary: str,
    profile_path: str,
    *,
    features: frozenset[str],
    paths: Sequence[str],
    host: str,
    tags: Sequence[str],
    label: str | None = None,
    parent: str | None = None,
    as_path: str | None = None,
    no_scan: bool = False,
    json_progress: bool = False,
    init: bool = False,
) -> list[str]:
    """``rustic backup --json``: one ``--tag`` per tag, paths after ``--``.

    ``json_progress`` replaces ``--no-progress`` with the global
    ``--json-progress``; rustic then prints NDJSON status lines and a summary
    line *instead of* the ``--json`` snapshot (both read by
    :func:`parse_backup_output`). ``as_path`` names the snapshot path of a
    single source; ``init`` creates the repository if it has no config yet.

    Raises ValueError for bad arguments (no paths, ``as_path`` with more than
    one path, empty or flag-like host/tag/label, a tag with ',', a malformed
    parent id) and :class:`agent.errors.Unimplemented` when ``features`` lacks
    a requested flag.
    """
    if isinstance(paths, str) or not paths:
        raise ValueError("backup needs at least one path")
    if any(not isinstance(p, str) or not p for p in paths):
        raise ValueError("backup paths must not be empty")
    if json_progress:
        _require(features, "json-progress")
    argv = [*_common(binary, profile_path, json_progress=json_progress), "backup", "--json"]
    argv += ["--host", _check_word(host, "the host name")]
    for tag in tags:
        argv += ["--tag", _check_tag(tag)]
    if label is not None:
        argv += ["--label", _check_word(label, "the label")]
    if parent is not None:
        argv += ["--parent", _check_snapshot_id(parent)]
    if as_path is not None:
        _require(features, "as-path")
        if len(paths) != 1:
            raise ValueError(
                "as_path works with exactly one path (rustic: 'as-path only works with a single source!')"
            )
        argv += ["--as-path", _check_word(as_path, "as_path")]
    if no_scan:
        _require(features, "no-scan")
        argv.append("--no-scan")
    if init:
        argv.append("--init")
    return [*argv, "--", *paths]


# rustic runs in the view root, whose only entries are the project/ and persist/ mounts;
# backing up "." as "/" makes those the snapshot's two roots (rustic would otherwise store
# the view's absolute path, and --as-path takes one source).
WHOLE_SOURCE = "."
WHOLE_AS_PATH = "/"


def backup_source(subpath: str = "") -> tuple[str, str]:
    """(source, as_path) of a backup run in the view root: the whole view as "/", or
    ``project/<subpath>`` stored as ``/project/<subpath>`` (where a restic backup of the same
    subpath puts it). Raises ValueError for a subpath that is absolute, not normalised or
    climbs with "..".
    """
    if not subpath:
        return WHOLE_SOURCE, WHOLE_AS_PATH
    (source,) = backup_paths(subpath)
    return source, "/" + source


def snapshots_args(
    binary: str,
    profile_path: str,
    *,
    host: str | None = None,
    tags: Sequence[str] = (),
    ids: Sequence[str] = (),
) -> list[str]:
    """``rustic snapshots --json``, optionally filtered.

    ``tags`` become one comma-joined ``--filter-tags`` list ("carries all of
    these"); ``host`` becomes ``--filter-host`` (src/filtering.rs).
    """
    argv = [*_common(binary, profile_path), "snapshots", "--json"]
    if host is not None:
        argv += ["--filter-host", _check_word(host, "the host filter")]
    if tags:
        argv += ["--filter-tags", ",".join(_check_tag(t) for t in tags)]
    if ids:
        argv += ["--", *(_check_snapshot_id(i) for i in ids)]
    return argv


def _snapshot_path(snapshot_id: str, path: str | None) -> str:
    _check_snapshot_id(snapshot_id)
    if path is None:
        return snapshot_id
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"a path inside a snapshot must be absolute: {path!r}")
    return f"{snapshot_id}:{path}"


def check_snapshot_path(snapshot_id: str, path: str) -> None:
    """Raise ValueError unless ``snapshot_id`` is a hex id (8 to 64 digits) and ``path`` an
    absolute path inside the snapshot."""
    _snapshot_path(snapshot_id, path)


def restore_args(
    binary: str,
    profile_path: str,
    *,
    snapshot_id: str,
    target: str,
    path: str | None = None,
    only: str | None = None,
    numeric_id: bool = True,
    delete: bool = False,
) -> list[str]:
    """``rustic restore [--numeric-id] [--glob /ONLY --glob /ONLY/**] -- ID[:PATH] TARGET``.

    Unlike restic, ``ID:/project/sub`` restores the *contents* of
    ``/project/sub`` directly into ``target``, and rustic 0.11.4 leaves the
    target directory's own mode and mtime alone. ``only`` (one name, no '/')
    restores just that entry of PATH, with its metadata and everything below it:
    how one directory or file is restored with the metadata the snapshot holds.
    ``numeric_id`` (default on) restores uid/gid numbers as stored; without it
    rustic maps user and group *names* to this host's ids (rustic_core RestoreOptions).
    ``delete`` removes what the target holds beyond the snapshot (rustic's restore is
    incremental: files whose size and mtime match are kept, the rest compared chunk by chunk),
    so an earlier restore of the target becomes the snapshot (Engine.restore_over).
    Raises ValueError for an empty target or an ``only`` that is empty, "." or "..", or has '/',
    or ``delete`` with ``only`` (it would delete the rest of the target).
    """
    if not isinstance(target, str) or not target:
        raise ValueError("restore needs a target directory")
    if delete and only is not None:
        raise ValueError("restore --delete of one entry would delete the rest of the target")
    argv = [*_common(binary, profile_path), "restore"]
    if numeric_id:
        argv.append("--numeric-id")
    if delete:
        argv.append("--delete")
    if only is not None:
        pattern = "/" + glob_literal(only)
        argv += ["--glob", pattern, "--glob", pattern + "/**"]
    return [*argv, "--", _snapshot_path(snapshot_id, path), target]


_GLOB_SPECIAL = frozenset("\\*?[]{}!#")


def glob_literal(name: str) -> str:
    """``name`` (one path component) as a rustic ``--glob`` pattern matching exactly it.

    rustic's globs are gitignore lines (the ``ignore`` crate's overrides): ``\\`` escapes
    a metacharacter, a leading '!' negates, a leading '#' starts a comment and trailing
    spaces are cut unless escaped. Checked against rustic 0.11.4 with names holding each
    of these. Raises ValueError for "", ".", ".." and names with '/' or NUL.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a single path component: {name!r}")
    out = "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in name)
    stripped = out.rstrip(" ")
    return stripped + "\\ " * (len(out) - len(stripped))


def path_glob(path: str) -> str:
    """``path`` (absolute in a snapshot, not "/") as a rustic ``--glob`` pattern matching exactly
    it, anchored at the snapshot root (each component :func:`glob_literal`). Raises ValueError
    for "/" or a component that is not one."""
    if not isinstance(path, str) or not path.startswith("/") or not path.strip("/"):
        raise ValueError(f"not a path below the snapshot root: {path!r}")
    return "/" + "/".join(glob_literal(part) for part in path.strip("/").split("/"))


# One restore run's --glob patterns at most (characters): far below argv's limit.
RESTORE_PATHS_BATCH_CHARS = 64_000


def restore_paths_batches(paths: Sequence[str]) -> list[list[str]]:
    """``paths`` (absolute in a snapshot) split into the batches of :func:`restore_paths_args`
    runs, at most :data:`RESTORE_PATHS_BATCH_CHARS` characters of patterns each. Raises
    ValueError as :func:`path_glob`."""
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path in paths:
        length = 2 * len(path_glob(path)) + 3
        if current and size + length > RESTORE_PATHS_BATCH_CHARS:
            batches.append(current)
            current, size = [], 0
        current.append(path)
        size += length
    if current:
        batches.append(current)
    return batches


def restore_paths_args(binary: str, profile_path: str, *, snapshot_id: str, paths: Sequence[str],
                       target: str) -> list[str]:
    """``rustic restore --numeric-id --glob /P --glob /P/** … -- ID TARGET``: the snapshot's
    exact ``paths`` (absolute) each with its metadata and everything below it, into ``target``
    as the snapshot root; nothing else of the snapshot is read, written or compared (rustic
    0.11.4 prints "Files: N to restore, 0 unchanged" with N the files at or below the paths;
    the directories the paths lie in are left as they are and must exist). Raises ValueError
    for no paths, an empty target or a path :func:`path_glob` refuses."""
    if isinstance(paths, str) or not paths:
        raise ValueError("restore of paths needs at least one path")
    if not isinstance(target, str) or not target:
        raise ValueError("restore needs a target directory")
    _check_snapshot_id(snapshot_id)
    argv = [*_common(binary, profile_path), "restore", "--numeric-id"]
    for path in paths:
        pattern = path_glob(path)
        argv += ["--glob", pattern, "--glob", pattern + "/**"]
    return [*argv, "--", snapshot_id, target]


_EVERYTHING = re.compile(r"0*100(\.0*)?%")


def check_args(
    binary: str,
    profile_path: str,
    *,
    features: frozenset[str],
    read_data: bool = False,
    read_data_subset: str | None = None,
) -> list[str]:
    """``rustic check [--read-data [--read-data-subset S]]``.

    rustic's ``--read-data-subset`` requires ``--read-data``, so a subset
    implies both flags. Raises ValueError for a malformed subset or both
    arguments at once, Unimplemented if the version has no subset reading.
    """
    if read_data and read_data_subset is not None:
        raise ValueError("read_data and read_data_subset exclude each other")
    argv = [*_common(binary, profile_path), "check"]
    if read_data:
        argv.append("--read-data")
    elif read_data_subset is not None:
        _check_read_data_subset(read_data_subset)
        _require(features, "read-data-subset")
        if _EVERYTHING.fullmatch(read_data_subset):
            # rustic 0.11.4 draws a percentage subset at random and at 100% can leave packs unread.
            argv.append("--read-data")
        else:
            argv += ["--read-data", "--read-data-subset", read_data_subset]
    return argv


def forget_args(binary: str, profile_path: str, snapshot_ids: Sequence[str]) -> list[str]:
    """``rustic forget -- ID...`` (no prune). Raises ValueError for no or bad ids.

    With no ids rustic would apply the keep-* policy instead, hence the refusal.
    """
    if isinstance(snapshot_ids, str) or not snapshot_ids:
        raise ValueError("forget needs at least one snapshot id")
    return [*_common(binary, profile_path), "forget", "--", *(_check_snapshot_id(i) for i in snapshot_ids)]


def prune_args(binary: str, profile_path: str, *, max_unused: str | None = None) -> list[str]:
    """``rustic prune [--max-unused LIMIT]``.

    rustic is lock-free: prune only marks packs and removes them after
    ``keep-delete`` (23h by default), which keeps concurrent readers safe.
    """
    argv = [*_common(binary, profile_path), "prune"]
    if max_unused is not None:
        if not isinstance(max_unused, str) or not _LIMIT.fullmatch(max_unused):
            raise ValueError(f"max_unused must be 'unlimited', 'x%' or a size: {max_unused!r}")
        argv += ["--max-unused", max_unused]
    return argv


def ls_args(binary: str, profile_path: str, snapshot_id: str, path: str | None = None) -> list[str]:
    """``rustic ls --json [--recursive] -- ID[:PATH]``.

    rustic lists ``ID`` recursively but ``ID:PATH`` only one level deep
    unless ``--recursive`` is given, which is added for a path.
    """
    argv = [*_common(binary, profile_path), "ls", "--json"]
    if path is not None:
        argv.append("--recursive")
    return [*argv, "--", _snapshot_path(snapshot_id, path)]


# --------------------------------------------------------------------------
# Browsing: tree blobs, file contents
# --------------------------------------------------------------------------
#
# rustic 0.11.4 prints no listing with node metadata: ``ls --json`` gives path strings only,
# ``ls --long`` and ``find`` print the nine rwx bits (no setuid/setgid/sticky) and the mtime to
# the minute (src/commands/ls.rs ``print_node``), ``dump --archive tar`` reads every file's
# content and keeps whole seconds. The tree blobs themselves hold what restic lists (they are
# restic's node JSON): ``cat tree-blob ID`` prints one, unchanged. So a listing reads the
# snapshot's root tree id (``snapshots --json``) and then one tree blob per directory.
# Each rustic run derives the key from the password first (scrypt, ~0.35 s of CPU here); a
# listing runs ``cat masterkey`` once and gives the later runs the master key instead
# (``[repository] key`` in the profile, rustic_core RepositoryOptions), ~20 ms a run.

_BLOB_ID = re.compile(r"[0-9a-f]{64}")


def cat_masterkey_args(binary: str, profile_path: str) -> list[str]:
    """``rustic cat masterkey``: the repository's master key as JSON on stdout (a secret)."""
    return [*_common(binary, profile_path), "cat", "masterkey"]


def cat_tree_blob_args(binary: str, profile_path: str, tree_id: str) -> list[str]:
    """``rustic cat tree-blob -- ID``: one tree blob (a directory's nodes) as stored, on stdout.
    Raises ValueError for anything but a full 64-digit blob id."""
    if not isinstance(tree_id, str) or not _BLOB_ID.fullmatch(tree_id):
        raise ValueError(f"not a tree blob id: {tree_id!r}")
    return [*_common(binary, profile_path), "cat", "tree-blob", "--", tree_id]


def dump_args(binary: str, profile_path: str, snapshot_id: str, path: str) -> list[str]:
    """``rustic dump --archive content -- ID:PATH``: the bytes of one file on stdout.

    ``--archive content`` because the default ("auto") writes a directory as a tar archive; with
    it a directory would give all its files' contents in a row, so callers make sure PATH is a
    regular file first (:func:`agent.browse.check_readable`). Raises ValueError for a relative
    path, "/" or a bad id.
    """
    if not isinstance(path, str) or not path.strip("/") or "\x00" in path:
        raise ValueError(f"dump needs the absolute path of a file in the snapshot: {path!r}")
    return [*_common(binary, profile_path), "dump", "--archive", "content", "--",
            _snapshot_path(snapshot_id, path)]


def parse_masterkey(stdout: str) -> str:
    """The master key ``cat masterkey`` printed, as the compact JSON text rustic reads back
    (``{"mac": {"k": .., "r": ..}, "encrypt": ..}``). Raises :class:`agent.errors.Internal`
    (without the output: it is a secret) for anything else."""
    try:
        key = json.loads(stdout)
        if (not isinstance(key, dict) or not isinstance(key.get("encrypt"), str)
                or not isinstance(key.get("mac"), dict)
                or not all(isinstance(key["mac"].get(k), str) for k in ("k", "r"))):
            raise TypeError("not a master key")
    except (ValueError, TypeError, RecursionError):
        raise errors.Internal("rustic cat masterkey printed no master key") from None
    return json.dumps(key, separators=(",", ":"))


_GO_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                      "\\": "\\", '"': '"'}


def go_unquote(name: str) -> str:
    """A node name as stored in a tree blob → the file name restic lists.

    restic writes ``Node.Name`` through Go's ``strconv.Quote`` (without the outer quotes) and
    reads it back with ``strconv.Unquote``; rustic_core (``escape_filename``) does the same, so a
    newline in a name is stored as the two characters '\\' 'n'. Escapes: \\a \\b \\f \\n \\r \\t
    \\v \\\\ \\" , \\xHH and \\OOO (one byte each), \\uHHHH, \\UHHHHHHHH. Bytes that are not UTF-8
    become U+FFFD, as restic's JSON output shows them. Raises ValueError for a malformed escape.
    """
    if "\\" not in name:
        return name
    out = bytearray()
    i, n = 0, len(name)
    while i < n:
        ch = name[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError(f"name ends in a lone backslash: {name!r}")
        esc = name[i + 1]
        if esc in _GO_SIMPLE_ESCAPES:
            out += _GO_SIMPLE_ESCAPES[esc].encode()
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = name[i + 2:i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"malformed \\{esc} escape in {name!r}")
            value = int(digits, 16)
            if esc == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise ValueError(f"escape \\{esc}{digits} is no character")
                out += chr(value).encode("utf-8")
            i += 2 + width
        elif esc in "01234567":
            digits = name[i + 1:i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError(f"malformed octal escape in {name!r}")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{esc} in {name!r}")
    return out.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TreeEntry:
    """One node of a tree blob: the node as restic lists it, the id of its own tree for a
    directory ("" otherwise), and a regular file's data blob ids in order (its content)."""

    node: TreeNode
    subtree: str = ""
    content: tuple[str, ...] = ()


def _join(directory: str, name: str) -> str:
    return ("" if directory == "/" else directory) + "/" + name


def parse_tree_blob(stdout: str, directory: str) -> list[TreeEntry]:
    """The nodes of ``cat tree-blob`` output, the tree of snapshot path ``directory`` ("/" for the
    root), with the values restic's ``ls --json``/``find --json`` give for them: path
    ``directory/name`` (the name unquoted, :func:`go_unquote`), the permission bits of the Go
    file mode, the mtime to the nanosecond, uid/gid, the symlink target, and a size for
    regular files only (rustic stores a symlink's target length as its size; restic lists none).
    Raises :class:`agent.errors.Internal` for output that is not a tree."""
    try:
        tree = json.loads(stdout)
        nodes = tree.get("nodes") if isinstance(tree, dict) else None
        if not isinstance(tree, dict) or not isinstance([] if nodes is None else nodes, list):
            raise TypeError("not a tree")
        entries = []
        for obj in nodes or []:
            if not isinstance(obj, dict):
                raise TypeError("node is not an object")
            raw_name = obj.get("name")
            if not isinstance(raw_name, str) or not raw_name:
                raise TypeError("node name missing")
            name = go_unquote(raw_name)
            if "/" in name or name in (".", "..") or "\x00" in name:
                raise TypeError(f"node name {name!r} is not one path component")
            kind = obj.get("type")
            fields = {**obj, "path": _join(directory, name), "name": name}
            if kind != "file":
                fields.pop("size", None)
            node = ra.tree_node(fields)
            subtree = obj.get("subtree") if kind == "dir" else ""
            if kind == "dir" and (not isinstance(subtree, str) or not _BLOB_ID.fullmatch(subtree)):
                raise TypeError(f"directory {name!r} has no subtree id")
            content = obj.get("content") if kind == "file" else None
            if content is None:
                content = []
            if not isinstance(content, list) or not all(isinstance(b, str) and _BLOB_ID.fullmatch(b)
                                                        for b in content):
                raise TypeError(f"file {name!r} has a malformed content list")
            entries.append(TreeEntry(node=node, subtree=subtree or "", content=tuple(content)))
        return entries
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal("rustic cat tree-blob printed output that is not a tree",
                              detail=f"{exc}: {stdout[:2000]}") from exc


def _same_metadata(old: TreeNode, new: TreeNode) -> bool:
    return (old.raw_type, old.mode, old.uid, old.gid, old.mtime_ns, old.size, old.link_target) == (
        new.raw_type, new.mode, new.uid, new.gid, new.mtime_ns, new.size, new.link_target)


def diff_trees(
    old: Sequence[TreeEntry], new: Sequence[TreeEntry],
) -> tuple[list[DiffEntry], list[tuple[TreeEntry, TreeEntry]]]:
    """How the nodes of one directory differ between two snapshots (``old``, ``new``: the
    parsed tree blobs of that directory in each): the entries that differ, by name order, and
    the pairs of subdirectories whose trees differ, to compare next (equal subtree ids mean
    equal directories: nothing below them is read). Regular files are compared by their data
    blob ids ("content"), whatever their size and mtime; a type change is "type"; other node
    fields (mode, owner, mtime, size, a symlink's target) "metadata". An added or removed
    directory is one entry (nothing below it is listed)."""
    before = {e.node.name: e for e in old}
    after = {e.node.name: e for e in new}
    changes: list[DiffEntry] = []
    descend: list[tuple[TreeEntry, TreeEntry]] = []
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if now is None:
            changes.append(DiffEntry(path=was.node.path, change="removed", is_dir=was.node.type == "dir"))
            continue
        is_dir = now.node.type == "dir"
        size = now.node.size if now.node.type == "file" else 0
        if was is None:
            changes.append(DiffEntry(path=now.node.path, change="added", is_dir=is_dir, size=size))
        elif was.node.raw_type != now.node.raw_type:
            changes.append(DiffEntry(path=now.node.path, change="type", is_dir=is_dir, size=size))
        elif now.node.type == "file" and was.content != now.content:
            changes.append(DiffEntry(path=now.node.path, change="content", size=size))
        else:
            if not _same_metadata(was.node, now.node):
                changes.append(DiffEntry(path=now.node.path, change="metadata", is_dir=is_dir))
            if is_dir and was.subtree != now.subtree:
                descend.append((was, now))
    return changes, descend


def tree_id_of(snapshots: Sequence[Snapshot], snapshot_id: str) -> str:
    """The root tree id of the one snapshot ``snapshots --json -- ID`` listed. Raises
    :class:`agent.errors.NotFound` when none was, Internal when its tree id is malformed."""
    matches = [s for s in snapshots if s.id.startswith(snapshot_id)]
    if not matches:
        raise errors.SnapshotNotFound(f"snapshot {snapshot_id[:64]} not found", snapshot_id=snapshot_id)
    return checked_tree_id(matches[0].tree, snapshot_id)


def checked_tree_id(tree: str, snapshot_id: str) -> str:
    """``tree`` when it is a blob id (64 hex digits); Internal naming snapshot ``snapshot_id`` otherwise."""
    if not isinstance(tree, str) or not _BLOB_ID.fullmatch(tree):
        raise errors.Internal(f"snapshot {snapshot_id[:8]} has no readable tree id", detail=repr(tree)[:200])
    return tree


# --------------------------------------------------------------------------
# Keep policies
# --------------------------------------------------------------------------


def forget_plan_args(binary: str, profile_path: str, *, host: str, policy: ra.KeepPolicy) -> list[str]:
    """``rustic forget --dry-run --json --filter-host H --group-by host --keep-...``: what the
    policy would remove, without removing it. The same grouping as the restic driver's
    (:func:`agent.engine.restic_args.forget_plan_args`): by host only, so the differing view
    paths of two agents never split one project's history; the same ``--keep-*`` flags (rustic
    spells them as restic does). Raises ValueError for a flag-like host or a policy without a
    rule (rustic refuses to forget without a keep option; restic would forget everything)."""
    if not isinstance(host, str) or not host or host.startswith("-"):
        raise ValueError(f"forget needs a host name, got {host!r}")
    return [*_common(binary, profile_path), "--dry-run", "forget", "--json", "--filter-host", host,
            "--group-by", "host", *policy.flags()]


def parse_forget_plan(stdout: str) -> tuple[list[Snapshot], list[Snapshot]]:
    """(keep, remove) of ``rustic forget --dry-run --json`` (src/commands/forget.rs: a pretty list
    of ``{"group_key": {...}, "items": [{"snapshot": {...}, "keep": bool, "reasons": [...]}]}``,
    ``[]`` when no snapshot matched), in rustic's order. Raises :class:`agent.errors.Internal`
    for anything else."""
    if not stdout.strip():
        return [], []
    try:
        groups = json.loads(stdout)
        if not isinstance(groups, list):
            raise TypeError("not a JSON list")
        keep: list[Snapshot] = []
        remove: list[Snapshot] = []
        for group in groups:
            items = group.get("items") if isinstance(group, dict) else None
            if not isinstance(group, dict) or not isinstance([] if items is None else items, list):
                raise TypeError("a group is not an object with items")
            for item in items or []:
                if not isinstance(item, dict) or not isinstance(item.get("keep"), bool):
                    raise TypeError("an item has no keep decision")
                (keep if item["keep"] else remove).append(_snapshot(item["snapshot"]))
        return keep, remove
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal("rustic forget printed output that is not a forget plan",
                              detail=f"{exc}: {stdout[:2000]}") from exc


def version_args(binary: str) -> list[str]:
    """``rustic --version`` (clap answers before any profile is read)."""
    if not binary:
        raise ValueError("the rustic binary must be named")
    return [binary, "--version"]


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------

_ANSI_CSI = json_fields.ANSI_CSI


# rustic writes null for figures it does not know.
_int = functools.partial(json_fields.int_field, allow_null=True)
_float = functools.partial(json_fields.float_field, allow_null=True)
_str = functools.partial(json_fields.str_field, allow_null=True)
_strs = json_fields.strs_field


def _parse_time(value: object) -> datetime:
    """rustic's snapshot time: RFC 3339 with offset and up to 9 fraction
    digits (chrono ``DateTime<Local>`` before rustic_core 0.10, jiff
    ``RusticTime::to_string`` after), as timezone-aware UTC."""
    if not isinstance(value, str):
        raise TypeError("time is not a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _snapshot(obj: object) -> Snapshot:
    """One rustic SnapshotFile (rustic_core repofile/snapshotfile.rs).

    rustic has no ``short_id``; it is the first 8 hex digits of ``id``.
    """
    if not isinstance(obj, dict):
        raise TypeError("snapshot is not an object")
    snapshot_id = obj["id"]
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise TypeError("snapshot id missing or malformed")
    return Snapshot(
        id=snapshot_id,
        short_id=snapshot_id[:8],
        time=_parse_time(obj["time"]),
        hostname=_str(obj, "hostname"),
        paths=_strs(obj, "paths"),
        tags=_strs(obj, "tags"),
        tree=_str(obj, "tree"),
        username=_str(obj, "username"),
    )


def _group_snapshots(entry: object) -> list[object] | None:
    """The snapshots of one group entry, or None if ``entry`` is no group."""
    if isinstance(entry, dict) and "snapshots" in entry and "id" not in entry:
        snaps = entry["snapshots"] or []
    elif isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list):
        snaps = entry[1]  # rustic < 0.10: a (group, snapshots) tuple
    else:
        return None
    if not isinstance(snaps, list):
        raise TypeError("group snapshots are not a list")
    return snaps


def parse_snapshots(stdout: str) -> list[Snapshot]:
    """Parse ``rustic snapshots --json``, in rustic's order.

    Three shapes exist: ``[[group_key, [snapshot, ...]], ...]`` (rustic < 0.10),
    ``[{"group_key": {...}, "snapshots": [...]}, ...]`` (rustic >= 0.10) and a
    plain list of snapshots (rustic >= 0.10 when the snapshots are not
    grouped). Raises :class:`agent.errors.Internal` on anything else.
    """
    try:
        return [_snapshot(obj) for obj in _snapshot_objects(stdout)]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise errors.Internal(
            "rustic snapshots printed output that is not a snapshot list",
            detail=f"{exc}: {stdout[:2000]}",
        ) from exc


def _snapshot_objects(stdout: str) -> list[object]:
    """The snapshot objects of ``snapshots --json`` in any of its shapes, groups flattened;
    raises ValueError/TypeError for other output."""
    data = json.loads(stdout)
    if not isinstance(data, list):
        raise TypeError("not a JSON list")
    found: list[object] = []
    for entry in data:
        snaps = _group_snapshots(entry)
        found.extend([entry] if snaps is None else snaps)
    return found


def parse_snapshot_totals(stdout: str) -> RestoreSize:
    """What restoring the one snapshot of ``rustic snapshots --json ID`` writes:
    its summary's ``total_bytes_processed`` and ``total_files_processed``
    (rustic_core SnapshotSummary). Raises :class:`agent.errors.NotFound` when
    the listing is empty and :class:`agent.errors.Internal` when the snapshot
    has no summary (written by restic < 0.17, which stores none).
    """
    try:
        found = _snapshot_objects(stdout)
    except (ValueError, TypeError, RecursionError) as exc:
        raise errors.Internal("rustic snapshots printed output that is not a snapshot list",
                              detail=f"{exc}: {stdout[:2000]}") from exc
    if not found:
        raise errors.SnapshotNotFound("no such snapshot")
    summary = found[0].get("summary") if isinstance(found[0], dict) else None
    if not isinstance(summary, dict):
        raise errors.Internal("the snapshot has no summary to take its size from")
    try:
        return RestoreSize(
            total_bytes=_int(summary, "total_bytes_processed"),
            total_files=_int(summary, "total_files_processed"),
        )
    except (ValueError, TypeError) as exc:
        raise errors.Internal("the snapshot summary has no readable totals", detail=str(summary)[:2000]) from exc


def _json_values(text: str) -> list[object]:
    """Every JSON value in ``text``: one pretty-printed document, NDJSON lines,
    or several documents in a row. Text between values that is not JSON is
    skipped up to the next line."""
    decoder = json.JSONDecoder()
    values: list[object] = []
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            nl = text.find("\n", pos)
            if nl < 0:
                break
            pos = nl + 1
            continue
        values.append(value)
    return values


def _summary_from_snapshot(obj: dict[str, Any]) -> BackupSummary:
    summary = obj.get("summary")
    if not isinstance(summary, dict):
        raise TypeError("the snapshot has no summary")
    return BackupSummary(
        snapshot_id=_str(obj, "id"),
        files_new=_int(summary, "files_new"),
        files_changed=_int(summary, "files_changed"),
        files_unmodified=_int(summary, "files_unmodified"),
        data_added=_int(summary, "data_added"),
        total_files_processed=_int(summary, "total_files_processed"),
        total_bytes_processed=_int(summary, "total_bytes_processed"),
        total_duration=_float(summary, "total_duration"),
    )


def _summary_from_message(obj: dict[str, Any]) -> BackupSummary:
    return BackupSummary(
        snapshot_id=_str(obj, "snapshot_id"),
        files_new=_int(obj, "files_new"),
        files_changed=_int(obj, "files_changed"),
        files_unmodified=_int(obj, "files_unmodified"),
        data_added=_int(obj, "data_added"),
        total_files_processed=_int(obj, "total_files_processed"),
        total_bytes_processed=_int(obj, "total_bytes_processed"),
        total_duration=_float(obj, "total_duration"),
    )


def parse_backup_output(stdout: str) -> BackupSummary:
    """The summary of ``rustic backup --json`` (with or without ``--json-progress``).

    ``--json`` prints the new snapshot, pretty-printed, with its ``summary``
    (files_new, files_changed, files_unmodified, data_added,
    total_files_processed, total_bytes_processed, total_duration, …);
    ``--json-progress`` prints NDJSON ``status`` lines and one flat
    ``{"message_type": "summary", ..., "snapshot_id": ...}`` line instead. The
    last summary found wins. ``snapshot_id`` is "" when rustic wrote no
    snapshot (``--dry-run``). Raises :class:`agent.errors.Internal` if no
    summary is found.
    """
    try:
        for value in reversed(_json_values(_ANSI_CSI.sub("", stdout))):
            if not isinstance(value, dict):
                continue
            if value.get("message_type") == "summary":
                return _summary_from_message(value)
            if "tree" in value and "summary" in value:
                return _summary_from_snapshot(value)
        raise ValueError("no backup summary found")
    except (ValueError, TypeError, RecursionError) as exc:
        raise errors.Internal(
            "rustic backup printed no readable summary", detail=f"{exc}: {stdout[-2000:]}"
        ) from exc


def parse_progress_line(line: str) -> BackupStatus | None:
    """One ``--json-progress`` status line (rustic >= 0.11.3) as a BackupStatus.

    rustic reports bytes only (src/config/progress_options.rs
    ``JsonProgressStatus``): ``seconds_elapsed`` always, ``seconds_remaining``,
    ``percent_done`` (0..1), ``total_bytes`` only once known. Files counters
    are 0 and ``current_files`` is empty. Anything else (the summary line,
    plain text, garbage) gives None; never raises.
    """
    msg = json_fields.json_object_line(line)
    if msg is None or msg.get("message_type") != "status":
        return None
    try:
        remaining = msg.get("seconds_remaining")
        return BackupStatus(
            percent=_float(msg, "percent_done") * 100.0,
            files_done=0,
            files_total=0,
            bytes_done=_int(msg, "bytes_done"),
            bytes_total=_int(msg, "total_bytes"),
            seconds_elapsed=_float(msg, "seconds_elapsed"),
            seconds_remaining=None if remaining is None else _float(msg, "seconds_remaining"),
            current_files=(),
        )
    except (ValueError, TypeError, RecursionError):
        return None


def parse_ls(stdout: str) -> list[str]:
    """``rustic ls --json``: a JSON array of path strings (src/commands/ls.rs)."""
    try:
        data = json.loads(stdout)
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise TypeError("not a list of paths")
        return data
    except (ValueError, TypeError, RecursionError) as exc:
        raise errors.Internal(
            "rustic ls printed output that is not a path list", detail=f"{exc}: {stdout[:2000]}"
        ) from exc


# rustic's signal handler (src/commands.rs, rustic 0.11.4 as run here) logs this on SIGINT and
# SIGTERM and then exits 0, whatever the command had done by then.
_INTERRUPTED = re.compile(r"^\[INFO\] Ctrl-C received, shutting down\.\.\.$", re.MULTILINE)


def interrupted_error(returncode: int, stderr: str, *, action: str) -> errors.BucketsError | None:
    """The error for a rustic run that a signal stopped although it exited ``returncode`` 0, or
    None when ``stderr`` does not say so. rustic 0.11.4 exits 0 after SIGINT/SIGTERM (recorded:
    ``tests/unit/samples/rustic/backup_sigterm_v0.11.4.stderr``), so exit 0 alone never means
    the command finished."""
    if returncode == 0 and _INTERRUPTED.search(_ANSI_CSI.sub("", stderr)):
        return errors.Internal(f"rustic {action} was stopped by a signal before it finished "
                               "(it exits 0 then; nothing it did counts)", detail=stderr.strip())
    return None


# The last line ``rustic restore`` prints on stdout when every file is written
# (rustic 0.11.4: after the plain "Files: …" and "Dirs: …" lines, with or without --json-progress).
_RESTORE_DONE = re.compile(r"^restore done\.\s*$", re.MULTILINE)


_RESTORE_FILES = re.compile(
    r"^Files:\s+(\d+) to restore, (\d+) unchanged, (\d+) verified, (\d+) to modify, (\d+) additional\s*$",
    re.MULTILINE,
)


def parse_restore_files(stdout: str) -> RestoreSummary:
    """The ``Files: R to restore, U unchanged, V verified, M to modify, A additional`` line of
    ``rustic restore`` (0.11.4, recorded: ``tests/unit/samples/rustic/restore_over_v0.11.4.stdout``)
    as a summary: restored R + M (read from the repository), skipped U + V (already right in
    the target), deleted A (what the target had beyond the snapshot, removed with ``--delete``).
    rustic prints no byte counts there: those are 0. Raises Internal when the line is missing."""
    match = _RESTORE_FILES.search(_ANSI_CSI.sub("", stdout))
    if match is None:
        raise errors.Internal("rustic restore printed no \"Files:\" line", detail=stdout[-2000:])
    new, unchanged, verified, modify, additional = (int(g) for g in match.groups())
    return RestoreSummary(
        files_total=new + unchanged + verified + modify, files_restored=new + modify,
        files_skipped=unchanged + verified, files_deleted=additional,
        bytes_total=0, bytes_restored=0, bytes_skipped=0,
    )


_KEY_REFUSED = re.compile(r"processing Config[\s\S]*?(?:MAC check failed|[Dd]ecryption failed)")


def key_refused(stderr: str) -> bool:
    """Whether rustic's ``stderr`` says the repository's config could not be decrypted with the
    key it was given (0.11.4, recorded: ``tests/unit/samples/rustic/stale_master_key_v0.11.4.stderr``):
    a master key of another repository at the same place."""
    return bool(_KEY_REFUSED.search(_ANSI_CSI.sub("", stderr)))


_REPOSITORY_MISSING = re.compile(r"No repository config file found|\bNoSuchBucket\b")


def repository_missing(stderr: str) -> bool:
    """Whether rustic's ``stderr`` says there is no repository where the profile points (no
    config file, or no bucket): what a run with a kept master key meets once the repository was
    removed (the same messages :data:`STDERR_RULES` maps to NotFound)."""
    return bool(_REPOSITORY_MISSING.search(_ANSI_CSI.sub("", stderr)))


def check_restore_output(stdout: str) -> None:
    """Return when ``rustic restore``'s stdout ends its run with "restore done."; raise
    :class:`agent.errors.Internal` otherwise (a stopped restore exits 0 without it)."""
    if not _RESTORE_DONE.search(_ANSI_CSI.sub("", stdout)):
        raise errors.Internal("rustic restore did not report that it finished (no \"restore done.\")",
                              detail=stdout[-2000:])


_VERSION = re.compile(r"^rustic\s+v?(\d+)\.(\d+)\.(\d+)", re.MULTILINE)


def parse_version(stdout: str) -> tuple[int, int, int]:
    """``"rustic v0.9.5"`` → ``(0, 9, 5)``.

    Release builds print the git tag (``PROJECT_VERSION=$(git describe --tags)``,
    e.g. "rustic v0.10.0-3-gabc1234" for a build past a tag), ``cargo install``
    builds the crate version without 'v'. Raises :class:`agent.errors.Internal`
    if no version is found.
    """
    m = _VERSION.search(_ANSI_CSI.sub("", stdout))
    if m is None:
        raise errors.Internal("cannot read the rustic version", detail=stdout[:500])
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


_LOG_ERROR = re.compile(r"^\[\s*ERROR\s*\]\s?(.*)$")


def parse_check_output(stderr: str) -> list[str]:
    """The damage ``rustic check`` reported: every ``[ERROR]`` log line, text only.

    Warnings (``[WARN]``, e.g. "pack … not referenced in index. Can be a
    parallel backup job.") and the final "error: …" message are not damage
    lines. Before rustic 0.10.1 this is the only sign of damage (exit code 0).
    """
    found = []
    for raw in stderr.splitlines():
        m = _LOG_ERROR.match(_ANSI_CSI.sub("", raw).rstrip())
        if m and m.group(1).strip():
            found.append(m.group(1).strip())
    return found


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------


# First match wins. rustic >= 0.9.5 prints rustic_core errors as
#   error: `rustic_core` experienced an error related to `<kind>`.
#   Message: <guidance>  [For more information, see: https://rustic.cli.rs/docs/errors/C00n]
#   ... Caused by: <cause>
# and in log lines as "... (kind: related to <kind>, code: C00n): caused by: ...";
# rustic 0.9.0–0.9.4 print the bare rustic_core 0.4/0.5 messages. opendal
# errors read "<Kind> (<permanent|temporary|persistent>) at <op>, context: {…}
# => <message>" (opendal core/src/types/error.rs). Order matters: the opendal
# backend wraps a failed stat of `config` as "Path `config` does not exist."
# with the network or auth error as cause, so those rows come first and no
# not-found row matches that guidance.
STDERR_RULES: tuple[FailureRule, ...] = (
    # C002: rustic_core repofile/keyfile.rs; "incorrect password!" / "no
    # suitable key found!": rustic_core 0.4/0.5 RepositoryErrorKind/KeyFileErrorKind
    _rule(
        r"\bC002\b|No suitable key found for the given password|incorrect password!|no suitable key found!",
        errors.FailedPrecondition,
        "wrong repository password",
    ),
    # opendal s3/error.rs maps HTTP 403 to ErrorKind::PermissionDenied; the S3
    # <Code> is in the message of responses with a body (not for HEAD/stat).
    _rule(
        r"PermissionDenied \((?:permanent|temporary|persistent)\) at "
        r"|InvalidAccessKeyId|SignatureDoesNotMatch|\bAccessDenied\b|InvalidToken|ExpiredToken",
        errors.PermissionDenied,
        "the S3 credentials were refused by the storage endpoint",
    ),
    # opendal raw/http_util/client.rs: a failed request is
    # "Unexpected (temporary) … => send http request, source: error sending
    # request for url (…)", "persistent" once the retry layer gives up; 5xx,
    # SlowDown and RequestTimeout are retryable too (s3/error.rs).
    _rule(
        r"send http request|error sending request|Unexpected \((?:temporary|persistent)\)"
        r"|RateLimited \(|\bSlowDown\b|\bServiceUnavailable\b|\bRequestTimeout\b"
        r"|[Cc]onnection refused|ConnectionRefused|[Cc]onnection reset|ConnectionReset"
        r"|dns error|failed to lookup address|tcp connect error|error trying to connect"
        r"|[Oo]peration timed out|TimedOut|[Nn]etwork is unreachable|[Nn]o route to host",
        errors.Unavailable,
        "repository storage is unreachable",
    ),
    # Rust io::Error text ("No space left on device (os error 28)") and the
    # Debug form of io::ErrorKind used by rustic_core 0.4/0.5 messages.
    _rule(
        r"no space left on device|disk quota exceeded|os error 28\b|os error 122\b|StorageFull|QuotaExceeded",
        errors.ResourceExhausted,
        "no space left (disk or quota full)",
        re.IGNORECASE,
    ),
    # C001: rustic_core crypto/aespoly1305.rs "Data decryption failed, MAC check failed.";
    # rustic_core 0.4/0.5: "data decryption failed: …", "decrypting from … failed"
    _rule(
        r"\bC001\b|MAC check failed|[Dd]ata decryption failed|decrypting from (?:binary|backend) failed",
        errors.DataLoss,
        "repository data failed decryption (MAC check)",
    ),
    # C003: rustic_core backend/decrypt.rs "Verification failed: After
    # decrypting and decompressing the data changed!"; 0.4/0.5: "Extra verification failed: …"
    _rule(
        r"\bC003\b|[Vv]erification failed: After decrypting|length of uncompressed data does not match",
        errors.DataLoss,
        "repository data failed verification",
    ),
    # rustic_core commands/check.rs: CheckResults::is_ok "check found errors!"
    # (rustic >= 0.10.1) and the pack checks it logs at ERROR level.
    _rule(
        r"check found errors|Hash mismatch|does not match the index"
        r"|is referenced by the index but not present",
        errors.DataLoss,
        "repository check found errors",
    ),
    # src/commands/init.rs "Config file already exists. Aborting."; rustic_core
    # repository.rs "Config file already exists for `{name}`."
    _rule(r"Config file already exists", errors.AlreadyExists, "repository already exists"),
    # rustic_core repository.rs "No repository config file found for `{name}`.";
    # 0.4/0.5 "No repository config file found. Is there a repo at `{0}`?";
    # S3 NoSuchBucket (opendal ConfigInvalid)
    _rule(
        r"No repository config file found|\bNoSuchBucket\b",
        errors.NotFound,
        "repository does not exist",
    ),
    # rustic_core backend.rs / id.rs "No suitable id found for `{id}`."
    _rule(r"[Nn]o suitable id found|No snapshots found", errors.NotFound, "snapshot does not exist"),
    # A full (64-hex) id is read as the file snapshots/<id> without a lookup (0.11.4, recorded):
    # the backend's "No such file or directory" (local) or opendal's NotFound (S3) names that path.
    _rule(r"path: \S*snapshots/[0-9a-f]{64}\s+Caused by:\s+(?:No such file or directory|NotFound)",
          errors.NotFound, "snapshot does not exist"),
    _rule(r"Id not unique|is not unique", errors.InvalidArgument, "snapshot id prefix is ambiguous"),
    # rustic_core lookups of ID:PATH (recorded from 0.11.4): "Node `x` not found in tree." for a
    # missing component; "Node `x` is not a directory." (dump) or "Path `…` in Node subtree is
    # not a directory." (cat tree) for a path below a file; restic says "not found in snapshot" /
    # "should be a dir, but is a …".
    _rule(r"Node `[^`]*` not found in tree", errors.NotFound, "path does not exist in the snapshot"),
    # A tree a snapshot references is not in the index (cat tree-blob, 0.11.4): the data is gone.
    _rule(r"Blob `[0-9a-f]*` with type `Tree` not found in index", errors.DataLoss,
          "a tree of the snapshot is missing from the repository"),
    _rule(r"in Node subtree is not a directory|Node `[^`]*` is not a directory", errors.InvalidArgument,
          "path is not a regular file"),
    # clap: "error: unexpected argument '--json-progress' found" (exit code 2)
    _rule(
        r"unexpected argument '[^']*' found",
        errors.Unimplemented,
        "this rustic version does not support an option the agent used",
    ),
    # rustic_backend choose.rs; follows "using no config file, none of these exist: …"
    _rule(
        r"No repository given",
        errors.Internal,
        "the rustic profile was not found or names no repository",
    ),
)

# The rows about the storage itself (credentials refused, unreachable), for causes rustic logs
# before a final error that names a consequence.
STORAGE_RULES: tuple[FailureRule, ...] = tuple(
    r for r in STDERR_RULES if r.error in (errors.PermissionDenied, errors.Unavailable)
)
# rustic_core repository.rs logs "error listing Key: <backend error>" and goes on without keys.
_KEY_LISTING_FAILED = re.compile(r"error listing Key\b|path=keys/ listed=\d+: list failed")

# abscissa's status_err! prints the final error as "error: <message>".
_FINAL_ERROR = re.compile(r"^error: ", re.MULTILINE)


def _final_error(text: str) -> str:
    """The last ``error: …`` block of ``text`` (to its end), or ""."""
    last = None
    for last in _FINAL_ERROR.finditer(text):
        pass
    return text[last.start():] if last is not None else ""


def classify_failure(returncode: int, stderr_tail: str, *, action: str) -> errors.BucketsError:
    """Turn a failed rustic run into the agent error to raise.

    rustic exits 1 for every failure (2 for a clap usage error), so the
    stderr text decides: the rows of :data:`STDERR_RULES` are tried first on
    the final ``error: …`` block, which names the cause of the failure, then
    on the whole tail (rustic logs per-source backup failures as ``[ERROR]``
    lines and ends with "Not all snapshots were generated successfully!").
    ``action`` is the subcommand and appears in the short message, e.g.
    "rustic backup failed: wrong repository password"; the stderr tail goes
    into ``detail``. Raises ValueError for exit code 0.
    """
    if returncode == 0:
        raise ValueError("rustic exit code 0 is not a failure")
    detail = stderr_tail.strip()
    text = _ANSI_CSI.sub("", stderr_tail)
    final = _final_error(text)
    # rustic 0.11.4 reports a key listing the storage refused or could not answer as a wrong
    # password ("error listing Key: PermissionDenied …" logged, then C002): the logged cause wins.
    if final and _KEY_LISTING_FAILED.search(text[: len(text) - len(final)]):
        matched = first_match(STORAGE_RULES, text[: len(text) - len(final)])
        if matched is not None:
            return matched.error(f"rustic {action} failed: {matched.message}", detail=detail)
    for scope in (final, text):
        if not scope:
            continue
        matched = first_match(STDERR_RULES, scope)
        if matched is not None:
            return matched.error(f"rustic {action} failed: {matched.message}", detail=detail)
    if returncode < 0:
        return errors.Internal(f"rustic {action} was killed by signal {-returncode}", detail=detail)
    return errors.Internal(f"rustic {action} failed with exit code {returncode}", detail=detail)


def tag_list(tags: Iterable[str]) -> tuple[str, ...]:
    """``tags`` as rustic stores them: sorted and de-duplicated (a BTreeSet).

    Useful to compare what was asked for with what a snapshot carries.
    """
    return tuple(sorted(set(tags)))
