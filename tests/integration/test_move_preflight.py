"""Preflight proves reachability (issue 16): before anything is backed up or frozen, the target
host must open the project's repository. Hosts that each use their own local repository, or a
target whose repository password differs, are refused at preflight (FAILED_PRECONDITION, the
reason named); the hub's store on SQLite and on PostgreSQL.

Ground truth: the source home is written to after the refusal, the repositories are listed with
restic directly, and the agents' own operation lists show every backup they ran.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import MoveRefused
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MoveStatus
from tests.conftest import requires_restic
from tests.harness import create_project
from tests.hubs import client_config, register

pytestmark = requires_restic


def local_repository(root: Path, password_file: Path) -> str:
    return (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{root}"\n'
            f'password_file = "{password_file}"\n')


def password(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def hub_over(store, agents) -> Hub:
    hub = Hub(store, client_config=client_config)
    for agent, name in zip(agents, ("host-a", "host-b")):
        register(hub, name, agent)
    return hub


def restic_snapshots(repository: Path, password_file: Path) -> list[str] | None:
    """The snapshot ids restic lists in ``repository``; None when there is no repository."""
    result = subprocess.run(["restic", "-r", str(repository), "--password-file", str(password_file), "--no-cache",
                             "--no-lock", "snapshots", "--json"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        assert "does not exist" in result.stderr or "Is there a repository" in result.stderr, result.stderr
        return None
    return [s["id"] for s in json.loads(result.stdout)]


def backups_run(agent, project_id: str) -> list[pb.Operation]:
    operations = agent.stub.ListOperations(pb.ListOperationsRequest(project_id=project_id, page_size=1000),
                                           timeout=10).operations
    return [o for o in operations if o.kind == pb.OPERATION_KIND_BACKUP]


def assert_untouched_source(agent, project_id: str) -> None:
    """Not frozen: the agent says so, and a write into its home lands (ground truth)."""
    status = agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert status.present and not status.frozen
    probe = agent.home(project_id) / "written-after-the-refusal.txt"
    probe.write_text("still writable\n")
    assert probe.read_text() == "still writable\n"


def test_per_host_local_repositories_are_refused_at_preflight(store, agent_factory, tmp_path) -> None:
    a = agent_factory("host-a", host_id="host-a", extra=local_repository(
        tmp_path / "repos-a", password(tmp_path / "a.password", "host-a-password")))
    b = agent_factory("host-b", host_id="host-b", extra=local_repository(
        tmp_path / "repos-b", password(tmp_path / "b.password", "host-b-password")))
    with hub_over(store, (a, b)) as hub:
        project_id = create_project(a, files=30, repository=False)  # no repository: none is made
        hub.add_project(project_id, "host-a", "eu")

        with pytest.raises(MoveRefused, match="each use their own local repository") as refused:
            hub.move(project_id, "host-b")

        assert refused.value.code == "FAILED_PRECONDITION"
        assert str(tmp_path / "repos-a") in str(refused.value) and str(tmp_path / "repos-b") in str(refused.value)
        move = hub.store.active_move(project_id)
        assert (move.status, move.step) == (MoveStatus.FAILED, "preflight")
        assert hub.store.get_project(project_id).host_id == "host-a"
    assert_untouched_source(a, project_id)
    # No backup was taken: neither repository exists, and neither agent ran a Backup.
    assert restic_snapshots(tmp_path / "repos-a" / f"project-{project_id}", tmp_path / "a.password") is None
    assert restic_snapshots(tmp_path / "repos-b" / f"project-{project_id}", tmp_path / "b.password") is None
    assert backups_run(a, project_id) == [] and backups_run(b, project_id) == []
    assert not b.home(project_id).exists()


def test_a_target_with_another_repository_password_is_refused_at_preflight(store, agent_factory, tmp_path) -> None:
    shared = tmp_path / "shared-repos"
    a = agent_factory("host-a", host_id="host-a",
                      extra=local_repository(shared, password(tmp_path / "a.password", "the-right-password")))
    b = agent_factory("host-b", host_id="host-b",
                      extra=local_repository(shared, password(tmp_path / "b.password", "another-password")))
    with hub_over(store, (a, b)) as hub:
        project_id = create_project(a, files=30)
        hub.add_project(project_id, "host-a", "eu")
        backup = a.wait(a.backup(project_id).id)
        assert backup.state == pb.SUCCEEDED, backup.error

        with pytest.raises(MoveRefused, match="cannot read .* wrong repository password") as refused:
            hub.move(project_id, "host-b")

        assert refused.value.code == "FAILED_PRECONDITION"
        move = hub.store.active_move(project_id)
        assert (move.status, move.step) == (MoveStatus.FAILED, "preflight")
    assert_untouched_source(a, project_id)
    repository = shared / f"project-{project_id}"
    # The one backup taken before the move, nothing from the move (restic 0.14 reports short ids).
    assert [s[:8] for s in restic_snapshots(repository, tmp_path / "a.password")] == [backup.summary.snapshot_id[:8]]
    assert [o.id for o in backups_run(a, project_id)] == [backup.id] and backups_run(b, project_id) == []


def test_a_target_with_another_password_and_no_backup_yet_is_refused_before_the_freeze(
        store, agent_factory, tmp_path) -> None:
    """With no backup yet there is no repository to prove the password against at preflight:
    the target must read the bulk backup before the freeze, so the move stops there."""
    shared = tmp_path / "shared-repos"
    a = agent_factory("host-a", host_id="host-a",
                      extra=local_repository(shared, password(tmp_path / "a.password", "the-right-password")))
    b = agent_factory("host-b", host_id="host-b",
                      extra=local_repository(shared, password(tmp_path / "b.password", "another-password")))
    with hub_over(store, (a, b)) as hub:
        project_id = create_project(a, files=30, repository=False)  # no repository yet
        hub.add_project(project_id, "host-a", "eu")
        steps = []

        with pytest.raises(MoveRefused, match="wrong repository password"):
            hub.move(project_id, "host-b", before_step=steps.append)

        assert steps == ["preflight", "backup"]
        move = hub.store.active_move(project_id)
        assert (move.status, move.step) == (MoveStatus.FAILED, "backup")
    assert_untouched_source(a, project_id)
    assert not b.home(project_id).exists()


def test_a_cross_region_target_outside_its_regions_bucket_is_refused_at_preflight(
        agent_factory, s3_server, tmp_path) -> None:
    """A cross-region move reads the copy the hub writes into the target region's bucket: a
    target host that keeps the project anywhere else (here a local repository) is refused."""
    from hub_client.move import MoveSettings
    from hub_client.store import open_store
    from tests.integration.test_cross_region import REGIONS, bucket_config

    client = s3_server.client()
    existing = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    for region in REGIONS:
        if f"buckets-{region}" not in existing:
            settings = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            client.create_bucket(Bucket=f"buckets-{region}", **settings)
    source = agent_factory("host-eu", host_id="host-eu", extra=s3_server.agent_repository_config(
        password(tmp_path / "s3.password", "cross-region-password"), region=REGIONS[0]))
    target = agent_factory("host-us", host_id="host-us")  # its own local repository
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    settings = MoveSettings(buckets={region: bucket_config(s3_server, region) for region in REGIONS})
    try:
        with Hub(store, client_config=client_config, settings=settings) as hub:
            for host_id, agent, region in (("host-eu", source, REGIONS[0]), ("host-us", target, REGIONS[1])):
                hub.add_host(host_id, f"127.0.0.1:{agent.port}", region)
                hub.probe_host(host_id)
            project_id = create_project(source, files=20)
            hub.add_project(project_id, "host-eu", REGIONS[0])

            with pytest.raises(MoveRefused, match=f"host-us keeps project .* not in its region {REGIONS[1]}'s bucket"):
                hub.move(project_id, "host-us", cross_region=True)

            move = hub.store.active_move(project_id)
            assert (move.status, move.step) == (MoveStatus.FAILED, "preflight")
    finally:
        store.close()
    assert_untouched_source(source, project_id)
    assert backups_run(source, project_id) == []
