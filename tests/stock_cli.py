"""An engine's stock CLI on a local repository, as an operator runs it (no agent involved).

Used where the ground truth is the engine itself: a repository's snapshots, a ``check``, a
restore by another engine than the one that wrote it. Success is judged by output as well as
exit code: rustic exits 0 when stopped by a signal.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.engines import EngineUnderTest


def run(engine: EngineUnderTest, repository: Path, password_file: Path, *args: str,
        scratch: Path) -> subprocess.CompletedProcess:
    """``engine``'s CLI with ``args`` on ``repository`` (no cache; restic with its locks); a
    rustic profile, and HOME for either engine, go in ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(scratch), "NO_COLOR": "1"}
    if engine.driver == "rustic":
        profile = scratch / "stock-rustic.toml"
        profile.write_text(f'[repository]\nrepository = "{repository}"\npassword-file = "{password_file}"\n'
                           f"no-cache = true\n")
        argv = [engine.binary(), "-P", str(profile)[: -len(".toml")], "--no-progress", *args]
    else:
        argv = [engine.binary(), "-r", str(repository), "--password-file", str(password_file), "--no-cache", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def snapshot_ids(engine: EngineUnderTest, repository: Path, password_file: Path, *, scratch: Path) -> set[str]:
    """The full ids of every snapshot in ``repository``, as ``engine`` lists them."""
    args = ("snapshots", "--json", "-g", "") if engine.driver == "rustic" else ("snapshots", "--json")
    result = run(engine, repository, password_file, *args, scratch=scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout or "[]")
    # rustic: [{group_key, snapshots}], a flat list with -g "" (rustic 0.11.4); restic: flat.
    listed = [s for item in listed for s in (item["snapshots"] if "group_key" in item else [item])]
    return {s["id"] for s in listed}


def check(engine: EngineUnderTest, repository: Path, password_file: Path, *, scratch: Path,
          read_data: bool = False) -> subprocess.CompletedProcess:
    """``check`` (with ``--read-data``); the caller asserts on the result."""
    return run(engine, repository, password_file, "check", *(["--read-data"] if read_data else []), scratch=scratch)


def restore(engine: EngineUnderTest, repository: Path, password_file: Path, snapshot_id: str, target: Path, *,
            scratch: Path) -> subprocess.CompletedProcess:
    """Restore ``snapshot_id`` whole into ``target`` (owners by number, as the agent does)."""
    if engine.driver == "rustic":
        args = ("restore", "--numeric-id", "--", snapshot_id, str(target))
    else:
        args = ("restore", snapshot_id, "--target", str(target))
    return run(engine, repository, password_file, *args, scratch=scratch)


def restored(engine: EngineUnderTest, result: subprocess.CompletedProcess) -> bool:
    """Whether a stock restore finished: exit 0 and, for rustic, its "restore done." line."""
    return result.returncode == 0 and (engine.driver != "rustic" or "restore done." in result.stdout)
