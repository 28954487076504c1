"""Fault suite, agent faults (issue 9): the agent SIGKILLed in the middle of a backup or a restore,
and a damaged pack file in a repository, each injected ``fault_table.iterations()`` times.

Every injected fault is recorded in the fault table (tests/fault_table.py); the asserts are what
make a run fail. Kill moments come from a seeded random generator so a failing run can be
replayed; each test reuses one agent (restarted after each kill) and one small project.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import fault_table
from tests.conftest import requires_restic
from tests.harness import kill_and_reap, manifest, new_id, write_tree
from tests.integration.test_crash_recovery import engine_processes
from tests.integration.test_operations import SLOW

pytestmark = [requires_restic, pytest.mark.faults]

SEED = 9009
# With SLOW (512 KiB/s up and down) this much new data keeps an engine run busy for about 0.7 s.
BATCH_FILES = 150
BATCH_SIZE = 2400


def write_batch(home: Path, iteration: int) -> None:
    """Replace the project's ``batch/`` directory by new content (so every backup has data to upload)."""
    batch = home / "batch"
    shutil.rmtree(batch, ignore_errors=True)
    write_tree(batch, files=BATCH_FILES, size=BATCH_SIZE, seed=SEED + iteration, depth=1)


def new_project(agent, rng: random.Random) -> str:
    project_id = new_id()
    operation = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.NONE),
        timeout=30)
    assert agent.wait(operation.id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=40, size=1024, seed=rng.randrange(1 << 30))
    write_tree(agent.persist(project_id), files=3, size=512, depth=0, seed=rng.randrange(1 << 30))
    return project_id


def state_of(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def kill_after(agent, delay: float) -> None:
    """SIGKILL the agent (its process group) ``delay`` seconds from now, then wait until every
    engine process it ran is gone and reaped (they die with it: PDEATHSIG)."""
    time.sleep(delay)
    kill_and_reap(agent, engine_processes(agent), timeout=15)


def assert_no_engine_left(agent) -> None:
    alive = [p for p in engine_processes(agent) if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"engine processes left after the restart: {[p.pid for p in alive]}"


def assert_not_running(agent, operation_id: str) -> pb.Operation:
    operation = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=operation_id), timeout=10)
    assert operation.state not in (pb.PENDING, pb.RUNNING, pb.CANCELLING), pb.OperationState.Name(operation.state)
    return operation


def clone_restore(agent, project_id: str, snapshot_id: str) -> tuple[dict, dict]:
    """Restore ``snapshot_id`` of ``project_id``'s repository into a new scratch project (a clone)
    through the agent; returns the clone's (home, persist) manifests and deletes the clone."""
    scratch = new_id()
    restore = agent.wait(agent.restore(scratch, snapshot_id, source_project_id=project_id).id)
    assert restore.state == pb.SUCCEEDED, restore.error
    restored = state_of(agent, scratch)
    shutil.rmtree(agent.home(scratch))
    shutil.rmtree(agent.persist(scratch), ignore_errors=True)
    return restored


def without_root(state: tuple[dict, dict]) -> tuple[dict, dict]:
    """The manifests without the roots' own entries (a clone's root directory is made, not restored)."""
    return tuple({k: v for k, v in m.items() if k != "."} for m in state)


def test_sigkill_agent_during_backup(agent_factory):
    kind = "SIGKILL agent during backup"
    rng = random.Random(SEED + 1)
    agent = agent_factory(limits=SLOW)
    project_id = new_project(agent, rng)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    for iteration in range(fault_table.iterations()):
        write_batch(agent.home(project_id), iteration)
        before = state_of(agent, project_id)
        delay = rng.uniform(0.0, 0.8)

        operation = agent.backup(project_id)
        kill_after(agent, delay)
        agent.start()

        interrupted = assert_not_running(agent, operation.id)
        assert_no_engine_left(agent)
        check = agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.REPOSITORY).id)
        unchanged = state_of(agent, project_id) == before
        retry = agent.wait(agent.backup(project_id, force=True).id)
        restored_equal = False
        if retry.state == pb.SUCCEEDED:
            restored_equal = without_root(clone_restore(agent, project_id, retry.summary.snapshot_id)) == \
                without_root(before)
        fault_table.record(kind, data_lost=not unchanged or not restored_equal,
                           recovered=check.state == pb.SUCCEEDED and retry.state == pb.SUCCEEDED and restored_equal)

        context = f"iteration {iteration}, kill after {delay:.2f} s, op {pb.OperationState.Name(interrupted.state)}"
        assert check.state == pb.SUCCEEDED, (context, check.error)
        assert unchanged, context
        assert retry.state == pb.SUCCEEDED, (context, retry.error)
        assert restored_equal, context


