"""Drain through a real agent (directory backend, restic): every dirty project backed up with
bounded concurrency, clean ones UP_TO_DATE without an engine run, failures reported per project,
idempotency, one drain per host, cancellation."""

from __future__ import annotations

import os
import shutil
import time

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import create_project, new_id

pytestmark = requires_restic

UNFINISHED = [pb.PENDING, pb.RUNNING, pb.CANCELLING]


def drain(agent, request_id: str | None = None, **fields) -> pb.Operation:
    return agent.stub.Drain(pb.DrainRequest(request_id=request_id or new_id(), **fields), timeout=30)


def outcomes(operation: pb.Operation) -> dict[str, pb.ProjectOutcome]:
    return {o.project_id: o for o in operation.summary.projects}


def states(operation: pb.Operation) -> dict[str, str]:
    return {o.project_id: pb.OperationState.Name(o.state) for o in operation.summary.projects}


def snapshot_ids(agent, project_id: str) -> list[str]:
    response = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=60)
    return [s.id for s in response.snapshots]


def engine_runs(agent, project_id: str) -> int:
    """restic processes the agent started on the project's repository, from its log (argv)."""
    repository = str(agent.repository(project_id))
    return sum(1 for argv in agent.started_argvs() if any(a.endswith("restic") for a in argv) and repository in argv)


def change(agent, project_id: str, size: int = 300) -> None:
    (agent.home(project_id) / f"changed-{new_id()}.bin").write_bytes(os.urandom(size))


def drain_messages(agent, operation_id: str) -> list[str]:
    return [u.event.message for u in agent.events(operation_id)
            if u.WhichOneof("update") == "event" and u.event.phase == "drain"]


def unfinished(agent) -> list[pb.Operation]:
    return list(agent.stub.ListOperations(pb.ListOperationsRequest(states=UNFINISHED), timeout=10).operations)


def max_overlap(operations: list[pb.Operation]) -> int:
    """The most operations that ran at one moment (from started_at / finished_at)."""
    points = []
    for op in operations:
        points += [(op.started_at.ToNanoseconds(), 1), (op.finished_at.ToNanoseconds(), -1)]
    running = peak = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ tests


def test_drain_backs_up_exactly_the_dirty_projects(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 4")
    empty = agent.wait(drain(agent).id)
    assert empty.state == pb.SUCCEEDED, empty.error
    assert empty.kind == pb.OPERATION_KIND_DRAIN and empty.project_id == ""
    assert list(empty.summary.projects) == []

    projects = sorted(create_project(agent, files=3, size=256) for _ in range(12))
    # A file named like a project is no project.
    (agent.projects_root / f"project-{new_id()}").write_text("not a home")
    first = agent.wait(drain(agent, concurrency=4).id)
    assert first.state == pb.SUCCEEDED, first.error
    assert states(first) == {p: "SUCCEEDED" for p in projects}  # never backed up: all dirty
    before = {p: snapshot_ids(agent, p) for p in projects}
    assert all(len(ids) == 1 for ids in before.values())

    dirty = projects[:5]
    clean = projects[5:]
    for project_id in dirty:
        change(agent, project_id)
    status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert status.projects == 12
    runs_before = {p: engine_runs(agent, p) for p in projects}

    operation = drain(agent, concurrency=2)
    final = agent.wait(operation.id)
    assert final.state == pb.SUCCEEDED, final.error
    assert [o.project_id for o in final.summary.projects] == projects  # every project, by id
    by_id = outcomes(final)
    for project_id in dirty:
        outcome = by_id[project_id]
        assert outcome.state == pb.SUCCEEDED, outcome.error
        ids = snapshot_ids(agent, project_id)
        assert len(ids) == 2 and ids[1] == before[project_id][0]
        assert ids[0].startswith(outcome.snapshot_id)
        backup = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=outcome.operation_id), timeout=10)
        assert backup.kind == pb.OPERATION_KIND_BACKUP and backup.project_id == project_id
        assert backup.request_id == f"drain-{operation.id}-{project_id}"
        assert engine_runs(agent, project_id) > runs_before[project_id]
    for project_id in clean:
        outcome = by_id[project_id]
        assert outcome.state == pb.UP_TO_DATE and outcome.operation_id == ""
        assert before[project_id][0].startswith(outcome.snapshot_id)
        assert engine_runs(agent, project_id) == runs_before[project_id], "an engine ran for a clean project"
        assert snapshot_ids(agent, project_id) == before[project_id]
    assert final.summary.files_new == len(dirty)

    messages = drain_messages(agent, operation.id)
    assert any("5 to back up, 7 up to date" in m for m in messages)
    for project_id in dirty:
        assert any(m.startswith(f"{project_id}: snapshot {by_id[project_id].snapshot_id[:8]}") for m in messages)
    for project_id in clean:
        assert any(m.startswith(f"{project_id}: up to date") for m in messages)
    assert any(m.endswith("(12 of 12 done)") for m in messages)

    status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert (status.projects, status.dirty, status.up_to_date) == (12, 0, 12)


