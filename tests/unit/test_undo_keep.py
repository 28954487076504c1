"""agent.undo on real directories (the directory backend): keeping, finding, expiry, leftovers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import errors, undo
from agent.backends.directory import DirectoryBackend

PROJECT = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"


@pytest.fixture
def kept(tmp_path: Path) -> undo.KeptTrees:
    backend = DirectoryBackend(projects_root=tmp_path / "projects", persist_root=tmp_path / "persist",
                               state_dir=tmp_path / "state")
    return undo.KeptTrees(backend)


def replaced_trees(tmp_path: Path, name: str) -> dict[str, Path]:
    """Two trees where a swap would have left the replaced ones."""
    trees = {}
    for role in undo.ROLES:
        tree = tmp_path / "old" / name / role
        tree.mkdir(parents=True)
        (tree / "file").write_text(f"{name} {role}")
        trees[role] = tree
    return trees


def keep(kept: undo.KeptTrees, tmp_path: Path, operation_id: str, project_id: str = PROJECT, *,
         now: float = 1000.0, seconds: float = 60.0) -> None:
    steps = kept.prepare(operation_id=operation_id, project_id=project_id, keep_seconds=seconds,
                         trees=replaced_trees(tmp_path, operation_id), now=now)
    undo.move_kept(steps)
    undo.move_kept(steps)  # again, as recovery would: nothing more happens


def test_kept_trees_are_found_newest_first_per_project_and_never_outside_0700(kept, tmp_path):
    keep(kept, tmp_path, "op-1", now=1000.0)
    keep(kept, tmp_path, "op-2", now=1001.0)
    keep(kept, tmp_path, "op-3", OTHER, now=1002.0)
    found = kept.find(PROJECT, now=1010.0)
    assert found.operation_id == "op-2"
    assert (found.project / "file").read_text() == "op-2 project"
    assert (found.persist / "file").read_text() == "op-2 persist"
    assert kept.find(PROJECT, "op-1", now=1010.0).operation_id == "op-1"
    with pytest.raises(errors.NotFound):
        kept.find(PROJECT, "op-3", now=1010.0)  # another project's
    for root in (tmp_path / "projects" / ".undo", tmp_path / "persist" / ".undo"):
        assert root.stat().st_mode & 0o077 == 0


def test_expired_trees_are_not_found_and_are_removed_by_the_sweep(kept, tmp_path):
    keep(kept, tmp_path, "op-1", now=1000.0, seconds=10)
    keep(kept, tmp_path, "op-2", now=1000.0, seconds=100)
    with pytest.raises(errors.NotFound):
        kept.find(PROJECT, "op-1", now=1011.0)
    assert asyncio.run(kept.sweep(now=1011.0)) == ["op-1"]
    assert not (tmp_path / "projects" / ".undo" / "op-1").exists()
    assert not (tmp_path / "persist" / ".undo" / "op-1").exists()
    assert [k.operation_id for k in kept.list()] == ["op-2"]


def test_the_sweep_removes_leftovers_but_never_a_tree_without_its_record(kept, tmp_path):
    keep(kept, tmp_path, "op-1")
    kept.drop_empty("op-1")  # trees still there: kept
    assert kept.list()
    empty = tmp_path / "projects" / ".undo" / "op-empty"
    empty.mkdir()
    orphan_persist = tmp_path / "persist" / ".undo" / "op-gone"
    (orphan_persist / "persist").mkdir(parents=True)
    unknown = tmp_path / "projects" / ".undo" / "op-unknown" / "project"
    unknown.mkdir(parents=True)
    asyncio.run(kept.sweep(now=1001.0))
    assert not empty.exists() and not orphan_persist.exists()
    assert unknown.exists()  # whose it is is not known: left, and logged
    assert [k.operation_id for k in kept.list()] == ["op-1"]


def test_remove_project_removes_only_its_trees(kept, tmp_path):
    keep(kept, tmp_path, "op-1")
    keep(kept, tmp_path, "op-2", OTHER)
    assert asyncio.run(kept.remove_project(PROJECT)) == ["op-1"]
    assert [k.operation_id for k in kept.list()] == ["op-2"]
