"""The hub as a service: one real ``buckets-hub serve`` process (temp SQLite store) over two real
agents, driven only through its gRPC API (buckets.v1.Hub). Ground truth comes from the agents'
trees (manifests) and from the agents themselves, not from the hub's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as apb
from hub_client.proto.buckets.v1 import hub_pb2 as hpb
from hub_client.move import SENTINEL_PATH
from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, AgentProcess, create_project, manifest, unmount_below, write_tree
from tests.hub_process import HubProcess

pytestmark = requires_restic

SENTINEL_NAME = SENTINEL_PATH.split("/", 1)[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """host-a and host-b (one region, one shared local repository root) and a hub process over
    them; the hosts registered through the API. Everything is stopped at the end."""
    base = tmp_path_factory.mktemp("hub-service")
    password = base / "repo.password"
    password.write_text("hub-service-password\n")
    password.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{base / "shared-repos"}"\n'
             f'password_file = "{password}"\n')
    agents = []
    # Few, quick tries of an agent that does not answer (a host registered at a dead address).
    hub = HubProcess(base / "hub", freshness_interval=1.0, freshness_bound=60.0, keepalive_interval=0.3,
                     extra="[agents]\nretries = 2\ndeadline = 10\n")
    try:
        for name in ("host-a", "host-b"):
            agents.append(AgentProcess(base=base / name, extra=extra, host_id=name).start())
        hub.start()
        for name, agent in zip(("host-a", "host-b"), agents):
            added = hub.stub.AddHost(hpb.AddHostRequest(host_id=name, address=f"127.0.0.1:{agent.port}",
                                                        region="eu"), timeout=30)
            assert added.probed and added.reachable and added.HasField("last_seen")
        yield hub, agents[0], agents[1]
    finally:
        hub.stop()
        for agent in agents:
            agent.stop()
            agent.kill()
            unmount_below(agent.base)  # a moved project's frozen source copy (its read-only binds)


def add_project(hub: HubProcess, agent: AgentProcess, host_id: str, *, files: int) -> str:
    project_id = create_project(agent, files=files)
    hub.stub.AddProject(hpb.AddProjectRequest(project_id=project_id, host_id=host_id, region="eu"), timeout=10)
    return project_id


def follow(hub: HubProcess, *, from_seq: int = 0, timeout: float = 240, **job) -> tuple[object, list, int]:
    """The first message's job, the log entries, and the number of keep-alives of one FollowLog."""
    updates = list(hub.stub.FollowLog(hpb.FollowLogRequest(from_seq=from_seq, **job), timeout=timeout))
    first = updates[0]
    assert first.WhichOneof("update") in ("move", "copy")
    entries = [u.entry for u in updates[1:] if u.WhichOneof("update") == "entry"]
    keepalives = sum(1 for u in updates[1:] if u.WhichOneof("update") == "keep_alive")
    return getattr(first, first.WhichOneof("update")), entries, keepalives


def code_of(call, *args, **kwargs) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            list(result)
    return refused.value.code()


def state_of_store(hub: HubProcess) -> tuple:
    """What the hub records, without the fields that change with time (seen, checked, reported)."""
    stub = hub.stub
    hosts = [(h.id, h.address, h.region, h.status) for h in stub.ListHosts(hpb.ListHostsRequest(), timeout=10).hosts]
    projects = [(p.id, p.host_id, p.region, p.repository)
                for p in stub.ListProjects(hpb.HubListProjectsRequest(), timeout=10).projects]
    moves = [(m.id, m.status, m.step, m.attempts) for m in stub.ListMoves(hpb.ListMovesRequest(), timeout=10).moves]
    copies = [(c.id, c.status, c.step) for c in stub.ListCopies(hpb.ListCopiesRequest(), timeout=10).copies]
    return hosts, projects, moves, copies


def test_hosts_are_listed_with_the_agents_backup_status_and_rpo(service) -> None:
    hub, a, b = service
    hosts = hub.stub.ListHosts(hpb.ListHostsRequest(probe=True), timeout=60).hosts
    assert [(h.id, h.region, h.status, h.reachable) for h in hosts] == [
        ("host-a", "eu", "running", True), ("host-b", "eu", "running", True)]
    for host, agent in zip(hosts, (a, b)):
        answer = agent.stub.GetHostStatus(apb.GetHostStatusRequest(), timeout=10)
        assert host.HasField("backup") and host.backup.projects == answer.projects
        assert host.HasField("rpo") and host.rpo.rpo_seconds == answer.rpo_seconds
        assert host.HasField("last_seen")


