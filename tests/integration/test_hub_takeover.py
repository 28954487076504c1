"""Work that outlives its starter, with real processes: a hub process SIGKILLed after a move's
freeze, and another hub process (``buckets-hub work``) on the same store taking the move over
once its lease lapsed and completing it; the same with a worker restarted on SQLite; an owner
paused past its lease that finds the move taken over and stops; a copy taken over. (Two hub
processes asked to move one project at once: test_move.py
test_two_hub_processes_on_postgres_move_the_same_project_once.)

Outcomes are checked against ground truth: the project's trees as the source held them before
the move (``trees``, a full manifest) against the target's afterwards, the agents' own frozen
flags, and the store's record of who owned the move. No assertion is about time: the lease is
short so the tests are quick, and each wait is for an event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub_client.agent_cli import EXIT_IN_PROGRESS
from hub_client.hub import Hub
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Cleanup, CopyStatus, JobKind, MoveStatus, open_store
from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, create_project, manifest, write_tree
from tests.hubs import client_config, register
from tests.integration.test_faults_hub import small_project, status, trees, wait_for_step

pytestmark = [requires_restic]

LEASE = "3"  # seconds: short, so a dead owner's move is taken over quickly
NAMES = ("host-a", "host-b")


def hub_command(url: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "hub_client", "--store", url, "--retries", "3", "--lease-seconds", LEASE, *argv]


def worker_command(url: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "hub_client.hub_service_cli", "work", "--store", url, "--retries", "3",
            "--lease-seconds", LEASE, "--scan-seconds", "0.5", *argv]


def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                            start_new_session=True)


def kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def stop_worker(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill(process)
        raise


def wait_until(predicate, what: str, timeout: float = 240.0, processes: tuple[subprocess.Popen, ...] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for process in processes:
            assert process.poll() is None, f"{process.args[:4]} exited {process.returncode} while waiting for {what}"
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached")


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server.create_database("takeover")


def prepared(url: str, two_hosts) -> tuple[Hub, str, tuple[dict, dict]]:
    """A hub on ``url`` with both hosts and a small project on host-a; its trees before the move."""
    hub = Hub(open_store(url), client_config=client_config)
    for agent, name in zip(two_hosts, NAMES):
        register(hub, name, agent)
    project_id = small_project(hub, two_hosts[0], "host-a")
    return hub, project_id, trees(two_hosts[0], project_id)


def settled(hub: Hub, move_id: str) -> bool:
    """The move has ended; a completed one's source cleanup too (done, or a warning why not)."""
    move = hub.store.get_move(move_id)
    if move.status in (MoveStatus.PENDING, MoveStatus.RUNNING):
        return False
    if move.status != MoveStatus.SUCCEEDED or move.cleanup == Cleanup.DONE:
        return True
    return hub.store.movelog(move_id)[-1].kind == "warning"


def lease_owners(hub: Hub, move_id: str) -> list[str]:
    return [entry.data["owner"] for entry in hub.store.movelog(move_id) if entry.kind == "lease"]


def check_completed_by(hub: Hub, move_id: str, project_id: str, two_hosts, before, owner_is) -> None:
    """The move completed, by the process ``owner_is`` accepts, with the project in service on
    host-b holding exactly what host-a held, and nothing left frozen or behind."""
    source, target = two_hosts
    move = hub.store.get_move(move_id)
    assert move.status == MoveStatus.SUCCEEDED, move.error
    lease = hub.store.get_lease(JobKind.MOVE, move_id)
    assert owner_is(lease.owner) and lease.expires_at is None and lease.epoch >= 2, lease
    owners = lease_owners(hub, move_id)
    assert len(set(owners)) >= 2 and owner_is(owners[-1]), owners  # started by one process, finished by another
    resumed = [e for e in hub.store.movelog(move_id) if e.kind == "attempt"][-1]
    assert resumed.data["how"] == "resume", resumed
    assert hub.store.get_project(project_id).host_id == "host-b"
    assert trees(target, project_id) == before
    assert not status(target, project_id).frozen
    (target.home(project_id) / "written-after-the-takeover.txt").write_text("writable on the target\n")
    assert not source.home(project_id).exists() and move.cleanup == Cleanup.DONE


