"""Hub flows over whole projects and hosts: full deletion, force-off, host backup status."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import timedelta

import pytest

from hub_client.client import ClientConfig, RetryPolicy
from hub_client.hub import Hub
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MoveInProgress, NotFound, Project, open_store
from tests.harness import create_project, write_tree
from tests.integration.test_btrfs import btrfs_agent, ensure


def quick_client(address: str) -> ClientConfig:
    return ClientConfig(target=address, retry=RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.2))


@pytest.fixture
def hub(tmp_path):
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    with Hub(store, client_config=quick_client) as opened:
        yield opened
    store.close()


def objects_under(s3_server, prefix: str) -> list[str]:
    client = s3_server.client()
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="buckets-us-east-1", Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def subvolumes(mountpoint) -> str:
    return subprocess.run(["btrfs", "subvolume", "list", "-a", str(mountpoint)], capture_output=True, text=True,
                          check=True).stdout


def test_full_deletion_leaves_no_object_no_subvolume_no_record_and_repeats(hub: Hub, agent_factory, btrfs_fs,
                                                                              s3_server, tmp_path) -> None:
    password_file = tmp_path / "s3.password"
    password_file.write_text("deletion-test-password")
    password_file.chmod(0o600)
    agent = btrfs_agent(agent_factory, btrfs_fs, extra=s3_server.agent_repository_config(password_file))
    hub.add_host("host-a", f"127.0.0.1:{agent.port}", "eu")
    project_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    for pid in (project_id, other_id):
        ensure(agent, pid)
        write_tree(agent.home(pid), files=30)
        assert agent.wait(agent.backup(pid).id).state == pb.SUCCEEDED
        hub.add_project(pid, "host-a", "eu", f"buckets-us-east-1/rustic/project-{pid}")
    root = f"rustic/project-{project_id}/"
    assert objects_under(s3_server, root) and f"project-{project_id}" in subvolumes(btrfs_fs.mountpoint)

    # Not while it moves.
    hub.add_host("host-b", "127.0.0.1:9", "eu")
    move = hub.store.create_move(project_id, "host-a", "host-b")
    with pytest.raises(MoveInProgress, match=move.id):
        hub.delete_project(project_id)
    assert objects_under(s3_server, root) and agent.home(project_id).is_dir()
    hub.store.update_move_status(move.id, "cancelled")

    assert hub.delete_project(project_id) is True
    assert objects_under(s3_server, root) == []
    assert f"project-{project_id}" not in subvolumes(btrfs_fs.mountpoint)
    assert not agent.home(project_id).exists() and not agent.persist(project_id).exists()
    with pytest.raises(NotFound):
        hub.store.get_project(project_id)
    assert hub.store.list_moves(project_id=project_id) == []
    assert hub.delete_project(project_id) is False  # a second deletion is fine
    # The other project is untouched.
    assert objects_under(s3_server, f"rustic/project-{other_id}/") and agent.home(other_id).is_dir()


def test_force_off_records_the_projects_with_changes_not_backed_up(hub: Hub, agent_factory) -> None:
    agent = agent_factory("host-a", host_id="host-a")
    hub.add_host("host-a", f"127.0.0.1:{agent.port}", "eu")
    clean, dirty, never = (create_project(agent, files=5) for _ in range(3))
    for pid in (clean, dirty):
        assert agent.wait(agent.backup(pid).id).state == pb.SUCCEEDED
    (agent.home(dirty) / "edited.txt").write_text("after the backup\n")
    agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=dirty), timeout=10)
    for pid in (clean, dirty, never):
        hub.add_project(pid, "host-a", "eu")
        hub.refresh_project(pid)

    status = hub.refresh_host_status("host-a")
    assert (status.projects, status.dirty, status.never_backed_up) == (3, 2, 1)  # never backed up is dirty too

    losses = hub.force_off("host-a")
    assert hub.store.get_host("host-a").status == "off"
    assert {loss.project_id for loss in losses} == {dirty, never}
    by_project = {loss.project_id: loss for loss in hub.store.offline_losses(host_id="host-a")}
    assert by_project[never].last_backup is None and by_project[never].loss_minutes is None
    assert by_project[dirty].loss_minutes is not None and by_project[dirty].loss_minutes >= 1

    # The host's agent gone: the store's freshness decides.
    agent.kill()
    project = hub.store.get_project(clean)
    hub.store.upsert_project(Project(clean, "host-a", "eu", project.repository, project.last_backup,
                                     project.last_backup + timedelta(minutes=7)))
    losses = hub.force_off("host-a")
    assert {loss.project_id: loss.loss_minutes for loss in losses}[clean] == 7


def restic_backups_started(agent) -> list[str]:
    """Project ids of the restic backups the agent started, from its log (``process.start``)."""
    return [argv[argv.index("--host") + 1].removeprefix("project-")
            for argv in agent.started_argvs() if "backup" in argv and "--host" in argv]


def test_drain_backs_up_exactly_the_dirty_projects_and_reports_a_failure(hub: Hub, agent_factory) -> None:
    agent = agent_factory("host-a", host_id="host-a", limits="max_concurrent_operations = 4")
    hub.add_host("host-a", f"127.0.0.1:{agent.port}", "eu")
    projects = [create_project(agent, files=2, size=256) for _ in range(50)]
    for pid in projects:
        hub.add_project(pid, "host-a", "eu")
    first = hub.drain("host-a", concurrency=4)
    assert len(first.backed_up) == 50 and not first.failed

    dirty = projects[::5] + projects[1::5]  # 20 of them
    for pid in dirty:
        (agent.home(pid) / "changed.txt").write_text("after the first drain\n")
    failing = dirty[3]
    shutil.rmtree(agent.repository(failing))
    agent.repository(failing).write_text("not a repository any more\n")  # its backup fails for real
    before = len(restic_backups_started(agent))

    events = []
    report = hub.drain("host-a", concurrency=4, observer=events.append)
    assert sorted(restic_backups_started(agent)[before:]) == sorted(dirty)  # no engine for the other 30
    assert sorted(o.project_id for o in report.backed_up) == sorted(set(dirty) - {failing})
    assert sorted(o.project_id for o in report.up_to_date) == sorted(set(projects) - set(dirty))
    assert [o.project_id for o in report.failed] == [failing] and report.failed[0].error.code
    assert report.operation.state == pb.FAILED and failing in report.operation.error.message
    assert any(failing in e.message and "FAILED" in e.message for e in events)
    assert events[-1].terminal

    assert hub.store.get_host("host-a").status == "draining"
    status = hub.store.host_backup_status("host-a")
    assert (status.projects, status.dirty, status.failing) == (50, 1, 1)
    moved_in = hub.store.get_project(dirty[0])
    assert moved_in.last_backup is not None and moved_in.last_backup >= moved_in.last_edited
