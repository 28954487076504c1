"""Operations through a real agent: progress streams, idempotency, serialisation, the queue, cancel."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import new_id, write_tree

pytestmark = requires_restic

# A bandwidth limit that makes a few megabytes take seconds, so a test can act
# while an operation really runs (restic's own --limit-upload/--limit-download).
SLOW = "upload_limit_kib = 512\ndownload_limit_kib = 512"


def big_project(agent, project_id: str, megabytes: int = 8) -> None:
    home = agent.home(project_id)
    home.mkdir(parents=True)
    for index in range(megabytes * 4):
        (home / f"blob-{index}.bin").write_bytes(os.urandom(256 * 1024))
    agent.persist(project_id).mkdir(parents=True)
    (agent.persist(project_id) / "state.db").write_bytes(os.urandom(4096))


def events_of(updates) -> list[pb.ProgressEvent]:
    return [u.event for u in updates if u.WhichOneof("update") == "event"]


def wait_for_phase(agent, operation_id: str, phase: str, timeout: float = 60, *, field: str = "bytes_done") -> None:
    """Follow the operation until an event of ``phase`` reports a non-zero ``field``."""
    stream = agent.stub.StreamProgress(pb.StreamProgressRequest(operation_id=operation_id), timeout=timeout)
    for update in stream:
        if update.WhichOneof("update") == "event" and update.event.phase == phase and getattr(update.event, field):
            stream.cancel()
            return
    raise AssertionError(f"operation {operation_id} never reached phase {phase}")


def restic_check(agent, project_id: str) -> subprocess.CompletedProcess:
    env = {"RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password"), "PATH": os.environ["PATH"]}
    return subprocess.run(
        ["restic", "-r", str(agent.repository(project_id)), "--no-cache", "check"],
        env=env, capture_output=True, text=True,
    )


def assert_verify_clean(agent, project_id: str) -> None:
    """The agent's Verify (repository check; stale locks of dead processes are removed first) succeeds."""
    operation = agent.wait(agent.verify(project_id).id)
    assert operation.state == pb.SUCCEEDED, operation.error


