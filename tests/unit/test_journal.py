"""Tests of agent.journal.Journal on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.journal import SCHEMA_VERSION, Journal, event_from_json, event_to_json
from agent.model import OperationError, OperationKind, OperationRecord, OperationState, ProgressEvent, Summary

P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"


def make_record(op_id: str, *, request_id: str | None = None, project_id: str = P1, created_at: float = 1000.0,
                kind: OperationKind = OperationKind.BACKUP, state: OperationState = OperationState.PENDING,
                **extra) -> OperationRecord:
    return OperationRecord(
        id=op_id,
        request_id=request_id or f"req-{op_id}",
        kind=kind,
        project_id=project_id,
        fingerprint=f"fp-{op_id}",
        params={"paths": ["a", "b"], "force": True, "nested": {"n": 1}},
        state=state,
        created_at=created_at,
        **extra,
    )


FULL_SUMMARY = Summary(
    snapshot_id="0123456789abcdef",
    bytes_added=1234,
    bytes_processed=99999,
    files_processed=50,
    files_new=3,
    files_changed=4,
    duration_seconds=12.5,
    warnings=("one", "two"),
    state=OperationState.UP_TO_DATE,
)


def test_operation_round_trip_with_summary_error_and_recovery(tmp_path):
    journal = Journal(tmp_path / "state" / "journal.db")  # parent created on demand
    record = make_record("op-1")
    journal.insert_operation(record)
    assert journal.get_operation("op-1") == record

    record.state = OperationState.FAILED
    record.started_at = 1001.0
    record.finished_at = 1002.5
    record.error = OperationError(code="DATA_LOSS", message="ciphertext verification failed")
    record.summary = FULL_SUMMARY
    record.last_seq = 7
    record.recovery = {"staging": "op-1", "swap": [{"staged": "/x", "live": "/y", "inode": 42}]}
    journal.update_operation(record)

    loaded = journal.get_operation("op-1")
    assert loaded == record
    assert loaded.summary.warnings == ("one", "two")  # a tuple again, not a list
    assert loaded.summary.state is OperationState.UP_TO_DATE
    assert loaded.kind is OperationKind.BACKUP
    assert journal.find_by_request_id("req-op-1") == record
    assert journal.get_operation("missing") is None
    assert journal.find_by_request_id("missing") is None


def test_request_id_is_unique(tmp_path):
    journal = Journal(tmp_path / "j.db")
    journal.insert_operation(make_record("op-1", request_id="same"))
    with pytest.raises(sqlite3.IntegrityError):
        journal.insert_operation(make_record("op-2", request_id="same"))


def test_event_json_round_trip():
    plain = ProgressEvent(
        operation_id="op", seq=3, time=5.25, state=OperationState.RUNNING, phase="upload", percent=12.5,
        bytes_done=10, bytes_total=100, files_done=1, files_total=9, bytes_per_second=3.5, eta_seconds=20.0,
        message="uploading",
    )
    terminal = ProgressEvent(
        operation_id="op", seq=4, time=6.0, state=OperationState.FAILED, phase="done", terminal=True,
        summary=FULL_SUMMARY, error=OperationError("UNAVAILABLE", "repository is locked"),
    )
    for event in (plain, terminal):
        assert event_from_json(event_to_json(event)) == event
    again = event_from_json(event_to_json(terminal))
    assert again.summary.warnings == ("one", "two")
    assert again.state is OperationState.FAILED


def test_append_event_and_events_since(tmp_path):
    journal = Journal(tmp_path / "j.db")
    record = make_record("op-1")
    journal.insert_operation(record)
    events = []
    for seq in range(1, 6):
        record.last_seq = seq
        record.state = OperationState.RUNNING if seq < 5 else OperationState.SUCCEEDED
        terminal = seq == 5
        record.summary = FULL_SUMMARY if terminal else None
        event = ProgressEvent(
            operation_id="op-1", seq=seq, time=1000.0 + seq, state=record.state, phase="upload",
            files_done=seq, terminal=terminal, summary=record.summary,
        )
        journal.append_event(event, record)
        events.append(event)
    # another operation's events do not leak in
    other = make_record("op-2")
    journal.insert_operation(other)
    other.last_seq = 1
    journal.append_event(ProgressEvent(operation_id="op-2", seq=1, time=1.0, state=OperationState.PENDING,
                                       phase="queue"), other)

    assert journal.events_since("op-1", 1) == events
    assert journal.events_since("op-1", 0) == events
    assert journal.events_since("op-1", 3) == events[2:]
    assert journal.events_since("op-1", 6) == []
    assert journal.events_since("nope", 1) == []
    # append_event stored the record's new state with the event
    stored = journal.get_operation("op-1")
    assert stored.state is OperationState.SUCCEEDED and stored.last_seq == 5
    assert stored.summary == FULL_SUMMARY
    assert [e.seq for e in journal.events_since("op-2", 1)] == [1]


def test_append_event_is_one_transaction(tmp_path):
    journal = Journal(tmp_path / "j.db")
    record = make_record("op-1")
    journal.insert_operation(record)
    record.last_seq = 1
    record.state = OperationState.RUNNING
    journal.append_event(ProgressEvent(operation_id="op-1", seq=1, time=1.0, state=record.state, phase="a"), record)
    # a duplicate seq fails, and the record's state change with it is not stored
    record.state = OperationState.SUCCEEDED
    with pytest.raises(sqlite3.IntegrityError):
        journal.append_event(ProgressEvent(operation_id="op-1", seq=1, time=2.0, state=record.state, phase="b"),
                             record)
    assert journal.get_operation("op-1").state is OperationState.RUNNING
    # the record update fails after the event row was inserted: the event is rolled back too
    record.last_seq = 2
    record.state = "not-a-state"  # no .value: update_operation raises after the INSERT
    with pytest.raises(AttributeError):
        journal.append_event(
            ProgressEvent(operation_id="op-1", seq=2, time=3.0, state=OperationState.RUNNING, phase="c"), record
        )
    assert [e.phase for e in journal.events_since("op-1", 1)] == ["a"]
    assert journal.get_operation("op-1").last_seq == 1
    # and the connection is usable afterwards
    record.state = OperationState.SUCCEEDED
    journal.append_event(
        ProgressEvent(operation_id="op-1", seq=2, time=3.0, state=OperationState.SUCCEEDED, phase="d"), record
    )
    assert [e.phase for e in journal.events_since("op-1", 1)] == ["a", "d"]


def test_list_operations_filters_order_and_before(tmp_path):
    journal = Journal(tmp_path / "j.db")
    specs = [
        ("a", P1, 1.0, OperationState.SUCCEEDED),
        ("b", P2, 2.0, OperationState.RUNNING),
        ("c", P1, 3.0, OperationState.FAILED),
        ("d", P1, 3.0, OperationState.PENDING),  # same time as c: the id breaks the tie
        ("e", P2, 5.0, OperationState.CANCELLING),
    ]
    for op_id, project, created, state in specs:
        journal.insert_operation(make_record(op_id, project_id=project, created_at=created, state=state))

    ids = lambda records: [r.id for r in records]  # noqa: E731
    assert ids(journal.list_operations()) == ["e", "d", "c", "b", "a"]
    assert ids(journal.list_operations(project_id=P1)) == ["d", "c", "a"]
    assert ids(journal.list_operations(states=[OperationState.FAILED, OperationState.SUCCEEDED])) == ["c", "a"]
    assert ids(journal.list_operations(project_id=P2, states=[OperationState.RUNNING])) == ["b"]
    assert ids(journal.list_operations(limit=2)) == ["e", "d"]
    assert ids(journal.list_operations(before=(3.0, "d"))) == ["c", "b", "a"]
    assert ids(journal.list_operations(before=(3.0, "c"))) == ["b", "a"]
    assert ids(journal.list_operations(project_id=P1, before=(3.0, "d"), limit=1)) == ["c"]
    assert ids(journal.list_operations(before=(1.0, "a"))) == []
    assert ids(journal.unfinished_operations()) == ["e", "d", "b"]


def test_record_backup_and_last_backup(tmp_path):
    journal = Journal(tmp_path / "j.db")
    assert journal.last_backup(P1) is None
    journal.record_backup(P1, time=100.0, snapshot_id="aaaa1111", operation_id="op-1")
    assert journal.last_backup(P1) == (100.0, "aaaa1111", "op-1")
    journal.record_backup(P1, time=200.0, snapshot_id="bbbb2222", operation_id="op-2")
    assert journal.last_backup(P1) == (200.0, "bbbb2222", "op-2")
    assert journal.last_backup(P2) is None


def test_reopening_keeps_everything(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal(path)
    record = make_record("op-1", state=OperationState.RUNNING, started_at=1000.5)
    journal.insert_operation(record)
    record.last_seq = 1
    record.recovery = {"staging": "op-1"}
    event = ProgressEvent(operation_id="op-1", seq=1, time=1.0, state=OperationState.RUNNING, phase="start")
    journal.append_event(event, record)
    finished = make_record("op-2", created_at=2000.0, state=OperationState.SUCCEEDED, summary=FULL_SUMMARY,
                           error=None, finished_at=2001.0)
    journal.insert_operation(finished)
    journal.update_operation(finished)
    journal.record_backup(P1, time=2001.0, snapshot_id="0123456789abcdef", operation_id="op-2")
    journal.close()

    reopened = Journal(path)  # the schema script must not wipe anything
    assert reopened.get_operation("op-1") == record
    assert reopened.get_operation("op-2") == finished
    assert reopened.events_since("op-1", 1) == [event]
    assert reopened.last_backup(P1) == (2001.0, "0123456789abcdef", "op-2")
    assert [r.id for r in reopened.unfinished_operations()] == ["op-1"]
    schema = reopened._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert schema == str(SCHEMA_VERSION)
    reopened.close()


def test_version_1_journal_is_migrated_and_records_generations(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE projects (project_id TEXT PRIMARY KEY, last_backup_time REAL, last_backup_snapshot TEXT,"
        " last_backup_operation TEXT);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        f"INSERT INTO projects VALUES ('{P1}', 1.0, 'aaaaaaaa', 'op-0');"
    )
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.last_backup(P1) == (1.0, "aaaaaaaa", "op-0")
    assert journal.backed_up_generation(P1, "/repo") is None  # no generation was recorded then
    journal.record_backup(P1, time=2.0, snapshot_id="bbbbbbbb", operation_id="op-1", generation="7/3",
                          repository="/repo")
    assert journal.backed_up_generation(P1, "/repo") == ("7/3", "bbbbbbbb")
    assert journal.backed_up_generation(P1, "/other-repo") is None
    journal.forget_project(P1)
    assert journal.last_backup(P1) is None
    journal.close()


def test_known_snapshot_matches_short_and_full_ids_in_one_repository(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    full = "0123abcd" + "e" * 56
    journal.record_snapshot(repository="/r", snapshot_id="0123abcd", project_id=P1, tags=["layout=v2"],
                            bytes=10, files=2, time=5.0)
    assert journal.known_snapshot("/r", "0123abcd")["bytes"] == 10
    assert journal.known_snapshot("/r", full)["snapshot_id"] == "0123abcd"  # the full id of a short record
    assert journal.known_snapshot("/r", "0123abc") is None  # too short to name a snapshot
    assert journal.known_snapshot("/other", "0123abcd") is None
    journal.record_snapshot(repository="/r", snapshot_id="0123abcdff", project_id=P1, tags=[], bytes=1,
                            files=1, time=6.0)
    assert journal.known_snapshot("/r", "0123abcd") is None  # ambiguous: two snapshots match
    journal.forget_project(P1, "/r")
    assert journal.known_snapshot("/r", full) is None
    journal.close()


def test_a_version_3_journal_gains_the_schedule_state_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE schedule_state; UPDATE meta SET value='3' WHERE key='schema_version';")
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.schedule_states() == {}
    journal.record_schedule_outcome(P1, attempt=10.0, operation_id="op-1",
                                    error=OperationError("FAILED_PRECONDITION", "wrong password"), next_attempt=11.0)
    journal.record_schedule_outcome(P1, attempt=11.0, operation_id="op-2",
                                    error=OperationError("FAILED_PRECONDITION", "wrong password"), next_attempt=13.0)
    journal.close()
    reopened = Journal(path)
    state = reopened.schedule_state(P1)
    assert (state["failures"], state["next_attempt"], state["last_operation"]) == (2, 13.0, "op-2")
    assert state["last_error"] == {"code": "FAILED_PRECONDITION", "message": "wrong password"}
    reopened.record_schedule_outcome(P1, attempt=13.0, operation_id="op-3", error=None, next_attempt=None)
    assert reopened.schedule_state(P1)["failures"] == 0 and reopened.schedule_state(P1)["last_error"] is None
    reopened.forget_project(P1)
    assert reopened.schedule_state(P1) is None
