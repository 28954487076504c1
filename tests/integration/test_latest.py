"""What "latest" means to the agent: the project's own newest whole backup, never a state the
project left behind (a rescue of a source copy, the tree a restore replaced), which would put
older or foreign data in place of the newest backup."""

from __future__ import annotations

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import create_project, manifest

pytestmark = requires_restic

OK = (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS)


def done(agent, operation: pb.Operation) -> pb.Operation:
    finished = agent.wait(operation.id)
    assert finished.state in OK, finished.error
    return finished


def trees(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def test_latest_is_never_a_rescue_or_a_pre_restore_snapshot(agent_factory) -> None:
    agent = agent_factory()
    project_id = create_project(agent, files=12)
    own = done(agent, agent.backup(project_id)).summary.snapshot_id
    backed_up = trees(agent, project_id)

    # A newer snapshot of another state, made as a move's cleanup does: purpose rescue.
    (agent.home(project_id) / "left-on-the-old-host.txt").write_text("a source copy's edit\n")
    rescue = done(agent, agent.backup(project_id, purpose="rescue", tags=["move=m1"])).summary.snapshot_id
    # A whole restore over those unsaved changes: the agent takes a newer pre-restore snapshot.
    (agent.home(project_id) / "unsaved.txt").write_text("replaced by the restore\n")
    restored = done(agent, agent.restore(project_id, own))
    assert trees(agent, project_id) == backed_up
    listed = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=60).snapshots
    purposes = {s.id: s.purpose for s in listed}
    assert sorted(purposes.values()) == ["backup", "pre-restore", "rescue"], purposes
    newest = max(listed, key=lambda s: s.time.ToDatetime())
    assert newest.purpose == "pre-restore" and rescue != own and restored.id

    (agent.home(project_id) / "after.txt").write_text("an edit after the restore\n")
    latest = done(agent, agent.restore(project_id, "latest", force=True))
    assert own.startswith(latest.summary.snapshot_id) or latest.summary.snapshot_id.startswith(own)
    assert trees(agent, project_id) == backed_up
