"""Restore with an undo (issue 16): a whole restore over unsaved changes backs them up first (or is
refused by policy without force), keeps the replaced tree, and UndoRestore gives it back.

Real agents, real restic, the directory backend and btrfs on a loop device. Outcomes are checked
against manifests of the trees (paths, types, modes, mtimes, sizes, content hashes) taken before
the restore, and against the repository read with stock restic.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import create_project, manifest, new_id

pytestmark = requires_restic

OK = (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS)


def start_agent(agent_factory, request, *, restore: str = "", name: str = "agent"):
    """An agent on the backend of ``request.param`` ("directory" or "btrfs"), with ``restore`` as
    its [restore] section."""
    extra = f"\n[restore]\n{restore}\n" if restore else ""
    if getattr(request, "param", "directory") == "btrfs":
        filesystem = request.getfixturevalue("btrfs_fs")
        base = filesystem.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
        return agent_factory(base.name, backend="btrfs", base=base, extra=extra)
    return agent_factory(name, extra=extra)


@pytest.fixture
def backend(request):
    """The backend named by the test's parametrisation (indirect), as the fixture request."""
    return request


def unsaved_changes(agent, project_id: str) -> None:
    """Edits after the last backup, in both roots: deleted, changed and new files."""
    home = agent.home(project_id)
    victims = sorted(home.rglob("*.bin"))[:10]
    for path in victims[:4]:
        path.unlink()
    for path in victims[4:]:
        path.write_bytes(os.urandom(3000))
    (home / "unsaved.txt").write_text("written after the last backup\n")
    (home / "newdir").mkdir()
    (home / "newdir" / "deep.bin").write_bytes(os.urandom(5000))
    (agent.persist(project_id) / "app.db").write_bytes(b"changed state\n" * 50)


def trees(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def undo(agent, project_id: str, operation_id: str = "", request_id: str | None = None) -> pb.Operation:
    return agent.stub.UndoRestore(pb.UndoRestoreRequest(
        request_id=request_id or new_id(), project_id=project_id, restore_operation_id=operation_id), timeout=30)


def snapshots(agent, project_id: str) -> list[pb.Snapshot]:
    return list(agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=60).snapshots)


def kept_places(agent) -> list[Path]:
    root = agent.projects_root / ".undo"
    return sorted(root.iterdir()) if root.is_dir() else []


def restic_restore(agent, snapshot_id: str, project_id: str, target: Path) -> None:
    env = {"RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password"), "PATH": os.environ["PATH"]}
    subprocess.run(["restic", "-r", str(agent.repository(project_id)), "--no-cache", "restore", snapshot_id,
                    "--target", str(target)], env=env, check=True, capture_output=True)


def without_root(tree: dict) -> dict:
    return {k: v for k, v in tree.items() if k != "."}