def test_move_over_the_api_followed_to_the_end_and_replayed_from_the_middle(service) -> None:
    hub, a, b = service
    project_id = add_project(hub, a, "host-a", files=300)
    home_before, persist_before = manifest(a.home(project_id)), manifest(a.persist(project_id))
    request = hpb.StartMoveRequest(request_id=f"move-{project_id}", project_id=project_id, target_host="host-b")

    started = hub.stub.StartMove(request, timeout=10)
    # The move runs in the hub, not in the call: the same request id finds the same move, and
    # other parameters under it are refused without touching it.
    assert hub.stub.StartMove(request, timeout=10).id == started.id
    other = hpb.StartMoveRequest(request_id=request.request_id, project_id=project_id, target_host="host-a")
    assert code_of(hub.stub.StartMove, other, timeout=10) == grpc.StatusCode.ALREADY_EXISTS
    # A second move of the project under another request id: the first one is active.
    again = hpb.StartMoveRequest(request_id=f"other-{project_id}", project_id=project_id, target_host="host-b")
    assert code_of(hub.stub.StartMove, again, timeout=10) == grpc.StatusCode.ABORTED

    move, entries, keepalives = follow(hub, move_id=started.id)
    assert move.id == started.id
    seqs = [e.seq for e in entries]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate in the stream"
    kinds = [e.kind for e in entries]
    assert "complete" in kinds, kinds
    # After the placement: the move's frozen-window figures, and the source cleanup, which runs on
    # after the move succeeded and may have logged its first entries before the stream ended.
    assert set(kinds[kinds.index("complete") + 1:]) <= {"frozen", "freeze", "rescue", "cleanup"}, kinds
    assert [e.message for e in entries if e.kind == "step"][0] == "preflight"
    done = hub.stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10)
    assert done.status == hpb.JOB_SUCCEEDED
    # Ground truth: the target's trees are the source's as they were.
    assert manifest(b.home(project_id)) == home_before
    # The move's sentinel, written at the freeze, was removed at finalize: the persist location is
    # the source's as it was, its mtime included.
    assert not (b.persist(project_id) / SENTINEL_NAME).exists()
    assert manifest(b.persist(project_id)) == persist_before
    assert hub.stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10).host_id == "host-b"
    assert b.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10).present

    # Reconnecting from a middle seq gives exactly the rest (the source cleanup may have logged more since).
    middle = len(entries) // 2
    _, rest, _ = follow(hub, move_id=started.id, from_seq=middle)
    assert [e.seq for e in rest][: len(entries) - middle + 1] == list(range(middle, len(entries) + 1))
    assert [(e.seq, e.kind, e.message) for e in rest[: len(entries) - middle + 1]] == \
        [(e.seq, e.kind, e.message) for e in entries[middle - 1:]]
    assert [e.seq for e in rest] == list(range(middle, middle + len(rest)))
    data = json.loads(next(e for e in entries if e.kind == "step").data_json)
    assert data == {"step": "preflight"}
    # From after the end: only the job, the stream ends at once.
    _, none, _ = follow(hub, move_id=started.id, from_seq=len(rest) + middle + 5)
    assert none == []


def test_copy_of_a_directory_between_hosts(service) -> None:
    hub, a, b = service
    source = add_project(hub, a, "host-a", files=5)
    write_tree(a.home(source) / "data", files=40, size=700, seed=3)
    target = add_project(hub, b, "host-b", files=5)
    before = manifest(a.home(source) / "data")
    request = hpb.StartCopyRequest(request_id=f"copy-{source}", source_project=source, source_path="data",
                                   target_project=target, target_path="incoming/data", on_conflict=apb.FAIL)
    started = hub.stub.StartCopy(request, timeout=10)
    assert hub.stub.StartCopy(request, timeout=10).id == started.id
    copy, entries, _ = follow(hub, copy_id=started.id)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[-1].kind == "complete"
    assert hub.stub.GetCopy(hpb.GetCopyRequest(copy_id=started.id), timeout=10).status == hpb.JOB_SUCCEEDED
    assert manifest(b.home(target) / "incoming" / "data") == before
    assert manifest(a.home(source) / "data") == before


