"""Offline moves decided from what the agents reported, and source cleanups that never delete
blind: real agents on btrfs (loop device) sharing one local repository, the hub's store on SQLite
and on a throwaway PostgreSQL cluster.

Ground truth is what the test wrote (hashes of the edited files) and what a stock ``restic
restore`` of the rescue snapshot gives back, never the hub's own account of itself."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import MoveRefused
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Cleanup, MoveStatus, open_store
from hub_client.store.models import utcnow
from tests.harness import REPO_ROOT, create_project, manifest
from tests.hubs import make_hub, register

EDIT_FILES = 4
EDIT_BYTES = 25 * 2**20  # 4 x 25 MiB = 100 MiB of edits after the last backup


@pytest.fixture
def repo_root(tmp_path: Path) -> tuple[Path, Path]:
    password_file = tmp_path / "repo.password"
    password_file.write_text("rescue-test-password\n")
    password_file.chmod(0o600)
    return tmp_path / "shared-repos", password_file


@pytest.fixture
def btrfs_hosts(agent_factory, btrfs_fs, repo_root):
    """host-a and host-b on btrfs (exact change detection: the subvolume generation), sharing one
    local repository root and password as the hosts of a region share a bucket."""
    root, password_file = repo_root
    extra = f'[repository]\nkind = "local"\n[repository.local]\nroot = "{root}"\npassword_file = "{password_file}"\n'
    tag = uuid.uuid4().hex[:8]
    return tuple(agent_factory(f"{name}-{tag}", backend="btrfs", base=btrfs_fs.mountpoint / f"{name}-{tag}",
                               extra=extra, host_id=name) for name in ("host-a", "host-b"))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path: Path) -> str:
    """A store URL a subprocess (the CLI) can open too: a SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'hub.sqlite'}"
    return request.getfixturevalue("pg_server").create_database("rescue")


@pytest.fixture
def hub(store_url, btrfs_hosts):
    store = open_store(store_url)
    try:
        with make_hub(store, btrfs_hosts) as opened:
            yield opened
    finally:
        store.close()