def backed_up_generation(agent, project_id: str) -> str | None:
    """The generation the agent's journal records as backed up (read-only, beside the agent)."""
    import sqlite3

    db = sqlite3.connect(f"file:{agent.state_dir / 'agent.sqlite'}?mode=ro", uri=True)
    try:  # closed, not only committed: an open file keeps the btrfs loop mount busy at teardown
        row = db.execute("SELECT last_backup_generation FROM projects WHERE project_id=?", (project_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def backed_up(agent, project_id: str) -> pb.Operation:
    operation = agent.wait(agent.backup(project_id).id)
    assert operation.state == pb.SUCCEEDED, operation.error
    return operation


# ---------------------------------------------------------------------------- must show


@pytest.mark.parametrize("backend", ["directory", "btrfs"], indirect=True)
def test_whole_restore_over_unsaved_changes_keeps_an_undo_that_gives_the_old_tree_back(
    agent_factory, backend, tmp_path
):
    agent = start_agent(agent_factory, backend)
    project_id = create_project(agent, files=40)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    snapshot_trees = trees(agent, project_id)
    unsaved_changes(agent, project_id)
    before = trees(agent, project_id)
    assert before != snapshot_trees

    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error
    assert trees(agent, project_id) == snapshot_trees
    assert any("pre-restore snapshot" in w for w in restore.summary.warnings), restore.summary.warnings

    # The pre-restore snapshot is in the repository, tagged with the restore, and holds the edits.
    pre = [s for s in snapshots(agent, project_id) if s.purpose == "pre-restore"]
    assert [s.operation_id for s in pre] == [restore.id]
    assert pre[0].id[:8] in " ".join(restore.summary.warnings)
    restic_restore(agent, pre[0].id, project_id, tmp_path / "pre")
    assert without_root(manifest(tmp_path / "pre" / "project")) == without_root(before[0])
    assert without_root(manifest(tmp_path / "pre" / "persist")) == without_root(before[1])

    # The replaced tree is kept where no user reaches it, and it is no project.
    assert [p.name for p in kept_places(agent)] == [restore.id]
    assert (agent.projects_root / ".undo").stat().st_mode & 0o077 == 0
    assert agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=30).projects == 1

    undone = agent.wait(undo(agent, project_id, restore.id).id)
    assert undone.state == pb.SUCCEEDED, undone.error
    assert trees(agent, project_id) == before  # byte for byte, modes and mtimes, both roots

    # The project is not what its last backup or restore receipt says: dirty, and backed up again.
    status = agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30)
    assert status.dirty
    assert not status.frozen
    assert not status.last_restore.snapshot_id  # the receipt no longer describes the project
    # The restore recorded its staged generations as backed up; the tree put back has its own,
    # which may differ only by chance (a write in the same transaction): the record must be gone,
    # or the next Backup could be skipped as UP_TO_DATE.
    assert backed_up_generation(agent, project_id) is None
    again = agent.wait(agent.backup(project_id).id)
    assert again.state == pb.SUCCEEDED, again.error  # not UP_TO_DATE
    assert again.summary.snapshot_id not in (snapshot_id, pre[0].id)

    # What the undo replaced (the restored tree) is kept in turn: the undo can be undone.
    redo = agent.wait(undo(agent, project_id).id)
    assert redo.state == pb.SUCCEEDED, redo.error
    assert trees(agent, project_id) == snapshot_trees
    assert [p.name for p in kept_places(agent)] == [redo.id]


@pytest.mark.parametrize("backend", ["directory", "btrfs"], indirect=True)
def test_dirty_refuse_fails_without_touching_the_project_and_force_restores_keeping_the_undo(
    agent_factory, backend
):
    agent = start_agent(agent_factory, backend, restore='dirty = "refuse"')
    project_id = create_project(agent, files=20)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    snapshot_trees = trees(agent, project_id)
    unsaved_changes(agent, project_id)
    before = trees(agent, project_id)

    refused = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert refused.state == pb.FAILED
    assert refused.error.code == "FAILED_PRECONDITION", refused.error
    assert "changes since its last backup" in refused.error.message
    assert trees(agent, project_id) == before
    assert [s.purpose for s in snapshots(agent, project_id)] == ["backup"]
    assert kept_places(agent) == []
    assert agent.staging_after_cleanup() == []

    forced = agent.wait(agent.restore(project_id, snapshot_id, force=True).id)
    assert forced.state == pb.SUCCEEDED_WITH_WARNINGS, forced.error
    assert trees(agent, project_id) == snapshot_trees
    assert [s.purpose for s in snapshots(agent, project_id)] == ["backup"]  # force: no pre-restore snapshot
    undone = agent.wait(undo(agent, project_id).id)
    assert undone.state == pb.SUCCEEDED, undone.error
    assert trees(agent, project_id) == before