def test_a_move_whose_hub_was_killed_after_the_freeze_is_completed_by_another_hub_process(
        tmp_path: Path, two_hosts, pg_url: str) -> None:
    """Must show: `buckets move` SIGKILLed after the freeze; a `buckets-hub work` process on the
    same PostgreSQL store takes the move over once the lease lapsed and completes it."""
    hub, project_id, before = prepared(pg_url, two_hosts)
    worker = None
    try:
        starter = spawn(hub_command(pg_url, "move", project_id, "--to", "host-b"), tmp_path / "starter.log")
        try:
            move_id = wait_for_step(hub.store, project_id, "final_backup", starter)
        finally:
            kill(starter)
        stopped = hub.store.get_move(move_id)
        assert stopped.status == MoveStatus.RUNNING, (stopped, (tmp_path / "starter.log").read_text())
        assert status(two_hosts[0], project_id).frozen  # killed after the freeze: frozen, nobody to thaw it
        [starter_owner] = lease_owners(hub, move_id)
        assert f":{starter.pid}:" in starter_owner

        worker = spawn(worker_command(pg_url, "--owner", "worker-b"), tmp_path / "worker.log")
        wait_until(lambda: settled(hub, move_id),
                   "the move taken over and finished", processes=(worker,))
        check_completed_by(hub, move_id, project_id, two_hosts, before, lambda owner: owner == "worker-b")
        assert stop_worker(worker) == 0
    finally:
        if worker is not None and worker.poll() is None:
            kill(worker)
        hub.store.close()
        hub.close()


def test_a_worker_killed_mid_move_and_restarted_on_sqlite_completes_the_move(tmp_path: Path, two_hosts) -> None:
    """Must show: the one hub process of a SQLite store (`buckets-hub work`) SIGKILLed after the
    freeze of a move it was running; restarted, it takes the move over and completes it."""
    url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    hub, project_id, before = prepared(url, two_hosts)
    workers: list[subprocess.Popen] = []
    try:
        # A move handed to the hub service, whose acceptance lapsed at once (as when the service
        # that accepted it died before starting it): the worker's scan starts it.
        move = hub.store.create_move(project_id, "host-a", "host-b")
        hub.store.claim_lease(JobKind.MOVE, move.id, "service-that-accepted-it", 0)
        workers.append(spawn(worker_command(url), tmp_path / "worker-1.log"))
        try:
            wait_for_step(hub.store, project_id, "final_backup", workers[0])
        finally:
            kill(workers[0])
        assert hub.store.get_move(move.id).status == MoveStatus.RUNNING
        assert status(two_hosts[0], project_id).frozen
        assert any(f":{workers[0].pid}:" in owner for owner in lease_owners(hub, move.id))

        workers.append(spawn(worker_command(url), tmp_path / "worker-2.log"))
        wait_until(lambda: settled(hub, move.id),
                   "the move taken over by the restarted worker", processes=(workers[1],))
        check_completed_by(hub, move.id, project_id, two_hosts, before,
                           lambda owner: f":{workers[1].pid}:" in owner)
        assert stop_worker(workers[1]) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                kill(worker)
        hub.store.close()
        hub.close()


def pause_outside_a_transaction(process: subprocess.Popen, url: str) -> None:
    """SIGSTOP ``process`` at a moment it has no store transaction open: paused inside one, it
    would hold its move's row lock, and the claim of lapsed leases skips locked rows (SKIP LOCKED),
    so nobody could claim the move until it went on. Only the paused process uses this database
    then (and this look), and a stopped process's sessions cannot change (a statement it sent
    still running counts as open), so one look after the stop tells."""
    import psycopg

    while True:
        os.killpg(process.pid, signal.SIGSTOP)
        with psycopg.connect(url, autocommit=True) as conn:
            open_transactions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state <> 'idle' AND pid <> pg_backend_pid()").fetchone()[0]
        if not open_transactions:
            return
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.01)


