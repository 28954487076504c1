"""No stale locks (issue 16): an engine that dies with its agent (SIGKILL, PDEATHSIG) or is
killed by the agent (a cancelled run past its grace) leaves its restic lock; the agent removes
it (``restic unlock``: stale locks only) at its next start or right after the run, so stock
``restic check`` (with locking) is clean; a live process's lock is never removed.

Ground truth is restic itself, run here with the repository's password file: the lock files
in ``<repository>/locks`` and a stock ``restic check``. ``BUCKETS_LOCK_ITERATIONS`` (default
10) is how many kills each SIGKILL test makes; each reuses one agent base dir and one project.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import kill_and_reap, manifest, new_id, write_tree
from tests.integration.test_crash_recovery import engine_processes
from tests.integration.test_operations import SLOW

pytestmark = requires_restic

SEED = 16016
LOCK_ID = re.compile(r"[0-9a-f]{64}")


def iterations() -> int:
    return max(1, int(os.environ.get("BUCKETS_LOCK_ITERATIONS", "10")))


@pytest.fixture
def locking_agent(agent_factory):
    """An agent (upload and download slowed, so engine runs last about a second) with its
    default local repositories: (agent, the repository password file it generated)."""
    agent = agent_factory("agent", limits=SLOW)
    return agent, agent.state_dir / "repository.password"


def restic(repository: Path, password_file: Path, *args: str, stdin=None, popen: bool = False):
    """Stock restic on ``repository`` (no cache), as an operator runs it."""
    argv = ["restic", "-r", str(repository), "--password-file", str(password_file), "--no-cache", *args]
    if popen:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, input=stdin)


def lock_files(repository: Path) -> list[str]:
    """The ids of the lock files in the repository (not restic's half-written ``*-tmp-*`` ones)."""
    locks = repository / "locks"
    return sorted(p.name for p in locks.iterdir() if LOCK_ID.fullmatch(p.name)) if locks.is_dir() else []


def read_lock(repository: Path, password_file: Path, lock_id: str) -> dict:
    result = restic(repository, password_file, "--no-lock", "cat", "lock", lock_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stock_check(repository: Path, password_file: Path) -> subprocess.CompletedProcess:
    """``restic check`` with its exclusive lock, as an operator runs it."""
    return restic(repository, password_file, "check")


def new_project(agent, rng: random.Random) -> str:
    project_id = new_id()
    operation = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.NONE),
        timeout=30)
    assert agent.wait(operation.id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=40, size=1024, seed=rng.randrange(1 << 30))
    write_tree(agent.persist(project_id), files=3, size=512, depth=0, seed=rng.randrange(1 << 30))
    return project_id


def write_batch(home: Path, rng: random.Random) -> None:
    """New content (about 1.2 s of upload at SLOW) so that every backup has data to send, and
    is still sending it when the kill comes (up to 0.2 s after its lock was seen, later on a
    loaded machine; with the tests' cheap repository key (tests/cheap_repository.py) the
    backup takes its lock within milliseconds, so this upload is all of its run)."""
    shutil.rmtree(home / "batch", ignore_errors=True)
    write_tree(home / "batch", files=250, size=2400, seed=rng.randrange(1 << 30), depth=1)


def running_engines(agent, subcommand: str) -> list[psutil.Process]:
    found = []
    for process in engine_processes(agent):
        try:
            if process.ppid() == os.getpid():
                continue  # a restic this test runs itself, not the agent's engine
            if subcommand in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_for_engine_lock(agent, repository: Path, subcommand: str, operation_id: str,
                         known: frozenset[str] = frozenset()) -> tuple[list[psutil.Process], list[str]]:
    """Wait until the operation's restic ``subcommand`` runs and a lock file (not in ``known``)
    is in the repository; returns (engines, new lock ids). Fails when the operation ends first."""
    deadline = time.monotonic() + 60
    while True:
        engines = running_engines(agent, subcommand)
        fresh = [lock for lock in lock_files(repository) if lock not in known]
        if engines and fresh:
            return engines, fresh
        operation = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=operation_id), timeout=10)
        assert operation.state in (pb.PENDING, pb.RUNNING), (
            f"the {subcommand} ended before its lock was seen: {pb.OperationState.Name(operation.state)}")
        assert time.monotonic() < deadline, f"no restic {subcommand} with a lock within 60 s"
        time.sleep(0.01)


def kill_agent_and_wait(agent, engines: list[psutil.Process]) -> None:
    """SIGKILL the agent; wait until its engines are gone, reaped too (a zombie's pid still
    exists for restic's stale-lock test)."""
    kill_and_reap(agent, engines)


def interrupted(agent, operation_id: str) -> pb.Operation:
    operation = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=operation_id), timeout=10)
    assert operation.state == pb.INTERRUPTED, pb.OperationState.Name(operation.state)
    return operation


def kill_during(agent, password_file: Path, repository: Path, subcommand: str, start, rng: random.Random,
                iteration: int) -> bool:
    """One fault: ``start()`` an operation, SIGKILL the agent while its restic ``subcommand``
    holds a lock, restart; stock ``restic check`` must then be clean, no lock left."""
    operation = start()
    engines, _ = wait_for_engine_lock(agent, repository, subcommand, operation.id)
    time.sleep(rng.uniform(0.0, 0.2))
    kill_agent_and_wait(agent, engines)
    left = lock_files(repository)
    context = f"iteration {iteration}: {len(left)} lock(s) left by the killed {subcommand}"
    if iteration == 0 and left:
        # The fault is real: without the agent's recovery, stock restic refuses to check.
        refused = stock_check(repository, password_file)
        assert refused.returncode != 0 and "locked" in refused.stderr, (context, refused.stderr)
    agent.start()

    record = interrupted(agent, operation.id)
    check = stock_check(repository, password_file)
    assert check.returncode == 0, (context, check.stderr)
    assert lock_files(repository) == [], context
    if left:
        assert "stale locks removed" in record.error.message, (context, record.error.message)
    return bool(left)


