"""Copying files between projects through the hub: real agents, the S3 test server or a shared
local repository, the store on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub_client.copying import HOST_STEPS, LOCAL_STEPS, CopyError, CopyRefused
from hub_client.hub import Hub
from hub_client.move import MoveRefused
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Conflict, CopyInProgress, CopyStatus
from tests.conftest import requires_restic
from tests.harness import create_project, manifest, write_tree
from tests.hubs import host_pair, make_hub, register

pytestmark = requires_restic


@pytest.fixture
def s3_hosts(agent_factory, s3_server, tmp_path: Path):
    """Two agents of one region whose repositories are in one bucket of the S3 test server."""
    password_file = tmp_path / "s3.password"
    password_file.write_text("copy-test-password\n")
    password_file.chmod(0o600)
    extra = s3_server.agent_repository_config(password_file)
    return host_pair(agent_factory, extra)


@pytest.fixture
def s3_hub(store, s3_hosts):
    with make_hub(store, s3_hosts) as opened:
        yield opened


def place(hub: Hub, agent, host_id: str, *, files: int = 0) -> str:
    project_id = create_project(agent, files=files)
    hub.add_project(project_id, host_id, "eu")
    return project_id


def snapshots(agent, project_id: str) -> list[pb.Snapshot]:
    return list(agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots)


def engine_runs(agent, command: str) -> int:
    return sum(1 for argv in agent.started_argvs() if command in argv)


def hidden_leftovers(root: Path) -> list[str]:
    return [str(path) for path in root.rglob(".buckets-*")]


def test_copy_of_a_thousand_files_between_hosts(s3_hub: Hub, s3_hosts) -> None:
    a, b = s3_hosts
    source = place(s3_hub, a, "host-a", files=20)
    write_tree(a.home(source) / "data", files=1000, size=1024, seed=7)
    target = place(s3_hub, b, "host-b")
    before = manifest(a.home(source))
    snapshots_before = [s.id for s in snapshots(a, source)]
    seen: dict[str, object] = {}

    def during(step: str) -> None:
        if step == "restore":  # the copy blocks deleting and moving both projects while it runs
            for project_id in (source, target):
                with pytest.raises(CopyInProgress):
                    s3_hub.delete_project(project_id)
            with pytest.raises(MoveRefused, match="being copied"):
                s3_hub.move(source, "host-b")
            seen["temporary"] = [s for s in snapshots(a, source) if "purpose=copy" in s.tags]

    entries = []
    copy = s3_hub.copy(source, "data", target, "incoming/data", observer=entries.append, before_step=during)

    assert copy.status == CopyStatus.SUCCEEDED and copy.attempts == 1
    copied = manifest(b.home(target) / "incoming" / "data")
    assert copied == manifest(a.home(source) / "data") and len(copied) > 1000
    assert manifest(a.home(source)) == before  # the source project is unchanged
    temporary = seen["temporary"]
    assert len(temporary) == 1 and f"copy={copy.id}" in temporary[0].tags
    assert [s.id for s in snapshots(a, source)] == snapshots_before  # the temporary snapshot is gone
    assert hidden_leftovers(b.home(target)) == []
    assert [e.message for e in entries if e.kind == "step"] == list(HOST_STEPS)
    assert any(e.kind == "progress" and e.data["host"] == "host-b" for e in entries)
    assert [(e.seq, e.kind) for e in s3_hub.store.copylog(copy.id)] == [(e.seq, e.kind) for e in entries]
    assert entries[-1].kind == "complete"
    # The failed move attempt made during the copy was refused at preflight and changed nothing.
    assert s3_hub.store.get_project(source).host_id == "host-a"


def test_conflict_rules_between_hosts(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    source = place(sqlite_hub, a, "host-a")
    (a.home(source) / "docs").mkdir()
    for name in ("new.txt", "same.txt"):
        (a.home(source) / "docs" / name).write_text(f"source {name}\n")
    target = place(sqlite_hub, b, "host-b")
    docs = b.home(target) / "docs"

    def reset_target() -> None:
        for path in sorted(docs.rglob("*"), reverse=True) if docs.exists() else ():
            path.unlink() if not path.is_dir() else path.rmdir()
        docs.mkdir(exist_ok=True)
        (docs / "same.txt").write_text("target same.txt\n")
        (docs / "only-target.txt").write_text("target only\n")

    reset_target()
    backups_before = engine_runs(a, "backup")
    with pytest.raises(CopyRefused) as refused:
        sqlite_hub.copy(source, "docs", target, "docs", on_conflict=Conflict.FAIL)
    assert refused.value.code == "FAILED_PRECONDITION"
    assert engine_runs(a, "backup") == backups_before  # refused before any work
    assert sorted(p.name for p in docs.iterdir()) == ["only-target.txt", "same.txt"]

    sqlite_hub.copy(source, "docs", target, "docs", on_conflict=Conflict.SKIP)
    assert {p.name: p.read_text() for p in docs.iterdir()} == {
        "new.txt": "source new.txt\n", "same.txt": "target same.txt\n", "only-target.txt": "target only\n"}

    reset_target()
    sqlite_hub.copy(source, "docs", target, "docs", on_conflict=Conflict.OVERWRITE)
    assert {p.name: p.read_text() for p in docs.iterdir()} == {
        "new.txt": "source new.txt\n", "same.txt": "source same.txt\n"}
    assert [s for s in snapshots(a, source) if "purpose=copy" in s.tags] == []


def test_paths_leading_out_of_a_project_are_refused_before_any_work(sqlite_hub: Hub, two_hosts, tmp_path) -> None:
    a, b = two_hosts
    source = place(sqlite_hub, a, "host-a")
    (a.home(source) / "data").mkdir()
    (a.home(source) / "data" / "file").write_text("x\n")
    (a.home(source) / "etc-link").symlink_to("/etc")
    target = place(sqlite_hub, b, "host-b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (b.home(target) / "out").symlink_to(outside)
    operations_before = [len(agent.stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations)
                         for agent in (a, b)]

    for source_path, target_path in (("../x", "x"), ("data", "../x"), ("/etc", "x"), ("data", "/etc"),
                                     ("data/../../x", "x"), ("", "x")):
        with pytest.raises(CopyRefused) as refused:
            sqlite_hub.copy(source, source_path, target, target_path)
        assert refused.value.code == "INVALID_ARGUMENT", (source_path, target_path)
    assert sqlite_hub.store.list_copies() == []  # refused by the hub: not even a record

    for source_path, target_path in (("etc-link", "etc"), ("data", "out/data"), ("data", "out")):
        with pytest.raises(CopyRefused) as refused:
            sqlite_hub.copy(source, source_path, target, target_path, on_conflict=Conflict.OVERWRITE)
        assert refused.value.code == "INVALID_ARGUMENT", (source_path, target_path)
        copy = sqlite_hub.store.list_copies()[0]
        assert (copy.status, copy.step, copy.snapshot_id) == (CopyStatus.FAILED, "backup" if source_path ==
                                                              "etc-link" else "preflight", None)
    after = [len(agent.stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations) for agent in (a, b)]
    assert after == operations_before  # no agent operation was started
    assert os.listdir(outside) == [] and engine_runs(a, "backup") == 0


def test_copy_on_one_host_uses_no_engine(sqlite_hub: Hub, two_hosts) -> None:
    a, _ = two_hosts
    source = place(sqlite_hub, a, "host-a")
    write_tree(a.home(source) / "src", files=200, seed=3)
    target = place(sqlite_hub, a, "host-a")
    processes_before = len(a.started_argvs())
    entries = []
    copy = sqlite_hub.copy(source, "src", target, "lib/src", observer=entries.append)
    assert copy.status == CopyStatus.SUCCEEDED and not copy.between_hosts
    assert manifest(a.home(target) / "lib" / "src") == manifest(a.home(source) / "src")
    assert [e.message for e in entries if e.kind == "step"] == list(LOCAL_STEPS)
    started = a.started_argvs()[processes_before:]
    assert started and not any("restic" in part for argv in started for part in argv), started  # cp only


def test_target_killed_mid_restore_then_resume_completes(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    source = place(sqlite_hub, a, "host-a")
    write_tree(a.home(source) / "data", files=300, size=8192, seed=5)
    target = place(sqlite_hub, b, "host-b")

    def kill_target(entry) -> None:
        if entry.kind == "operation" and entry.data.get("step") == "restore":
            b.kill()

    with pytest.raises(CopyError, match="restore"):
        sqlite_hub.copy(source, "data", target, "data", observer=kill_target)
    copy = sqlite_hub.store.list_copies()[0]
    assert (copy.status, copy.step, copy.snapshot_id) == (CopyStatus.FAILED, "restore", None)
    assert [s for s in snapshots(a, source) if "purpose=copy" in s.tags] == []  # forgotten on failure
    assert not (b.home(target) / "data").exists()

    b.start()
    register(sqlite_hub, "host-b", b)
    (a.home(source) / "data" / "added-after-the-failure.txt").write_text("late\n")
    resumed = sqlite_hub.resume_copy(copy.id)
    assert resumed.status == CopyStatus.SUCCEEDED and resumed.attempts == 2
    assert manifest(b.home(target) / "data") == manifest(a.home(source) / "data")
    assert [s for s in snapshots(a, source) if "purpose=copy" in s.tags] == []
    assert hidden_leftovers(b.home(target)) == []


def test_clone_keeps_region_and_bucket(s3_hub: Hub, s3_hosts, s3_server) -> None:
    a, b = s3_hosts
    source = place(s3_hub, a, "host-a", files=150)
    before = (manifest(a.home(source)), manifest(a.persist(source)))
    s3_hub.add_host("host-far", "127.0.0.1:1", "apac")
    with pytest.raises(MoveRefused, match="keeps its source's region"):
        s3_hub.clone(source, host_id="host-far")

    clone = s3_hub.clone(source, host_id="host-b")

    original = s3_hub.store.get_project(source)
    assert (clone.host_id, clone.region) == ("host-b", original.region)
    assert (manifest(b.home(clone.id)), manifest(b.persist(clone.id))) == before
    assert (manifest(a.home(source)), manifest(a.persist(source))) == before  # the source is unchanged
    # Its own repository, in the same bucket as the source's; backed up once, so not dirty.
    objects = {item["Key"] for page in s3_server.client().get_paginator("list_objects_v2").paginate(
        Bucket="buckets-us-east-1") for item in page.get("Contents", ())}
    assert any(key.startswith(f"rustic/project-{clone.id}/snapshots/") for key in objects)
    assert any(key.startswith(f"rustic/project-{source}/snapshots/") for key in objects)
    assert "buckets-us-east-1" in clone.repository and clone.last_backup is not None
    status = b.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=clone.id), timeout=10)
    assert not status.dirty and status.last_backup_snapshot_id
    assert [s.project_id for s in snapshots(b, clone.id)] == [clone.id]
