"""Fault suite, storage faults: the S3 server stops during a backup; the filesystem fills during a
restore. Each test injects ``fault_table.iterations()`` faults (at a seeded random moment or of a
seeded random amount) and records each one in the fault table; every fault must lose no data and
the retry after it must succeed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import fault_table
from tests.conftest import requires_restic
from tests.harness import create_project, manifest

pytestmark = [requires_restic, pytest.mark.faults]

PASSWORD = "fault-suite-storage-password-81d3"
SEED = int(os.environ.get("BUCKETS_FAULT_SEED", "20240909"))
MIB = 1024 * 1024


def running_operations(agent) -> list[pb.Operation]:
    """Operations still PENDING, RUNNING or CANCELLING on ``agent``."""
    listing = agent.stub.ListOperations(
        pb.ListOperationsRequest(states=[pb.PENDING, pb.RUNNING, pb.CANCELLING], page_size=100), timeout=10)
    return list(listing.operations)


def trees(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


# ---------------------------------------------------------------- 1. S3 server stopped during backup

KIND_S3 = "S3 server stopped during backup"


def test_s3_server_stopped_during_backup(agent_factory, own_s3_server, tmp_path):
    """The test owns its MinIO (it stops it), stopped in two ways, alternating between faults:

    - *killed*: the MinIO process is SIGKILLed (connections reset, the port refuses) and started
      again on the same data dir and port once the backup has failed;
    - *frozen*: the MinIO process is stopped with SIGSTOP (the port accepts but nothing answers,
      as a hung or partitioned server); SIGCONT brings it back.

    The moment of the fault is a seeded random delay after the backup started. The agent's
    ``stall_timeout`` is 4 s, so restic (which retries an unreachable endpoint for minutes) is
    stopped and the backup ends UNAVAILABLE within seconds; 2 s stopped healthy backups on a
    loaded 2-core machine (repository init and key derivation do little I/O). Its
    ``kill_grace`` is 0.5 s: a restic stopped with its server killed spends any grace retrying
    the removal of its lock, and is SIGKILLed after it (its lock stays, as from any kill).
    """
    rng = random.Random(SEED)
    server = own_s3_server
    try:
        password_file = tmp_path / "s3.password"
        password_file.write_text(PASSWORD)
        password_file.chmod(0o600)
        # Upload slowed so a backup of 1 MiB of new data lasts over 2 s: the fault (at most 1 s
        # after the start) lands inside it.
        agent = agent_factory("s3-faults", extra=server.agent_repository_config(password_file),
                              limits="upload_limit_kib = 512\nstall_timeout = 4\nkill_grace = 0.5")
        project_id = make_project(agent)
        first = agent.wait(agent.backup(project_id).id, timeout=120)
        assert first.state == pb.SUCCEEDED, first.error
        successful_backups = 1

        for index in range(fault_table.iterations()):
            frozen = index % 2 == 1
            # New data each round, so each backup has something to upload when the fault hits.
            (agent.home(project_id) / "fresh.bin").write_bytes(rng.randbytes(MIB))
            (agent.home(project_id) / f"round-{index}.txt").write_text(f"round {index}\n")
            before = trees(agent, project_id)
            delay = rng.uniform(0.1, 1.0)

            operation = agent.backup(project_id)
            time.sleep(delay)
            if frozen:
                server.process.send_signal(signal.SIGSTOP)
            else:
                server.kill()
            try:
                failed = agent.wait(operation.id, timeout=120)
                failed_running = running_operations(agent)
            finally:
                if frozen:
                    server.process.send_signal(signal.SIGCONT)
                else:
                    server.start()
            fault_ok = (failed.state, failed.error.code) == (pb.FAILED, "UNAVAILABLE") and not failed_running
            intact = trees(agent, project_id) == before

            retry = agent.wait(agent.backup(project_id).id, timeout=120)
            recovered = retry.state == pb.SUCCEEDED
            restored_equal = False
            if recovered:
                successful_backups += 1
                # Damage the live tree, then restore the retry's snapshot over it.
                (agent.home(project_id) / "fresh.bin").write_bytes(b"damaged")
                restore = agent.wait(agent.restore(project_id, retry.summary.snapshot_id).id, timeout=120)
                # Over unsaved changes: SUCCEEDED_WITH_WARNINGS, naming the pre-restore snapshot it took.
                restored_equal = (restore.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS)
                                  and trees(agent, project_id) == before)
                recovered = restored_equal
            snapshots = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30)
            # The failed backup left no snapshot; every successful one is listed.
            # (The restores' pre-restore snapshots of the damaged tree aside.)
            snapshots_ok = len([s for s in snapshots.snapshots if s.purpose != "pre-restore"]) == successful_backups
            fault_table.record(KIND_S3, data_lost=not (intact and restored_equal and snapshots_ok),
                               recovered=recovered)

            how = "frozen (SIGSTOP)" if frozen else "killed (SIGKILL, started again on its data)"
            assert fault_ok, (f"fault {index} ({how} after {delay:.2f}s): backup ended "
                              f"{pb.OperationState.Name(failed.state)} {failed.error}; still running: {failed_running}")
            assert intact, f"fault {index}: the live tree changed during the failed backup"
            assert recovered, f"fault {index}: retry {pb.OperationState.Name(retry.state)} {retry.error}"
            assert snapshots_ok, (f"fault {index}: {len(snapshots.snapshots)} snapshots listed, "
                                  f"{successful_backups} backups succeeded")
            assert not running_operations(agent)
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)  # so that the fixture can stop it


def make_project(agent) -> str:
    return create_project(agent, files=30, size=4096)


# ---------------------------------------------------------------- 2. filesystem full during restore

KIND_FULL = "filesystem full during restore"
TMPFS_MIB = 24


def _mount_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return f"needs root to mount a small tmpfs (running as uid {os.geteuid()})"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "needs mount and umount on PATH"
    return None


def _is_mounted(path: Path) -> bool:
    from tests.btrfsfs import mounts_at

    return bool(mounts_at(path))


@pytest.fixture
def small_projects_root(tmp_path: Path):
    """A ``TMPFS_MIB`` MiB tmpfs mounted on what will be the agent's projects root
    (``<base>/projects``); unmounted (lazily if busy) however the test ends. Persist and the
    repository stay on the ordinary disk, so only the project's staging can run out of space."""
    reason = _mount_unavailable_reason()
    if reason is not None:
        pytest.skip(f"filesystem-full faults: {reason}")
    base = tmp_path / "full-agent"
    mountpoint = base / "projects"
    mountpoint.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m,mode=0755", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"filesystem-full faults: cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield base
    finally:
        if _is_mounted(mountpoint):
            done = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, text=True, timeout=60)


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def fill(path: Path, leave: int) -> None:
    """Write ``path`` until the filesystem has about ``leave`` bytes free."""
    chunk = b"\0" * MIB
    with open(path, "wb") as ballast:
        while True:
            want = free_bytes(path.parent) - leave
            if want <= 0:
                break
            ballast.write(chunk[: min(len(chunk), want)])
            ballast.flush()
        os.fsync(ballast.fileno())


