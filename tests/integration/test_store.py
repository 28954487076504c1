"""One suite for both store backends (SQLite and a throwaway PostgreSQL cluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hub_client.store import (
    Cleanup, Conflict, CopyInProgress, CopyStatus, Host, HostBackupStatus, OfflineLoss, InvalidTransition, MoveInProgress, MoveStatus, NotFound, Project, Rescue, Store, migrations,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


def seed(store: Store, region: str = "eu") -> tuple[Host, Host, Project]:
    """Two hosts of ``region`` and a project placed on the first."""
    source = store.upsert_host(Host(new_id(), "10.0.0.1:7070", region, "running", T0))
    target = store.upsert_host(Host(new_id(), "10.0.0.2:7070", region, "running", T0))
    project = store.upsert_project(Project(new_id(), source.id, region, "rustic/project-x", T0, T0))
    return source, target, project


def test_store_satisfies_the_interface(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.schema_version() == migrations.latest(store.dialect)


def test_hosts_round_trip(store: Store) -> None:
    host = Host("host-b", "10.0.0.2:7070", "eu", "running", T0)
    assert store.upsert_host(host) == host
    assert store.get_host("host-b") == host
    other = store.upsert_host(Host("host-a", "10.0.0.1:7070", "us", "stopped", None))

    changed = Host("host-b", "10.0.0.9:7070", "eu", "draining", T0 + timedelta(minutes=5))
    store.upsert_host(changed)
    assert store.get_host("host-b") == changed
    assert store.list_hosts() == [other, changed]
    assert store.list_hosts(region="eu") == [changed]
    with pytest.raises(NotFound, match="host nope"):
        store.get_host("nope")


def test_projects_round_trip_and_placement(store: Store) -> None:
    source, target, project = seed(store)
    assert store.get_project(project.id) == project
    unplaced = store.upsert_project(Project(new_id(), None, "eu"))
    assert unplaced.host_id is None and unplaced.last_backup is None and unplaced.repository == ""
    assert store.list_projects(host_id=source.id) == [project]
    assert set(p.id for p in store.list_projects(region="eu")) == {project.id, unplaced.id}

    updated = store.upsert_project(
        Project(project.id, source.id, "eu", "rustic/project-x", T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    )
    assert store.get_project(project.id) == updated
    assert store.set_placement(project.id, target.id).host_id == target.id
    assert store.list_projects(host_id=source.id) == []

    with pytest.raises(NotFound):
        store.upsert_project(Project(new_id(), "no-such-host", "eu"))
    with pytest.raises(NotFound):
        store.set_placement(project.id, "no-such-host")
    with pytest.raises(NotFound):
        store.set_placement("no-such-project", target.id)
    with pytest.raises(NotFound):
        store.get_project("no-such-project")
    assert store.get_project(project.id).host_id == target.id


def test_move_round_trip_and_updates(store: Store) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id, force=True)
    assert (move.project_id, move.source_host, move.target_host) == (project.id, source.id, target.id)
    assert (move.status, move.step, move.force, move.error, move.attempts) == ("pending", "created", True, None, 0)
    assert move.created_at.tzinfo is not None
    assert store.get_move(move.id) == move
    assert store.active_move(project.id) == move
    assert store.list_moves(project_id=project.id) == [move]

    running = store.update_move_status(move.id, MoveStatus.RUNNING, new_attempt=True)
    assert (running.status, running.attempts) == ("running", 1)
    stepped = store.update_move_step(move.id, "backup")
    assert stepped.step == "backup" and stepped.updated_at >= move.updated_at
    failed = store.update_move_status(move.id, MoveStatus.FAILED, error="target unreachable")
    assert (failed.status, failed.error, failed.attempts) == ("failed", "target unreachable", 1)
    assert store.get_move(move.id) == failed
    assert store.list_moves(active=True) == [failed]
    assert store.list_moves(active=False) == []

    with pytest.raises(InvalidTransition):
        store.update_move_status(move.id, MoveStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition):
        store.update_move_status(move.id, "bogus")
    cancelled = store.update_move_status(move.id, MoveStatus.CANCELLED, error="given up")
    assert not cancelled.active
    with pytest.raises(InvalidTransition):
        store.update_move_step(move.id, "restore")
    with pytest.raises(InvalidTransition):
        store.update_move_status(move.id, MoveStatus.RUNNING)
    with pytest.raises(NotFound):
        store.get_move("no-such-move")
    with pytest.raises(NotFound):
        store.update_move_step("no-such-move", "backup")
    with pytest.raises(NotFound):
        store.create_move("no-such-project", source.id, target.id)


def test_one_active_move_per_project(store: Store, store_target) -> None:
    source, target, project = seed(store)
    first = store.create_move(project.id, source.id, target.id)
    with pytest.raises(MoveInProgress, match=project.id) as info:
        store.create_move(project.id, target.id, source.id)
    assert info.value.project_id == project.id and info.value.move_id == first.id

    # Another connection (a second hub process) is refused by the database the same way.
    second_hub = store_target.open()
    try:
        with pytest.raises(MoveInProgress):
            second_hub.create_move(project.id, source.id, target.id)
    finally:
        second_hub.close()

    # A failed move is still active: it is resumed or retried, not replaced.
    store.update_move_status(first.id, MoveStatus.FAILED, error="boom")
    with pytest.raises(MoveInProgress):
        store.create_move(project.id, source.id, target.id)

    store.complete_move(first.id)
    second = store.create_move(project.id, target.id, source.id)
    assert store.active_move(project.id) == second
    store.update_move_status(second.id, MoveStatus.CANCELLED)
    third = store.create_move(project.id, target.id, source.id)
    assert [m.id for m in store.list_moves(project_id=project.id, active=False)] != []
    assert store.active_move(project.id).id == third.id

    # Other projects are independent.
    _, _, other = seed(store)
    store.create_move(other.id, source.id, target.id)


def test_movelog_sequence_and_after_seq(store: Store) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    other = store.create_move(seed(store)[2].id, source.id, target.id)
    written = [
        store.append_movelog(move.id, "step", f"step {i}", {"i": i, "nested": {"ok": True}, "list": [1, "a"]})
        for i in range(1, 6)
    ]
    assert store.append_movelog(other.id, "step", "other move").seq == 1
    assert [entry.seq for entry in written] == [1, 2, 3, 4, 5]
    assert store.movelog(move.id) == written
    assert store.movelog(move.id, after_seq=3) == written[3:]
    assert store.movelog(move.id, after_seq=1, limit=2) == written[1:3]
    assert store.movelog(move.id, after_seq=5) == []
    assert written[0].data == {"i": 1, "nested": {"ok": True}, "list": [1, "a"]}
    assert all(a.time <= b.time for a, b in zip(written, written[1:]))
    with pytest.raises(NotFound):
        store.append_movelog("no-such-move", "step", "x")


def test_movelog_concurrent_appenders_get_distinct_gapless_seqs(store: Store, store_target) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    writers = [store_target.open() for _ in range(3)]
    errors: list[BaseException] = []

    def append(writer: Store, name: str) -> None:
        try:
            for i in range(20):
                writer.append_movelog(move.id, "progress", f"{name} {i}")
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w, f"w{n}")) for n, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        writer.close()
    assert errors == []
    assert [entry.seq for entry in store.movelog(move.id)] == list(range(1, 61))


def test_complete_move_places_the_project_in_the_same_transaction(store: Store, monkeypatch) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    store.update_move_status(move.id, MoveStatus.RUNNING, new_attempt=True)
    store.append_movelog(move.id, "step", "verify")

    # The placement write fails inside the transaction: nothing of the completion may remain.
    def broken_placement(conn, project_id, host_id):
        raise RuntimeError("database went away mid-transaction")

    monkeypatch.setattr(store, "_write_placement", broken_placement)
    with pytest.raises(RuntimeError, match="went away"):
        store.complete_move(move.id)
    monkeypatch.undo()
    assert store.get_move(move.id).status == MoveStatus.RUNNING
    assert store.get_project(project.id).host_id == source.id
    assert [entry.kind for entry in store.movelog(move.id)] == ["step"]

    done = store.complete_move(move.id, data={"snapshot": "abc"})
    assert (done.status, done.step, done.error) == ("succeeded", "complete", None)
    assert store.get_project(project.id).host_id == target.id
    log = store.movelog(move.id)
    assert [(e.seq, e.kind) for e in log] == [(1, "step"), (2, "complete")]
    assert log[-1].data == {"snapshot": "abc"}
    assert store.active_move(project.id) is None
    with pytest.raises(InvalidTransition):
        store.complete_move(move.id)


def test_move_state_for_resume_and_source_cleanup(store: Store) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    assert (move.snapshot_id, move.cleanup, move.force) == (None, Cleanup.NONE, False)
    assert store.set_move_force(move.id, True).force is True
    assert store.get_move(move.id).force_target is False  # force is not force_target (issue 21)
    assert store.set_move_force_target(move.id, True).force_target is True
    assert store.get_move(move.id).force is True
    assert store.set_move_snapshot(move.id, "4488a640" * 8).snapshot_id == "4488a640" * 8
    assert store.get_move(move.id).snapshot_id == "4488a640" * 8
    assert store.set_move_snapshot(move.id, None).snapshot_id is None
    assert store.pending_cleanups() == []

    done = store.complete_move(move.id)
    assert done.cleanup == Cleanup.PENDING
    assert [m.id for m in store.pending_cleanups()] == [move.id]
    # Cleanup outlives the move's end; the move's other fields do not change any more.
    assert store.set_move_cleanup(move.id, Cleanup.DONE).cleanup == Cleanup.DONE
    assert store.pending_cleanups() == []
    with pytest.raises(InvalidTransition):
        store.set_move_snapshot(move.id, "x")
    with pytest.raises(InvalidTransition):
        store.set_move_cleanup(move.id, "bogus")
    with pytest.raises(NotFound):
        store.set_move_cleanup("no-such-move", Cleanup.DONE)


def test_host_backup_status_and_offline_losses(store: Store) -> None:
    source, target, project = seed(store)
    assert store.host_backup_status(source.id) is None
    status = HostBackupStatus(source.id, 50, 20, 29, 1, 1, T0)
    assert store.set_host_backup_status(status) == status
    assert store.host_backup_status(source.id) == status
    later = HostBackupStatus(source.id, 50, 0, 49, 0, 1, T0 + timedelta(minutes=3))
    store.set_host_backup_status(later)
    assert store.host_backup_status(source.id) == later
    with pytest.raises(NotFound):
        store.set_host_backup_status(HostBackupStatus("no-such-host", 0, 0, 0, 0, 0, T0))

    losses = [OfflineLoss(source.id, project.id, T0, T0 + timedelta(minutes=42), 42, T0 + timedelta(hours=1)),
              OfflineLoss(source.id, "never-backed-up", None, T0, None, T0 + timedelta(hours=1))]
    store.record_offline_losses(losses)
    assert store.offline_losses(host_id=source.id) == sorted(losses, key=lambda x: x.project_id)
    assert store.offline_losses(host_id=target.id) == []


def test_freshness_reports_of_the_placement_only_and_never_over_a_newer_one(store: Store) -> None:
    source, target, project = seed(store)
    assert (project.last_backup_snapshot, project.reported_at) == ("", None)
    reported = store.record_freshness(project.id, source.id, last_backup=T0 + timedelta(minutes=5),
                                      last_backup_snapshot="ab" * 32, last_edited=T0 + timedelta(minutes=9),
                                      reported_at=T0 + timedelta(minutes=10))
    assert reported == store.get_project(project.id)
    assert (reported.last_backup, reported.last_backup_snapshot, reported.last_edited, reported.reported_at) == (
        T0 + timedelta(minutes=5), "ab" * 32, T0 + timedelta(minutes=9), T0 + timedelta(minutes=10))
    # Another host's copy (not the placement) does not speak for the project.
    assert store.record_freshness(project.id, target.id, last_backup=T0 + timedelta(hours=5), last_backup_snapshot="x",
                                  last_edited=None, reported_at=T0 + timedelta(hours=5)) is None
    # A report older than the recorded one (a slow caller) does not replace it.
    assert store.record_freshness(project.id, source.id, last_backup=T0, last_backup_snapshot="cd" * 32,
                                  last_edited=T0, reported_at=T0 + timedelta(minutes=1)) is None
    # A time the agent does not report keeps the stored one.
    later = store.record_freshness(project.id, source.id, last_backup=None, last_backup_snapshot="",
                                   last_edited=T0 + timedelta(minutes=20), reported_at=T0 + timedelta(minutes=30))
    assert (later.last_backup, later.last_backup_snapshot, later.last_edited, later.reported_at) == (
        T0 + timedelta(minutes=5), "ab" * 32, T0 + timedelta(minutes=20), T0 + timedelta(minutes=30))
    assert store.record_freshness("no-such-project", source.id, last_backup=None, last_backup_snapshot="",
                                  last_edited=None, reported_at=T0) is None
    assert store.upsert_project(later) == later  # the new columns round-trip through upsert


def test_rescues_recorded_once_per_move_and_snapshot(store: Store) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    rescue = Rescue(move.id, project.id, source.id, "ef" * 32, T0, bytes_added=100 * 2**20, files_new=3,
                    files_changed=1, bytes_processed=101 * 2**20, files_processed=9)
    assert store.record_rescue(rescue) == rescue
    assert store.record_rescue(replace(rescue, created_at=T0 + timedelta(hours=1))) == rescue  # again: kept
    assert store.list_rescues() == [rescue]
    assert store.list_rescues(project_id=project.id) == store.list_rescues(move_id=move.id) == [rescue]
    assert store.list_rescues(project_id="other") == []
    with pytest.raises(NotFound):
        store.record_rescue(replace(rescue, move_id="no-such-move"))
    store.update_move_status(move.id, MoveStatus.CANCELLED)
    assert store.delete_project(project.id) is True
    assert store.list_rescues() == []


def test_delete_project_removes_its_records_but_not_while_it_moves(store: Store) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    store.append_movelog(move.id, "step", "preflight")
    store.record_offline_losses([OfflineLoss(source.id, project.id, T0, T0, 0, T0)])
    with pytest.raises(MoveInProgress, match=move.id):
        store.delete_project(project.id)
    assert store.get_project(project.id) == project
    store.update_move_status(move.id, MoveStatus.CANCELLED)
    assert store.delete_project(project.id) is True
    with pytest.raises(NotFound):
        store.get_project(project.id)
    with pytest.raises(NotFound):
        store.get_move(move.id)
    assert store.movelog(move.id) == [] and store.offline_losses() == []
    assert store.delete_project(project.id) is False  # again: nothing left, not an error


def test_copy_round_trip_log_and_completion(store: Store) -> None:
    source, target, project = seed(store)
    other = store.upsert_project(Project(new_id(), target.id, "eu"))
    copy = store.create_copy(project.id, "data", other.id, "incoming/data", Conflict.SKIP,
                             source_host=source.id, target_host=target.id)
    assert (copy.status, copy.step, copy.attempts, copy.snapshot_id, copy.between_hosts) == (
        CopyStatus.PENDING, "created", 0, None, True)
    assert store.get_copy(copy.id) == copy
    running = store.update_copy_status(copy.id, CopyStatus.RUNNING, new_attempt=True)
    assert (running.status, running.attempts) == (CopyStatus.RUNNING, 1)
    assert store.update_copy_step(copy.id, "backup").step == "backup"
    assert store.set_copy_snapshot(copy.id, "abcdef0123456789").snapshot_id == "abcdef0123456789"
    assert [e.seq for e in (store.append_copylog(copy.id, "step", "backup"),
                            store.append_copylog(copy.id, "progress", "50%", {"percent": 50.0}))] == [1, 2]
    assert store.movelog(copy.id) == []  # the two logs are apart
    done = store.complete_copy(copy.id, message="complete: 3 files", data={"files": 3})
    assert (done.status, done.step, done.error) == (CopyStatus.SUCCEEDED, "complete", None)
    log = store.copylog(copy.id)
    assert [(e.seq, e.kind) for e in log] == [(1, "step"), (2, "progress"), (3, "complete")]
    assert log[1].data == {"percent": 50.0} and store.copylog(copy.id, after_seq=2) == [log[2]]
    with pytest.raises(InvalidTransition, match="finished"):
        store.update_copy_step(copy.id, "again")
    with pytest.raises(InvalidTransition):
        store.update_copy_status(copy.id, CopyStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition, match="on_conflict"):
        store.create_copy(project.id, "a", other.id, "b", "merge", source_host=source.id, target_host=target.id)
    with pytest.raises(NotFound):
        store.create_copy(project.id, "a", other.id, "b", Conflict.FAIL, source_host="nope", target_host=target.id)
    with pytest.raises(NotFound, match="copy nope"):
        store.append_copylog("nope", "step", "x")
    assert [c.id for c in store.list_copies(project_id=other.id)] == [copy.id]
    assert store.list_copies(blocking=True) == []


def test_a_running_copy_blocks_deletion_of_both_projects(store: Store) -> None:
    source, target, project = seed(store)
    other = store.upsert_project(Project(new_id(), target.id, "eu"))
    copy = store.create_copy(project.id, "a", other.id, "b", Conflict.FAIL, source_host=source.id,
                             target_host=target.id)
    store.update_copy_status(copy.id, CopyStatus.RUNNING, new_attempt=True)
    for project_id in (project.id, other.id):
        with pytest.raises(CopyInProgress, match=copy.id):
            store.delete_project(project_id)
    assert [c.id for c in store.list_copies(blocking=True)] == [copy.id]
    store.update_copy_status(copy.id, CopyStatus.FAILED, error="target down")  # a failed copy blocks nothing
    assert store.delete_project(other.id) is True
    with pytest.raises(NotFound):
        store.get_copy(copy.id)


def test_completing_a_cross_region_move_sets_the_project_region(store: Store) -> None:
    source, _, project = seed(store)
    far = store.upsert_host(Host(new_id(), "10.9.0.1:7070", "apac", "running", T0))
    move = store.create_move(project.id, source.id, far.id, cross_region=True)
    assert move.cross_region and store.get_move(move.id).cross_region
    store.update_move_status(move.id, MoveStatus.RUNNING, new_attempt=True)
    store.complete_move(move.id)
    assert (store.get_project(project.id).host_id, store.get_project(project.id).region) == (far.id, "apac")
    same = store.create_move(project.id, far.id, source.id)
    store.update_move_status(same.id, MoveStatus.RUNNING)
    store.complete_move(same.id)  # a same-region move never changes the region
    assert (store.get_project(project.id).host_id, store.get_project(project.id).region) == (source.id, "apac")


def test_frozen_window_recorded_with_the_completion(store: Store) -> None:
    source, target, project = seed(store)
    move = store.create_move(project.id, source.id, target.id)
    assert (move.frozen_at, move.placed_at, move.caught_up_bytes) == (None, None, None)
    frozen_at = datetime.now(timezone.utc) - timedelta(seconds=2)
    assert store.set_move_frozen_at(move.id, frozen_at).frozen_at == frozen_at
    # A second store (another hub process) reads what the first wrote: it survives a restart.
    assert store.get_move(move.id).frozen_at == frozen_at
    assert store.set_move_frozen_at(move.id, None).frozen_at is None  # thawed by a failure
    store.set_move_frozen_at(move.id, frozen_at)
    done = store.complete_move(move.id, caught_up_bytes=10 << 20)
    assert done.placed_at is not None and done.placed_at >= frozen_at
    assert done.caught_up_bytes == 10 << 20 and done.frozen_seconds >= 2
    assert store.get_move(move.id) == done
    log = store.movelog(move.id)
    assert [e.kind for e in log] == ["complete", "frozen"]
    assert log[-1].data["frozen_seconds"] == round(done.frozen_seconds, 6)
    assert log[-1].data["caught_up_bytes"] == 10 << 20
    with pytest.raises(InvalidTransition):
        store.set_move_frozen_at(move.id, None)  # a finished move's window stays as recorded
    # A move without a freeze (from the last backup of an unreachable source) has no window.
    other = store.create_move(project.id, target.id, source.id)
    unfrozen = store.complete_move(other.id)
    assert unfrozen.frozen_seconds is None and unfrozen.placed_at is not None
    assert [e.kind for e in store.movelog(other.id)] == ["complete"]


def test_upgrade_from_version_1_keeps_existing_moves(store_target, monkeypatch) -> None:
    dialect = "sqlite" if store_target.kind == "sqlite" else "postgres"
    full = migrations.MIGRATIONS[dialect]
    monkeypatch.setitem(migrations.MIGRATIONS, dialect, full[:1])
    old = store_target.open(migrate=False)
    try:
        assert old.migrate() == 1
        source = old.upsert_host(Host(new_id(), "10.0.0.1:7070", "eu", "running", T0))
        target = old.upsert_host(Host(new_id(), "10.0.0.2:7070", "eu", "running", T0))
        project = Project(new_id(), source.id, "eu", "rustic/project-x", T0, T0)
        with old._transaction() as conn:  # a project and a move written by a version-1 hub
            old._exec(conn, "INSERT INTO projects (id, host_id, region, repository, last_backup, last_edited)"
                      " VALUES (?, ?, ?, ?, ?, ?)", (project.id, source.id, "eu", project.repository,
                                                     old._time_in(T0), old._time_in(T0)))
            old._exec(conn, "INSERT INTO moves (id, project_id, source_host, target_host, step, status, force,"
                      " attempts, created_at, updated_at) VALUES ('m1', ?, ?, ?, 'backup', 'failed', ?, 1, ?, ?)",
                      (project.id, source.id, target.id, False, old._time_in(T0), old._time_in(T0)))
    finally:
        old.close()
    monkeypatch.setitem(migrations.MIGRATIONS, dialect, full)
    new = store_target.open(migrate=False)
    try:
        assert new.migrate() == len(full) - 1
        move = new.get_move("m1")
        assert (move.step, move.status, move.attempts, move.snapshot_id, move.cleanup) == (
            "backup", "failed", 1, None, Cleanup.NONE)
        assert (move.frozen_at, move.placed_at, move.caught_up_bytes, move.frozen_seconds) == (None,) * 4
        assert new.active_move(project.id) == move
        assert new.get_project(project.id) == project  # never reported: no report time, no snapshot
    finally:
        new.close()


def test_migrations_are_versioned_and_idempotent(store: Store, store_target) -> None:
    latest = migrations.latest(store.dialect)
    assert latest >= 1
    source, _, _ = seed(store)
    assert store.migrate() == 0
    assert store.migrate() == 0
    assert store.schema_version() == latest
    reopened = store_target.open()
    try:
        assert reopened.schema_version() == latest
        assert reopened.migrate() == 0
        assert reopened.get_host(source.id) == source
    finally:
        reopened.close()


def test_fresh_store_without_migrate_has_version_zero_until_migrated(store_target) -> None:
    fresh = store_target.open(migrate=False)
    try:
        assert fresh.schema_version() == 0
        assert fresh.migrate() == migrations.latest(fresh.dialect)
        assert fresh.schema_version() == migrations.latest(fresh.dialect)
        assert fresh.migrate() == 0
    finally:
        fresh.close()


def test_move_lock_in_one_process(store: Store) -> None:
    project, other = new_id(), new_id()
    with store.move_lock(project):
        with pytest.raises(MoveInProgress, match=project):
            with store.move_lock(project):
                pass
        with store.move_lock(other):
            pass
    with store.move_lock(project):
        pass
    with pytest.raises(ValueError):
        with store.move_lock(project):
            raise ValueError("the block failed")
    with store.move_lock(project):  # released after the exception
        pass


LOCKER = r"""
import json, os, sys, time
from hub_client.store import MoveInProgress, open_store
spec = json.loads(sys.argv[1])
store = open_store(spec["url"], schema=spec["schema"], migrate=False)
print("READY", flush=True)
while not os.path.exists(spec["go"]):
    time.sleep(0.002)
