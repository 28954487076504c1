"""The agent killed (SIGKILL) or stopped (SIGTERM) in the middle of work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, AgentProcess, kill_and_reap, manifest, write_tree
from tests.integration.test_operations import (
    SLOW,
    assert_verify_clean,
    big_project,
    restic_snapshot_count,
    wait_for_phase,
)

pytestmark = requires_restic


def engine_processes(agent) -> list[psutil.Process]:
    """restic processes working on this agent's repositories."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(agent.base) in part for part in cmdline) and any(part.endswith("restic") for part in cmdline):
            found.append(process)
    return found


def kill_agent_and_its_engines(agent, timeout: float = 10) -> None:
    """SIGKILL the agent; its engine processes must die with it (PDEATHSIG).

    Waits until those processes are reaped too: a zombie still "exists" for
    restic's stale-lock test.
    """
    engines = engine_processes(agent)
    assert engines, "no engine process was running"
    kill_and_reap(agent, engines, timeout=timeout)


def test_sigkill_during_backup_then_restart(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    write_tree(agent.home(project_id), files=5)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    large = agent.home(project_id) / "large"
    large.mkdir()
    for index in range(24):
        (large / f"b{index}.bin").write_bytes(os.urandom(256 * 1024))
    before = manifest(agent.home(project_id))
    operation = agent.backup(project_id)
    wait_for_phase(agent, operation.id, "upload")

    kill_agent_and_its_engines(agent)
    agent.start()

    interrupted = agent.wait(operation.id)
    assert interrupted.state == pb.INTERRUPTED
    assert manifest(agent.home(project_id)) == before  # a backup never touches the project
    assert restic_snapshot_count(agent, project_id) == 1
    again = agent.wait(agent.backup(project_id).id)
    assert again.state == pb.SUCCEEDED, again.error
    assert_verify_clean(agent, project_id)


def test_sigkill_during_restore_leaves_the_old_tree_whole(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    big_project(agent, project_id, megabytes=3)
    backup = agent.wait(agent.backup(project_id).id, timeout=180)
    assert backup.state == pb.SUCCEEDED
    # The live tree now differs from the snapshot: after the kill it must be exactly this.
    for path in list(agent.home(project_id).iterdir())[:3]:
        path.unlink()
    (agent.home(project_id) / "after-backup.txt").write_text("edited after the backup")
    before = manifest(agent.home(project_id))
    persist_before = manifest(agent.persist(project_id))

    operation = agent.restore(project_id, backup.summary.snapshot_id)
    # restic writes a file once its pack arrived, so the restore is known to run by its size probe.
    wait_for_phase(agent, operation.id, "restore", field="bytes_total")
    assert agent.staging_left()
    kill_agent_and_its_engines(agent)
    agent.start()

    assert agent.wait(operation.id).state == pb.INTERRUPTED
    assert manifest(agent.home(project_id)) == before
    assert manifest(agent.persist(project_id)) == persist_before
    assert not agent.staging_left()
    again = agent.wait(agent.backup(project_id).id, timeout=180)
    assert again.state == pb.SUCCEEDED, again.error
    assert_verify_clean(agent, project_id)


def test_sigkill_during_the_swap_is_rolled_forward(agent_factory, project_id):
    """The agent dies after the engine finished and the swap began: recovery completes the swap."""
    agent = agent_factory()
    write_tree(agent.home(project_id), files=50)
    write_tree(agent.persist(project_id), files=3, depth=0)
    snapshot_home = manifest(agent.home(project_id))
    backup = agent.wait(agent.backup(project_id).id)
    (agent.home(project_id) / "later.txt").write_text("later")
    agent.stop()

    # Replay what the agent persists right before swapping, then "die" between the two exchanges:
    # the persist tree is swapped, the project tree is not.
    from agent.backends.directory import DirectoryBackend
    from agent.journal import Journal
    from agent.model import OperationKind, OperationRecord, OperationState
    import subprocess

    backend = DirectoryBackend(projects_root=agent.projects_root, persist_root=agent.persist_root,
                               state_dir=agent.state_dir)
    import asyncio

    staging = asyncio.run(backend.prepare_staging(project_id, "op-crash"))
    env = {"RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password"), "PATH": os.environ["PATH"]}
    unpacked = agent.projects_root / ".staging" / "op-crash" / "unpacked"
    subprocess.run(
        ["restic", "-r", str(agent.repository(project_id)), "--no-cache", "restore",
         backup.summary.snapshot_id, "--target", str(unpacked)],
        env=env, check=True, capture_output=True,
    )
    for staged, root in ((staging.project, "project"), (staging.persist, "persist")):
        staged.rmdir()
        shutil.move(unpacked / root, staged)
    plan = backend.swap_plan(project_id, staging)
    journal = Journal(agent.state_dir / "agent.sqlite")
    record = OperationRecord(
        id="op-crash", request_id="crash-request", kind=OperationKind.RESTORE, project_id=project_id,
        fingerprint="x", params={}, state=OperationState.RUNNING, created_at=time.time(),
        recovery={"staging": "op-crash", "swap": plan},
    )
    journal.insert_operation(record)
    journal.close()
    from agent import fsops
    from pathlib import Path

    fsops.put_in_place(Path(plan[0]["staged"]), Path(plan[0]["live"]))  # persist swapped; then "killed"

    agent.start()
    operation = agent.wait("op-crash")
    assert operation.state == pb.INTERRUPTED
    assert "completed during recovery" in operation.error.message
    assert manifest(agent.home(project_id)) == snapshot_home
    assert not agent.staging_left()


def test_sigterm_during_backup_exits_cleanly_within_the_grace_period(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    big_project(agent, project_id, megabytes=4)
    operation = agent.backup(project_id)
    wait_for_phase(agent, operation.id, "upload")
    agent.signal(signal.SIGTERM)
    engines = engine_processes(agent)
    assert agent.wait_exit(timeout=5.0 + 2.0 + 10.0) == 0
    assert not [p for p in engines if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    agent.start()
    final = agent.wait(operation.id)
    assert final.state == pb.INTERRUPTED
    assert "shut down" in final.error.message
    assert not agent.staging_left()


IDLE_CLIENT = """
import sys
import grpc
from hub_client.proto.buckets.v1 import agent_pb2 as pb, agent_pb2_grpc as pb_grpc
channel = grpc.insecure_channel(sys.argv[1])
pb_grpc.AgentStub(channel).GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
print("connected", flush=True)
sys.stdin.read()  # idle, connection open, until the test ends
"""


def test_sigterm_with_an_idle_hub_connected_does_not_wait_out_the_grace_period(tmp_path):
    # A hub keeps its connection open between calls, and a quiet client process answers the
    # server's GOAWAY only when its poller next wakes (here: practically never). The agent must
    # not sit out its grace period for such a connection when no call is in flight.
    agent = AgentProcess(base=tmp_path / "agent", grace_period=600.0).start()
    client = subprocess.Popen(
        [sys.executable, "-c", IDLE_CLIENT, f"127.0.0.1:{agent.port}"], cwd=REPO_ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env={**os.environ, "GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS": "600000"},
    )
    try:
        assert client.stdout.readline().strip() == "connected"
        agent._close_channel()  # only the idle client's connection is left
        agent.signal(signal.SIGTERM)
        # Idle, it stops in a fraction of a second. The bound is only there to tell that from
        # waiting on the connection: the grace period (600 s) or gRPC's GOAWAY timeout (~20 s).
        assert agent.wait_exit(timeout=10.0) == 0
    finally:
        client.kill()
        client.wait()
        agent.kill()
