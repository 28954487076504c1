"""Verify SNAPSHOT_TREE and COUNTS through the gRPC API of real agents: a second host that
restored a snapshot of the first proves its live home and persist equal the snapshot, and every
kind of difference made by hand afterwards fails the operation with DATA_LOSS naming it. The
directory backend always; btrfs where a loop device can be made."""

from __future__ import annotations

import os
import shutil
import uuid

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import write_tree
from tests.integration.test_move_support import MOVE_TOKEN, code_of, ensure, ensured, freeze, full_id, \
    shared_repository

pytestmark = requires_restic

SENTINEL = "persist/.buckets-move-sentinel"


def tree_verify(agent, project_id: str, snapshot_id: str, **fields) -> pb.Operation:
    return agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.SNAPSHOT_TREE, snapshot_id=snapshot_id,
                                   **fields).id)


def counts_verify(agent, project_id: str, snapshot_id: str) -> pb.Operation:
    return agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.COUNTS, snapshot_id=snapshot_id).id)


def engine_listings(agent) -> int:
    """How many times the agent listed a snapshot (restic find)."""
    return sum(1 for argv in agent.started_argvs() if "find" in argv)


def restored_pair(agent_factory, project_id, tmp_path, *, backend="directory", base=None):
    """A source host with a project (files, nested directories, a symlink, odd modes and owners,
    a fifo, a persist file, the move's sentinel), its snapshot, and a target host that restored
    exactly that snapshot. Returns (source, target, full snapshot id)."""
    extra = shared_repository(base or tmp_path)
    source = agent_factory("verify-a", extra=extra, host_id="host-a", backend=backend,
                           base=None if base is None else base / "a")
    target = agent_factory("verify-b", extra=extra, host_id="host-b", backend=backend,
                           base=None if base is None else base / "b")
    ensured(source, project_id)
    home, persist = source.home(project_id), source.persist(project_id)
    write_tree(home, files=12, seed=3)
    (home / "docs").mkdir()
    (home / "docs" / "readme.txt").write_text("read me\n")
    os.symlink("../docs/readme.txt", home / "docs" / "link")
    os.chmod(home / "docs", 0o2750)
    os.chown(home / "docs" / "readme.txt", 1234, 5678)
    os.mkfifo(home / "pipe")
    (persist / "state.db").write_text("state")
    assert freeze(source, project_id, SENTINEL, MOVE_TOKEN).frozen
    backup = source.wait(source.backup(project_id, force=True).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot_id = full_id(source, project_id, backup.summary.snapshot_id)
    restored = target.wait(ensure(target, project_id, pb.EnsureProjectRequest.REQUIRED, snapshot_id).id)
    assert restored.state == pb.SUCCEEDED, restored.error
    return source, target, snapshot_id


def data_loss(operation: pb.Operation) -> str:
    assert (operation.state, operation.error.code) == (pb.FAILED, "DATA_LOSS"), operation
    return operation.error.message


def test_snapshot_tree_and_counts_pass_on_an_exact_restore_and_name_every_difference(
    agent_factory, project_id, tmp_path
):
    source, target, snapshot_id = restored_pair(agent_factory, project_id, tmp_path)
    home, persist = target.home(project_id), target.persist(project_id)

    passed = tree_verify(target, project_id, snapshot_id, sentinel_path=SENTINEL, sentinel_content=MOVE_TOKEN)
    assert passed.state == pb.SUCCEEDED, passed.error
    assert passed.kind == pb.OPERATION_KIND_VERIFY and passed.summary.snapshot_id == snapshot_id
    entries = sum(len(dirs) + len(files) for root in (home, persist) for _, dirs, files in os.walk(root)) + 2
    assert passed.summary.files_processed == entries
    # The source's own live trees are the snapshot too (nothing changed since the backup).
    assert tree_verify(source, project_id, snapshot_id).state == pb.SUCCEEDED
    # COUNTS after a listing reads no repository.
    listings = engine_listings(target)
    counted = counts_verify(target, project_id, snapshot_id)
    assert counted.state == pb.SUCCEEDED, counted.error
    assert counted.summary.files_processed == entries
    assert engine_listings(target) == listings

    # A wrong sentinel fails even though the trees are equal.
    assert "sentinel" in data_loss(tree_verify(target, project_id, snapshot_id, sentinel_path=SENTINEL,
                                               sentinel_content="another move"))

    # One file's content changed (same size): its mtime says so; COUNTS cannot see it.
    victim = home / "docs" / "readme.txt"
    stat = victim.stat()
    victim.write_text("READ ME\n")
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/docs/readme.txt: mtime" in message, message
    assert counts_verify(target, project_id, snapshot_id).state == pb.SUCCEEDED
    # Its size changed: named, and COUNTS fails too.
    victim.write_text("read me, and more\n")
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/docs/readme.txt: size (18 bytes, 8 in the snapshot)" in message, message
    assert "bytes in files" in data_loss(counts_verify(target, project_id, snapshot_id))
    victim.write_text("read me\n")
    os.chown(victim, 1234, 5678)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.utime(victim.parent, ns=(victim.parent.stat().st_atime_ns, victim.parent.stat().st_mtime_ns))
    assert tree_verify(target, project_id, snapshot_id).state == pb.SUCCEEDED  # put back exactly

    # An extra file (directory mtimes put back: only the file itself differs).
    docs = home / "docs"
    before = docs.stat()
    (docs / "extra.txt").write_text("x")
    os.utime(docs, ns=(before.st_atime_ns, before.st_mtime_ns))
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert message.count("project/docs/extra.txt: extra") == 1 and "1 place(s)" in message, message
    assert "entries" in data_loss(counts_verify(target, project_id, snapshot_id))
    (docs / "extra.txt").unlink()

    # A symlink's target changed (to one of the same length: COUNTS cannot see it).
    link = docs / "link"
    link_stat = os.lstat(link)
    link.unlink()
    os.symlink("../docs/readme.txX", link)
    os.utime(link, ns=(link_stat.st_atime_ns, link_stat.st_mtime_ns), follow_symlinks=False)
    os.utime(docs, ns=(before.st_atime_ns, before.st_mtime_ns))
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/docs/link: link target ('../docs/readme.txX', '../docs/readme.txt' in the snapshot)" in message

    # Mode and owner.
    os.chmod(docs, 0o755)
    os.chown(home / "pipe", 42, 42)
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/docs: mode (0755, 2750 in the snapshot)" in message, message
    assert "project/pipe: owner" in message, message

    # The home emptied, the directory kept: every top-level entry is missing.
    for child in list(home.iterdir()):
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/d0: missing (a dir in the snapshot)" in message and "and 6 more" in message, message
    assert "entries" in data_loss(counts_verify(target, project_id, snapshot_id))


def test_counts_lists_a_snapshot_it_does_not_know_and_fails_on_a_difference(agent_factory, project_id, tmp_path):
    _, target, snapshot_id = restored_pair(agent_factory, project_id, tmp_path)
    listings = engine_listings(target)
    counted = counts_verify(target, project_id, snapshot_id)
    assert counted.state == pb.SUCCEEDED, counted.error
    assert engine_listings(target) == listings + 1
    (target.persist(project_id) / "state.db").unlink()
    message = data_loss(counts_verify(target, project_id, snapshot_id))
    assert "entries" in message and "bytes" in message


def test_bad_input(agent_factory, project_id, tmp_path):
    _, target, snapshot_id = restored_pair(agent_factory, project_id, tmp_path)
    for mode in (pb.VerifyRequest.SNAPSHOT_TREE, pb.VerifyRequest.COUNTS):
        for bad in ("", "latest", "not-hex!", "abc"):
            code, details = code_of(lambda: target.verify(project_id, mode=mode, snapshot_id=bad))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (mode, bad, details)
        unknown = target.wait(target.verify(project_id, mode=mode, snapshot_id="0123abcd" * 8).id)
        assert (unknown.state, unknown.error.code) == (pb.FAILED, "NOT_FOUND"), unknown.error
        missing = target.wait(target.verify(str(uuid.uuid4()), mode=mode, snapshot_id=snapshot_id).id)
        assert (missing.state, missing.error.code) == (pb.FAILED, "NOT_FOUND"), missing.error
    # COUNTS with a sentinel counts the snapshot less it and needs it gone from the live tree (a
    # move removed it): while it is still there, that is DATA_LOSS.
    (target.persist(project_id) / SENTINEL.split("/", 1)[1]).write_text(MOVE_TOKEN)
    still_there = target.wait(target.verify(project_id, mode=pb.VerifyRequest.COUNTS, snapshot_id=snapshot_id,
                                            sentinel_path=SENTINEL, sentinel_content=MOVE_TOKEN).id)
    assert (still_there.state, still_there.error.code) == (pb.FAILED, "DATA_LOSS"), still_there.error
    assert "still there" in still_there.error.message
    code, _ = code_of(lambda: target.verify(project_id, mode=pb.VerifyRequest.COUNTS, snapshot_id=snapshot_id,
                                            sentinel_path="../x", sentinel_content="x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: target.verify(project_id, mode=pb.VerifyRequest.SNAPSHOT_TREE,
                                            snapshot_id=snapshot_id, sentinel_path="../x", sentinel_content="x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_btrfs_snapshot_tree_after_a_restore(agent_factory, btrfs_fs, project_id):
    base = btrfs_fs.mountpoint / f"verify-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    _, target, snapshot_id = restored_pair(agent_factory, project_id, base, backend="btrfs", base=base)
    passed = tree_verify(target, project_id, snapshot_id, sentinel_path=SENTINEL, sentinel_content=MOVE_TOKEN)
    assert passed.state == pb.SUCCEEDED, passed.error
    assert counts_verify(target, project_id, snapshot_id).state == pb.SUCCEEDED
    (target.home(project_id) / "docs" / "readme.txt").unlink()
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/docs/readme.txt: missing" in message, message


def test_operator_cli_verifies_the_live_trees(agent_factory, project_id, tmp_path):
    from tests.integration.test_cli_and_logs import buckets

    _, target, snapshot_id = restored_pair(agent_factory, project_id, tmp_path)
    assert buckets(target, "verify", project_id, "--tree", snapshot_id).returncode == 0
    assert buckets(target, "verify", project_id, "--counts", snapshot_id).returncode == 0
    (target.home(project_id) / "docs" / "readme.txt").unlink()
    failed = buckets(target, "verify", project_id, "--tree", snapshot_id)
    assert failed.returncode != 0 and "project/docs/readme.txt: missing" in failed.stdout + failed.stderr
    assert buckets(target, "verify", project_id, "--counts", snapshot_id).returncode != 0