def test_drain_backs_up_every_dirty_project_then_undrain(service) -> None:
    hub, a, b = service
    project_id = add_project(hub, a, "host-a", files=20)
    (a.home(project_id) / "dirty.txt").write_text("not backed up yet\n")
    report = hub.stub.DrainHost(hpb.DrainHostRequest(host_id="host-a", concurrency=2), timeout=240)
    assert report.failed == 0
    outcome = next(o for o in report.outcomes if o.project_id == project_id)
    assert outcome.state == apb.SUCCEEDED and outcome.snapshot_id
    # Ground truth from the agent: the project is backed up, the snapshot holds the edit.
    status = a.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert not status.dirty and status.last_backup_snapshot_id.startswith(outcome.snapshot_id[:8])
    listing = a.stub.ListFiles(apb.ListFilesRequest(project_id=project_id, snapshot_id=outcome.snapshot_id,
                                                    path="project"), timeout=30)
    assert "project/dirty.txt" in {entry.path for entry in listing.entries}, [e.path for e in listing.entries][:5]
    host = hub.stub.GetHost(hpb.GetHostRequest(host_id="host-a"), timeout=10)
    assert host.status == "draining" and host.backup.failing == 0
    # A draining host is no move target.
    assert hub.stub.UndrainHost(hpb.UndrainHostRequest(host_id="host-a"), timeout=10).status == "running"


def test_freshness_is_polled_and_stale_figures_say_so(service) -> None:
    hub, a, b = service
    project_id = create_project(a, files=3)
    added = hub.stub.AddProject(hpb.AddProjectRequest(project_id=project_id, host_id="host-a", region="eu"),
                                timeout=10)
    assert added.stale and not added.HasField("reported_at")  # nothing reported yet
    # The poller (every second here) records the agent's report without being asked.
    deadline = time.monotonic() + 60
    while True:
        project = hub.stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10)
        if project.HasField("reported_at") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert project.HasField("reported_at") and not project.stale
    assert project.freshness_bound_seconds == 60
    # A host whose agent never answers: its project's figures are stale, and say so.
    hub.stub.AddHost(hpb.AddHostRequest(host_id="host-gone", address="127.0.0.1:9", region="eu"), timeout=10)
    lost = str(uuid.uuid4())
    hub.stub.AddProject(hpb.AddProjectRequest(project_id=lost, host_id="host-gone", region="eu"), timeout=10)
    refreshed = hub.stub.Refresh(hpb.RefreshRequest(host_id="host-gone"), timeout=60)
    assert [(h.host_id, h.reachable) for h in refreshed.hosts] == [("host-gone", False)]
    assert hub.stub.GetProject(hpb.GetProjectRequest(project_id=lost), timeout=10).stale
    # On demand for one project: recorded now.
    now = hub.stub.Refresh(hpb.RefreshRequest(project_id=project_id), timeout=60).projects[0]
    assert not now.stale and now.reported_at.ToDatetime() >= project.reported_at.ToDatetime()
    # Clean up what other tests list: a host with a project cannot be removed, without one it can.
    assert code_of(hub.stub.RemoveHost, hpb.RemoveHostRequest(host_id="host-gone"), timeout=10) == \
        grpc.StatusCode.FAILED_PRECONDITION
    hub.stub.AddProject(hpb.AddProjectRequest(project_id=lost, host_id="", region="eu"), timeout=10)
    assert hub.stub.RemoveHost(hpb.RemoveHostRequest(host_id="host-gone"), timeout=10).removed
    assert not hub.stub.RemoveHost(hpb.RemoveHostRequest(host_id="host-gone"), timeout=10).removed