def test_filesystem_full_during_restore(small_projects_root, agent_factory):
    """Back up a ~3 MiB tree; change the live tree; fill the (24 MiB tmpfs) projects root with a
    ballast file so that only a seeded random fraction of the snapshot fits; the restore must fail
    RESOURCE_EXHAUSTED with the live tree untouched and no staging left; remove the ballast and
    the retry restore must give back the snapshot exactly."""
    rng = random.Random(SEED + 1)
    # Every restore over the edited tree keeps the replaced one (undo-restore): kept briefly here,
    # so that the next fault starts from the same free space.
    agent = agent_factory("full-agent", base=small_projects_root, extra="\n[restore]\nkeep_replaced = 0.5\n")
    assert _is_mounted(agent.projects_root)
    project_id = make_project(agent)
    home = agent.home(project_id)
    for index in range(5):
        (home / f"big-{index}.bin").write_bytes(rng.randbytes(512 * 1024))
    backup = agent.wait(agent.backup(project_id).id, timeout=120)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot = trees(agent, project_id)
    snapshot_bytes = sum(entry[3] for entry in snapshot[0].values() if entry[0] == "file")
    ballast = agent.projects_root / "ballast.bin"

    for index in range(fault_table.iterations()):
        # Change the live tree (the "old" state the failed restore must leave alone).
        victims = sorted(p for p in home.rglob("*.bin") if p.is_file())
        for victim in rng.sample(victims, k=min(3, len(victims))):
            victim.unlink()
        (home / f"edit-{index}.txt").write_text(f"edit {index}: {rng.random()}\n")
        before = trees(agent, project_id)
        leave = int(snapshot_bytes * rng.uniform(0.05, 0.7))
        fill(ballast, leave)

        failed = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id, timeout=120)
        failed_running = running_operations(agent)
        fault_ok = (failed.state, failed.error.code) == (pb.FAILED, "RESOURCE_EXHAUSTED") and not failed_running
        intact = trees(agent, project_id) == before
        staging = agent.staging_left()

        ballast.unlink()
        retry = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id, timeout=120)
        # The failed restore backed the edits up first (a pre-restore snapshot), so the retry finds the
        # project clean; either way a warning would name such a snapshot, not a problem.
        restored = retry.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS) and trees(agent, project_id) == snapshot
        fault_table.record(KIND_FULL, data_lost=not (intact and restored), recovered=restored)

        where = f"fault {index} ({leave} of {snapshot_bytes} bytes free)"
        assert fault_ok, (f"{where}: restore ended {pb.OperationState.Name(failed.state)} {failed.error}; "
                          f"still running: {failed_running}")
        assert intact, f"{where}: the live tree changed after the failed restore"
        assert not staging, f"{where}: staging left behind: {staging}"
        assert restored, f"{where}: retry {pb.OperationState.Name(retry.state)} {retry.error}"
        # Before the next fault fills the disk again: the retry's old trees are removed after it answered.
        assert not agent.staging_after_cleanup() and not running_operations(agent)
        deadline = time.monotonic() + 60
        while list((agent.projects_root / ".undo").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list((agent.projects_root / ".undo").glob("*")), "the kept tree did not expire"
