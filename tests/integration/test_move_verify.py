"""A move's verification is of the data: the target's live home and persist location must equal
the moved snapshot (Verify SNAPSHOT_TREE, plus the sentinel) before placement changes, and still
hold its entries and bytes (Verify COUNTS) right before it does. Real agents, the hub on SQLite
and PostgreSQL; every failure is checked against ground truth: the store's placement, the source
copy's manifest, a write into the source home."""

from __future__ import annotations

import os
from dataclasses import replace
import shutil
import uuid
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import ONLINE_STEPS, MoveError
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Cleanup, MoveStatus, open_store
from tests.harness import manifest, new_id
from tests.hubs import make_hub
from tests.integration.test_move import SENTINEL_NAME, place_project, status
from tests.integration.test_move_support import ensure, full_id


def empty(directory: Path) -> None:
    """Remove everything in ``directory``, keeping the directory itself."""
    for child in list(directory.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def assert_source_kept_and_writable(hub: Hub, a, project_id: str, home_before: dict) -> None:
    """Placement on host-a, the source home exactly as before the move, writable again."""
    assert hub.store.get_project(project_id).host_id == "host-a"
    assert manifest(a.home(project_id)) == home_before
    assert not status(a, project_id).frozen
    written = a.home(project_id) / "written-after-the-failure.txt"
    written.write_text("the source is in service\n")
    assert written.read_text() == "the source is in service\n"


def first_of(root: Path, kind: str) -> Path:
    """The first (in sorted walk order) regular file or symlink below ``root``."""
    for directory, dirnames, filenames in sorted(os.walk(root)):
        for name in sorted(dirnames + filenames):
            path = Path(directory) / name
            if (kind == "symlink" and path.is_symlink()) or (kind == "file" and path.is_file()
                                                             and not path.is_symlink()):
                return path
    raise AssertionError(f"no {kind} below {root}")


def keep_times(*paths: Path):
    """Put back the (a, m)times of ``paths`` (not following symlinks) after a change: so only the
    change itself differs from the snapshot."""
    saved = [(p, os.lstat(p)) for p in paths]

    def restore() -> None:
        for path, st in saved:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return restore


def test_target_home_emptied_before_verify_fails_the_move_and_keeps_the_source(hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    project_id = place_project(hub, a, files=60)
    home_before = manifest(a.home(project_id))

    def empty_the_target(step: str) -> None:
        if step == "verify":  # the restore succeeded; then the home lost its files
            home = b.home(project_id)
            assert any(home.iterdir())
            empty(home)
            assert home.is_dir() and not any(home.iterdir())

    with pytest.raises(MoveError, match="verification failed") as failed:
        hub.move(project_id, "host-b", before_step=empty_the_target)
    move = hub.store.active_move(project_id)
    assert (move.status, move.step) == (MoveStatus.FAILED, "verify")
    assert "DATA_LOSS" in move.error and ": missing (a " in move.error, move.error
    assert ": missing (a " in str(failed.value)
    assert_source_kept_and_writable(hub, a, project_id, home_before)
    assert (a.persist(project_id) / "app.db").exists()
    assert not status(b, project_id).present  # the unverified copy was removed
    kinds = [e.kind for e in hub.store.movelog(move.id)]
    assert "thaw" in kinds and "complete" not in kinds


@pytest.mark.parametrize("change", ["size", "extra", "link target"])
def test_one_changed_entry_on_the_target_fails_verification(sqlite_hub: Hub, two_hosts, change: str) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=40)
    home_before = manifest(a.home(project_id))
    changed: list[str] = []

    def change_one_entry(step: str) -> None:
        if step != "verify":
            return
        home = b.home(project_id)
        if change == "size":
            victim = first_of(home, "file")
            put_back = keep_times(victim)
            with victim.open("ab") as out:
                out.write(b"one more line\n")
        elif change == "extra":
            victim = home / "not-in-the-snapshot.txt"
            put_back = keep_times(home)
            victim.write_text("extra\n")
        else:
            victim = first_of(home, "symlink")
            target = os.readlink(victim)
            put_back = keep_times(victim, victim.parent)
            victim.unlink()
            os.symlink(target + "-elsewhere", victim)
        put_back()
        changed.append(str(victim.relative_to(home)))

    with pytest.raises(MoveError, match="verification failed"):
        hub.move(project_id, "host-b", before_step=change_one_entry)
    move = hub.store.active_move(project_id)
    assert (move.status, move.step) == (MoveStatus.FAILED, "verify")
    # Exactly that entry, and exactly what differs about it.
    assert f"in 1 place(s): project/{changed[0]}: {change}" in move.error, move.error
    assert_source_kept_and_writable(hub, a, project_id, home_before)
    assert not status(b, project_id).present


def test_a_change_between_verify_and_placement_fails_at_finalize(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=40)
    home_before = manifest(a.home(project_id))

    def grow_a_file(step: str) -> None:
        if step == "finalize":  # verified; then a file grew before placement changed
            with first_of(b.home(project_id), "file").open("ab") as out:
                out.write(b"late\n")

    with pytest.raises(MoveError, match="verification before placement failed"):
        hub.move(project_id, "host-b", before_step=grow_a_file)
    move = hub.store.active_move(project_id)
    assert (move.status, move.step) == (MoveStatus.FAILED, "finalize")
    assert "DATA_LOSS" in move.error and "bytes in files" in move.error, move.error
    assert_source_kept_and_writable(hub, a, project_id, home_before)
    assert not status(b, project_id).present


def test_the_source_copy_is_intact_until_placement_changes(sqlite_hub: Hub, two_hosts, monkeypatch) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=40)
    home_before = manifest(a.home(project_id))
    checked: list[str] = []

    def source_intact(when: str) -> None:
        assert hub.store.get_project(project_id).host_id == "host-a", when
        assert status(a, project_id).present, when
        assert manifest(a.home(project_id)) == home_before, when
        assert (a.persist(project_id) / "app.db").exists(), when
        checked.append(when)

    def before_step(step: str) -> None:
        if step in ("verify", "finalize"):
            source_intact(step)

    complete_move = hub.store.complete_move

    def checked_completion(*args, **kwargs):
        source_intact("complete_move")  # the very moment placement changes
        return complete_move(*args, **kwargs)

    monkeypatch.setattr(hub.store, "complete_move", checked_completion)
    entries = []
    move = hub.move(project_id, "host-b", before_step=before_step, observer=entries.append)
    assert move.status == MoveStatus.SUCCEEDED
    assert checked == ["verify", "finalize", "complete_move"]
    assert [e.message for e in entries if e.kind == "step"] == list(ONLINE_STEPS)
    # The verify and finalize steps' checks (preflight logs its reachability check as "verify" too).
    verified = [e for e in entries if e.kind == "verify" and "entries" in e.data]
    assert "equal snapshot" in verified[0].message and "sentinel found" in verified[0].message
    assert verified[0].data["entries"] > 40
    # Finalize counts the trees after the sentinel's removal: one entry fewer than the snapshot.
    assert "still holds" in verified[1].message and verified[1].data["entries"] == verified[0].data["entries"] - 1
    # Then, and only then, the source copy is removed.
    assert hub.store.get_project(project_id).host_id == "host-b"
    assert not a.home(project_id).exists()
    assert hub.store.get_move(move.id).cleanup == Cleanup.DONE
    assert not (b.persist(project_id) / SENTINEL_NAME).exists()  # removed at finalize


