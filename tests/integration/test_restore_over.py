"""Engine.restore_over on the real binaries: a tree restored once, then changed in every way a
project changes, and the newer snapshot restored over it, ends equal to that snapshot (the tree
that was backed up, by manifest), while the engine read only what differs (its own counts: a
re-fetch of everything fails them). The basis of the incremental catch-up of a move (issue 18).

Engines are constructed as the agent constructs them (agent/engine/choice.py), on plain
directories (the engine view a directory backend gives: no wrapper)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
from pathlib import Path

import pytest

from agent import errors
from agent.backends.base import EngineView
from agent.config import EngineConfig, default_config
from agent.engine import choice
from agent.engine.base import RESTORE_OVER
from agent.repository import Repository
from tests.engines import ENGINES, EngineUnderTest
from tests.harness import manifest

UNCHANGED_FILES = 24
FILE_SIZE = 64 * 1024


def build_engine(engine: EngineUnderTest, base: Path):
    binary = engine.binary()
    config = default_config(base)
    config = dataclasses.replace(config, engine=EngineConfig(engine=engine.driver, restic_binary=binary,
                                                             rustic_binary=binary))
    return choice.make_engine(config)


def first_tree(root: Path) -> None:
    """project/ with files that will stay, and one of each kind that will change; persist/."""
    rng = random.Random(17)
    project, persist = root / "project", root / "persist"
    (project / "big").mkdir(parents=True)
    for index in range(UNCHANGED_FILES):
        (project / "big" / f"f{index:02d}.dat").write_bytes(rng.randbytes(FILE_SIZE))
    (project / "gone.txt").write_text("deleted later\n")
    (project / "old-name.dat").write_bytes(rng.randbytes(FILE_SIZE))
    (project / "mode.sh").write_text("#!/bin/sh\n")
    (project / "mode.sh").chmod(0o644)
    (project / "content.txt").write_text("version 1\n")
    (project / "becomes-link.txt").write_text("a file, then a symlink\n")
    (project / "becomes-file").mkdir()
    (project / "becomes-file" / "inside.txt").write_text("a directory, then a file\n")
    (project / "becomes-dir").write_text("a file, then a directory\n")
    persist.mkdir()
    (persist / "state.db").write_bytes(rng.randbytes(4096))


def change_tree(root: Path) -> None:
    project = root / "project"
    (project / "gone.txt").unlink()
    (project / "old-name.dat").rename(project / "new-name.dat")
    (project / "mode.sh").chmod(0o755)
    (project / "content.txt").write_text("version 2, longer\n")
    (project / "becomes-link.txt").unlink()
    (project / "becomes-link.txt").symlink_to("big/f00.dat")
    shutil.rmtree(project / "becomes-file")
    (project / "becomes-file").write_text("now a file\n")
    (project / "becomes-dir").unlink()
    (project / "becomes-dir").mkdir()
    (project / "becomes-dir" / "child.txt").write_text("new\n")
    (root / "persist" / "state.db").write_bytes(b"rewritten\n")


async def backup(engine, repo: Repository, source: Path) -> str:
    outcome = await engine.backup(repo, EngineView(wrapper=(), root=source), host="project-restore-over",
                                  tags=["layout=v2"], on_status=lambda status: None)
    return outcome.summary.snapshot_id


def trees(root: Path) -> tuple[dict, dict]:
    return manifest(root / "project"), manifest(root / "persist")


# restic 0.14 has no restore --overwrite/--delete: its refusal is the test below, not a skip here.
@pytest.mark.parametrize("engine_under_test", [e for e in ENGINES if not e.stock], ids=lambda e: e.id)
def test_restore_over_makes_the_tree_equal_to_the_newer_snapshot(engine_under_test, tmp_path) -> None:
    engine = build_engine(engine_under_test, tmp_path / "agent")
    repo = Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="restore-over")
    source, target = tmp_path / "source", tmp_path / "target"
    first_tree(source)
    target.mkdir()

    async def scenario():
        assert RESTORE_OVER in await engine.features()
        first = await backup(engine, repo, source)
        await engine.restore(repo, first, EngineView(wrapper=(), root=target))
        assert trees(target) == trees(source)
        change_tree(source)
        second = await backup(engine, repo, source)
        (target / "persist" / "stray.tmp").write_text("not in any snapshot\n")
        return await engine.restore_over(repo, second, EngineView(wrapper=(), root=target))

    summary = asyncio.run(scenario())
    assert trees(target) == trees(source)
    # Read only what differs: the unchanged files were not restored again.
    assert summary.files_skipped >= UNCHANGED_FILES
    assert summary.files_restored < UNCHANGED_FILES // 2
    assert summary.files_deleted >= 1  # gone.txt, stray.tmp … (engines count differently)
    if engine_under_test.driver == "restic":  # rustic's Files: line has no byte counts
        assert summary.bytes_skipped >= UNCHANGED_FILES * FILE_SIZE
        # new-name.dat is the only large file it writes (a rename is a new file to a restore)
        assert summary.bytes_restored < 2 * FILE_SIZE


def test_restic_0_14_refuses_to_restore_over(tmp_path) -> None:
    stock = next(engine for engine in ENGINES if engine.stock)
    engine = build_engine(stock, tmp_path / "agent")
    target = tmp_path / "target"
    target.mkdir()
    (target / "kept.txt").write_text("untouched\n")
    before = manifest(target)
    repo = Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="pw")
    with pytest.raises(errors.Unimplemented, match="0.17"):
        asyncio.run(engine.restore_over(repo, "0123456789abcdef", EngineView(wrapper=(), root=target)))
    assert RESTORE_OVER not in asyncio.run(engine.features())
    assert manifest(target) == before
    assert not os.path.exists(tmp_path / "repo")
