"""The btrfs backend on a real btrfs filesystem (a loop device made by the session fixture).

Skipped, with the reason printed, where no loop-device btrfs can be made
(not root, no btrfs-progs); CI runs as root and runs them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree
from tests.integration.test_crash_recovery import kill_agent_and_its_engines
from tests.integration.test_operations import SLOW, wait_for_phase

pytestmark = requires_restic

MiB = 1024 * 1024


def btrfs_agent(agent_factory, btrfs_fs, *, limits: str = "", extra: str = ""):
    base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
    return agent_factory(base.name, backend="btrfs", base=base, limits=limits, extra=extra)


def ensure(agent, project_id: str, quota_bytes: int = 0) -> pb.Operation:
    operation = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, quota_bytes=quota_bytes), timeout=30
    )
    final = agent.wait(operation.id)
    assert final.state == pb.SUCCEEDED, final.error
    return final


def fill(agent, project_id: str, megabytes: int) -> None:
    """Incompressible blobs in the (existing) home, a small file in persist."""
    for index in range(megabytes * 4):
        (agent.home(project_id) / f"blob-{index}.bin").write_bytes(os.urandom(256 * 1024))
    (agent.persist(project_id) / "state.db").write_bytes(os.urandom(4096))


def is_subvolume(path: Path) -> bool:
    return path.is_dir() and path.stat().st_ino == 256


def subvolumes(mountpoint: Path) -> list[str]:
    out = subprocess.run(["btrfs", "subvolume", "list", str(mountpoint)], check=True, capture_output=True,
                         text=True).stdout
    return [line.split(" path ", 1)[1] for line in out.splitlines() if " path " in line]


def temporary_snapshots(agent) -> list[Path]:
    root = agent.projects_root / ".snapshots"
    return sorted(root.iterdir()) if root.is_dir() else []


def engine_starts(agent) -> int:
    """How many restic processes the agent has started, from its log."""
    return sum(1 for argv in agent.started_argvs() if any(a.endswith("restic") for a in argv))


def restic_restore(agent, snapshot_id: str, target: Path, project_id: str) -> None:
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password")}
    subprocess.run(["restic", "-r", str(agent.repository(project_id)), "--no-cache", "restore", snapshot_id,
                    "--target", str(target)], env=env, check=True, capture_output=True, timeout=300)


def qgroup_limit(path: Path) -> int | None:
    out = subprocess.run(["btrfs", "qgroup", "show", "-re", "--raw", "-f", str(path)], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    fields = out[-1].split()
    return None if fields[3] == "none" else int(fields[3])


# ---------------------------------------------------------------- life cycle


def test_ensure_creates_subvolumes_with_the_requested_quota(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id, quota_bytes=64 * MiB)
    assert is_subvolume(agent.home(project_id)) and is_subvolume(agent.persist(project_id))
    assert qgroup_limit(agent.home(project_id)) == 64 * MiB
    ensure(agent, project_id, quota_bytes=64 * MiB)  # again: nothing to do, still fine
    caps = agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    assert caps.backend == "btrfs" and not any("directory backend" in text for text in caps.limitations)


def test_a_project_ensure_restores_gets_the_requested_quota(agent_factory, btrfs_fs, project_id):
    """EnsureProject restoring into a missing home (the newest backup, or a named snapshot):
    the home it places has the request's quota, not the agent's default."""
    agent = btrfs_agent(agent_factory, btrfs_fs, extra=f"[btrfs]\ndefault_quota_bytes = {32 * MiB}\n")
    ensure(agent, project_id)
    fill(agent, project_id, megabytes=1)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    for snapshot_id in ("", backup.summary.snapshot_id):
        subprocess.run(["btrfs", "subvolume", "delete", str(agent.home(project_id)), str(agent.persist(project_id))],
                       check=True, capture_output=True)
        operation = agent.stub.EnsureProject(pb.EnsureProjectRequest(
            request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.AUTO,
            snapshot_id=snapshot_id, quota_bytes=48 * MiB), timeout=30)
        final = agent.wait(operation.id)
        assert final.state == pb.SUCCEEDED and final.summary.snapshot_id == backup.summary.snapshot_id, final.error
        assert is_subvolume(agent.home(project_id)) and qgroup_limit(agent.home(project_id)) == 48 * MiB


def test_delete_removes_subvolumes_nested_ones_and_repository_and_is_repeatable(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id)
    write_tree(agent.home(project_id), files=20)
    subprocess.run(["btrfs", "subvolume", "create", str(agent.home(project_id) / "nested")], check=True,
                   capture_output=True)
    (agent.home(project_id) / "nested" / "file").write_text("in a nested subvolume")
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    assert any(project_id in path for path in subvolumes(btrfs_fs.mountpoint))
    for _ in range(2):  # deleting what is gone already succeeds
        operation = agent.stub.DeleteProject(
            pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id, delete_repository=True), timeout=30
        )
        final = agent.wait(operation.id)
        assert final.state == pb.SUCCEEDED, final.error
        assert not agent.home(project_id).exists() and not agent.persist(project_id).exists()
        assert not any(project_id in path for path in subvolumes(btrfs_fs.mountpoint))
        assert not agent.repository(project_id).exists()
        assert temporary_snapshots(agent) == []


# ---------------------------------------------------------------- backup from a read-only snapshot


def test_backup_reads_the_snapshot_taken_at_its_start_and_removes_it(agent_factory, btrfs_fs, project_id, tmp_path):
    agent = btrfs_agent(agent_factory, btrfs_fs, limits=SLOW)
    ensure(agent, project_id)
    fill(agent, project_id, megabytes=3)
    home = agent.home(project_id)
    before = manifest(home)
    victim = sorted(home.iterdir())[0]

    operation = agent.backup(project_id)
    wait_for_phase(agent, operation.id, "upload")  # the snapshot was taken before the engine started
    assert len(temporary_snapshots(agent)) == 1
    (home / "written-during-backup.txt").write_text("too late for this backup")
    with open(victim, "r+b") as handle:
        handle.write(b"changed during the backup")
    final = agent.wait(operation.id, timeout=300)
    assert final.state == pb.SUCCEEDED, final.error
    assert temporary_snapshots(agent) == []

    restic_restore(agent, final.summary.snapshot_id, tmp_path / "out", project_id)
    assert manifest(tmp_path / "out" / "project") == before


def test_temporary_snapshot_is_removed_after_failure_cancel_and_kill(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs, limits=SLOW)
    ensure(agent, project_id)
    fill(agent, project_id, megabytes=3)

    wrong = pb.RepositorySpec(local=pb.LocalRepository(path=str(agent.base / "other-repo")), password="first-password-8c1d")
    assert agent.wait(agent.backup(project_id, repository=wrong).id).state == pb.SUCCEEDED
    wrong.password = "not-the-password"
    failed = agent.wait(agent.backup(project_id, repository=wrong, force=True).id)
    assert (failed.state, failed.error.code) == (pb.FAILED, "FAILED_PRECONDITION")
    assert temporary_snapshots(agent) == []

    operation = agent.backup(project_id, force=True)  # unchanged since the first: forced
    wait_for_phase(agent, operation.id, "upload")
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    assert agent.wait(operation.id).state == pb.CANCELLED
    assert temporary_snapshots(agent) == []

    operation = agent.backup(project_id, force=True)  # unchanged since the first: forced
    wait_for_phase(agent, operation.id, "upload")
    assert temporary_snapshots(agent)
    kill_agent_and_its_engines(agent)
    assert temporary_snapshots(agent), "the kill left its snapshot (removed at the next start)"
    agent.start()
    assert agent.wait(operation.id).state == pb.INTERRUPTED
    assert temporary_snapshots(agent) == []
    assert not any("/.snapshots/" in f"/{path}" for path in subvolumes(btrfs_fs.mountpoint) if agent.base.name in path)


# ---------------------------------------------------------------- unchanged-project skip


def test_unchanged_project_is_up_to_date_without_an_engine_and_one_byte_makes_a_backup(
    agent_factory, btrfs_fs, project_id
):
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id)
    write_tree(agent.home(project_id), files=30)
    write_tree(agent.persist(project_id), files=2, depth=0)
    first = agent.wait(agent.backup(project_id).id)
    assert first.state == pb.SUCCEEDED, first.error

    starts = engine_starts(agent)
    again = agent.wait(agent.backup(project_id).id)
    assert again.state == pb.UP_TO_DATE, again.error
    assert again.summary.snapshot_id == first.summary.snapshot_id
    assert engine_starts(agent) == starts, "an unchanged project must not start the engine"

    agent.stop()
    agent.start()  # the recorded generation survives a restart
    starts = engine_starts(agent)  # the start-up version probe is a restic process too
    assert agent.wait(agent.backup(project_id).id).state == pb.UP_TO_DATE
    assert engine_starts(agent) == starts

    target = sorted(p for p in agent.home(project_id).rglob("*") if p.is_file())[0]
    data = bytearray(target.read_bytes())
    data[0] ^= 1
    target.write_bytes(bytes(data))  # one changed byte, no sync: the agent must see it all the same
    changed = agent.wait(agent.backup(project_id).id)
    assert changed.state == pb.SUCCEEDED and changed.summary.snapshot_id != first.summary.snapshot_id
    assert engine_starts(agent) == starts + 1

    (sorted(agent.persist(project_id).iterdir())[0]).write_text("persist changed")
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED

    forced = agent.wait(agent.backup(project_id, force=True).id)
    assert forced.state == pb.SUCCEEDED
    assert engine_starts(agent) == starts + 3


# ---------------------------------------------------------------- freeze


def test_freeze_blocks_other_writers_backup_still_works_thaw_undoes(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id)
    write_tree(agent.home(project_id), files=10)
    home = agent.home(project_id)

    def write_from_another_process(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", f"echo data > '{path}'"], capture_output=True, text=True)

    for _ in range(2):
        agent.stub.Freeze(pb.FreezeRequest(project_id=project_id), timeout=30)
    for target in (home / "new.txt", agent.persist(project_id) / "new.txt"):
        result = write_from_another_process(target)
        assert result.returncode != 0 and "Read-only file system" in result.stderr
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED

    agent.stop()
    agent.start()  # the freeze is on disk, not in the agent's memory
    assert write_from_another_process(home / "new.txt").returncode != 0
    snapshot = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots[0]
    refused = agent.wait(agent.restore(project_id, snapshot.id).id)
    assert (refused.state, refused.error.code) == (pb.FAILED, "FAILED_PRECONDITION")

    for _ in range(2):
        agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=10)
    assert write_from_another_process(home / "new.txt").returncode == 0
    assert (home / "new.txt").read_text() == "data\n"
    with pytest.raises(grpc.RpcError) as info:
        agent.stub.Freeze(pb.FreezeRequest(project_id=str(uuid.uuid4())), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- restore: staging, swap, quota, crashes


def test_restore_over_quota_is_resource_exhausted_and_the_old_home_stays(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id, quota_bytes=24 * MiB)
    home = agent.home(project_id)
    fill(agent, project_id, megabytes=16)
    backup = agent.wait(agent.backup(project_id).id, timeout=300)
    assert backup.state == pb.SUCCEEDED, backup.error
    # The home shrinks; then the quota shrinks below the snapshot's size but above the home's.
    for path in sorted(home.glob("blob-*.bin"))[4:]:
        path.unlink()
    subprocess.run(["btrfs", "filesystem", "sync", str(home)], check=True)
    ensure(agent, project_id, quota_bytes=8 * MiB)
    before = manifest(home)

    final = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id, timeout=300)
    assert (final.state, final.error.code) == (pb.FAILED, "RESOURCE_EXHAUSTED"), final.error
    assert manifest(home) == before
    (home / "still-writable.txt").write_text("yes")
    assert agent.staging_left() == []


def test_a_restored_project_is_up_to_date_until_its_first_write(agent_factory, btrfs_fs, project_id, tmp_path):
    """The restore records the staged subvolumes' generations, read before the swap: the swap does
    not change them (the next backup starts no engine), and a write into the live project after
    it does (the next backup is a real one), however soon after the restore it came."""
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id)
    write_tree(agent.home(project_id), files=20)
    write_tree(agent.persist(project_id), files=2, depth=0)
    backup = agent.wait(agent.backup(project_id).id)
    (agent.home(project_id) / "later.txt").write_text("later")
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    # later.txt was not backed up: a pre-restore snapshot took it first (named in a warning).
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error

    starts = engine_starts(agent)
    unchanged = agent.wait(agent.backup(project_id).id)
    assert (unchanged.state, unchanged.summary.snapshot_id) == (pb.UP_TO_DATE, backup.summary.snapshot_id)
    assert engine_starts(agent) == starts

    (agent.persist(project_id) / "edited.db").write_text("written right after the restore")
    edited = agent.wait(agent.backup(project_id).id)
    assert edited.state == pb.SUCCEEDED and edited.summary.snapshot_id != backup.summary.snapshot_id, edited
    assert engine_starts(agent) > starts
    restic_restore(agent, edited.summary.snapshot_id, tmp_path / "check", project_id)
    assert (tmp_path / "check" / "persist" / "edited.db").read_text() == "written right after the restore"


def test_restore_swaps_staging_into_place_and_removes_the_old_home(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id, quota_bytes=64 * MiB)
    write_tree(agent.home(project_id), files=40)
    write_tree(agent.persist(project_id), files=3, depth=0)
    snapshot_home, snapshot_persist = manifest(agent.home(project_id)), manifest(agent.persist(project_id))
    backup = agent.wait(agent.backup(project_id).id)
    (agent.home(project_id) / "later.txt").write_text("later")
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error  # later.txt: a pre-restore snapshot
    assert manifest(agent.home(project_id)) == snapshot_home
    assert manifest(agent.persist(project_id)) == snapshot_persist
    assert is_subvolume(agent.home(project_id)) and qgroup_limit(agent.home(project_id)) == 64 * MiB
    assert agent.staging_after_cleanup() == []
    assert not any(".staging" in path for path in subvolumes(btrfs_fs.mountpoint) if agent.base.name in path)
    # The old home is out of staging, kept for undo-restore (test_restore_undo.py), not in the project.
    assert (agent.projects_root / ".undo" / restore.id / "project" / "later.txt").read_text() == "later"


def test_sigkill_during_the_engine_restore_keeps_the_old_home(agent_factory, btrfs_fs, project_id):
    agent = btrfs_agent(agent_factory, btrfs_fs, limits=SLOW)
    ensure(agent, project_id)
    fill(agent, project_id, megabytes=3)
    backup = agent.wait(agent.backup(project_id).id, timeout=300)
    for path in list(agent.home(project_id).iterdir())[:3]:
        path.unlink()
    (agent.home(project_id) / "after-backup.txt").write_text("edited after the backup")
    before = manifest(agent.home(project_id)), manifest(agent.persist(project_id))

    operation = agent.restore(project_id, backup.summary.snapshot_id)
    wait_for_phase(agent, operation.id, "restore", field="bytes_total")
    assert agent.staging_left()
    kill_agent_and_its_engines(agent)
    agent.start()
    assert agent.wait(operation.id).state == pb.INTERRUPTED
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before
    assert agent.staging_left() == []


@pytest.mark.parametrize("swapped", [1, 2], ids=["between-the-two-exchanges", "after-both-exchanges"])
def test_sigkill_during_the_swap_is_rolled_forward(agent_factory, btrfs_fs, project_id, swapped):
    """The agent dies after the engine finished, while swapping: recovery completes the swap.

    What the agent persists right before the swap is replayed with the real backend,
    then the process "dies" after ``swapped`` of the two exchanges.
    """
    from agent.backends.btrfs import BtrfsBackend
    from agent.journal import Journal
    from agent.model import OperationKind, OperationRecord, OperationState

    agent = btrfs_agent(agent_factory, btrfs_fs)
    ensure(agent, project_id)
    write_tree(agent.home(project_id), files=30)
    write_tree(agent.persist(project_id), files=3, depth=0)
    snapshot = manifest(agent.home(project_id)), manifest(agent.persist(project_id))
    backup = agent.wait(agent.backup(project_id).id)
    (agent.home(project_id) / "later.txt").write_text("later")
    agent.stop()

    backend = BtrfsBackend(projects_root=agent.projects_root, persist_root=agent.persist_root,
                           state_dir=agent.state_dir)
    staging = asyncio.run(backend.prepare_staging(project_id, "op-crash"))
    unpacked = agent.base / "unpacked"
    restic_restore(agent, backup.summary.snapshot_id, unpacked, project_id)
    for staged, root in ((staging.project, "project"), (staging.persist, "persist")):
        subprocess.run(["cp", "-a", f"{unpacked / root}/.", str(staged)], check=True)
    plan = backend.swap_plan(project_id, staging)
    journal = Journal(agent.state_dir / "agent.sqlite")
    journal.insert_operation(OperationRecord(
        id="op-crash", request_id="crash-request", kind=OperationKind.RESTORE, project_id=project_id,
        fingerprint="x", params={}, state=OperationState.RUNNING, created_at=time.time(),
        recovery={"staging": "op-crash", "swap": plan},
    ))
    journal.close()
    backend.swap_in(plan[:swapped])

    agent.start()
    operation = agent.wait("op-crash")
    assert operation.state == pb.INTERRUPTED and "completed during recovery" in operation.error.message
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == snapshot
    assert agent.staging_left() == []
    assert not any(".staging" in path for path in subvolumes(btrfs_fs.mountpoint) if agent.base.name in path)
