"""Freshness (dirty/clean), GetProjectStatus/GetHostStatus, MarkEdited and EnsureProject's
restore-on-missing, through real agents: the directory backend always, btrfs where a loop
device can be made."""

from __future__ import annotations

import time
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree

pytestmark = requires_restic


@pytest.fixture(params=["directory", "btrfs"])
def agent(request, agent_factory):
    if request.param == "btrfs":
        filesystem = request.getfixturevalue("btrfs_fs")
        base = filesystem.mountpoint / f"fresh-{uuid.uuid4().hex[:8]}"
        return agent_factory(base.name, backend="btrfs", base=base, limits="reconcile_interval = 0")
    return agent_factory("fresh", limits="reconcile_interval = 0")


def ensure(agent, project_id: str, mode=pb.EnsureProjectRequest.NONE, request_id: str | None = None):
    return agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=request_id or new_id(), project_id=project_id, mode=mode), timeout=30
    )


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30)


def restic_restores(agent) -> int:
    return sum(1 for argv in agent.started_argvs() if "restore" in argv)


def test_dirty_after_a_write_clean_after_a_backup_dirty_after_mark_edited_across_restarts(agent, project_id):
    assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=20)
    first = status(agent, project_id)
    assert first.present and first.dirty and not first.HasField("last_backup")
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert (host.projects, host.dirty, host.never_backed_up, host.up_to_date) == (1, 1, 1, 0)

    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    clean = status(agent, project_id)
    assert not clean.dirty, clean
    assert clean.last_backup_snapshot_id == backup.summary.snapshot_id and clean.size_bytes > 0
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert (host.dirty, host.never_backed_up, host.up_to_date) == (0, 0, 1)

    time.sleep(0.05)  # a write in a later instant than the backup's capture, on any clock granularity
    (agent.home(project_id) / "d0" / "new.txt").parent.mkdir(exist_ok=True)
    (agent.home(project_id) / "d0" / "new.txt").write_text("written after the backup")
    assert status(agent, project_id).dirty

    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    assert not status(agent, project_id).dirty

    stamp = Timestamp()
    stamp.FromSeconds(int(time.time()) + 1)
    agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=project_id, time=stamp), timeout=10)
    edited = status(agent, project_id)
    assert edited.dirty and edited.last_change.seconds == stamp.seconds
    agent.stop()
    agent.start()
    assert status(agent, project_id).dirty, "freshness must survive a restart"
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert (host.projects, host.dirty) == (1, 1)


def test_ensure_auto_restores_the_newest_backup_into_a_missing_home_and_records_the_receipt(agent, project_id):
    assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=15, seed=1)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=25, seed=2)
    (agent.persist(project_id) / "state.db").write_text("newest")
    newest = agent.wait(agent.backup(project_id).id)
    expected = manifest(agent.home(project_id)), manifest(agent.persist(project_id))
    deleted = agent.wait(agent.stub.DeleteProject(
        pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id), timeout=30).id)
    assert deleted.state == pb.SUCCEEDED and not agent.home(project_id).exists()

    before = restic_restores(agent)
    first = ensure(agent, project_id, pb.EnsureProjectRequest.AUTO)
    second = ensure(agent, project_id, pb.EnsureProjectRequest.AUTO)  # while the first runs: joins it
    assert second.id == first.id and second.joined
    final = agent.wait(first.id)
    assert final.state == pb.SUCCEEDED, final.error
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == expected
    assert restic_restores(agent) == before + 1
    receipt = status(agent, project_id).last_restore
    assert newest.summary.snapshot_id.startswith(receipt.snapshot_id[:8]) and receipt.operation_id == first.id
    assert not status(agent, project_id).dirty  # the home equals a backup

    # A present home with files is never overwritten.
    (agent.home(project_id) / "local-only.txt").write_text("not in any backup")
    kept = manifest(agent.home(project_id))
    again = agent.wait(ensure(agent, project_id, pb.EnsureProjectRequest.AUTO).id)
    assert again.state == pb.SUCCEEDED and manifest(agent.home(project_id)) == kept
    assert restic_restores(agent) == before + 1


def test_ensure_required_without_a_backup_fails_and_auto_creates_an_empty_project(agent, project_id):
    required = agent.wait(ensure(agent, project_id, pb.EnsureProjectRequest.REQUIRED).id)
    assert (required.state, required.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), required.error
    assert not agent.home(project_id).exists()
    auto = agent.wait(ensure(agent, project_id, pb.EnsureProjectRequest.AUTO).id)
    assert auto.state == pb.SUCCEEDED, auto.error
    assert agent.home(project_id).is_dir() and not any(agent.home(project_id).iterdir())


def test_the_reconciler_notices_a_write_without_being_asked(agent_factory, project_id):
    agent = agent_factory("reconciled", limits="reconcile_interval = 0.2")
    assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=5)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    assert agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10).dirty == 0
    time.sleep(0.05)
    (agent.home(project_id) / "later.txt").write_text("later")
    deadline = time.monotonic() + 30
    while agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10).dirty != 1:
        assert time.monotonic() < deadline, "the reconciler never saw the write"
        time.sleep(0.1)


