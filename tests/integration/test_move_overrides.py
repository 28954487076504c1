"""The two overrides of a move's preflight are separate (issue 21): ``force`` accepts the loss of
edits newer than the last backup (the source host down), ``force_target`` (CLI ``--to-draining``)
allows a target host that is draining or has not reported recently. Neither stands in for the
other, through the library (both stores) and through the hub service (gRPC). Ground truth: the
target's trees against the source's, not the hub's report."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from hub_client.hub import Hub
from hub_client.move import MoveRefused
from hub_client.proto.buckets.v1 import agent_pb2 as apb
from hub_client.proto.buckets.v1 import hub_pb2 as hpb
from hub_client.store import Host, MoveStatus, Project
from tests.conftest import requires_restic
from tests.harness import AgentProcess, create_project, manifest, unmount_below
from tests.hub_process import HubProcess

pytestmark = requires_restic


def place_project(hub: Hub, agent, *, files: int) -> str:
    project_id = create_project(agent, files=files, size=700)
    hub.add_project(project_id, "host-a", "eu")
    return project_id


def test_a_draining_target_needs_to_draining_even_with_force(hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    project_id = place_project(hub, a, files=40)
    hub.store.update_host("host-b", status="draining")

    with pytest.raises(MoveRefused, match=r"host-b is draining; use force_target \(--to-draining\)"):
        hub.move(project_id, "host-b", force=True)
    refused = hub.store.active_move(project_id)
    assert (refused.status, refused.step, refused.force, refused.force_target) == \
        (MoveStatus.FAILED, "preflight", True, False)
    assert hub.store.get_project(project_id).host_id == "host-a"
    assert not b.home(project_id).exists()

    frozen_source: dict[str, dict] = {}

    def before_step(step: str) -> None:
        if step == "restore":  # the source is frozen: this is what the target must hold
            frozen_source["home"] = manifest(a.home(project_id))

    move = hub.move(project_id, "host-b", force_target=True, before_step=before_step)
    assert move.id == refused.id and move.status == MoveStatus.SUCCEEDED
    assert (move.force, move.force_target) == (False, True)  # given again as asked: force dropped
    assert manifest(b.home(project_id)) == frozen_source["home"]
    assert hub.store.get_project(project_id).host_id == "host-b"
    attempts = [e for e in hub.store.movelog(move.id) if e.kind == "attempt"]
    assert attempts[-1].data["force_target"] is True and "--to-draining" in attempts[-1].message


def test_a_silent_target_needs_to_draining_not_force(sqlite_hub: Hub, two_hosts) -> None:
    a, _ = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=3)
    hub.store.update_host("host-b", last_seen=hub.store.get_host("host-b").last_seen - timedelta(days=1))
    with pytest.raises(MoveRefused, match=r"host-b was not seen .*use force_target \(--to-draining\)"):
        hub.move(project_id, "host-b", force=True)
    hub.cancel(hub.store.active_move(project_id).id)


def test_source_down_with_newer_edits_needs_force_not_to_draining(hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    project_id = place_project(hub, a, files=60)
    operation = a.backup(project_id)
    assert a.wait(operation.id).state == apb.SUCCEEDED
    backed_up = manifest(a.home(project_id))
    project = hub.refresh_project(project_id)
    (a.home(project_id) / "after-backup.txt").write_text("only on host-a\n")
    hub.store.upsert_project(Project(project_id, "host-a", "eu", project.repository, project.last_backup,
                                     project.last_backup + timedelta(minutes=9, seconds=10)))
    a.kill()

    with pytest.raises(MoveRefused, match=r"up to 10 minutes of changes would be lost.*Repeat with force \(--force\)"):
        hub.move(project_id, "host-b", force_target=True)
    refused = hub.store.active_move(project_id)
    assert (refused.status, refused.step, refused.force, refused.force_target) == \
        (MoveStatus.FAILED, "preflight", False, True)
    assert not b.home(project_id).exists()
    assert hub.store.get_project(project_id).host_id == "host-a"

    move = hub.move(project_id, "host-b", force=True)
    assert move.id == refused.id and move.status == MoveStatus.SUCCEEDED
    assert manifest(b.home(project_id)) == backed_up
    assert hub.store.get_project(project_id).host_id == "host-b"


# ---------------------------------------------------------------- through the hub service


@pytest.fixture
def service(tmp_path):
    """host-a and host-b (one region, one shared local repository root) under a hub process."""
    password = tmp_path / "repo.password"
    password.write_text("overrides-password\n")
    password.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{tmp_path / "shared-repos"}"\n'
             f'password_file = "{password}"\n')
    agents = []
    hub = HubProcess(tmp_path / "hub", freshness_interval=0.0, freshness_bound=300.0, keepalive_interval=0.3,
                     extra="[agents]\nretries = 2\ndeadline = 10\n")
    try:
        for name in ("host-a", "host-b"):
            agents.append(AgentProcess(base=tmp_path / name, extra=extra, host_id=name).start())
        hub.start()
        for name, agent in zip(("host-a", "host-b"), agents):
            hub.stub.AddHost(hpb.AddHostRequest(host_id=name, address=f"127.0.0.1:{agent.port}", region="eu"),
                             timeout=30)
        yield hub, agents[0], agents[1]
    finally:
        hub.stop()
        for agent in agents:
            agent.stop()
            agent.kill()
            unmount_below(agent.base)


def ended(hub: HubProcess, move_id: str) -> hpb.Move:
    """The move once its attempt has ended (FollowLog runs to the attempt's end)."""
    list(hub.stub.FollowLog(hpb.FollowLogRequest(move_id=move_id), timeout=240))
    return hub.stub.GetMove(hpb.GetMoveRequest(move_id=move_id), timeout=10)


def test_both_overrides_through_the_hub_service(service) -> None:
    hub, a, b = service
    stub = hub.stub
    moved, edited = create_project(a, files=30, size=700), create_project(a, files=30, size=700)
    for project_id in (moved, edited):
        stub.AddProject(hpb.AddProjectRequest(project_id=project_id, host_id="host-a", region="eu"), timeout=10)

    # A draining target: force is not enough, force_target is.
    stub.DrainHost(hpb.DrainHostRequest(host_id="host-b"), timeout=120)
    request = hpb.StartMoveRequest(request_id=f"move-{moved}", project_id=moved, target_host="host-b", force=True)
    started = stub.StartMove(request, timeout=10)
    assert started.force and not started.force_target
    # The same request id with another force_target is another request.
    other = hpb.StartMoveRequest(request_id=request.request_id, project_id=moved, target_host="host-b",
                                 force=True, force_target=True)
    with pytest.raises(grpc.RpcError) as reused:
        stub.StartMove(other, timeout=10)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    failed = ended(hub, started.id)
    assert failed.status == hpb.JOB_FAILED and "force_target (--to-draining)" in failed.error
    assert not b.home(moved).exists()
    before = manifest(a.home(moved))
    stub.RetryMove(hpb.RetryMoveRequest(move_id=started.id, force_target=True), timeout=30)
    done = ended(hub, started.id)
    assert done.status == hpb.JOB_SUCCEEDED and done.force_target and done.force
    assert manifest(b.home(moved)) == before
    # The original request, repeated after the retry, still names the same move.
    assert stub.StartMove(request, timeout=10).id == started.id
    stub.UndrainHost(hpb.UndrainHostRequest(host_id="host-b"), timeout=10)

    # The source down with edits newer than its last backup: force_target is not enough, force is.
    backup = a.backup(edited)
    assert a.wait(backup.id).state == apb.SUCCEEDED
    backed_up = manifest(a.home(edited))
    (a.home(edited) / "after-backup.txt").write_text("only on host-a\n")
    a.stub.MarkEdited(apb.MarkEditedRequest(project_id=edited), timeout=10)
    refreshed = next(p for p in stub.Refresh(hpb.RefreshRequest(project_id=edited), timeout=30).projects
                     if p.id == edited)
    assert refreshed.last_edited.ToDatetime() > refreshed.last_backup.ToDatetime()
    a.kill()
    started = stub.StartMove(hpb.StartMoveRequest(request_id=f"move-{edited}", project_id=edited,
                                                  target_host="host-b", force_target=True), timeout=10)
    failed = ended(hub, started.id)
    assert failed.status == hpb.JOB_FAILED and "force (--force)" in failed.error
    assert not b.home(edited).exists()
    stub.RetryMove(hpb.RetryMoveRequest(move_id=started.id, force=True), timeout=30)
    done = ended(hub, started.id)
    assert done.status == hpb.JOB_SUCCEEDED
    assert manifest(b.home(edited)) == backed_up