@pytest.mark.parametrize("same_tree", [False, True], ids=["other-data", "same-tree"])
def test_offline_move_fails_when_the_target_holds_another_snapshot(sqlite_hub: Hub, two_hosts, same_tree) -> None:
    """With the source down the receipt and the tree are the only checks: a target that holds
    another snapshot than the move's fails, also when that snapshot's tree happens to be equal."""
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=30)
    older = a.wait(a.backup(project_id).id)
    assert older.state == pb.SUCCEEDED, older.error
    if not same_tree:
        (a.home(project_id) / "newer.txt").write_text("only in the newest backup\n")
    newest = a.wait(a.backup(project_id, force=True).id)
    assert newest.state == pb.SUCCEEDED, newest.error
    older_id = full_id(a, project_id, older.summary.snapshot_id)
    newest_id = full_id(a, project_id, newest.summary.snapshot_id)
    assert older_id != newest_id
    hub.refresh_project(project_id)
    a.kill()

    def hold_the_older_snapshot(step: str) -> None:
        if step == "verify":  # the target's copy replaced by the older backup
            deleted = b.wait(b.stub.DeleteProject(pb.DeleteProjectRequest(
                request_id=new_id(), project_id=project_id, delete_repository=False), timeout=30).id)
            assert deleted.state == pb.SUCCEEDED, deleted.error
            restored = b.wait(ensure(b, project_id, pb.EnsureProjectRequest.REQUIRED, older_id).id)
            assert restored.state == pb.SUCCEEDED, restored.error

    with pytest.raises(MoveError, match="verification failed"):
        hub.move(project_id, "host-b", before_step=hold_the_older_snapshot)
    move = hub.store.active_move(project_id)
    assert (move.status, move.step, move.snapshot_id[:8]) == (MoveStatus.FAILED, "verify", newest_id[:8])
    assert hub.store.get_project(project_id).host_id == "host-a"
    assert not status(b, project_id).present
    if same_tree:
        assert f"snapshot {older_id[:8]}, not {newest_id[:8]}" in move.error, move.error


