"""The move's sentinel does not stay in the user's tree (issue 21): the target's persist location is
the source's as it was before the freeze once the move completes, a source thawed after a failed
or cancelled move loses it too, and the removal takes only a file holding exactly this move's
sentinel, following nothing (Thaw with sentinel_path, agent/sentinel.py remove). Ground truth:
manifests of the live trees (tests/harness.manifest), not the hub's or the agent's report."""

from __future__ import annotations

import grpc
import pytest

from hub_client.hub import Hub
from hub_client.move import SENTINEL_PATH, MoveError, sentinel_for
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import LeaseLost, MoveStatus
from tests.conftest import requires_restic
from tests.harness import create_project, manifest
from tests.hubs import register

pytestmark = requires_restic

SENTINEL_NAME = SENTINEL_PATH.split("/", 1)[1]
CONTENT = "buckets move 6a1f0c2e-test\n"


def thaw(agent, project_id: str, path: str = SENTINEL_PATH, content: str = CONTENT) -> pb.ThawResponse:
    return agent.stub.Thaw(pb.ThawRequest(project_id=project_id, sentinel_path=path, sentinel_content=content),
                           timeout=30)


# ---------------------------------------------------------------- the agent's removal


def test_thaw_removes_only_the_exact_sentinel_and_follows_nothing(agent_factory, tmp_path) -> None:
    agent = agent_factory("sentinel-removal")
    project_id = create_project(agent, files=3)
    persist = agent.persist(project_id)
    sentinel = persist / SENTINEL_NAME

    # A user's file of that name with other content stays, byte for byte.
    sentinel.write_text("the user's own notes\n")
    before = manifest(persist)
    answer = thaw(agent, project_id)
    assert (answer.frozen, answer.sentinel) == (False, "differs from this move's sentinel")
    assert manifest(persist) == before

    # The move's own sentinel goes, and the persist location keeps the mtime it had with it.
    sentinel.write_text(CONTENT)
    found = manifest(persist)
    assert thaw(agent, project_id).sentinel == "removed"
    assert not sentinel.exists()
    assert manifest(persist) == {k: v for k, v in found.items() if k != SENTINEL_NAME}
    # Again (a hub resumed after a crash): nothing there is fine.
    assert thaw(agent, project_id).sentinel == "absent"

    # A symlink at the sentinel path to a file outside holding exactly the sentinel: neither
    # followed nor its target removed.
    outside = tmp_path / "outside-the-project"
    outside.write_text(CONTENT)
    sentinel.symlink_to(outside)
    assert thaw(agent, project_id).sentinel == "is a symlink, not the sentinel file"
    assert outside.read_text() == CONTENT and sentinel.is_symlink()
    sentinel.unlink()

    # A directory swapped in at a parent of the path, as a symlink to a directory outside that
    # holds a file named like the sentinel with its content: refused, nothing outside touched.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".buckets-s").write_text(CONTENT)
    (persist / "linked").symlink_to(elsewhere)
    with pytest.raises(grpc.RpcError) as refused:
        thaw(agent, project_id, path="persist/linked/.buckets-s")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "leads out" in refused.value.details()
    assert (elsewhere / ".buckets-s").read_text() == CONTENT

    # Only what looks like a move's sentinel may go: not a user's file whose content the caller knows.
    (persist / "notes.txt").write_text("hello\n")
    (persist / ".buckets-notes").write_text("hello\n")
    for path, content in (("persist/notes.txt", "hello\n"), ("persist/.buckets-notes", "hello\n"),
                          ("persist/notes.txt", CONTENT)):
        with pytest.raises(grpc.RpcError) as refused:
            thaw(agent, project_id, path=path, content=content)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (persist / "notes.txt").read_text() == (persist / ".buckets-notes").read_text() == "hello\n"

    # A directory at the path is no sentinel either.
    sentinel.mkdir()
    assert thaw(agent, project_id).sentinel == "is not a regular file"
    assert sentinel.is_dir()
    sentinel.rmdir()

    # Freeze never writes its sentinel over a user's file (or link) of that name: refused before
    # anything is frozen, the file kept byte for byte.
    for users in ("file", "link"):
        if users == "file":
            sentinel.write_text("the user's own notes\n")
        else:
            sentinel.symlink_to(outside)
        before = manifest(persist)
        with pytest.raises(grpc.RpcError) as refused:
            agent.stub.Freeze(pb.FreezeRequest(project_id=project_id, sentinel_path=SENTINEL_PATH,
                                               sentinel_content=CONTENT), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
        assert manifest(persist) == before
        assert outside.read_text() == CONTENT
        assert not agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30).frozen
        sentinel.unlink()
    # An earlier move's sentinel left there is replaced.
    sentinel.write_text("buckets move an-earlier-one\n")
    agent.stub.Freeze(pb.FreezeRequest(project_id=project_id, sentinel_path=SENTINEL_PATH,
                                       sentinel_content=CONTENT), timeout=30)
    assert sentinel.read_text() == CONTENT
    assert thaw(agent, project_id).sentinel == "removed"


# ---------------------------------------------------------------- through moves