def cli(store_url: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_client", "--store", store_url, "--json", *argv],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_edits(home: Path) -> dict[str, str]:
    """100 MiB of new files and one rewritten file in ``home``; their hashes by relative path."""
    (home / "edits").mkdir(exist_ok=True)
    written = {}
    for index in range(EDIT_FILES):
        path = home / "edits" / f"big-{index}.bin"
        with open(path, "wb") as handle:
            for _ in range(EDIT_BYTES // 2**20):
                handle.write(os.urandom(2**20))
            handle.flush()
            os.fsync(handle.fileno())
        written[f"edits/big-{index}.bin"] = sha256(path)
    rewritten = home / "d0" / "f0.bin"
    rewritten.parent.mkdir(exist_ok=True)
    rewritten.write_bytes(b"rewritten after the last backup\n")
    written["d0/f0.bin"] = sha256(rewritten)
    return written


def restic_restore(repo_root: tuple[Path, Path], project_id: str, snapshot_id: str, target: Path) -> Path:
    """Stock restic restores ``snapshot_id`` of the project's repository into ``target``; returns
    the restored project/ root."""
    root, password_file = repo_root
    env = {"PATH": os.environ["PATH"], "HOME": str(target.parent), "RESTIC_PASSWORD_FILE": str(password_file),
           "RESTIC_REPOSITORY": str(root / f"project-{project_id}")}
    subprocess.run(["restic", "restore", snapshot_id, "--target", str(target)], env=env, check=True,
                   capture_output=True, timeout=300)
    found = [path for path in target.rglob("project") if path.is_dir() and (path / "edits").exists()]
    assert len(found) == 1, sorted(str(p) for p in target.rglob("*"))[:20]
    return found[0]


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)


def test_offline_move_with_unknown_freshness_refused_then_forced_and_the_source_rescued(
        hub: Hub, store_url: str, btrfs_hosts, repo_root, tmp_path: Path) -> None:
    a, b = btrfs_hosts
    project_id = create_project(a, files=40)
    hub.add_project(project_id, "host-a", "eu")
    assert a.wait(a.backup(project_id).id).state == pb.SUCCEEDED
    backed_up = manifest(a.home(project_id))
    refreshed = cli(store_url, "refresh")  # every host's projects, as their agents report them now
    assert refreshed.returncode == 0, refreshed.stderr
    assert {(r["host_id"], r["reachable"]) for r in map(json.loads, refreshed.stdout.splitlines())} == {
        ("host-a", True), ("host-b", True)}
    reported = hub.store.get_project(project_id)
    assert reported.reported_at is not None and reported.last_backup_snapshot  # ListProjects, recorded
    assert not status(a, project_id).dirty

    # 100 MiB of edits after the last backup, then the source host goes down; the hub's last report
    # (clean) is an hour old: it vouches for nothing that happened since.
    edits = write_edits(a.home(project_id))
    a.kill()
    hub.store.upsert_project(replace(hub.store.get_project(project_id), reported_at=utcnow() - timedelta(hours=1)))

    with pytest.raises(MoveRefused) as refused:
        hub.move(project_id, "host-b")
    message = str(refused.value)
    assert "UNKNOWN" in message and "cannot be vouched for" in message and "force" in message
    # The window runs from the last time the hub knew the project's state (here its backup, newer
    # than the stale report) to now.
    assert "changes from " in message and reported.last_backup_snapshot[:8] in message
    assert refused.value.loss_minutes is not None and refused.value.loss_minutes >= 1
    failed = hub.store.active_move(project_id)
    assert (failed.status, failed.step) == (MoveStatus.FAILED, "preflight") and "cannot be vouched for" in failed.error
    assert any(e.kind == "failed" and "cannot be vouched for" in e.message and e.data["loss_minutes"] >= 1
               for e in hub.store.movelog(failed.id))
    assert not status(b, project_id).present
    assert hub.store.get_project(project_id).host_id == "host-a"

    move = hub.move(project_id, "host-b", force=True)
    assert move.id == failed.id and move.status == MoveStatus.SUCCEEDED
    assert manifest(b.home(project_id)) == backed_up  # from the backup: the edits are not there
    warning = [e for e in hub.store.movelog(move.id) if e.kind == "warning" and e.data.get("freshness")][-1]
    assert warning.data["freshness"] == "unknown" and warning.data["loss_minutes"] >= 1 and warning.data["window_to"]
    assert "cannot be vouched for" in warning.message
    assert hub.store.get_move(move.id).cleanup == Cleanup.PENDING

    # The source comes back with its copy: the cleanup rescues the edits before removing anything.
    a.start()
    register(hub, "host-a", a)
    seen_at_rescue = {}

    def at_rescue(entry) -> None:
        if entry.kind == "rescue":
            seen_at_rescue["home"] = a.home(project_id).is_dir()
            seen_at_rescue["edits"] = {path: sha256(a.home(project_id) / path) for path in edits}
            seen_at_rescue["recorded"] = [r.snapshot_id for r in hub.store.list_rescues(move_id=move.id)]

    assert hub.run_cleanups(observer=at_rescue) == []
    assert seen_at_rescue["home"] and seen_at_rescue["edits"] == edits  # the copy was intact at the rescue
    rescues = hub.store.list_rescues(project_id=project_id)
    assert len(rescues) == 1 and seen_at_rescue["recorded"] == [rescues[0].snapshot_id]
    rescue = rescues[0]
    assert (rescue.move_id, rescue.host_id) == (move.id, "host-a")
    assert rescue.bytes_added >= EDIT_FILES * EDIT_BYTES * 0.9 and rescue.files_new >= EDIT_FILES
    assert not a.home(project_id).exists() and not a.persist(project_id).exists()
    assert hub.store.get_move(move.id).cleanup == Cleanup.DONE
    kinds = [e.kind for e in hub.store.movelog(move.id)]
    assert kinds.index("rescue") < len(kinds) - 1 - kinds[::-1].index("cleanup")

    # Ground truth: stock restic gives back every edit from the rescue snapshot, tagged for the move.
    restored = restic_restore(repo_root, project_id, rescue.snapshot_id, tmp_path / "restored")
    assert {path: sha256(restored / path) for path in edits} == edits
    snapshots = {s.id: s for s in b.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id),
                                                         timeout=30).snapshots}
    tagged = next(s for s in snapshots.values() if s.id.startswith(rescue.snapshot_id[:8]))
    assert tagged.purpose == "rescue" and f"move={move.id}" in tagged.tags

    listed = cli(store_url, "rescues", "--project", project_id)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["project_id"], r["move_id"], r["host_id"], r["snapshot_id"]) for r in rows] == [
        (project_id, move.id, "host-a", rescue.snapshot_id)]
    assert rows[0]["bytes_added"] == rescue.bytes_added and "new" in rows[0]["changed"] and rows[0]["created_at"]


