"""agent.catch_up's work on real staged trees (plain directories) with a scripted engine: what
it removes and fixes never follows a symlink out of the staging, and a restore that did not
deliver what the plan asked for is a failure, never a success. The real engines are in
tests/integration/test_catch_up.py."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import catch_up, errors
from agent.backends.base import EngineView, Staging
from agent.engine.base import SNAPSHOT_DIFF, DiffEntry, TreeNode

BASE, NEW = "a" * 64, "b" * 64
MTIME_NS = 1_700_000_000_123_456_789


def node(path: str, kind: str, mode: int = 0o755) -> TreeNode:
    return TreeNode(path=path, name=path.rsplit("/", 1)[-1], type=kind, size=0, mode=mode,
                    mtime=datetime.fromtimestamp(MTIME_NS / 1e9, UTC), uid=0, gid=0, mtime_ns=MTIME_NS)


class ScriptedEngine:
    """An engine with the "diff" way whose diff and listing are given, and whose restore_paths
    runs ``restore`` (or does nothing)."""

    name = "scripted"

    def __init__(self, changes, nodes, restore=None) -> None:
        self.changes, self.nodes, self.restore = changes, nodes, restore
        self.restored: list[str] = []

    async def features(self):
        return frozenset({SNAPSHOT_DIFF})

    async def version(self):
        return "0"

    async def diff(self, repo, base, new, *, tree=""):
        return list(self.changes)

    async def listing(self, repo, snapshot_id, *, tree=""):
        return list(self.nodes)

    async def restore_paths(self, repo, snapshot_id, paths, view):
        self.restored += list(paths)
        if self.restore is not None:
            self.restore(view.root)


def staged(tmp_path: Path) -> Staging:
    root = tmp_path / "staging"
    for name in ("project", "persist"):
        (root / name).mkdir(parents=True)
    return Staging(operation_id="op", project=root / "project", persist=root / "persist",
                   view=EngineView(wrapper=(), root=root))


def outside(tmp_path: Path) -> Path:
    """A directory outside the staging that a user's symlink in it points at."""
    target = tmp_path / "outside"
    target.mkdir()
    (target / "precious.txt").write_text("must stay\n")
    target.chmod(0o750)
    return target


def bring(engine, staging):
    return asyncio.run(catch_up.bring_to(engine, None, staging, NEW, base_snapshot_id=BASE))


def test_a_type_changed_symlink_is_removed_as_a_link_and_the_root_gets_the_snapshots_metadata(tmp_path) -> None:
    staging, target = staged(tmp_path), outside(tmp_path)
    (staging.project / "link").symlink_to(target)

    def restore(root: Path) -> None:
        (root / "project" / "link").write_text("now a file\n")

    engine = ScriptedEngine([DiffEntry("/project/link", "type")],
                            [node("/project", "dir", 0o711), node("/project/link", "file", 0o600)], restore)
    summary = bring(engine, staging)
    assert engine.restored == ["/project/link"]
    assert (staging.project / "link").read_text() == "now a file\n"
    assert sorted(os.listdir(target)) == ["precious.txt"] and oct(target.stat().st_mode & 0o7777) == "0o750"
    info = staging.project.stat()
    assert (info.st_mode & 0o7777, info.st_mtime_ns) == (0o711, MTIME_NS)
    assert summary.files_restored == 1 and summary.files_deleted == 0


def test_a_path_through_a_staged_symlink_is_refused_and_nothing_outside_is_touched(tmp_path) -> None:
    staging, target = staged(tmp_path), outside(tmp_path)
    (staging.project / "dir").symlink_to(target)
    engine = ScriptedEngine([DiffEntry("/project/dir/precious.txt", "removed")],
                            [node("/project", "dir"), node("/project/dir", "dir")])
    with pytest.raises(errors.BucketsError):
        bring(engine, staging)
    assert (target / "precious.txt").read_text() == "must stay\n"
    assert engine.restored == []


def test_a_restore_that_did_not_deliver_a_path_is_a_failure(tmp_path) -> None:
    staging = staged(tmp_path)
    (staging.project / "changed.txt").write_text("old\n")
    engine = ScriptedEngine([DiffEntry("/project/changed.txt", "content")],
                            [node("/project", "dir"), node("/project/changed.txt", "file", 0o644)])
    with pytest.raises(errors.Internal, match="not in the staging"):
        bring(engine, staging)


def test_a_restore_that_delivered_the_wrong_type_is_a_failure(tmp_path) -> None:
    staging = staged(tmp_path)

    def restore(root: Path) -> None:
        (root / "project" / "new").mkdir()

    engine = ScriptedEngine([DiffEntry("/project/new", "added")],
                            [node("/project", "dir"), node("/project/new", "file", 0o644)], restore)
    with pytest.raises(errors.Internal, match="not the file"):
        bring(engine, staging)


def test_removed_entries_are_counted_and_their_directory_fixed(tmp_path) -> None:
    staging = staged(tmp_path)
    (staging.persist / "d" / "gone" / "deep").mkdir(parents=True)
    (staging.persist / "d" / "gone" / "deep" / "a").write_text("a")
    (staging.persist / "d" / "gone" / "b").symlink_to("/etc/passwd")
    (staging.persist / "d" / "gone").chmod(0o500)  # read-only directories do not stop a removal
    changes = [DiffEntry("/persist/d/gone", "removed", True), DiffEntry("/persist/d/gone/deep", "removed", True),
               DiffEntry("/persist/d/gone/deep/a", "removed"), DiffEntry("/persist/d/gone/b", "removed")]
    engine = ScriptedEngine(changes, [node("/persist", "dir"), node("/persist/d", "dir", 0o700)])
    summary = bring(engine, staging)
    assert os.listdir(staging.persist / "d") == []
    assert os.path.exists("/etc/passwd")
    assert summary.files_deleted == 2
    assert engine.restored == []  # nothing to fetch: no engine run
    info = (staging.persist / "d").stat()
    assert (info.st_mode & 0o7777, info.st_mtime_ns) == (0o700, MTIME_NS)


def test_a_diff_that_fails_is_raised_as_itself(tmp_path) -> None:
    class Failing(ScriptedEngine):
        async def diff(self, repo, base, new, *, tree=""):
            raise errors.NotFound("no snapshot")

    staging = staged(tmp_path)
    (staging.project / "kept").write_text("kept\n")
    with pytest.raises(errors.NotFound):
        bring(Failing([], [node("/project", "dir")]), staging)
    assert (staging.project / "kept").read_text() == "kept\n"