def test_bad_input_is_refused_with_its_code_and_changes_nothing(service) -> None:
    hub, a, b = service
    stub = hub.stub
    placed = add_project(hub, a, "host-a", files=2)
    unknown = str(uuid.uuid4())
    before = state_of_store(hub)
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases = [
        (stub.AddHost, hpb.AddHostRequest(host_id="bad id", address="127.0.0.1:1", region="eu"), invalid),
        (stub.AddHost, hpb.AddHostRequest(host_id="host-c", address="no-port", region="eu"), invalid),
        (stub.AddProject, hpb.AddProjectRequest(project_id="not-a-uuid", host_id="host-a", region="eu"), invalid),
        (stub.AddProject, hpb.AddProjectRequest(project_id=unknown, host_id="host-zz", region="eu"), not_found),
        (stub.GetProject, hpb.GetProjectRequest(project_id=unknown), not_found),
        (stub.StartMove, hpb.StartMoveRequest(request_id="", project_id=placed, target_host="host-b"), invalid),
        (stub.StartMove, hpb.StartMoveRequest(request_id="r1", project_id=unknown, target_host="host-b"), not_found),
        (stub.StartMove, hpb.StartMoveRequest(request_id="r2", project_id=placed, target_host="host-zz"), not_found),
        (stub.StartMove, hpb.StartMoveRequest(request_id="r3", project_id=placed, target_host="host-b",
                                              cross_region=True), invalid),
        (stub.StartCopy, hpb.StartCopyRequest(request_id="c1", source_project=placed, source_path="../etc",
                                              target_project=placed, target_path="x"), invalid),
        (stub.StartCopy, hpb.StartCopyRequest(request_id="c2", source_project=placed, source_path="/abs",
                                              target_project=placed, target_path="x"), invalid),
        (stub.StartCopy, hpb.StartCopyRequest(request_id="c3", source_project=placed, source_path="a",
                                              target_project=unknown, target_path="x"), not_found),
        (stub.GetMove, hpb.GetMoveRequest(move_id="nope"), invalid),
        (stub.GetMove, hpb.GetMoveRequest(move_id=unknown), not_found),
        (stub.ResumeMove, hpb.ResumeMoveRequest(move_id=unknown), not_found),
        (stub.CancelCopy, hpb.CancelCopyRequest(copy_id=unknown), not_found),
        (stub.DrainHost, hpb.DrainHostRequest(host_id="host-zz"), not_found),
        (stub.FollowLog, hpb.FollowLogRequest(), invalid),
        (stub.FollowLog, hpb.FollowLogRequest(move_id=unknown), not_found),
        (stub.FollowLog, hpb.FollowLogRequest(copy_id=unknown, from_seq=-1), invalid),
        (stub.ListRegions, hpb.ListRegionsRequest(location="nowhere"), invalid),
        (stub.RemoveHost, hpb.RemoveHostRequest(host_id="host-a"), grpc.StatusCode.FAILED_PRECONDITION),
    ]
    got = [(call._method if hasattr(call, "_method") else str(call), code_of(call, request, timeout=10))
           for call, request, _ in cases]
    assert [code for _, code in got] == [code for _, _, code in cases], got
    assert state_of_store(hub) == before
    # The agent saw no work for the project (no move reached it).
    status = a.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=placed), timeout=10)
    assert status.present and not status.frozen


def test_a_refused_move_stays_failed_until_cancelled_and_the_project_stays(service) -> None:
    hub, a, b = service
    project_id = add_project(hub, a, "host-a", files=5)
    home_before = manifest(a.home(project_id))
    hub.stub.AddHost(hpb.AddHostRequest(host_id="host-dead", address="127.0.0.1:9", region="eu"), timeout=10)
    started = hub.stub.StartMove(hpb.StartMoveRequest(request_id=f"dead-{project_id}", project_id=project_id,
                                                      target_host="host-dead"), timeout=10)
    _, entries, _ = follow(hub, move_id=started.id)
    assert entries[-1].kind == "failed" and json.loads(entries[-1].data_json)["refused"]
    failed = hub.stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10)
    assert failed.status == hpb.JOB_FAILED and failed.step == "preflight" and failed.error
    # Failed but active: it blocks another move of the project until retried, resumed or cancelled.
    other = hpb.StartMoveRequest(request_id=f"after-{project_id}", project_id=project_id, target_host="host-b")
    assert code_of(hub.stub.StartMove, other, timeout=10) == grpc.StatusCode.ABORTED
    cancelled = hub.stub.CancelMove(hpb.CancelMoveRequest(move_id=started.id), timeout=30)
    assert cancelled.status == hpb.JOB_CANCELLED
    for call, request in ((hub.stub.RetryMove, hpb.RetryMoveRequest(move_id=started.id)),
                          (hub.stub.ResumeMove, hpb.ResumeMoveRequest(move_id=started.id)),
                          (hub.stub.CancelMove, hpb.CancelMoveRequest(move_id=started.id))):
        assert code_of(call, request, timeout=10) == grpc.StatusCode.FAILED_PRECONDITION
    # The stream of a cancelled move ends after its "cancelled" entry.
    _, after, _ = follow(hub, move_id=started.id, from_seq=len(entries) + 1)
    assert [e.kind for e in after][-1] == "cancelled"
    assert hub.stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10).host_id == "host-a"
    assert manifest(a.home(project_id)) == home_before
    status = a.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert status.present and not status.frozen