def test_a_clean_project_is_restored_without_a_pre_restore_snapshot_and_still_keeps_an_undo(agent_factory):
    agent = agent_factory(extra='\n[restore]\ndirty = "refuse"\n')
    project_id = create_project(agent, files=10)
    first = backed_up(agent, project_id).summary.snapshot_id
    (agent.home(project_id) / "second.txt").write_text("second")
    backed_up(agent, project_id)
    clean = trees(agent, project_id)

    restore = agent.wait(agent.restore(project_id, first).id)  # refuse applies to dirty projects only
    assert restore.state == pb.SUCCEEDED, restore.error
    assert not (agent.home(project_id) / "second.txt").exists()
    assert [s.purpose for s in snapshots(agent, project_id)] == ["backup", "backup"]
    assert agent.wait(undo(agent, project_id, restore.id).id).state == pb.SUCCEEDED
    assert trees(agent, project_id) == clean


@contextlib.contextmanager
def no_room_for_new_files(directory: Path):
    """Within the block ``directory`` holds the files it held (a flat directory) and no room for
    another: a tmpfs with exactly one inode per file (and its root) is mounted over it, the
    files copied in. A new file there fails ENOSPC, which stops root too and which the engines
    take as final (restic retries an EPERM or EROFS for ~40 s before it gives up)."""
    held = directory.parent / f".{directory.name}-held"
    shutil.copytree(directory, held)
    inodes = len(list(held.iterdir())) + 1
    mode = f"{stat.S_IMODE(directory.stat().st_mode):o}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"nr_inodes={inodes},mode={mode}", "tmpfs", str(directory)],
                   check=True, capture_output=True, timeout=60)
    try:
        shutil.copytree(held, directory, dirs_exist_ok=True)
        yield
    finally:
        done = subprocess.run(["umount", str(directory)], capture_output=True, timeout=60)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=60)
        shutil.rmtree(held)


def test_a_failed_pre_restore_backup_fails_the_restore_and_leaves_the_project(agent_factory, btrfs_fs):
    """The repository has no room for a new snapshot file (its filesystem is full): the
    pre-restore backup fails, and the restore with it before anything is staged or swapped."""
    base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(base.name, backend="btrfs", base=base)
    project_id = create_project(agent, files=15)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    unsaved_changes(agent, project_id)
    before = trees(agent, project_id)
    with no_room_for_new_files(agent.repository(project_id) / "snapshots"):
        restore = agent.wait(agent.restore(project_id, snapshot_id).id, timeout=300)
    assert restore.state == pb.FAILED, restore
    # Its pre-restore backup is what failed, for want of room.
    assert (restore.error.code, "backup" in restore.error.message) == ("RESOURCE_EXHAUSTED", True), restore.error
    assert trees(agent, project_id) == before
    assert kept_places(agent) == []
    assert agent.staging_after_cleanup() == []


# ---------------------------------------------------------------------------- expiry and refusals


def test_the_kept_tree_expires_and_undo_is_then_not_found(agent_factory):
    agent = agent_factory(extra="\n[restore]\nkeep_replaced = 1.5\n")
    project_id = create_project(agent, files=10)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    unsaved_changes(agent, project_id)
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error
    deadline = time.monotonic() + 60
    while (kept_places(agent) or (agent.persist_root / ".undo" / restore.id).exists()) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kept_places(agent) == []
    assert not (agent.persist_root / ".undo" / restore.id).exists()
    with pytest.raises(grpc.RpcError) as caught:
        undo(agent, project_id, restore.id)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    # The pre-restore snapshot outlives the kept tree.
    assert [s.purpose for s in snapshots(agent, project_id)].count("pre-restore") == 1


def test_undo_refusals(agent_factory):
    agent = agent_factory()
    project_id = create_project(agent, files=5)
    with pytest.raises(grpc.RpcError) as caught:
        undo(agent, project_id)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        undo(agent, project_id, "../../etc")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    unsaved_changes(agent, project_id)
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state in OK
    restored = trees(agent, project_id)

    other = create_project(agent, files=2)  # another project's kept tree is not this one's
    with pytest.raises(grpc.RpcError) as caught:
        undo(agent, other, restore.id)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND

    agent.stub.Freeze(pb.FreezeRequest(project_id=project_id), timeout=30)
    frozen = agent.wait(undo(agent, project_id).id)
    assert frozen.state == pb.FAILED and frozen.error.code == "FAILED_PRECONDITION", frozen
    assert trees(agent, project_id) == restored
    agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=30)

    request_id = new_id()
    first = undo(agent, project_id, request_id=request_id)
    assert agent.wait(first.id).state == pb.SUCCEEDED
    again = undo(agent, project_id, request_id=request_id)  # the same request: the same operation
    assert again.id == first.id
    assert trees(agent, project_id) != restored