def test_an_owner_paused_past_its_lease_finds_its_move_taken_over_and_stops(
        tmp_path: Path, two_hosts, pg_url: str) -> None:
    """Fencing with real processes: `buckets move` paused (SIGSTOP) after the freeze, past its
    lease; a worker claims the move but cannot run it while the paused process holds the move
    lock. Continued, the old owner's renew fails: it stops without a further step and without
    undoing anything (exit 3, "lost the lease"), and the worker completes the move."""
    hub, project_id, before = prepared(pg_url, two_hosts)
    worker = None
    starter = spawn(hub_command(pg_url, "move", project_id, "--to", "host-b"), tmp_path / "starter.log")
    try:
        move_id = wait_for_step(hub.store, project_id, "final_backup", starter)
        pause_outside_a_transaction(starter, pg_url)
        paused_at = hub.store.get_move(move_id).step
        worker = spawn(worker_command(pg_url, "--owner", "worker-b"), tmp_path / "worker.log")
        wait_until(lambda: hub.store.get_lease(JobKind.MOVE, move_id).owner == "worker-b",
                   "the worker's claim of the lapsed lease", processes=(worker,))
        assert hub.store.get_move(move_id).step == paused_at  # the lock kept the worker from running it
        os.killpg(starter.pid, signal.SIGCONT)
        code = starter.wait(timeout=120)
        log = (tmp_path / "starter.log").read_text()
        assert code == EXIT_IN_PROGRESS and "lost the lease" in log, (code, log)
        wait_until(lambda: settled(hub, move_id),
                   "the move completed by the worker", processes=(worker,))
        check_completed_by(hub, move_id, project_id, two_hosts, before, lambda owner: owner == "worker-b")
        kinds = [entry.kind for entry in hub.store.movelog(move_id)]
        assert "failed" not in kinds and "thaw" not in kinds  # the old owner undid nothing
        assert stop_worker(worker) == 0
    finally:
        if starter.poll() is None:
            os.killpg(starter.pid, signal.SIGCONT)
            kill(starter)
        if worker is not None and worker.poll() is None:
            kill(worker)
        hub.store.close()
        hub.close()


def test_a_copy_whose_hub_was_killed_mid_way_is_completed_by_a_worker(tmp_path: Path, two_hosts) -> None:
    """`buckets copy` between hosts SIGKILLed once its restore step is recorded; a worker takes
    the copy over and completes it: the target path holds the source's files, and the temporary
    snapshot is forgotten."""
    url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    hub, source, _ = prepared(url, two_hosts)
    a, b = two_hosts
    write_tree(a.home(source) / "data", files=30, size=512, seed=11)
    target = create_project(b, files=0)
    hub.add_project(target, "host-b", "eu")
    worker = None
    try:
        starter = spawn(hub_command(url, "copy", f"{source}:data", f"{target}:incoming/data"),
                        tmp_path / "starter.log")
        try:
            def restoring():
                copies = hub.store.list_copies(project_id=source)
                steps = [e.message for e in hub.store.copylog(copies[0].id) if e.kind == "step"] if copies else []
                return copies[0].id if "restore" in steps else None

            copy_id = wait_until(restoring, "the copy's restore step", processes=(starter,))
        finally:
            kill(starter)
        assert hub.store.get_copy(copy_id).status == CopyStatus.RUNNING

        worker = spawn(worker_command(url, "--owner", "worker-b"), tmp_path / "worker.log")
        wait_until(lambda: hub.store.get_copy(copy_id).status not in (CopyStatus.PENDING, CopyStatus.RUNNING),
                   "the copy taken over and finished", processes=(worker,))
        copy = hub.store.get_copy(copy_id)
        assert copy.status == CopyStatus.SUCCEEDED, copy.error
        assert hub.store.get_lease(JobKind.COPY, copy_id).owner == "worker-b"
        assert manifest(b.home(target) / "incoming" / "data") == manifest(a.home(source) / "data")
        assert copy.snapshot_id is None and not [s for s in a.stub.ListSnapshots(
            pb.ListSnapshotsRequest(project_id=source), timeout=30).snapshots if "purpose=copy" in s.tags]
        assert stop_worker(worker) == 0
    finally:
        if worker is not None and worker.poll() is None:
            kill(worker)
        hub.store.close()
        hub.close()
