"""catch_up.bring_to on the real binaries of all three engines (restic 0.14 through the "diff"
way, rustic and restic 0.18 through restore-over after the content-diff invalidation): staged
trees (a directory backend's staging) holding snapshot BASE whole are brought to snapshot NEW,
which differs from BASE in every way a project changes, among them a file whose content changed
with its size and mtime kept. Ground truth is a whole restore of NEW into another directory: the
two trees must be equal by a full manifest (type, mode, owner, mtime ns, size, sha256 of content,
symlink target), and the unchanged files must not have been written again (their inodes are the
ones the BASE restore made) while the engine's (or the diff way's) own figures say it read about
the changed data only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from agent import catch_up, errors
from agent.backends.base import EngineView
from agent.backends.directory import DirectoryBackend
from agent.repository import Repository
from tests.integration.test_restore_over import build_engine

UNCHANGED = 12
BIG = 64 * 1024
OLD_TIME_NS = 1_600_000_000_123_456_789
ODD_NAMES = ("sp ace", "gl*b?[x]\\y", "ünïcødé", "nl\nname", "$HOME", "!bang", "-dash")


def full_manifest(root: Path) -> dict[str, tuple]:
    """(type, mode, uid, gid, mtime ns, size, sha256 | link target) of ``root`` and everything
    below it, by relative path, never following a symlink."""
    result: dict[str, tuple] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if directory == str(root) else [*dirnames, *filenames]:
            path = Path(directory) / name
            info = path.lstat()
            head = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            if stat.S_ISLNK(info.st_mode):
                result[str(path.relative_to(root))] = (*head, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[str(path.relative_to(root))] = (*head, info.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[str(path.relative_to(root))] = (*head, info.st_mtime_ns, info.st_size, digest)
    return result


def inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_ino for p in root.rglob("*") if p.is_file()}


def base_tree(root: Path) -> None:
    rng = random.Random(18)
    project, persist = root / "project", root / "persist"
    (project / "big").mkdir(parents=True)
    for index in range(UNCHANGED):
        (project / "big" / f"f{index:02d}.dat").write_bytes(rng.randbytes(BIG))
    (project / "modified.txt").write_text("short\n")
    (project / "same-size.txt").write_text("AAAA version one\n")
    (project / "deleted.txt").write_text("goes\n")
    (project / "deleted-tree" / "inner" / "deep").mkdir(parents=True)
    (project / "deleted-tree" / "inner" / "deep" / "x.txt").write_text("x\n")
    (project / "deleted-tree" / "inner" / "y.txt").write_text("y\n")
    (project / "old-name.dat").write_bytes(rng.randbytes(4096))
    (project / "mode.sh").write_text("#!/bin/sh\n")
    (project / "mode.sh").chmod(0o644)
    (project / "mode-dir").mkdir(mode=0o755)
    (project / "mode-dir" / "kept.txt").write_text("kept\n")
    (project / "owner.txt").write_text("owner changes\n")
    (project / "file-to-link").write_text("a file, then a symlink\n")
    (project / "dir-to-file" / "sub").mkdir(parents=True)
    (project / "dir-to-file" / "sub" / "z.txt").write_text("a directory, then a file\n")
    (project / "file-to-dir").write_text("a file, then a directory\n")
    (project / "link").symlink_to("big/f00.dat")
    (project / "hard-a").write_text("hard linked later\n")
    (project / "only-removal").mkdir()
    (project / "only-removal" / "stays.txt").write_text("stays\n")
    (project / "only-removal" / "goes.txt").write_text("goes\n")
    (project / "odd").mkdir()
    for name in ODD_NAMES:
        (project / "odd" / name).write_text(f"old {name}\n")
    persist.mkdir()
    (persist / "state.db").write_bytes(rng.randbytes(8192))
    (persist / "static.db").write_bytes(rng.randbytes(8192))


def change_tree(root: Path) -> None:
    project = root / "project"
    (project / "modified.txt").write_text("much longer than before\n")
    same = project / "same-size.txt"
    before = same.lstat()
    same.write_text("BBBB version two\n")  # the same size …
    os.utime(same, ns=(before.st_atime_ns, before.st_mtime_ns))  # … and the same mtime
    (project / "deleted.txt").unlink()
    (project / "only-removal" / "goes.txt").unlink()  # nothing restored in there: no engine passes through it
    shutil.rmtree(project / "deleted-tree")
    (project / "old-name.dat").rename(project / "new-name.dat")
    (project / "mode.sh").chmod(0o755)
    (project / "mode-dir").chmod(0o700)
    os.chown(project / "owner.txt", 4321, 4322)
    (project / "file-to-link").unlink()
    (project / "file-to-link").symlink_to("modified.txt")
    shutil.rmtree(project / "dir-to-file")
    (project / "dir-to-file").write_text("now a file\n")
    (project / "file-to-dir").unlink()
    (project / "file-to-dir" / "child").mkdir(parents=True)
    (project / "file-to-dir" / "child" / "c.txt").write_text("now inside a directory\n")
    (project / "link").unlink()
    (project / "link").symlink_to("big/f01.dat")
    (project / "new" / "nested" / "deeper").mkdir(parents=True)
    (project / "new" / "nested" / "deeper" / "n.txt").write_text("new\n")
    os.link(project / "hard-a", project / "hard-b")
    for name in ODD_NAMES:
        (project / "odd" / name).write_text(f"new content of {name}\n")
    (project / "odd" / "added *?[]\\ ü").write_text("added\n")
    (root / "persist" / "state.db").write_bytes(b"rewritten\n")
    # A directory whose content changed but whose metadata is set back to BASE's: only a
    # restore of the metadata of directories above changed entries gets it right.
    os.utime(project / "odd", ns=(OLD_TIME_NS, OLD_TIME_NS))


CHANGED_FILES = 8 + 2 * len(ODD_NAMES)  # written or added files in change_tree, with room to spare
CHANGED_BYTES = 64 * 1024  # generous: every changed file above is tiny but new-name.dat (4 KiB)


def test_bring_to_makes_a_staged_base_equal_to_the_new_snapshot(engine_under_test, tmp_path) -> None:
    engine = build_engine(engine_under_test, tmp_path / "agent")
    repo = Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="catch-up")
    source, truth = tmp_path / "source", tmp_path / "truth"
    backend = DirectoryBackend(projects_root=tmp_path / "projects", persist_root=tmp_path / "persists",
                               state_dir=tmp_path / "state")
    base_tree(source)
    truth.mkdir()

    async def backup() -> str:
        outcome = await engine.backup(repo, EngineView(wrapper=(), root=source), host="project-catch-up",
                                      tags=["layout=v2"], on_status=lambda status: None)
        return outcome.summary.snapshot_id

    async def scenario():
        base = await backup()
        staging = await backend.prepare_staging("0b5c3d1e-1111-4222-8333-944455556666", "catch-up-op")
        await engine.restore(repo, base, staging.view)
        before = inodes(staging.project)
        change_tree(source)
        new = await backup()
        way = catch_up.way_for(await engine.features(), base_snapshot_id=base)
        # A base the repository does not have: the engine's own error, and the staging untouched.
        untouched = full_manifest(staging.project)
        with pytest.raises(errors.BucketsError):
            await catch_up.bring_to(engine, repo, staging, new, base_snapshot_id="0" * 64)
        assert full_manifest(staging.project) == untouched
        summary = await catch_up.bring_to(engine, repo, staging, new, base_snapshot_id=base)
        await engine.restore(repo, new, EngineView(wrapper=(), root=truth))
        return staging, before, way, summary

    staging, before, way, summary = asyncio.run(scenario())
    # restic 0.14 has no restore over a tree; rustic restores only the paths that differ.
    assert way == ("diff" if engine_under_test.stock or engine_under_test.driver == "rustic" else "restore-over")
    # The snapshot holds what the source had (the same-size change included) …
    assert full_manifest(truth / "project") == full_manifest(source / "project")
    # … and the staged trees equal it exactly.
    assert full_manifest(staging.project) == full_manifest(truth / "project")
    assert full_manifest(staging.persist) == full_manifest(truth / "persist")
    # Only the difference was written: every unchanged large file is the inode the BASE restore made.
    after = inodes(staging.project)
    for index in range(UNCHANGED):
        name = f"big/f{index:02d}.dat"
        assert after[name] == before[name], f"{name} was written again"
    assert summary.files_skipped >= UNCHANGED
    # Bytes written: restic's own counts; the "diff" way counts the files at or below the paths it
    # restored, by the new snapshot's listing.
    assert 0 < summary.bytes_restored <= CHANGED_BYTES
    if engine_under_test.driver == "rustic":
        assert summary.files_restored <= CHANGED_FILES
    else:  # restic >= 0.17 counts every node it went through in files_restored: bytes tell
        assert summary.bytes_skipped >= UNCHANGED * BIG
    if way == "diff":
        assert summary.files_deleted >= 3  # deleted.txt and the two files of deleted-tree