def test_clone_then_delete_over_the_api(service) -> None:
    hub, a, b = service
    source = add_project(hub, a, "host-a", files=30)
    before = manifest(a.home(source))
    clone_id = str(uuid.uuid4())
    clone = hub.stub.CloneProject(hpb.CloneProjectRequest(project_id=source, clone_id=clone_id, host_id="host-b"),
                                  timeout=240)
    assert (clone.id, clone.host_id, clone.region) == (clone_id, "host-b", "eu")
    assert manifest(b.home(clone_id)) == before
    # The same request again (a broken-off call repeated) finds the clone; an id taken otherwise is refused.
    again = hpb.CloneProjectRequest(project_id=source, clone_id=clone_id, host_id="host-b")
    assert hub.stub.CloneProject(again, timeout=30).id == clone_id
    for taken in (hpb.CloneProjectRequest(project_id=source, clone_id=clone_id, host_id="host-a"),
                  hpb.CloneProjectRequest(project_id=source, clone_id=source)):
        assert code_of(hub.stub.CloneProject, taken, timeout=30) == grpc.StatusCode.ALREADY_EXISTS
    assert hub.stub.DeleteProject(hpb.HubDeleteProjectRequest(project_id=clone_id), timeout=240).deleted
    assert not b.home(clone_id).exists()
    assert code_of(hub.stub.GetProject, hpb.GetProjectRequest(project_id=clone_id), timeout=10) == \
        grpc.StatusCode.NOT_FOUND
    assert not hub.stub.DeleteProject(hpb.HubDeleteProjectRequest(project_id=clone_id), timeout=30).deleted
    assert manifest(a.home(source)) == before


def test_the_buckets_cli_reads_the_hub_config_file(service) -> None:
    hub, a, b = service
    result = subprocess.run([sys.executable, "-m", "hub_client", "--config", str(hub.config_path), "--json",
                             "hosts", "--no-probe"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                            env={**os.environ, "BUCKETS_STORE": ""})
    assert result.returncode == 0, result.stderr
    listed = {json.loads(line)["id"] for line in result.stdout.splitlines()}
    api = {h.id for h in hub.stub.ListHosts(hpb.ListHostsRequest(), timeout=10).hosts}
    assert listed == api and {"host-a", "host-b"} <= listed


def test_projects_are_listed_in_pages(service) -> None:
    hub, a, b = service
    add_project(hub, a, "host-a", files=1)
    for _ in range(4):  # registered, not placed anywhere
        hub.stub.AddProject(hpb.AddProjectRequest(project_id=str(uuid.uuid4()), region="eu"), timeout=10)
    everything = [p.id for p in hub.stub.ListProjects(hpb.HubListProjectsRequest(), timeout=10).projects]
    assert len(everything) >= 3 and everything == sorted(everything)
    paged, token = [], ""
    while True:
        page = hub.stub.ListProjects(hpb.HubListProjectsRequest(page_size=2, page_token=token), timeout=10)
        assert len(page.projects) <= 2
        paged += [p.id for p in page.projects]
        token = page.next_page_token
        if not token:
            break
    assert paged == everything
    on_a = hub.stub.ListProjects(hpb.HubListProjectsRequest(host_id="host-a"), timeout=10).projects
    assert on_a and {p.host_id for p in on_a} == {"host-a"}


def test_a_move_refused_while_its_target_is_down_is_retried_and_completes(service) -> None:
    hub, a, b = service
    project_id = add_project(hub, a, "host-a", files=40)
    home_before = manifest(a.home(project_id))
    b.stop()
    try:
        started = hub.stub.StartMove(hpb.StartMoveRequest(request_id=f"retry-{project_id}", project_id=project_id,
                                                          target_host="host-b"), timeout=10)
        _, entries, _ = follow(hub, move_id=started.id)
        assert entries[-1].kind == "failed"
        assert hub.stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10).status == hpb.JOB_FAILED
    finally:
        b.start()
    hub.stub.AddHost(hpb.AddHostRequest(host_id="host-b", address=f"127.0.0.1:{b.port}", region="eu"), timeout=10)
    retried = hub.stub.RetryMove(hpb.RetryMoveRequest(move_id=started.id), timeout=10)
    assert retried.id == started.id
    _, rest, _ = follow(hub, move_id=started.id, from_seq=len(entries) + 1)
    assert [e.seq for e in rest] == list(range(len(entries) + 1, len(entries) + 1 + len(rest)))
    assert any(e.kind == "complete" for e in rest)
    done = hub.stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10)
    assert done.status == hpb.JOB_SUCCEEDED and done.attempts == 2
    assert manifest(b.home(project_id)) == home_before


