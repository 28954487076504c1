"""The engines of `make bench` and the raw CLI side of each: pure argv, environment and profile builders.

The bench compares the agent with the engine's own command line run by hand, for each engine
(rustic 0.11.4, restic 0.18.x, Debian's restic 0.14). The raw side runs what a user would run
against the same repository kind, with a cache dir of its own:

* restic: ``restic -r REPO --cache-dir C init``, ``restic ... backup --json --host H -- PATHS``,
  ``restic ... restore --target T -- SNAP``; an S3 repository is ``s3:<endpoint>/<bucket>/<root>``
  with the keys and region in the environment (``AWS_*``); the password in ``RESTIC_PASSWORD``.
* rustic: ``rustic -r REPO --cache-dir C --no-progress backup --init --json --host H -- PATHS``
  (the agent's rustic backup also initialises the repository in the same process, with
  ``backup --init``), ``rustic ... restore -- SNAP T``; the password in ``RUSTIC_PASSWORD``.
  rustic has no command-line options for an S3 repository's settings (only a profile's
  ``[repository.options]``), so for S3 the raw side writes a profile as a user would
  (``repository = "opendal:s3"`` and the options) and passes ``-P PROFILE`` instead of ``-r``.

Nothing here starts a process; ``bench.py`` runs the argvs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RUSTIC = "rustic"
RESTIC = "restic"


@dataclass(frozen=True)
class RawEngine:
    """One engine of the bench: ``id`` names it in the table (``rustic-0.11.4``), ``driver`` is the
    agent's ``engine`` setting and the raw CLI's kind ("rustic" or "restic"), ``binary`` its path."""

    id: str
    driver: str
    binary: str

    def agent_config_lines(self) -> str:
        """The agent config's ``[engine]`` lines besides ``engine = DRIVER``: the binary to run."""
        return f'{self.driver}_binary = "{self.binary}"\n'


@dataclass(frozen=True)
class S3Location:
    """A repository under ``root`` in ``bucket`` on an S3 endpoint, with the keys to reach it."""

    endpoint: str
    region: str
    bucket: str
    root: str
    access_key_id: str
    secret_access_key: str


RawRepository = Path | S3Location


def resolve_engines(wanted: str, available: Sequence[tuple[str, str, str | None]]) -> list[RawEngine | str]:
    """The engines named in ``wanted`` (comma-separated ids or unambiguous id prefixes, e.g.
    ``rustic,restic-0.18.1,restic-0.14``; "all" for every one), in the order of ``available``.

    ``available``: (id, driver, binary or None when it is not on this machine). A wanted engine
    without a binary comes back as the text ``"<id>: not found"`` (the bench prints it and goes on).
    Raises ValueError for a name that matches no engine or more than one, or an empty list."""
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    if not names:
        raise ValueError("--engines names no engine")
    ids = [engine_id for engine_id, _driver, _binary in available]
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(ids)
            continue
        matches = [i for i in ids if i == name] or [i for i in ids if i.startswith((name + "-", name + "."))]
        if len(matches) != 1:
            found = "no engine" if not matches else "more than one engine (" + ", ".join(matches) + ")"
            raise ValueError(f"--engines: {name!r} names {found}; the engines are {', '.join(ids)}")
        chosen.add(matches[0])
    out: list[RawEngine | str] = []
    for engine_id, driver, binary in available:
        if engine_id in chosen:
            out.append(RawEngine(engine_id, driver, binary) if binary else f"{engine_id}: not found")
    return out


def restic_location(repository: RawRepository) -> str:
    """restic's ``-r`` value: a local path, or ``s3:<endpoint>/<bucket>/<root>``."""
    if isinstance(repository, S3Location):
        return f"s3:{repository.endpoint.rstrip('/')}/{repository.bucket}/{repository.root}"
    return str(repository)


def _toml_string(value: str) -> str:
    # json.dumps escapes quotes, backslashes and control characters the way TOML basic strings do.
    return json.dumps(value, ensure_ascii=False)


