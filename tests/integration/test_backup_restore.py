"""Backup, Restore, Verify and ListSnapshots through a real agent process and the real restic binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import grpc
import pytest

from agent.engine import restic_args as ra
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree

pytestmark = requires_restic


def make_project(agent, project_id: str, files: int = 300) -> None:
    write_tree(agent.home(project_id), files=files, seed=hash(project_id) & 0xFFFF)
    persist = agent.persist(project_id)
    write_tree(persist, files=5, seed=7, depth=0)


def test_backup_change_restore_gives_back_both_roots_exactly(shared_agent, project_id):
    agent = shared_agent
    make_project(agent, project_id)
    home_before, persist_before = manifest(agent.home(project_id)), manifest(agent.persist(project_id))

    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot_id = backup.summary.snapshot_id
    assert snapshot_id
    assert backup.summary.files_processed == len([v for v in home_before.values() if v[0] == "file"]) + len(
        [v for v in persist_before.values() if v[0] == "file"]
    )

    # Change, add and delete files in both roots.
    home = agent.home(project_id)
    victims = sorted(p for p in home.rglob("*.bin"))[:20]
    for path in victims[:10]:
        path.unlink()
    for path in victims[10:]:
        path.write_bytes(b"changed")
    (home / "new-file.txt").write_text("new")
    shutil.rmtree(agent.persist(project_id))
    agent.persist(project_id).mkdir()
    (agent.persist(project_id) / "other.db").write_text("other")
    assert manifest(home) != home_before

    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    # The edits since the backup are backed up first (a pre-restore snapshot, named in a warning).
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error
    assert any("pre-restore snapshot" in warning for warning in restore.summary.warnings)
    assert restore.summary.snapshot_id.startswith(snapshot_id)
    assert manifest(agent.home(project_id)) == home_before
    assert manifest(agent.persist(project_id)) == persist_before
    # The old trees go after the restore answered, in the background, logged when done.
    assert agent.staging_after_cleanup() == []
    what = f"remove the old trees of restore {restore.id}"
    deadline = time.monotonic() + 10
    while not any(e.get("event") == "housekeeping.done" and e.get("what") == what for e in agent.log_events()):
        assert time.monotonic() < deadline, f"no housekeeping.done for {what!r} in the agent's log"
        time.sleep(0.05)

    verify = agent.wait(agent.verify(project_id).id)
    assert verify.state == pb.SUCCEEDED, verify.error


def test_snapshot_carries_layout_v2_metadata_and_two_roots(shared_agent, project_id):
    agent = shared_agent
    make_project(agent, project_id, files=10)
    operation = agent.wait(agent.backup(project_id, purpose="move", tags=["ticket=42"]).id)
    assert operation.state == pb.SUCCEEDED, operation.error

    listing = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30)
    assert len(listing.snapshots) == 1
    snapshot = listing.snapshots[0]
    assert snapshot.hostname == f"project-{project_id}"
    assert (snapshot.layout, snapshot.project_id, snapshot.source_host_id) == ("v2", project_id, "test-host")
    assert (snapshot.operation_id, snapshot.purpose) == (operation.id, "move")
    assert "ticket=42" in snapshot.tags

    env = {"RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password"), "PATH": os.environ["PATH"]}
    listing_lines = subprocess.run(
        ["restic", "-r", str(agent.repository(project_id)), "--no-cache", "ls", "--json", snapshot.id],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    nodes = [json.loads(line) for line in listing_lines]
    roots = sorted(n["path"] for n in nodes if n.get("struct_type") == "node" and n["path"].count("/") == 1)
    assert roots == ["/persist", "/project"]


def test_list_snapshots_newest_first_with_pages(shared_agent, project_id):
    agent = shared_agent
    make_project(agent, project_id, files=3)
    ids = []
    for index in range(3):
        (agent.home(project_id) / f"round-{index}").write_text(str(index))
        operation = agent.wait(agent.backup(project_id).id)
        assert operation.state == pb.SUCCEEDED, operation.error
        ids.append(operation.summary.snapshot_id)
    first = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id, page_size=2), timeout=30)
    assert [s.id for s in first.snapshots] == [ids[2], ids[1]]
    assert first.next_page_token
    second = agent.stub.ListSnapshots(
        pb.ListSnapshotsRequest(project_id=project_id, page_size=2, page_token=first.next_page_token), timeout=30
    )
    assert [s.id for s in second.snapshots] == [ids[0]]
    assert second.next_page_token == ""
    # Sizes of the agent's own snapshots (bytes a restore writes), growing with each round.
    sizes = [s.size_bytes for s in (*first.snapshots, *second.snapshots)]
    assert sizes[0] > sizes[1] > sizes[2] > 0


def test_restore_into_a_missing_project_creates_it(shared_agent, project_id):
    agent = shared_agent
    make_project(agent, project_id, files=20)
    before = manifest(agent.home(project_id))
    backup = agent.wait(agent.backup(project_id).id)
    shutil.rmtree(agent.home(project_id))
    shutil.rmtree(agent.persist(project_id))
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    assert restore.state == pb.SUCCEEDED, restore.error
    assert manifest(agent.home(project_id)) == before


def test_restore_latest_resolves_and_records_the_snapshot(shared_agent, project_id):
    agent = shared_agent
    make_project(agent, project_id, files=5)
    backup = agent.wait(agent.backup(project_id).id)
    restore = agent.wait(agent.restore(project_id, "latest").id)
    assert restore.state == pb.SUCCEEDED, restore.error
    assert restore.summary.snapshot_id.startswith(backup.summary.snapshot_id)


def test_a_snapshot_tree_verify_needs_a_snapshot(shared_agent, project_id):
    # The tree modes themselves: tests/integration/test_verify_tree.py.
    with pytest.raises(grpc.RpcError) as info:
        shared_agent.stub.Verify(pb.VerifyRequest(request_id=new_id(), project_id=project_id,
                                                  mode=pb.VerifyRequest.SNAPSHOT_TREE), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_capabilities_and_host_status(shared_agent):
    caps = shared_agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    assert caps.engine == "restic" and caps.engine_version.startswith("0.")
    # Probed from the running binary's version, not a fixed list.
    version = tuple(int(part) for part in caps.engine_version.split("."))
    # The engine's features, and what the agent can do beside them (a move's pre-copy).
    assert sorted(caps.features) == sorted({*ra.features(version), "precopy"})
    assert "read-data-subset" in caps.features and "json-progress" in caps.features
    assert caps.backend == "directory"
    assert any("live tree" in line for line in caps.limitations)
    status = shared_agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    assert status.host_id == "test-host" and status.disk_total_bytes > 0


def test_repository_spec_in_the_request_is_used(shared_agent, project_id, tmp_path):
    agent = shared_agent
    make_project(agent, project_id, files=5)
    repo = tmp_path / "elsewhere"
    spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(repo)), password="a-request-password")
    operation = agent.wait(agent.backup(project_id, repository=spec).id)
    assert operation.state == pb.SUCCEEDED, operation.error
    assert (repo / "config").exists()
    listing = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id, repository=spec), timeout=30)
    assert [s.id for s in listing.snapshots] == [operation.summary.snapshot_id]
    wrong = pb.RepositorySpec(local=pb.LocalRepository(path=str(repo)), password="not-the-password")
    failed = agent.wait(agent.backup(project_id, repository=wrong, request_id=new_id()).id)
    assert failed.state == pb.FAILED
    assert failed.error.code == "FAILED_PRECONDITION", failed.error


def restic_starts(agent, operation_id: str) -> list[list[str]]:
    """The restic argvs the agent started while it ran ``operation_id`` (from its log)."""
    starts, inside = [], False
    for event in agent.log_events():
        if event.get("operation_id") == operation_id and event.get("event") == "operation.started":
            inside = True
        elif event.get("operation_id") == operation_id and event.get("event") == "operation.finished":
            inside = False
        elif inside and event.get("event") == "process.start":
            argv = [str(a) for a in event["argv"]]
            engine = [i for i, a in enumerate(argv) if a == "restic" or a.endswith("/restic")]
            if engine:  # the restore runs inside the bind-mount helper: its argv starts later
                starts.append(argv[engine[0]:])
    return starts


def test_restore_of_a_snapshot_this_agent_wrote_runs_only_the_restore(shared_agent, project_id, tmp_path):
    agent = shared_agent
    make_project(agent, project_id, files=20)
    backup = agent.wait(agent.backup(project_id).id)
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    assert restore.state == pb.SUCCEEDED, restore.error
    commands = [argv[argv.index("--cache-dir") + 2:][:1] for argv in restic_starts(agent, restore.id)]
    assert commands == [["restore"]], commands  # layout and size came from the journal

    # The same snapshot through another name for the repository is unknown: looked up as usual.
    other = tmp_path / "copy"
    shutil.copytree(agent.repository(project_id), other)
    spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(other)),
                             password=(agent.state_dir / "repository.password").read_text().strip())
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id, repository=spec).id)
    assert restore.state == pb.SUCCEEDED, restore.error
    commands = sorted(argv[argv.index("--cache-dir") + 2] for argv in restic_starts(agent, restore.id))
    assert commands == ["--no-lock", "--no-lock", "restore"]


def test_restore_of_one_file_or_directory_into_a_chosen_path(shared_agent, project_id):
    agent = shared_agent
    home = agent.home(project_id)
    make_project(agent, project_id, files=30)
    (home / "docs").mkdir()
    (home / "docs" / "a.txt").write_text("a as backed up")
    (home / "docs" / "b.txt").write_text("b as backed up")
    backup = agent.wait(agent.backup(project_id).id)
    snapshot = backup.summary.snapshot_id
    snapshot_docs = manifest(home / "docs")

    (home / "docs" / "a.txt").write_text("a edited later")
    (home / "docs" / "new.txt").write_text("only in the live tree")
    (home / "keep.txt").write_text("untouched by path restores")
    # The home directory itself changes (entries come and go); everything else in it must not.
    others = {k: v for k, v in manifest(home).items() if not k.startswith("docs") and k != "."}

    one = agent.wait(agent.restore(project_id, snapshot, subpath="docs/a.txt", target_path="a-restored.txt").id)
    assert one.state == pb.SUCCEEDED, one.error
    assert (home / "a-restored.txt").read_text() == "a as backed up"
    assert (home / "docs" / "a.txt").read_text() == "a edited later"

    whole_dir = agent.wait(agent.restore(project_id, snapshot, subpath="docs").id)
    assert whole_dir.state == pb.SUCCEEDED, whole_dir.error
    assert manifest(home / "docs") == snapshot_docs  # new.txt is gone, a.txt is back
    assert {k: v for k, v in manifest(home).items()
            if not k.startswith("docs") and k not in (".", "a-restored.txt")} == others
    assert not [p for p in home.rglob(".buckets-restore-*")]

    missing = agent.wait(agent.restore(project_id, snapshot, subpath="no/such/thing").id)
    assert (missing.state, missing.error.code) == (pb.FAILED, "NOT_FOUND")
    with pytest.raises(grpc.RpcError) as info:
        agent.restore(project_id, snapshot, subpath="docs", target_path="../escape")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