def test_the_service_on_a_postgresql_store(pg_server, tmp_path: Path) -> None:
    """The same service over PostgreSQL: records, a move run by the runner (refused: its hosts do
    not answer) and its log followed to the end, all through the API."""
    hub = HubProcess(tmp_path / "pg-hub", store=pg_server.create_database("hubservice"),
                     extra="[agents]\nretries = 1\ndeadline = 5\n")
    hub.start()
    try:
        stub = hub.stub
        for name in ("pg-a", "pg-b"):
            added = stub.AddHost(hpb.AddHostRequest(host_id=name, address="127.0.0.1:9", region="eu"), timeout=30)
            assert added.probed and not added.reachable
        project_id = str(uuid.uuid4())
        stub.AddProject(hpb.AddProjectRequest(project_id=project_id, host_id="pg-a", region="eu"), timeout=10)
        assert stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10).stale
        started = stub.StartMove(hpb.StartMoveRequest(request_id="pg-move", project_id=project_id,
                                                      target_host="pg-b"), timeout=10)
        assert stub.StartMove(hpb.StartMoveRequest(request_id="pg-move", project_id=project_id,
                                                   target_host="pg-b"), timeout=10).id == started.id
        _, entries, _ = follow(hub, move_id=started.id, timeout=120)
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1)) and entries[-1].kind == "failed"
        assert stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10).status == hpb.JOB_FAILED
        assert stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10).host_id == "pg-a"
        assert code_of(stub.RemoveHost, hpb.RemoveHostRequest(host_id="pg-b"), timeout=10) == \
            grpc.StatusCode.FAILED_PRECONDITION
    finally:
        hub.stop()
    assert hub.process.returncode == 0, hub.log_tail()