def rustic_s3_profile(repository: S3Location) -> str:
    """The TOML profile a user writes for rustic and an S3 repository (rustic's
    ``config/services/s3_aws.toml`` layout); the password stays in the environment."""
    options = {
        "endpoint": repository.endpoint,
        "region": repository.region,
        "bucket": repository.bucket,
        "root": repository.root,
        "access_key_id": repository.access_key_id,
        "secret_access_key": repository.secret_access_key,
    }
    lines = ["[repository]", f"repository = {_toml_string('opendal:s3')}", "", "[repository.options]"]
    lines += [f"{key} = {_toml_string(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _prefix(engine: RawEngine, repository: RawRepository, cache_dir: Path, profile: Path | None) -> list[str]:
    """``[binary, <repository>, --cache-dir C, ...]``. ``profile``: for rustic and S3, the profile
    file written from :func:`rustic_s3_profile` (passed without ``.toml``: rustic appends it)."""
    if engine.driver == RESTIC:
        return [engine.binary, "-r", restic_location(repository), "--cache-dir", str(cache_dir)]
    if engine.driver != RUSTIC:
        raise ValueError(f"unknown engine driver {engine.driver!r}")
    if isinstance(repository, S3Location):
        if profile is None or profile.suffix != ".toml":
            raise ValueError("rustic needs a profile (NAME.toml) for an S3 repository")
        where = ["-P", str(profile.with_suffix(""))]
    else:
        where = ["-r", str(repository)]
    return [engine.binary, *where, "--cache-dir", str(cache_dir), "--no-progress"]


def init_argvs(
    engine: RawEngine, repository: RawRepository, cache_dir: Path, profile: Path | None = None
) -> list[list[str]]:
    """The commands that create the repository before the backup: ``restic init``; none for
    rustic, whose backup initialises it (``backup --init``, as the agent runs it)."""
    if engine.driver == RESTIC:
        return [[*_prefix(engine, repository, cache_dir, profile), "init"]]
    _prefix(engine, repository, cache_dir, profile)  # validates
    return []


def backup_argv(
    engine: RawEngine,
    repository: RawRepository,
    cache_dir: Path,
    *,
    host: str,
    paths: Sequence[str],
    init: bool,
    profile: Path | None = None,
) -> list[str]:
    """A backup of ``paths`` (relative to the cwd the caller picks) with ``--json`` output (for the
    snapshot id). ``init``: the repository is new (rustic then initialises it itself)."""
    argv = [*_prefix(engine, repository, cache_dir, profile), "backup"]
    if init and engine.driver == RUSTIC:
        argv.append("--init")
    return [*argv, "--json", "--host", host, "--", *paths]


def restore_argv(
    engine: RawEngine, repository: RawRepository, cache_dir: Path, *, snapshot_id: str, target: Path,
    profile: Path | None = None, over: bool = False,
) -> list[str]:
    """A restore of the whole snapshot into ``target`` (an empty or missing directory); ``over``
    (rustic): into a ``target`` holding another snapshot, fetching only the files whose size or
    mtime differ and removing what the snapshot does not hold (``--delete``)."""
    prefix = _prefix(engine, repository, cache_dir, profile)
    if engine.driver == RESTIC:
        if over:
            raise ValueError("the bench restores over a tree with rustic only")
        return [*prefix, "restore", "--target", str(target), "--", snapshot_id]
    return [*prefix, "restore", *(["--delete"] if over else []), "--", snapshot_id, str(target)]


def masterkey_argv(engine: RawEngine, repository: RawRepository, cache_dir: Path,
                   profile: Path | None = None) -> list[str]:
    """rustic's ``cat masterkey`` (the password's KDF, once): its output in ``RUSTIC_KEY`` lets
    the next runs skip the KDF, as the agent's kept key does. restic has no such option."""
    if engine.driver != RUSTIC:
        raise ValueError(f"{engine.id} takes no master key in place of the password")
    return [*_prefix(engine, repository, cache_dir, profile), "cat", "masterkey"]


def environment(engine: RawEngine, repository: RawRepository, password: str, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus the password (and, for restic and S3, the keys and region)."""
    env = dict(base)
    if engine.driver == RUSTIC:
        env["RUSTIC_PASSWORD"] = password
        env["NO_COLOR"] = "1"
        return env
    env["RESTIC_PASSWORD"] = password
    if isinstance(repository, S3Location):
        env.update(
            AWS_ACCESS_KEY_ID=repository.access_key_id,
            AWS_SECRET_ACCESS_KEY=repository.secret_access_key,
            AWS_DEFAULT_REGION=repository.region,
        )
    return env


def backup_summary(engine: RawEngine, stdout: str) -> dict:
    """The backup's result from its ``--json`` output: restic's ``summary`` message, or rustic's
    snapshot object (its ``id`` copied to ``snapshot_id``, its ``summary`` counts merged in).
    Raises ValueError when the output has none (the backup did not deliver a snapshot)."""
    if engine.driver == RESTIC:
        summary: dict = {}
        for line in stdout.splitlines():
            if line.startswith("{") and '"summary"' in line:
                summary = json.loads(line)
        if not summary.get("snapshot_id"):
            raise ValueError("restic backup printed no summary with a snapshot id")
        return summary
    start = stdout.find("{")
    try:
        snapshot = json.loads(stdout[start:]) if start >= 0 else None
    except ValueError as exc:
        raise ValueError(f"rustic backup printed no snapshot JSON: {exc}") from exc
    if not isinstance(snapshot, dict) or not snapshot.get("id"):
        raise ValueError("rustic backup printed no snapshot with an id")
    summary = dict(snapshot.get("summary") or {})
    summary["snapshot_id"] = snapshot["id"]
    return summary


def restore_done(engine: RawEngine, stdout: str, stderr: str) -> bool:
    """Whether the raw restore's output says it finished (rustic exits 0 when stopped by a
    signal, so its exit code alone says nothing). restic: its exit code is enough (True)."""
    if engine.driver == RESTIC:
        return True
    return "restore done" in (stdout + stderr)


def found_binary(path: str | None) -> str | None:
    """``path`` if it names an executable (absolute, or found on PATH), else None."""
    if not path:
        return None
    return shutil.which(path)