def test_a_failed_move_thaws_the_source_only_while_it_is_the_placement(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=20)

    def empty_the_target(step: str) -> None:
        if step == "verify":
            empty(b.home(project_id))

    with pytest.raises(MoveError, match="verification failed"):
        hub.move(project_id, "host-b", before_step=empty_the_target)
    move = hub.store.active_move(project_id)
    assert move.status == MoveStatus.FAILED and not status(a, project_id).frozen
    # Then the source is frozen again and the project placed elsewhere (by an operator): undoing
    # the move (cancel) must not thaw a copy that is no longer the placement.
    assert a.stub.Freeze(pb.FreezeRequest(project_id=project_id), timeout=30).frozen
    hub.store.upsert_project(replace(hub.store.get_project(project_id), host_id="host-b"))
    seq = hub.store.movelog(move.id)[-1].seq
    assert hub.cancel(move.id).status == MoveStatus.CANCELLED
    assert status(a, project_id).frozen
    assert "thaw" not in [e.kind for e in hub.store.movelog(move.id, after_seq=seq)]


# ---------------------------------------------------------------- btrfs


@pytest.fixture
def btrfs_hub(agent_factory, btrfs_fs, tmp_path: Path):
    """A hub on SQLite over two btrfs agents sharing one local repository."""
    base = btrfs_fs.mountpoint / f"move-verify-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    password_file = tmp_path / "repo.password"
    password_file.write_text("move-test-password\n")
    password_file.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{tmp_path / "shared-repos"}"\n'
             f'password_file = "{password_file}"\n')
    hosts = tuple(agent_factory(name, extra=extra, host_id=name, backend="btrfs", base=base / name)
                  for name in ("host-a", "host-b"))
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        with make_hub(store, hosts) as hub:
            yield hub, hosts
    finally:
        store.close()


def test_btrfs_move_verifies_the_data_and_an_emptied_target_fails(btrfs_hub) -> None:
    hub, (a, b) = btrfs_hub
    project_id = place_project(hub, a, files=40)
    home_before = manifest(a.home(project_id))

    with pytest.raises(MoveError, match="verification failed"):
        hub.move(project_id, "host-b", before_step=lambda step: step == "verify" and empty(b.home(project_id)))
    move = hub.store.active_move(project_id)
    assert (move.status, move.step) == (MoveStatus.FAILED, "verify") and ": missing (a " in move.error
    assert_source_kept_and_writable(hub, a, project_id, home_before)
    assert not status(b, project_id).present

    # The failure's thaw took the sentinel out of the source's persist subvolume.
    assert not (a.persist(project_id) / SENTINEL_NAME).exists()

    # Retried untouched: the exact restore on btrfs (subvolume roots, modes, mtimes) verifies.
    home_now, persist_now = manifest(a.home(project_id)), manifest(a.persist(project_id))
    retried = hub.retry(move.id)
    assert retried.status == MoveStatus.SUCCEEDED
    assert manifest(b.home(project_id)) == home_now
    # The sentinel went at finalize: the persist subvolume is the source's as before the freeze.
    assert manifest(b.persist(project_id)) == persist_now
    assert hub.store.get_project(project_id).host_id == "host-b"