def test_clean_online_move_cleanup_takes_no_rescue_and_the_source_stays_until_placement(hub: Hub, btrfs_hosts) -> None:
    a, b = btrfs_hosts
    project_id = create_project(a, files=60)
    hub.add_project(project_id, "host-a", "eu")
    at_finalize = {}

    def before_step(step: str) -> None:
        if step == "finalize":  # the placement has not changed yet: the source copy must be whole
            at_finalize["home"] = manifest(a.home(project_id))
            at_finalize["placement"] = hub.store.get_project(project_id).host_id

    complete_move = hub.store.complete_move

    def placing(move_id: str, **kwargs):  # the moment the placement changes, in the store
        at_finalize["at_placement"] = manifest(a.home(project_id)) if a.home(project_id).is_dir() else None
        return complete_move(move_id, **kwargs)

    hub.store.complete_move = placing
    move = hub.move(project_id, "host-b", before_step=before_step)
    assert move.status == MoveStatus.SUCCEEDED
    assert at_finalize["placement"] == "host-a"
    # Whole on the source until the placement changed.
    assert at_finalize["home"] == at_finalize["at_placement"] == manifest(b.home(project_id))
    assert hub.store.list_rescues(project_id=project_id) == []
    log = hub.store.movelog(move.id)
    assert any(e.kind == "cleanup" and "nothing newer than the moved snapshot" in e.message for e in log)
    assert not a.home(project_id).exists() and hub.store.get_move(move.id).cleanup == Cleanup.DONE
    # The rescue backup answered UP_TO_DATE: no snapshot beyond the move's was written.
    purposes = [s.purpose for s in b.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id),
                                                         timeout=30).snapshots]
    assert "rescue" not in purposes
    # The hub's record of the project is the target's report now.
    assert hub.store.get_project(project_id).reported_at is not None


def test_failed_rescue_keeps_the_cleanup_pending_and_the_copy_intact(hub: Hub, btrfs_hosts, repo_root) -> None:
    a, b = btrfs_hosts
    _, password_file = repo_root
    project_id = create_project(a, files=30)
    hub.add_project(project_id, "host-a", "eu")
    move = hub.move(project_id, "host-b", clean_now=False)
    assert move.status == MoveStatus.SUCCEEDED and move.cleanup == Cleanup.PENDING
    # The source copy changes after the move (the source was frozen: a root process on the host
    # thawed it), and the repository cannot be opened (wrong password): the rescue fails.
    a.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=10)
    (a.home(project_id) / "late.txt").write_text("written on the old copy after the move\n")
    before = manifest(a.home(project_id))
    good = password_file.read_text()
    password_file.write_text("not-the-password\n")
    try:
        assert [m.id for m in hub.run_cleanups()] == [move.id]
    finally:
        password_file.write_text(good)
    assert hub.store.get_move(move.id).cleanup == Cleanup.PENDING
    assert manifest(a.home(project_id)) == before  # intact, nothing removed
    assert hub.store.list_rescues(move_id=move.id) == []
    assert any(e.kind == "warning" and "rescue backup" in e.message for e in hub.store.movelog(move.id))

    # With the repository readable again, the next cleanup rescues the late edit and removes the copy.
    assert hub.run_cleanups() == []
    rescues = hub.store.list_rescues(move_id=move.id)
    assert len(rescues) == 1 and rescues[0].files_new >= 1
    assert not a.home(project_id).exists()