def test_a_move_whose_hub_was_killed_after_the_freeze_is_resumed_by_the_restarted_hub(service) -> None:
    hub, a, b = service
    project_id = add_project(hub, a, "host-a", files=300)
    started = hub.stub.StartMove(hpb.StartMoveRequest(request_id=f"killed-{project_id}", project_id=project_id,
                                                      target_host="host-b"), timeout=10)
    seen = []
    for update in hub.stub.FollowLog(hpb.FollowLogRequest(move_id=started.id), timeout=240):
        if update.WhichOneof("update") == "entry":
            seen.append(update.entry)
            if update.entry.kind == "step" and update.entry.message == "final_backup":
                break
    hub.kill()  # SIGKILL after the freeze: the source is frozen, the move recorded at its step
    frozen_source = manifest(a.home(project_id))
    assert a.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10).frozen
    hub.start()
    stopped = hub.stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10)
    assert stopped.status == hpb.JOB_RUNNING and stopped.step in ("final_backup", "restore", "verify", "finalize")
    # The placement changes only through the move, not by registering the project elsewhere.
    elsewhere = hpb.AddProjectRequest(project_id=project_id, host_id="host-b", region="eu")
    assert code_of(hub.stub.AddProject, elsewhere, timeout=10) == grpc.StatusCode.ABORTED
    assert hub.stub.GetProject(hpb.GetProjectRequest(project_id=project_id), timeout=10).host_id == "host-a"
    hub.stub.ResumeMove(hpb.ResumeMoveRequest(move_id=started.id), timeout=10)
    _, entries, _ = follow(hub, move_id=started.id, from_seq=seen[-1].seq + 1)
    assert [e.seq for e in entries] == list(range(seen[-1].seq + 1, seen[-1].seq + 1 + len(entries)))
    assert any(e.kind == "complete" for e in entries)
    assert hub.stub.GetMove(hpb.GetMoveRequest(move_id=started.id), timeout=10).status == hpb.JOB_SUCCEEDED
    # Nothing written before the freeze is lost, and the project is in service (not frozen) on the target.
    assert manifest(b.home(project_id)) == frozen_source
    status = b.stub.GetProjectStatus(apb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert status.present and not status.frozen


def test_force_off_records_what_may_be_lost_and_rescues_and_regions_answer(service) -> None:
    hub, a, b = service
    stub = hub.stub
    stub.AddHost(hpb.AddHostRequest(host_id="host-off", address="127.0.0.1:9", region="eu"), timeout=30)
    never = str(uuid.uuid4())
    stub.AddProject(hpb.AddProjectRequest(project_id=never, host_id="host-off", region="eu"), timeout=10)
    answer = stub.ForceOffHost(hpb.ForceOffHostRequest(host_id="host-off"), timeout=60)
    assert answer.host.status == "off"
    assert [(loss.project_id, loss.HasField("loss_minutes")) for loss in answer.losses] == [(never, False)]
    assert stub.GetHost(hpb.GetHostRequest(host_id="host-off"), timeout=10).status == "off"
    assert list(stub.ListRescues(hpb.ListRescuesRequest(project_id=never), timeout=10).rescues) == []
    assert list(stub.ListRegions(hpb.ListRegionsRequest(location="DE"), timeout=10).regions)[0] == "weur"
    assert list(stub.ListRegions(hpb.ListRegionsRequest(location="-33.9,151.2"), timeout=10).regions)[0] == "oc"


def test_refusals_carry_error_info_with_the_conflicting_ids(service) -> None:
    """ABORTED / ALREADY_EXISTS / FAILED_PRECONDITION name what is in the way in a google.rpc
    ErrorInfo (reason, metadata), read here with grpcio-status as any client would: no text parsed."""
    from hub_client.rich_status import error_info_of

    hub, a, _ = service

    def refusal(call, request) -> tuple[grpc.StatusCode, str, dict]:
        with pytest.raises(grpc.RpcError) as refused:
            call(request, timeout=10)
        info = error_info_of(refused.value)
        assert info is not None and info.domain == "buckets.v1", refused.value
        return refused.value.code(), info.reason, dict(info.metadata)

    project_id = add_project(hub, a, "host-a", files=3)
    hub.stub.AddHost(hpb.AddHostRequest(host_id="host-gone", address="127.0.0.1:9", region="eu"), timeout=10)
    request_id = f"info-{project_id}"
    started = hub.stub.StartMove(hpb.StartMoveRequest(request_id=request_id, project_id=project_id,
                                                      target_host="host-gone"), timeout=10)
    follow(hub, move_id=started.id)  # refused: failed, still active
    # Another move of the project while that one is active: ABORTED naming it.
    code, reason, metadata = refusal(hub.stub.StartMove, hpb.StartMoveRequest(
        request_id=f"other-{project_id}", project_id=project_id, target_host="host-b"))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "MOVE_IN_PROGRESS")
    assert metadata["move_id"] == started.id and metadata["project_id"] == project_id
    # The same request_id with other parameters: ALREADY_EXISTS naming the job it started.
    code, reason, metadata = refusal(hub.stub.StartMove, hpb.StartMoveRequest(
        request_id=request_id, project_id=project_id, target_host="host-b"))
    assert (code, reason, metadata["job_id"]) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED", started.id)
    # A host that a project or move names is not removed: FAILED_PRECONDITION naming it.
    code, reason, metadata = refusal(hub.stub.RemoveHost, hpb.RemoveHostRequest(host_id="host-gone"))
    assert (code, reason, metadata["host_id"]) == (grpc.StatusCode.FAILED_PRECONDITION, "HOST_IN_USE", "host-gone")
    hub.stub.CancelMove(hpb.CancelMoveRequest(move_id=started.id), timeout=30)