# ---------------------------------------------------------------------------- crashes


def test_sigkill_during_undos_leaves_old_or_new_never_half_and_loses_neither(agent_factory):
    """Undo and redo in a loop with the agent SIGKILLed at a random moment after each request:
    after the restart the project is exactly one of the two trees, and the other one is kept."""
    agent = agent_factory()
    project_id = create_project(agent, files=300)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    restored_trees = trees(agent, project_id)
    unsaved_changes(agent, project_id)
    edited_trees = trees(agent, project_id)
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state in OK
    rng = random.Random(16)
    states = {repr(restored_trees): "restored", repr(edited_trees): "edited"}
    for round_ in range(6):
        operation = undo(agent, project_id)
        time.sleep(rng.uniform(0, 0.05))
        agent.kill()
        agent.start()
        final = agent.wait(operation.id)
        assert final.state in (pb.SUCCEEDED, pb.INTERRUPTED), final
        now = trees(agent, project_id)
        assert repr(now) in states, f"round {round_}: the project is neither tree"
        other = edited_trees if states[repr(now)] == "restored" else restored_trees
        kept = kept_places(agent)
        assert len(kept) == 1, kept
        kept_trees = (manifest(kept[0] / "project"), manifest(agent.persist_root / ".undo" / kept[0].name / "persist"))
        assert kept_trees == other, f"round {round_}: the other tree is not what is kept"
        assert agent.staging_left() == []


def test_a_crash_between_the_two_exchanges_of_an_undo_is_rolled_forward(agent_factory):
    """Replays what the agent persists right before an undo's swap, then "dies" after the persist
    exchange: recovery completes the swap and keeps what it replaced."""
    agent = agent_factory()
    project_id = create_project(agent, files=30)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    restored_trees = trees(agent, project_id)
    unsaved_changes(agent, project_id)
    edited_trees = trees(agent, project_id)
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state in OK
    agent.stop()

    from agent import fsops, undo as undo_module
    from agent.backends.directory import DirectoryBackend
    from agent.journal import Journal
    from agent.model import OperationKind, OperationRecord, OperationState

    backend = DirectoryBackend(projects_root=agent.projects_root, persist_root=agent.persist_root,
                               state_dir=agent.state_dir)
    kept = undo_module.KeptTrees(backend)
    (entry,) = kept.list(project_id)
    plan = backend.plan_swap([(entry.persist, backend.persist(project_id)), (entry.project, backend.home(project_id))])
    operation_id = str(uuid.uuid4())
    keep = kept.prepare(operation_id=operation_id, project_id=project_id, keep_seconds=3600,
                        trees={"project": entry.project, "persist": entry.persist})
    journal = Journal(agent.state_dir / "agent.sqlite")
    journal.insert_operation(OperationRecord(
        id=operation_id, request_id=new_id(), kind=OperationKind.RESTORE, project_id=project_id,
        fingerprint="x", params={}, state=OperationState.RUNNING, created_at=time.time(),
        recovery={"undo": entry.operation_id, "swap": plan, "keep": keep},
    ))
    journal.close()
    fsops.put_in_place(Path(plan[0]["staged"]), Path(plan[0]["live"]))  # persist exchanged; then "killed"

    agent.start()
    final = agent.wait(operation_id)
    assert final.state == pb.INTERRUPTED
    assert "completed during recovery" in final.error.message
    assert trees(agent, project_id) == edited_trees
    assert [p.name for p in kept_places(agent)] == [operation_id]
    assert trees_kept(agent, operation_id) == restored_trees
    assert agent.staging_left() == []
    # And the kept tree goes back once more.
    assert agent.wait(undo(agent, project_id).id).state == pb.SUCCEEDED
    assert trees(agent, project_id) == restored_trees