def test_a_stale_copy_on_the_target_is_rescued_before_a_move_replaces_it(hub: Hub, btrfs_hosts, repo_root) -> None:
    a, b = btrfs_hosts
    _, password_file = repo_root
    project_id = create_project(a, files=30)
    hub.add_project(project_id, "host-a", "eu")
    first = hub.move(project_id, "host-b", clean_now=False)
    assert first.status == MoveStatus.SUCCEEDED and first.cleanup == Cleanup.PENDING
    # The old copy on host-a changes after the move (thawed by hand), and the project moves back.
    a.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=10)
    (a.home(project_id) / "late.txt").write_text("only on the stale copy\n")
    stale = manifest(a.home(project_id))

    good = password_file.read_text()
    password_file.write_text("not-the-password\n")
    try:
        with pytest.raises(MoveRefused, match="could not be cleaned up"):
            hub.move(project_id, "host-a")
    finally:
        password_file.write_text(good)
    assert manifest(a.home(project_id)) == stale and hub.store.get_project(project_id).host_id == "host-b"
    assert hub.store.get_move(first.id).cleanup == Cleanup.PENDING

    back = hub.move(project_id, "host-a")
    assert back.status == MoveStatus.SUCCEEDED and hub.store.get_project(project_id).host_id == "host-a"
    assert not (a.home(project_id) / "late.txt").exists()  # the project came back as it is on host-b
    rescues = hub.store.list_rescues(move_id=first.id)
    assert len(rescues) == 1 and rescues[0].host_id == "host-a" and rescues[0].files_new >= 1
    assert hub.store.get_move(first.id).cleanup == Cleanup.DONE
    files = b.stub.ListFiles(pb.ListFilesRequest(project_id=project_id, snapshot_id=rescues[0].snapshot_id,
                                                 path="project"), timeout=30).entries
    assert "project/late.txt" in {entry.path for entry in files} or "late.txt" in {entry.path for entry in files}


def test_up_to_date_is_clean_only_when_the_copys_last_backup_is_the_moved_snapshot(hub: Hub, btrfs_hosts) -> None:
    a, b = btrfs_hosts
    project_id = create_project(a, files=20)
    hub.add_project(project_id, "host-a", "eu")
    move = hub.move(project_id, "host-b", clean_now=False)
    assert move.status == MoveStatus.SUCCEEDED
    # On the old copy: an edit, frozen again, then backed up by someone else (not the move): its
    # last backup holds the edit and is not the moved snapshot, so the rescue backup is UP_TO_DATE.
    a.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=10)
    (a.home(project_id) / "after-the-move.txt").write_text("newer than the moved snapshot\n")
    a.stub.Freeze(pb.FreezeRequest(project_id=project_id), timeout=30)
    other = a.wait(a.backup(project_id).id)
    assert other.state == pb.SUCCEEDED and other.summary.snapshot_id

    assert hub.run_cleanups() == []
    rescues = hub.store.list_rescues(move_id=move.id)
    assert [r.snapshot_id[:8] for r in rescues] == [other.summary.snapshot_id[:8]]  # that backup is the rescue
    assert not a.home(project_id).exists()
    files = b.stub.ListFiles(pb.ListFilesRequest(project_id=project_id, snapshot_id=rescues[0].snapshot_id,
                                                 path="project"), timeout=30).entries
    assert {e.path.rsplit("/", 1)[-1] for e in files} >= {"after-the-move.txt"}
