"""Work that outlives its starter, through the Hub service itself: a `buckets-hub serve` SIGKILLed
after a move's freeze; nobody calls ResumeMove. On SQLite the same process restarted, on
PostgreSQL a second `buckets-hub serve` already running on the store: its worker takes the move
over once the lease lapses, and the move completes with nothing lost and nothing left frozen."""

from __future__ import annotations

import uuid

import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as apb
from hub_client.proto.buckets.v1 import hub_pb2 as hpb
from tests.conftest import requires_restic
from tests.harness import AgentProcess, manifest, unmount_below, write_tree
from tests.hub_process import HubProcess

pytestmark = requires_restic
LEASE = 3.0  # short, so the test waits little; the default is 15 s


@pytest.fixture
def two_agents(tmp_path):
    password = tmp_path / "repo.password"
    password.write_text("takeover-password\n")
    password.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{tmp_path / "shared-repos"}"\n'
             f'password_file = "{password}"\n')
    agents = [AgentProcess(base=tmp_path / name, extra=extra, host_id=name) for name in ("host-a", "host-b")]
    try:
        for agent in agents:
            agent.start()
        yield agents
    finally:
        for agent in agents:
            agent.stop()
            agent.kill()
        for agent in agents:
            unmount_below(agent.base)  # a frozen source's read-only binds, should a test fail mid-move


def hub_on(path, store: str = "") -> HubProcess:
    return HubProcess(path, store=store, lease_seconds=LEASE, keepalive_interval=0.3,
                      extra="[agents]\nretries = 2\ndeadline = 10\n")


def register(hub: HubProcess, a: AgentProcess, b: AgentProcess) -> str:
    for name, agent in (("host-a", a), ("host-b", b)):
        hub.stub.AddHost(hpb.AddHostRequest(host_id=name, address=f"127.0.0.1:{agent.port}", region="eu"),
                         timeout=30)
    project_id = str(uuid.uuid4())
    ensured = a.stub.EnsureProject(apb.EnsureProjectRequest(request_id=str(uuid.uuid4()), project_id=project_id,
                                                            mode=apb.EnsureProjectRequest.NONE), timeout=30)
    assert a.wait(ensured.id).state == apb.SUCCEEDED
    write_tree(a.home(project_id), files=300)
    hub.stub.AddProject(hpb.AddProjectRequest(project_id=project_id, host_id="host-a", region="eu"), timeout=10)
    return project_id


def move_until_frozen(hub: HubProcess, project_id: str) -> tuple[str, int]:
    """Start a move and follow it until its final backup step (the source is frozen then)."""
    started = hub.stub.StartMove(hpb.StartMoveRequest(request_id=f"takeover-{project_id}", project_id=project_id,
                                                      target_host="host-b"), timeout=10)
    for update in hub.stub.FollowLog(hpb.FollowLogRequest(move_id=started.id), timeout=240):
        if update.WhichOneof("update") == "entry":
            if update.entry.kind == "step" and update.entry.message == "final_backup":
                return started.id, update.entry.seq
    raise AssertionError("the move ended before its final backup")


def completed_by(hub: HubProcess, move_id: str, after_seq: int) -> list:
    """The log entries after ``after_seq`` up to the move's end, followed on ``hub``."""
    entries = []
    for update in hub.stub.FollowLog(hpb.FollowLogRequest(move_id=move_id, from_seq=after_seq + 1), timeout=240):
        if update.WhichOneof("update") == "entry":
            entries.append(update.entry)
    assert [e.seq for e in entries] == list(range(after_seq + 1, after_seq + 1 + len(entries)))
    return entries


def assert_moved_whole(hub, a, b, project_id, move_id, frozen_source, entries) -> None:
    assert any(e.kind == "lease" for e in entries), [e.kind for e in entries]  # taken over by a new owner
    assert any(e.kind == "complete" for e in entries), [(e.kind, e.message) for e in entries]
    assert hub.stub.GetMove(hpb.GetMoveRequest(move_id=move_id), timeout=10).status == hpb.JOB_SUCCEEDED
    assert hub.stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10).host_id == "host-b"
    assert manifest(b.home(project_id)) == frozen_source
    status = b.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert status.present and not status.frozen
    (b.home(project_id) / "written-after-the-move.txt").write_text("in service")  # writable on the target


def test_a_hub_service_killed_after_the_freeze_and_restarted_on_sqlite_completes_the_move(tmp_path, two_agents):
    a, b = two_agents
    hub = hub_on(tmp_path / "hub").start()
    try:
        project_id = register(hub, a, b)
        move_id, seq = move_until_frozen(hub, project_id)
        hub.kill()
        frozen_source = manifest(a.home(project_id))
        assert a.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10).frozen
        hub.start()  # no ResumeMove: its worker takes the move over once the dead process's lease lapses
        entries = completed_by(hub, move_id, seq)
        assert_moved_whole(hub, a, b, project_id, move_id, frozen_source, entries)
    finally:
        hub.stop()


def test_a_hub_service_killed_after_the_freeze_is_taken_over_by_another_on_postgresql(tmp_path, two_agents,
                                                                                     pg_server):
    a, b = two_agents
    store = pg_server.create_database(f"takeover{uuid.uuid4().hex[:8]}")
    first, second = hub_on(tmp_path / "hub-1", store), hub_on(tmp_path / "hub-2", store)
    try:
        first.start()
        second.start()
        project_id = register(first, a, b)
        move_id, seq = move_until_frozen(first, project_id)
        first.kill()
        frozen_source = manifest(a.home(project_id))
        entries = completed_by(second, move_id, seq)
        assert_moved_whole(second, a, b, project_id, move_id, frozen_source, entries)
    finally:
        first.stop()
        second.stop()