def place_project(hub: Hub, agent, *, files: int) -> str:
    project_id = create_project(agent, files=files, size=700)
    hub.add_project(project_id, "host-a", "eu")
    return project_id


def test_a_completed_move_leaves_the_persist_location_as_it_was_before_the_freeze(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=20)
    before: dict[str, dict] = {}

    def before_step(step: str) -> None:
        if step == "freeze":
            before["home"], before["persist"] = manifest(a.home(project_id)), manifest(a.persist(project_id))
        if step == "finalize":  # the verify has seen it on the target
            assert (b.persist(project_id) / SENTINEL_NAME).read_text() == sentinel_for(move_id[0])

    move_id = []
    move = hub.move(project_id, "host-b", before_step=before_step,
                    observer=lambda e: move_id.append(e.move_id) if not move_id else None)
    assert move.status == MoveStatus.SUCCEEDED
    assert not (b.persist(project_id) / SENTINEL_NAME).exists()
    assert manifest(b.persist(project_id)) == before["persist"]
    assert manifest(b.home(project_id)) == before["home"]
    assert any(e.kind == "sentinel" and e.data["outcome"] == "removed" for e in hub.store.movelog(move.id))


def test_a_hub_resumed_after_the_sentinel_removal_completes_the_move(sqlite_hub: Hub, two_hosts) -> None:
    """The hub stops right after the target's sentinel is removed (finalize recorded, placement
    not changed): the resumed finalize finds it gone and still checks the counts."""
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=10)
    before = {}

    def stop_after_removal(entry) -> None:
        # LeaseLost is how a hub process stops without undoing anything (another owns the job):
        # the move stays running at finalize, as after a crash of its hub.
        if entry.kind == "sentinel" and entry.data.get("host") == "host-b":
            raise LeaseLost("move", entry.move_id, "the stopped hub", f"stopped after {entry.message}")

    def before_step(step: str) -> None:
        if step == "freeze":
            before["persist"] = manifest(a.persist(project_id))

    with pytest.raises(LeaseLost):
        hub.move(project_id, "host-b", observer=stop_after_removal, before_step=before_step)
    move = hub.store.active_move(project_id)
    assert move.step == "finalize" and hub.store.get_project(project_id).host_id == "host-a"
    if move.status != MoveStatus.RUNNING:  # the failure path ran: this is not the crash asked for
        pytest.fail(f"the move is {move.status}, not left running as by a crash: {move.error}")
    done = hub.resume(move.id)
    assert done.status == MoveStatus.SUCCEEDED
    assert manifest(b.persist(project_id)) == before["persist"]
    assert any(e.kind == "sentinel" and e.data["outcome"] == "absent" for e in hub.store.movelog(move.id))


@pytest.mark.parametrize("swap", ["user-file", "symlink-outside"])
def test_a_sentinel_replaced_on_the_target_after_the_verify_is_kept_and_fails_the_move(
        sqlite_hub: Hub, two_hosts, tmp_path, swap: str) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=5)
    outside = tmp_path / "outside-the-project"
    outside.write_text("placeholder\n")
    on_target = {}

    def before_step(step: str) -> None:
        if step == "finalize":
            path = b.persist(project_id) / SENTINEL_NAME
            content = path.read_text()
            path.unlink()
            if swap == "user-file":
                path.write_text("the user's own file\n")
            else:  # a link to a file outside holding exactly the sentinel: a follower would remove it
                outside.write_text(content)
                path.symlink_to(outside)
            on_target["content"] = content

    with pytest.raises(MoveError, match="sentinel"):
        hub.move(project_id, "host-b", before_step=before_step)
    move = hub.store.active_move(project_id)
    assert move.status == MoveStatus.FAILED and hub.store.get_project(project_id).host_id == "host-a"
    assert outside.read_text() == (on_target["content"] if swap == "symlink-outside" else "placeholder\n")
    # The source is in service again without the sentinel.
    assert not (a.persist(project_id) / SENTINEL_NAME).exists()
    hub.cancel(move.id)


def test_a_cancelled_move_leaves_no_sentinel_on_the_source(sqlite_hub: Hub, two_hosts) -> None:
    """The source is frozen with the sentinel and its agent is down when the move fails (no
    thaw then); the cancel thaws it and removes the sentinel, leaving persist as it was."""
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=10)
    before = {}

    def before_step(step: str) -> None:
        if step == "freeze":
            before["persist"] = manifest(a.persist(project_id))
        if step == "restore":
            assert (a.persist(project_id) / SENTINEL_NAME).exists()
            a.kill()
            raise RuntimeError("the hub gives up here")

    with pytest.raises(RuntimeError, match="gives up"):
        hub.move(project_id, "host-b", before_step=before_step)
    move = hub.store.active_move(project_id)
    assert move.status == MoveStatus.FAILED
    a.start()
    register(hub, "host-a", a)
    assert (a.persist(project_id) / SENTINEL_NAME).exists()  # frozen, untouched while its agent was down
    cancelled = hub.cancel(move.id)
    assert cancelled.status == MoveStatus.CANCELLED
    assert not (a.persist(project_id) / SENTINEL_NAME).exists()
    assert manifest(a.persist(project_id)) == before["persist"]
    status = a.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert not status.frozen