try:
    with store.move_lock(spec["project"]):
        print("LOCKED", flush=True)
        sys.stdin.read()
except MoveInProgress as exc:
    print("BUSY " + str(exc), flush=True)
"""


def test_move_lock_across_processes_released_on_sigkill(store: Store, store_target, tmp_path: Path) -> None:
    project = new_id()
    go = tmp_path / "go"
    spec = json.dumps({**store_target.spec, "project": project, "go": str(go)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOCKER, spec], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        go.touch()  # both contend at the same moment
        answers = [proc.stdout.readline().strip() for proc in procs]
        assert sorted(a.split()[0] for a in answers if a) == ["BUSY", "LOCKED"], answers
        holder = procs[[a.split()[0] for a in answers].index("LOCKED")]
        loser = procs[1 - procs.index(holder)]
        busy = answers[procs.index(loser)]
        assert project in busy and "move in progress" in busy
        assert loser.wait(timeout=60) == 0

        # While the holder lives, this process cannot take the lock either.
        with pytest.raises(MoveInProgress):
            with store.move_lock(project):
                pass

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
        # The kernel (flock) or the server (session end) frees the lock; the server may need a
        # moment to notice the closed socket, so poll rather than assume.
        deadline = time.monotonic() + 30
        while True:
            try:
                with store.move_lock(project):
                    break
            except MoveInProgress:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()


def test_a_host_is_removed_only_when_nothing_names_it(store: Store) -> None:
    from hub_client.store import HostInUse

    source, target, project = seed(store)
    store.set_host_backup_status(HostBackupStatus(target.id, 0, 0, 0, 0, 0, T0))
    assert store.delete_host(target.id)
    assert store.host_backup_status(target.id) is None
    with pytest.raises(NotFound):
        store.get_host(target.id)
    assert not store.delete_host(target.id)  # already gone: no error
    with pytest.raises(HostInUse, match=f"project {project.id}"):
        store.delete_host(source.id)
    other = store.upsert_host(Host(new_id(), "10.0.0.3:7070", "eu", "running", T0))
    move = store.create_move(project.id, source.id, other.id)
    store.update_move_status(move.id, MoveStatus.CANCELLED)
    with pytest.raises(HostInUse, match=f"move {move.id}"):  # the move's history keeps its hosts
        store.delete_host(other.id)
    assert store.get_host(other.id) == other


def test_update_host_sets_only_the_columns_given(store: Store) -> None:
    source, _, _ = seed(store)
    # A poller that read the host before a drain marked it must not put the old status back.
    seen = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    store.update_host(source.id, status="draining")
    assert store.update_host(source.id, last_seen=seen) == replace(source, status="draining", last_seen=seen)
    assert store.update_host(source.id, status="running").last_seen == seen
    with pytest.raises(NotFound):
        store.update_host("no-such-host", status="running")


def test_projects_are_listed_in_pages_of_ids(store: Store) -> None:
    host = store.upsert_host(Host(new_id(), "10.0.0.1:7070", "eu", "running", T0))
    ids = sorted(store.upsert_project(Project(new_id(), host.id, "eu")).id for _ in range(5))
    assert [p.id for p in store.list_projects(limit=2)] == ids[:2]
    assert [p.id for p in store.list_projects(after=ids[1], limit=2)] == ids[2:4]
    assert [p.id for p in store.list_projects(after=ids[3])] == ids[4:]
    assert store.list_projects(host_id=host.id, after=ids[4]) == []