def test_list_projects_reports_the_journals_freshness_of_every_project_without_a_scan(agent):
    clean, dirty = new_id(), new_id()
    for project_id in (clean, dirty):
        assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
        write_tree(agent.home(project_id), files=5)
    backup = agent.wait(agent.backup(clean).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    before = time.time()
    agent.stub.Freeze(pb.FreezeRequest(project_id=clean), timeout=30)
    listed = agent.stub.ListProjects(pb.ListProjectsRequest(), timeout=30)
    by_id = {p.project_id: p for p in listed.projects}
    assert set(by_id) == {clean, dirty}
    assert listed.observed_at.ToSeconds() >= int(before)
    assert by_id[clean].last_backup_snapshot_id == backup.summary.snapshot_id and by_id[clean].HasField("last_backup")
    assert not by_id[clean].dirty and by_id[clean].frozen
    assert by_id[dirty].dirty and not by_id[dirty].HasField("last_backup") and not by_id[dirty].frozen
    agent.stub.Thaw(pb.ThawRequest(project_id=clean), timeout=30)

    # No scan: a write the agent has not looked at yet (no reconciler here) is not in the answer;
    # GetProjectStatus looks, and ListProjects then reports what the journal learnt.
    time.sleep(0.05)  # a later instant than the backup's capture on any clock granularity
    (agent.home(clean) / "late.txt").write_text("late\n")
    assert not {p.project_id: p for p in agent.stub.ListProjects(pb.ListProjectsRequest(), timeout=30).projects}[
        clean].dirty
    assert status(agent, clean).dirty
    assert {p.project_id: p for p in agent.stub.ListProjects(pb.ListProjectsRequest(), timeout=30).projects}[
        clean].dirty


@pytest.mark.parametrize("backend", ["directory", "btrfs"])
def test_a_write_made_while_the_agent_was_down_counts_in_the_first_host_status(request, agent_factory, project_id,
                                                                              backend):
    limits = "reconcile_interval = 3600"  # no periodic look would come in time
    if backend == "btrfs":
        base = request.getfixturevalue("btrfs_fs").mountpoint / f"down-{uuid.uuid4().hex[:8]}"
        agent = agent_factory(base.name, backend="btrfs", base=base, limits=limits)
    else:
        agent = agent_factory("down", limits=limits)
    assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=5)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    assert agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10).dirty == 0
    agent.stop()
    time.sleep(0.05)  # a later instant than the backup's capture, on any clock granularity
    (agent.home(project_id) / "written-while-down.txt").write_text("the agent was not running")
    agent.start()
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)  # the very first call
    assert (host.projects, host.dirty, host.up_to_date) == (1, 1, 0)


def test_the_last_error_shows_with_its_time_until_an_operation_of_its_kind_succeeds(agent_factory, project_id):
    agent = agent_factory("last-error")
    assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=5)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED  # makes the repository
    assert not status(agent, project_id).last_error.code
    wrong = pb.RepositorySpec(local=pb.LocalRepository(path=str(agent.repository(project_id))),
                              password="not-the-password")
    before = time.time()
    failed = agent.wait(agent.backup(project_id, repository=wrong, force=True).id)
    assert failed.state == pb.FAILED
    shown = status(agent, project_id)
    assert shown.last_error.code == failed.error.code and shown.last_error.message == failed.error.message
    assert before - 1 <= shown.last_error_time.ToSeconds() <= time.time() + 1
    # A verify that succeeds is another kind: the backup's failure still stands.
    assert agent.wait(agent.verify(project_id).id).state == pb.SUCCEEDED
    assert status(agent, project_id).last_error.code == failed.error.code
    # A backup that succeeds clears it.
    assert agent.wait(agent.backup(project_id, force=True).id).state == pb.SUCCEEDED
    cleared = status(agent, project_id)
    assert not cleared.last_error.code and not cleared.HasField("last_error_time")


def test_status_without_scan_does_not_look_at_the_trees(agent_factory, project_id) -> None:
    """GetProjectStatus ``without_scan`` (a move's verify step, which walks the trees itself)
    answers from the journal: presence, receipt and freeze as they are, no size, and a change
    made since the last look is not observed by it; the scanning call that follows sees it."""
    agent = agent_factory("fresh-noscan", limits="reconcile_interval = 0")
    assert agent.wait(ensure(agent, project_id).id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=5)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    assert not status(agent, project_id).dirty
    time.sleep(0.05)  # a write in a later instant than the backup's capture
    (agent.home(project_id) / "after-the-backup.txt").write_text("not yet observed\n")
    quick = agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id, without_scan=True),
                                        timeout=30)
    assert quick.present and not quick.frozen and quick.size_bytes == 0
    assert quick.last_backup_snapshot_id == backup.summary.snapshot_id and not quick.dirty
    scanned = status(agent, project_id)
    assert scanned.dirty and scanned.size_bytes > 0