def trees_kept(agent, operation_id: str) -> tuple[dict, dict]:
    return (manifest(agent.projects_root / ".undo" / operation_id / "project"),
            manifest(agent.persist_root / ".undo" / operation_id / "persist"))


def test_btrfs_kept_trees_are_read_only_subvolumes_and_never_backed_up(agent_factory, btrfs_fs):
    base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(base.name, backend="btrfs", base=base)
    project_id = create_project(agent, files=10)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    unsaved_changes(agent, project_id)
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error
    kept_home = agent.projects_root / ".undo" / restore.id / "project"
    assert kept_home.stat().st_ino == 256  # a subvolume

    def read_only(path: Path) -> bool:
        out = subprocess.run(["btrfs", "property", "get", "-ts", str(path), "ro"], check=True,
                             capture_output=True, text=True).stdout
        return out.strip() == "ro=true"

    kept_persist = agent.persist_root / ".undo" / restore.id / "persist"
    deadline = time.monotonic() + 60  # sealed in the background after the operation answered
    while not (read_only(kept_home) and read_only(kept_persist)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_only(kept_home)
    assert read_only(kept_persist)
    assert not read_only(agent.home(project_id))
    # A backup reads the project only.
    backed = agent.wait(agent.backup(project_id, force=True).id)
    files = agent.stub.ListFiles(pb.ListFilesRequest(project_id=project_id, snapshot_id=backed.summary.snapshot_id,
                                                     path="project", depth=1), timeout=60)
    assert not any(".undo" in entry.path for entry in files.entries)
    # After an undo the project is writable, not frozen.
    assert agent.wait(undo(agent, project_id).id).state == pb.SUCCEEDED
    assert not read_only(agent.home(project_id))
    (agent.home(project_id) / "writable.txt").write_text("yes")


def test_restore_force_and_undo_restore_through_both_clis(agent_factory):
    from tests.integration.test_operator_cli import host_cli, hub_cli

    agent = agent_factory(extra='\n[restore]\ndirty = "refuse"\n')
    project_id = create_project(agent, files=10)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    snapshot_trees = trees(agent, project_id)
    unsaved_changes(agent, project_id)
    before = trees(agent, project_id)

    refused = host_cli(agent, "restore", project_id, snapshot_id)
    assert refused.returncode == 1, refused.stderr.decode()
    assert b"changes since its last backup" in refused.stdout + refused.stderr
    assert trees(agent, project_id) == before

    forced = host_cli(agent, "restore", project_id, snapshot_id, "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    assert b"undo-restore" in forced.stdout  # the warning says how to undo
    assert trees(agent, project_id) == snapshot_trees

    undone = host_cli(agent, "undo-restore", project_id)
    assert undone.returncode == 0, undone.stderr.decode()
    assert trees(agent, project_id) == before
    redone = hub_cli(agent, "undo-restore", project_id)
    assert redone.returncode == 0, redone.stderr.decode()
    assert trees(agent, project_id) == snapshot_trees

    missing = hub_cli(agent, "undo-restore", project_id, "--operation", new_id())
    assert missing.returncode == 2 and b"NOT_FOUND" in missing.stderr, missing.stderr.decode()


def test_ensure_restoring_into_an_empty_home_keeps_an_unsaved_persist_location(agent_factory):
    """EnsureProject AUTO restores into an empty home, which replaces the persist location too:
    its unsaved state is backed up first and kept, and undo-restore gives both trees back."""
    agent = agent_factory()
    project_id = create_project(agent, files=10)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    for entry in list(agent.home(project_id).iterdir()):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (agent.persist(project_id) / "app.db").write_bytes(b"state written after the backup\n")
    before = trees(agent, project_id)

    ensured = agent.wait(agent.stub.EnsureProject(pb.EnsureProjectRequest(
        request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.AUTO), timeout=30).id)
    assert ensured.state == pb.SUCCEEDED_WITH_WARNINGS, ensured.error  # the warning names the snapshot
    assert (agent.home(project_id) / "link-to-first").is_symlink()  # the snapshot is in place
    pre = [s for s in snapshots(agent, project_id) if s.purpose == "pre-restore"]
    assert [s.operation_id for s in pre] == [ensured.id]
    content = agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=pre[0].id,
                                                     path="persist/app.db"), timeout=60).content
    assert content == b"state written after the backup\n"
    assert snapshot_id != pre[0].id

    undone = agent.wait(undo(agent, project_id, ensured.id).id)
    assert undone.state == pb.SUCCEEDED, undone.error
    assert trees(agent, project_id) == before