def test_one_failing_project_fails_the_drain_but_not_the_others(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 4")
    projects = sorted(create_project(agent, files=3, size=256) for _ in range(4))
    broken = projects[1]
    # The project's repository path is a regular file (instead of the repository create_project
    # made): restic cannot open or create it.
    shutil.rmtree(agent.repository(broken))
    agent.repository(broken).write_text("not a repository\n")
    healthy = [p for p in projects if p != broken]

    final = agent.wait(drain(agent, concurrency=2).id)
    assert final.state == pb.FAILED
    by_id = outcomes(final)
    assert sorted(by_id) == projects
    failing = by_id[broken]
    assert failing.state == pb.FAILED and failing.error.code and failing.error.message
    assert final.error.code == failing.error.code
    assert final.error.message == f"1 of 4 projects failed: {broken}"
    failed_backup = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=failing.operation_id), timeout=10)
    assert failed_backup.state == pb.FAILED and failed_backup.error.code == failing.error.code
    for project_id in healthy:
        assert by_id[project_id].state == pb.SUCCEEDED, by_id[project_id].error
        assert len(snapshot_ids(agent, project_id)) == 1

    # The summary survives in the journal (GetOperation after the end, and the stream's terminal event).
    stored = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=final.id), timeout=10)
    assert states(stored) == states(final)
    terminal = [u.event for u in agent.events(final.id) if u.WhichOneof("update") == "event"][-1]
    assert terminal.terminal and terminal.state == pb.FAILED
    assert {o.project_id for o in terminal.summary.projects} == set(projects)

    # Once the cause is gone, a second drain backs up only the one that failed.
    agent.repository(broken).unlink()
    again = agent.wait(drain(agent).id)
    assert again.state == pb.SUCCEEDED, again.error
    assert states(again) == {p: ("SUCCEEDED" if p == broken else "UP_TO_DATE") for p in projects}


def test_concurrency_bounds_the_backups_running_at_once(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 4\nupload_limit_kib = 256")
    projects = [create_project(agent, files=3, size=256) for _ in range(6)]

    one = agent.wait(drain(agent, concurrency=1).id, timeout=180)
    assert one.state == pb.SUCCEEDED, one.error
    backups = [agent.stub.GetOperation(pb.GetOperationRequest(operation_id=o.operation_id), timeout=10)
               for o in one.summary.projects]
    assert len(backups) == 6 and all(b.state == pb.SUCCEEDED for b in backups)
    assert max_overlap(backups) == 1

    for project_id in projects:
        change(agent, project_id, size=256 * 1024)  # about a second at the upload limit
    three = agent.wait(drain(agent, concurrency=3).id, timeout=180)
    assert three.state == pb.SUCCEEDED, three.error
    backups = [agent.stub.GetOperation(pb.GetOperationRequest(operation_id=o.operation_id), timeout=10)
               for o in three.summary.projects]
    assert len(backups) == 6 and all(b.state == pb.SUCCEEDED for b in backups)
    assert 2 <= max_overlap(backups) <= 3

    # More than the agent's limit is capped at it, not refused.
    for project_id in projects:
        change(agent, project_id)
    capped = agent.wait(drain(agent, concurrency=100).id, timeout=180)
    assert capped.state == pb.SUCCEEDED, capped.error
    backups = [agent.stub.GetOperation(pb.GetOperationRequest(operation_id=o.operation_id), timeout=10)
               for o in capped.summary.projects]
    assert max_overlap(backups) <= 4


def test_idempotency_one_drain_per_host_and_cancel(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 4\nupload_limit_kib = 256")
    projects = []
    for _ in range(4):
        project_id = create_project(agent, files=2, size=256)
        change(agent, project_id, size=2 * 1024 * 1024)  # several seconds each at the limit
        projects.append(project_id)

    request_id = new_id()
    operation = drain(agent, request_id, concurrency=2)
    assert operation.kind == pb.OPERATION_KIND_DRAIN and not operation.joined
    again = drain(agent, request_id, concurrency=2)
    assert again.id == operation.id and again.joined
    with pytest.raises(grpc.RpcError) as info:
        drain(agent, request_id, concurrency=1)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Another drain asking the same joins the running one; one asking otherwise is refused.
    joined = drain(agent, concurrency=2)
    assert joined.id == operation.id and joined.joined
    with pytest.raises(grpc.RpcError) as info:
        drain(agent, concurrency=1)
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert operation.id in info.value.details()

    def running_backups():
        ops = unfinished(agent)
        return [o for o in ops if o.kind == pb.OPERATION_KIND_BACKUP and o.state == pb.RUNNING]

    started = wait_until(lambda: len(running_backups()) == 2 and running_backups(), what="two drain backups")
    assert {o.request_id for o in started} <= {f"drain-{operation.id}-{p}" for p in projects}

    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    final = agent.wait(operation.id)
    assert final.state == pb.CANCELLED
    for backup in started:
        ended = agent.wait(backup.id)
        assert ended.state == pb.CANCELLED
    assert unfinished(agent) == []
    # Only the two cancelled backups ever started: the rest of the queue was not submitted.
    backups = [o for o in agent.stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations
               if o.kind == pb.OPERATION_KIND_BACKUP]
    assert sorted(o.id for o in backups) == sorted(o.id for o in started)
    # The request id still names the cancelled drain; a new drain may start.
    assert drain(agent, request_id, concurrency=2).id == operation.id
    assert drain(agent, concurrency=2).id != operation.id


def test_drain_joins_a_backup_already_running(agent_factory):
    agent = agent_factory(limits="max_concurrent_operations = 4\nupload_limit_kib = 256")
    busy = create_project(agent, files=2, size=256)
    change(agent, busy, size=1024 * 1024)
    other = create_project(agent, files=2, size=256)
    backup = agent.backup(busy)
    wait_until(lambda: agent.stub.GetOperation(pb.GetOperationRequest(operation_id=backup.id), timeout=10).state
               == pb.RUNNING, what="the backup to run")

    final = agent.wait(drain(agent).id)
    assert final.state == pb.SUCCEEDED, final.error
    by_id = outcomes(final)
    assert by_id[busy].operation_id == backup.id and by_id[busy].state == pb.SUCCEEDED
    assert by_id[other].state == pb.SUCCEEDED and by_id[other].operation_id != backup.id
    assert len(snapshot_ids(agent, busy)) == 1