def test_sigkill_during_backup_leaves_no_lock_after_restart(locking_agent):
    agent, password_file = locking_agent
    rng = random.Random(SEED)
    project_id = new_project(agent, rng)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    repository = agent.repository(project_id)
    stale = 0
    for iteration in range(iterations()):
        write_batch(agent.home(project_id), rng)
        stale += kill_during(agent, password_file, repository, "backup",
                             lambda: agent.backup(project_id, force=True), rng, iteration)
    # Most kills hit a restic holding its lock (a run lasts about a second; the kill comes
    # within 0.2 s of the lock): the recovery had locks to remove.
    assert stale >= max(1, iterations() // 2), f"only {stale} of {iterations()} kills left a lock"
    retry = agent.wait(agent.backup(project_id, force=True).id)
    assert retry.state == pb.SUCCEEDED, retry.error


def test_sigkill_during_restore_leaves_no_lock_after_restart(locking_agent):
    agent, password_file = locking_agent
    rng = random.Random(SEED + 1)
    project_id = new_project(agent, rng)
    write_batch(agent.home(project_id), rng)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot = (manifest(agent.home(project_id)), manifest(agent.persist(project_id)))
    repository = agent.repository(project_id)
    stale = 0
    for iteration in range(iterations()):
        (agent.home(project_id) / f"edited-{iteration}.txt").write_text("after the backup\n")
        stale += kill_during(agent, password_file, repository, "restore",
                             lambda: agent.restore(project_id, backup.summary.snapshot_id), rng, iteration)
    assert stale >= max(1, iterations() // 2), f"only {stale} of {iterations()} kills left a lock"
    retry = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    assert retry.state == pb.SUCCEEDED, retry.error
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == snapshot


def test_recovery_keeps_the_lock_of_a_live_restic(locking_agent):
    """Another restic (another operation, here one run by hand) holds a lock of the same
    repository while the agent is killed mid-backup: recovery removes the dead backup's lock
    only; the live one stays until its process ends, which removes it itself."""
    agent, password_file = locking_agent
    rng = random.Random(SEED + 2)
    project_id = new_project(agent, rng)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    repository = agent.repository(project_id)

    live = restic(repository, password_file, "backup", "--stdin", "--stdin-filename", "live.txt", "--host",
                  "someone-else", popen=True)
    try:
        deadline = time.monotonic() + 30
        while not (live_locks := lock_files(repository)):
            assert live.poll() is None, live.stderr.read().decode()
            assert time.monotonic() < deadline, "the live restic took no lock"
            time.sleep(0.02)
        assert len(live_locks) == 1
        live_lock = read_lock(repository, password_file, live_locks[0])
        assert (live_lock["pid"], live_lock["hostname"]) == (live.pid, socket.gethostname())

        write_batch(agent.home(project_id), rng)
        operation = agent.backup(project_id, force=True)
        engines, dead_locks = wait_for_engine_lock(agent, repository, "backup", operation.id,
                                                   known=frozenset(live_locks))
        kill_agent_and_wait(agent, engines)
        assert set(lock_files(repository)) >= set(live_locks) | set(dead_locks[:1])
        # The lock the agent's engine wrote names this host and the engine's pid: what makes it
        # stale for this host's `restic unlock` now that the process is gone.
        dead_lock = read_lock(repository, password_file, dead_locks[0])
        assert dead_lock["hostname"] == socket.gethostname()
        assert dead_lock["pid"] in {p.pid for p in engines}

        agent.start()
        record = interrupted(agent, operation.id)
        assert "stale locks removed" in record.error.message, record.error.message
        assert lock_files(repository) == live_locks, "recovery removed the live process's lock"
        assert live.poll() is None
    finally:
        live.stdin.write(b"what the other operation saves\n")
        live.stdin.close()
        live.wait(timeout=120)
    assert live.returncode == 0, live.stderr.read().decode()
    assert lock_files(repository) == []
    check = stock_check(repository, password_file)
    assert check.returncode == 0, check.stderr


def test_a_cancelled_engine_killed_past_its_grace_leaves_no_lock(locking_agent):
    """A restic that cannot clean up (stopped, so SIGINT waits) is SIGKILLed after the grace
    when its backup is cancelled: the agent unlocks right after, before the operation ends."""
    agent, password_file = locking_agent
    rng = random.Random(SEED + 3)
    project_id = new_project(agent, rng)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    repository = agent.repository(project_id)
    write_batch(agent.home(project_id), rng)

    operation = agent.backup(project_id, force=True)
    engines, locks = wait_for_engine_lock(agent, repository, "backup", operation.id)
    for process in engines:
        process.send_signal(signal.SIGSTOP)
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    ended = agent.wait(operation.id)

    assert ended.state == pb.CANCELLED, pb.OperationState.Name(ended.state)
    assert all(not psutil.pid_exists(p.pid) or p.status() == psutil.STATUS_ZOMBIE for p in engines)
    killed = [e for e in agent.log_events() if e.get("event") == "process.kill"]
    assert killed, "the engine was not killed past its grace (the test did not make the fault)"
    assert lock_files(repository) == []
    check = stock_check(repository, password_file)
    assert check.returncode == 0, check.stderr
