"""The restic driver's run logic against stand-in binaries (argv and stderr as restic 0.14 gives
them): what only the sequence of processes shows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import errors
from agent.engine.restic import ResticEngine
from agent.repository import Repository

LOCKED = "unable to create lock in backend: repository is already locked by PID 4242 on host by root"


# The driver probes the version before a restore (restic >= 0.17 restores with --json).
VERSION_0_14 = '[ "$1" = version ] && { echo "restic 0.14.0 compiled with go1.19.8 on linux/amd64"; exit 0; }\n'


def stand_in(tmp_path: Path, script: str) -> Path:
    binary = tmp_path / "restic"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    return binary


def engine(binary: Path, tmp_path: Path) -> ResticEngine:
    return ResticEngine(binary=str(binary), state_dir=tmp_path / "state", timeout=30, kill_grace=1)


def repo(tmp_path: Path) -> Repository:
    return Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="a-password")


# The stand-in logs each subcommand; "forget" and "prune" fail locked until "unlock" has run.
LOCK_AWARE = f"""
calls="{{calls}}"
for arg in "$@"; do case "$arg" in forget|prune|unlock) echo "$arg" >> "$calls"; command="$arg";; esac; done
if [ "$command" = unlock ]; then touch "$calls.unlocked"; exit 0; fi
if [ ! -e "$calls.unlocked" ]; then echo "Fatal: {LOCKED}" >&2; exit 1; fi
exit 0
"""


@pytest.mark.parametrize("action", ["forget", "prune"])
def test_a_stale_lock_is_removed_and_the_exclusive_command_tried_once_more(tmp_path: Path, action: str) -> None:
    calls = tmp_path / "calls"
    driver = engine(stand_in(tmp_path, LOCK_AWARE.format(calls=calls)), tmp_path)
    run = driver.forget(repo(tmp_path), ["0123456789abcdef"]) if action == "forget" else driver.prune(repo(tmp_path))
    asyncio.run(run)
    assert calls.read_text().split() == [action, "unlock", action]


def test_a_lock_that_stays_fails_after_one_unlock(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    script = f'echo x >> "{calls}"\necho "Fatal: {LOCKED}" >&2\nexit 1\n'  # unlock succeeds, the lock stays
    script = f'for arg in "$@"; do [ "$arg" = unlock ] && {{ echo unlock >> "{calls}"; exit 0; }}; done\n' + script
    with pytest.raises(errors.Unavailable, match="locked"):
        asyncio.run(engine(stand_in(tmp_path, script), tmp_path).forget(repo(tmp_path), ["0123456789abcdef"]))
    assert calls.read_text().split() == ["x", "unlock", "x"]


def test_the_restore_size_lookup_runs_at_a_lower_cpu_priority_than_the_restore(tmp_path: Path) -> None:
    """It runs beside the restore and only feeds the progress display: on a busy host it must not
    take CPU from the restore. The stand-in records its own nice value (field 19 of /proc/self/stat)."""
    seen = tmp_path / "seen"
    script = (VERSION_0_14 + f'for arg in "$@"; do case "$arg" in stats|restore) command="$arg";; esac; done\n'
              f'echo "$command $(cut -d" " -f19 /proc/self/stat)" >> "{seen}"\n'
              'if [ "$command" = stats ]; then echo \'{"total_size": 10, "total_file_count": 2}\'; fi\n')
    driver = engine(stand_in(tmp_path, script), tmp_path)
    from agent.backends.base import EngineView

    size = asyncio.run(driver.restore_size(repo(tmp_path), "0123456789abcdef"))
    asyncio.run(driver.restore(repo(tmp_path), "0123456789abcdef", EngineView(wrapper=[], root=tmp_path)))
    own = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert (size.total_bytes, size.total_files) == (10, 2)
    assert dict(line.split() for line in seen.read_text().splitlines()) == {
        "stats": str(min(own + 10, 19)), "restore": str(own)}


SAMPLES = Path(__file__).parent / "samples" / "restic"


def by_subcommand(tmp_path: Path, outputs: dict[str, Path]) -> Path:
    """A stand-in that prints ``outputs[subcommand]`` and logs each subcommand it ran."""
    cases = "".join(f'  {name}) cat "{path}";;\n' for name, path in outputs.items())
    return stand_in(tmp_path, f'for arg in "$@"; do case "$arg" in {"|".join(outputs)}) command="$arg";; esac; done\n'
                              f'echo "$command" >> "{tmp_path / "calls"}"\ncase "$command" in\n{cases}esac\n')


def test_a_backup_reported_by_its_short_id_is_named_by_the_full_one(tmp_path: Path) -> None:
    """restic 0.14's summary has the short id (recorded sample); the outcome names the full id
    the repository lists for it."""
    import json

    from agent.backends.base import EngineView

    listed = json.loads((SAMPLES / "snapshots.stdout.json").read_text())[:1]  # as `snapshots 9b56b604` lists it
    (tmp_path / "listed.json").write_text(json.dumps(listed))
    driver = engine(by_subcommand(tmp_path, {"backup": SAMPLES / "backup_fast.stdout.jsonl",
                                             "snapshots": tmp_path / "listed.json"}), tmp_path)
    outcome = asyncio.run(driver.backup(repo(tmp_path), EngineView(wrapper=[], root=tmp_path), host="h", tags=[],
                                        on_status=lambda status: None))
    assert outcome.summary.snapshot_id == listed[0]["id"] and listed[0]["short_id"] == "9b56b604"
    assert (tmp_path / "calls").read_text().split() == ["backup", "snapshots"]


def test_a_listing_carries_the_targets_of_its_symlinks(tmp_path: Path) -> None:
    """restic's ls --json has no symlink target; the driver asks find --json (recorded samples)."""
    driver = engine(by_subcommand(tmp_path, {"ls": SAMPLES / "ls_tree.stdout.jsonl",
                                             "find": SAMPLES / "find_nodes.stdout.json"}), tmp_path)
    nodes = asyncio.run(driver.ls(repo(tmp_path), "0123456789abcdef", "/project", recursive=True))
    assert {n.path: n.link_target for n in nodes if n.type == "symlink"} == {
        "/project/link-abs": "/etc/hostname", "/project/link-dir": "src", "/project/link-in": "src/a.txt",
        "/project/link-out": "../persist/state.db"}
    assert all(n.link_target == "" for n in nodes if n.type != "symlink")
    assert (tmp_path / "calls").read_text().split() == ["ls", "find"]