def restic_snapshot_count(agent, project_id: str) -> int:
    env = {"RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password"), "PATH": os.environ["PATH"]}
    out = subprocess.run(
        ["restic", "-r", str(agent.repository(project_id)), "--no-cache", "snapshots", "--json"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    import json

    return len(json.loads(out))


# ------------------------------------------------------------------ progress


def test_progress_stream_is_ordered_and_ends_with_the_summary(shared_agent, project_id):
    agent = shared_agent
    write_tree(agent.home(project_id), files=200, size=20_000)
    operation = agent.backup(project_id)
    updates = agent.events(operation.id)
    assert updates[0].WhichOneof("update") == "operation"
    assert updates[0].operation.id == operation.id
    events = events_of(updates)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    phases = [e.phase for e in events]
    assert phases[0] == "queue" and "start" in phases and "snapshot" in phases
    assert events[-1].terminal and events[-1].state == pb.SUCCEEDED
    assert events[-1].summary.snapshot_id
    assert events[-1].summary.files_processed >= 200
    assert all(not e.terminal for e in events[:-1])


def test_two_watchers_see_the_same_events_and_reconnect_has_no_gap(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    big_project(agent, project_id, megabytes=3)
    operation = agent.backup(project_id)
    results: dict[str, list] = {}

    def watch(name: str) -> None:
        results[name] = events_of(agent.events(operation.id))

    watchers = [threading.Thread(target=watch, args=(n,)) for n in ("a", "b")]
    for thread in watchers:
        thread.start()

    # A third watcher disconnects after a few events and comes back from the next seq.
    first_part = []
    stream = agent.stub.StreamProgress(pb.StreamProgressRequest(operation_id=operation.id), timeout=60)
    for update in stream:
        if update.WhichOneof("update") == "event":
            first_part.append(update.event)
            if len(first_part) == 4:
                stream.cancel()
                break
    time.sleep(1.0)
    rest = events_of(agent.events(operation.id, from_seq=first_part[-1].seq + 1))
    for thread in watchers:
        thread.join(timeout=120)

    assert [e.seq for e in results["a"]] == [e.seq for e in results["b"]]
    assert results["a"] == results["b"]
    rejoined = first_part + rest
    assert [e.seq for e in rejoined] == [e.seq for e in results["a"]]
    assert rejoined[-1].terminal and rejoined[-1].state == pb.SUCCEEDED


def test_stream_sends_keepalives_while_nothing_happens(agent_factory, project_id):
    agent = agent_factory(limits="max_concurrent_operations = 1\n" + SLOW)
    big_project(agent, project_id, megabytes=1)
    other = new_id()
    big_project(agent, other, megabytes=4)
    blocker = agent.backup(other)
    waiting = agent.backup(project_id)  # PENDING behind the blocker: no events for a while
    kinds = []
    stream = agent.stub.StreamProgress(pb.StreamProgressRequest(operation_id=waiting.id), timeout=60)
    for update in stream:
        kinds.append(update.WhichOneof("update"))
        if kinds.count("keep_alive") >= 2:
            stream.cancel()
            break
    assert kinds[0] == "operation" and kinds.count("keep_alive") >= 2
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=blocker.id), timeout=10)


def test_a_disconnecting_client_does_not_stop_the_operation(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    big_project(agent, project_id, megabytes=2)
    operation = agent.backup(project_id)
    stream = agent.stub.StreamProgress(pb.StreamProgressRequest(operation_id=operation.id), timeout=60)
    next(stream)
    stream.cancel()
    agent.channel.close()
    agent.channel = grpc.insecure_channel(f"127.0.0.1:{agent.port}")
    from hub_client.proto.buckets.v1 import agent_pb2_grpc

    agent.stub = agent_pb2_grpc.AgentStub(agent.channel)
    final = agent.wait(operation.id)
    assert final.state == pb.SUCCEEDED, final.error


def test_stream_of_a_finished_operation_replays_it_and_ends(shared_agent, project_id):
    agent = shared_agent
    write_tree(agent.home(project_id), files=5)
    operation = agent.wait(agent.backup(project_id).id)
    events = events_of(agent.events(operation.id))
    assert events[-1].terminal and events[-1].seq == operation.last_seq
    tail = events_of(agent.events(operation.id, from_seq=operation.last_seq))
    assert [e.seq for e in tail] == [operation.last_seq]


# ------------------------------------------------------------------ idempotency and serialisation


def test_same_request_id_twice_gives_one_operation_and_one_snapshot(shared_agent, project_id):
    agent = shared_agent
    write_tree(agent.home(project_id), files=20)
    request_id = new_id()
    first = agent.backup(project_id, request_id=request_id)
    second = agent.backup(project_id, request_id=request_id)
    assert first.id == second.id and second.joined
    agent.wait(first.id)
    third = agent.backup(project_id, request_id=request_id)
    assert third.id == first.id and third.state == pb.SUCCEEDED
    assert restic_snapshot_count(agent, project_id) == 1


def test_same_request_id_with_other_parameters_is_already_exists(shared_agent, project_id):
    agent = shared_agent
    write_tree(agent.home(project_id), files=3)
    request_id = new_id()
    agent.wait(agent.backup(project_id, request_id=request_id).id)
    with pytest.raises(grpc.RpcError) as info:
        agent.backup(project_id, request_id=request_id, force=True)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_second_backup_joins_and_conflicting_kind_is_aborted(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    big_project(agent, project_id, megabytes=3)
    running = agent.backup(project_id)
    joined = agent.backup(project_id)
    assert joined.id == running.id and joined.joined
    with pytest.raises(grpc.RpcError) as info:
        agent.restore(project_id, "latest")
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert running.id in info.value.details()
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=running.id), timeout=10)
    agent.wait(running.id)


def test_over_the_host_limit_operations_wait_pending_then_run(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 1\n" + SLOW)
    first, second = new_id(), new_id()
    big_project(agent, first, megabytes=2)
    big_project(agent, second, megabytes=1)
    running = agent.backup(first)
    queued = agent.backup(second)
    assert queued.state == pb.PENDING
    status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert (status.running_operations, status.queued_operations) == (1, 1)
    states = [pb.OperationState.Name(e.state) for e in events_of(agent.events(queued.id))]
    assert states[0] == "PENDING" and "RUNNING" in states and states[-1] == "SUCCEEDED"
    assert agent.wait(running.id).state == pb.SUCCEEDED


def test_queue_full_is_resource_exhausted(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 1\nmax_queued_operations = 0\n" + SLOW)
    first, second = new_id(), new_id()
    big_project(agent, first, megabytes=2)
    big_project(agent, second, megabytes=1)
    running = agent.backup(first)
    with pytest.raises(grpc.RpcError) as info:
        agent.backup(second)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=running.id), timeout=10)


# ------------------------------------------------------------------ cancel


def test_cancel_a_running_backup_leaves_no_snapshot_and_a_clean_repository(agent_factory, project_id):
    agent = agent_factory(limits=SLOW)
    write_tree(agent.home(project_id), files=3)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED  # the repository exists
    big_project_dir = agent.home(project_id) / "large"
    big_project_dir.mkdir()
    for index in range(40):
        (big_project_dir / f"b{index}.bin").write_bytes(os.urandom(256 * 1024))
    operation = agent.backup(project_id)
    wait_for_phase(agent, operation.id, "upload")
    cancelled = agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    assert cancelled.state in (pb.CANCELLING, pb.CANCELLED)
    final = agent.wait(operation.id)
    assert final.state == pb.CANCELLED
    events = events_of(agent.events(operation.id))
    assert events[-1].terminal and events[-1].state == pb.CANCELLED
    assert restic_snapshot_count(agent, project_id) == 1
    # restic got SIGINT, so it removed its own lock: even stock restic finds the repository clean.
    check = restic_check(agent, project_id)
    assert check.returncode == 0, check.stdout + check.stderr
    assert_verify_clean(agent, project_id)


def test_cancel_a_pending_operation(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 1\n" + SLOW)
    first, second = new_id(), new_id()
    big_project(agent, first, megabytes=2)
    big_project(agent, second, megabytes=1)
    running = agent.backup(first)
    queued = agent.backup(second)
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=queued.id), timeout=10)
    assert agent.wait(queued.id).state == pb.CANCELLED
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=running.id), timeout=10)
    assert agent.wait(running.id).state == pb.CANCELLED


def test_list_operations_newest_first_and_filtered(shared_agent, project_id):
    agent = shared_agent
    write_tree(agent.home(project_id), files=3)
    ids = [agent.wait(agent.backup(project_id).id).id for _ in range(3)]
    page = agent.stub.ListOperations(pb.ListOperationsRequest(project_id=project_id, page_size=2), timeout=10)
    assert [o.id for o in page.operations] == ids[::-1][:2]
    rest = agent.stub.ListOperations(
        pb.ListOperationsRequest(project_id=project_id, page_size=2, page_token=page.next_page_token), timeout=10
    )
    assert [o.id for o in rest.operations] == [ids[0]]
    assert rest.next_page_token == ""
    succeeded = agent.stub.ListOperations(
        pb.ListOperationsRequest(project_id=project_id, states=[pb.SUCCEEDED]), timeout=10
    )
    assert len(succeeded.operations) == 3