def test_sigkill_agent_during_restore(agent_factory):
    kind = "SIGKILL agent during restore"
    rng = random.Random(SEED + 2)
    agent = agent_factory(limits=SLOW)
    project_id = new_project(agent, rng)
    write_batch(agent.home(project_id), 0)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot = state_of(agent, project_id)
    for iteration in range(fault_table.iterations()):
        # The live tree now differs from the snapshot: after the kill it is exactly one of the two.
        home = agent.home(project_id)
        for path in sorted(home.rglob("*.bin"))[iteration::7]:
            path.unlink()
        (home / f"edited-{iteration}.txt").write_text(f"edited after the backup, iteration {iteration}")
        (agent.persist(project_id) / "app.db").write_bytes(rng.randbytes(700))
        old = state_of(agent, project_id)
        assert old != snapshot
        delay = rng.uniform(0.0, 1.0)

        operation = agent.restore(project_id, backup.summary.snapshot_id)
        kill_after(agent, delay)
        agent.start()

        interrupted = assert_not_running(agent, operation.id)
        assert_no_engine_left(agent)
        after = state_of(agent, project_id)
        whole = after in (old, snapshot)
        no_staging = not agent.staging_left()
        retry = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
        # Over the old tree (edits not backed up) the retry backs them up first: with a warning.
        restored = retry.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS) and state_of(agent, project_id) == snapshot
        fault_table.record(kind, data_lost=not whole, recovered=restored and no_staging)

        context = f"iteration {iteration}, kill after {delay:.2f} s, op {pb.OperationState.Name(interrupted.state)}"
        assert whole, f"{context}: the project is neither the old tree nor the snapshot"
        assert no_staging, context
        assert retry.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS), (context, retry.error)
        assert restored, context


def pack_files(repository: Path) -> list[Path]:
    return sorted(p for p in (repository / "data").glob("*/*") if p.is_file())


def test_corrupt_one_pack_file(agent_factory):
    """A few bytes in the middle of one pack file overwritten: Verify READ_DATA reports DATA_LOSS
    naming the snapshot(s) that need the pack. Recovery: the damaged repository is quarantined (moved
    aside, as an operator would; a fresh one is initialised by the agent after the first fault,
    made with a cheap key after the others) and a forced backup of the intact live project into a fresh
    repository succeeds and restores equal. The live project is the non-corrupted copy: data is
    lost only if it changed."""
    kind = "corrupt one pack file"
    rng = random.Random(SEED + 3)
    agent = agent_factory(make_repositories=False)
    project_id = new_project(agent, rng)
    agent.make_repository(project_id)
    repository = agent.repository(project_id)
    quarantine = agent.base / "quarantine"
    quarantine.mkdir()
    in_repository: list[str] = []  # the snapshots of the current repository
    for iteration in range(fault_table.iterations()):
        write_batch(agent.home(project_id), iteration)
        backup = agent.wait(agent.backup(project_id, force=True).id)
        assert backup.state == pb.SUCCEEDED, backup.error
        in_repository.append(backup.summary.snapshot_id)
        live = state_of(agent, project_id)
        # Every iteration has a fresh repository, so every pick is a different pack (data or tree).
        pack = rng.choice(pack_files(repository))
        data = bytearray(pack.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))

        verify = agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.READ_DATA).id)
        detected = (verify.state == pb.FAILED and verify.error.code == "DATA_LOSS"
                    and pack.name[:8] in verify.error.message
                    and any("affected snapshot(s): " in verify.error.message and s[:8] in verify.error.message
                            for s in in_repository))

        # Recovery: quarantine the damaged repository; the next backup initialises a fresh one
        # (the agent's own init the first time; later a repository made with a cheap key, as an
        # operator may provide one: the ~3.5 s of an init's key calibration and derivation
        # once is enough).
        repository.rename(quarantine / f"{project_id}-{iteration}")
        if iteration > 0:
            agent.make_repository(project_id)
        fresh = agent.wait(agent.backup(project_id, force=True).id)
        in_repository = [fresh.summary.snapshot_id]
        unchanged = state_of(agent, project_id) == live
        restored_equal = fresh.state == pb.SUCCEEDED and \
            without_root(clone_restore(agent, project_id, fresh.summary.snapshot_id)) == without_root(live)
        fault_table.record(kind, data_lost=not unchanged, recovered=restored_equal)

        context = f"iteration {iteration}, pack {pack.name}"
        assert detected, (context, pb.OperationState.Name(verify.state), verify.error)
        assert unchanged, context
        assert fresh.state == pb.SUCCEEDED, (context, fresh.error)
        assert restored_equal, context