def test_undo_while_another_operation_runs_on_the_project_is_aborted(agent_factory):
    agent = agent_factory(limits="upload_limit_kib = 256")
    project_id = create_project(agent, files=10)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    unsaved_changes(agent, project_id)
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state in OK
    restored = trees(agent, project_id)
    for index in range(12):  # about 3 MiB at 256 KiB/s: the backup runs for a while
        (agent.home(project_id) / f"blob-{index}.bin").write_bytes(os.urandom(256 * 1024))
    running = agent.backup(project_id)
    with pytest.raises(grpc.RpcError) as caught:
        undo(agent, project_id)
    assert caught.value.code() is grpc.StatusCode.ABORTED
    assert running.id in caught.value.details()
    assert agent.wait(running.id, timeout=300).state == pb.SUCCEEDED
    restored_and_blobs = trees(agent, project_id)
    assert restored_and_blobs != restored
    assert agent.wait(undo(agent, project_id).id).state == pb.SUCCEEDED  # still kept afterwards


def test_ensure_into_a_missing_home_keeps_the_persist_location_it_replaces(agent_factory):
    agent = agent_factory()
    project_id = create_project(agent, files=5)
    backed_up(agent, project_id)
    shutil.rmtree(agent.home(project_id))
    (agent.persist(project_id) / "app.db").write_bytes(b"unsaved state, no home\n")
    persist_before = manifest(agent.persist(project_id))

    ensured = agent.wait(agent.stub.EnsureProject(pb.EnsureProjectRequest(
        request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.AUTO), timeout=30).id)
    assert ensured.state == pb.SUCCEEDED_WITH_WARNINGS, ensured.error
    assert agent.home(project_id).is_dir()
    assert agent.wait(undo(agent, project_id).id).state == pb.SUCCEEDED
    assert not agent.home(project_id).exists()  # as it was: no home
    assert manifest(agent.persist(project_id)) == persist_before


def test_kept_trees_survive_a_restart_and_expire_at_start(agent_factory):
    """Start-up removes stale staging, never a kept tree; one whose time is up is removed at start."""
    agent = agent_factory(extra="\n[restore]\nkeep_replaced = 3600\n")
    project_id = create_project(agent, files=10)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    unsaved_changes(agent, project_id)
    before = trees(agent, project_id)
    first = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert first.state in OK
    agent.stop()
    agent.start()
    assert [p.name for p in kept_places(agent)] == [first.id]
    assert agent.wait(undo(agent, project_id).id).state == pb.SUCCEEDED
    assert trees(agent, project_id) == before

    (kept,) = kept_places(agent)
    agent.stop()
    # Restarted with a keep time that is up already: the expiry is written in the kept record, so
    # shorten it there as an operator's clock would move on (no waiting in the test).
    record = kept / "kept.json"
    data = json.loads(record.read_text())
    data["expires_at"] = time.time() - 1
    record.write_text(json.dumps(data))
    agent.start()
    assert not kept.exists()  # removed by the start itself, before it served
    assert not (agent.persist_root / ".undo" / kept.name).exists()
    with pytest.raises(grpc.RpcError) as caught:
        undo(agent, project_id)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
