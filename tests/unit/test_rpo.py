"""The RPO figures: agent.rpo's pure functions and the journal's unprotected_since rules."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from agent import rpo
from agent.freshness import freshness
from agent.journal import SCHEMA_VERSION, Journal
from agent.model import OperationKind, OperationRecord, OperationState
from agent.rpo import ProjectAge

P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"
P3 = "33333333-3333-3333-3333-333333333333"


# ------------------------------------------------------------------ pure functions

def test_age_is_zero_when_clean_and_never_negative() -> None:
    assert rpo.unprotected_age(None, 1000.0) == 0.0
    assert rpo.unprotected_age(900.0, 1000.0) == 100.0
    assert rpo.unprotected_age(1100.0, 1000.0) == 0.0


@pytest.mark.parametrize(("values", "expected"), [
    ([], 0.0),
    ([5.0], 5.0),
    ([1.0, 9.0, 3.0], 9.0),  # fewer than 100 values: p99 is the maximum
    (list(range(1, 101)), 99.0),  # nearest rank: the 99th of 100
    (list(range(1, 201)), 198.0),
    ([0.0] * 99 + [500.0], 0.0),  # one stale project in 100 is the 1% p99 leaves out
    ([0.0] * 98 + [500.0, 700.0], 500.0),
])
def test_p99_nearest_rank(values, expected) -> None:
    assert rpo.percentile(values, 0.99) == expected


def test_percentile_refuses_a_fraction_out_of_range() -> None:
    with pytest.raises(ValueError):
        rpo.percentile([1.0], 0)
    with pytest.raises(ValueError):
        rpo.percentile([1.0], 1.5)


def test_reasons() -> None:
    assert rpo.over_rpo_reason(backed_up=True, last_backup_failed=True) == rpo.FAILING_BACKUPS
    assert rpo.over_rpo_reason(backed_up=False, last_backup_failed=True) == rpo.FAILING_BACKUPS
    assert rpo.over_rpo_reason(backed_up=False, last_backup_failed=False) == rpo.NEVER_BACKED_UP
    assert rpo.over_rpo_reason(backed_up=True, last_backup_failed=False) == rpo.QUEUE_TOO_LONG
    assert set(rpo.REASONS) == {rpo.FAILING_BACKUPS, rpo.NEVER_BACKED_UP, rpo.QUEUE_TOO_LONG}


def test_host_figures_and_over_rpo_list() -> None:
    projects = [
        ProjectAge(P1, None, backed_up=True),
        ProjectAge(P2, 900.0, backed_up=True, last_backup_failed=True),
        ProjectAge(P3, 800.0, backed_up=False),
        ProjectAge("44444444-4444-4444-4444-444444444444", 960.0, backed_up=True),
    ]
    host = rpo.host_rpo(projects, 60.0, 1000.0, limit=10)
    assert host.max_age == 200.0 and host.p99_age == 200.0
    assert host.over_rpo_count == 2
    assert [(o.project_id, o.age, o.reason) for o in host.over_rpo] == [
        (P3, 200.0, rpo.NEVER_BACKED_UP), (P2, 100.0, rpo.FAILING_BACKUPS)]
    assert rpo.host_rpo(projects, 60.0, 1000.0, limit=1).over_rpo_count == 2  # the count is of all
    assert len(rpo.host_rpo(projects, 60.0, 1000.0, limit=1).over_rpo) == 1
    assert rpo.host_rpo(projects, 0, 1000.0, limit=10).over_rpo_count == 0  # no RPO configured
    assert rpo.host_rpo([], 60.0, 1000.0, limit=10).max_age == 0.0
    assert [p.project_id for p in rpo.oldest_first(projects)] == [P3, P2, "44444444-4444-4444-4444-444444444444"]


def test_exactly_at_the_rpo_is_not_over() -> None:
    assert not rpo.is_over_rpo(60.0, 60.0)
    assert rpo.is_over_rpo(60.5, 60.0)


# ------------------------------------------------------------------ the journal's rules

@pytest.fixture
def journal(tmp_path: Path):
    journal = Journal(tmp_path / "j.sqlite")
    yield journal
    journal.close()


def since(journal: Journal, project_id: str) -> float | None:
    return freshness(journal, project_id).unprotected_since


def test_a_clean_project_becomes_unprotected_at_its_first_change_and_keeps_it(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    assert since(journal, P1) is None
    journal.mark_changed(P1, 150.0)
    journal.mark_changed(P1, 170.0)
    journal.mark_changed(P1, 160.0)
    assert since(journal, P1) == 150.0
    assert freshness(journal, P1).unprotected_age(200.0) == 50.0


def test_a_change_at_or_before_the_capture_is_in_the_backup(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    journal.mark_changed(P1, 90.0)  # e.g. the directory backend's newest mtime, older than the capture
    journal.mark_changed(P1, 100.0)
    assert since(journal, P1) is None
    assert not freshness(journal, P1).dirty


def test_capture_time_rule_a_change_seen_while_the_backup_ran_stays_unprotected(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    journal.mark_changed(P1, 150.0)  # before the capture at 200: in the next backup
    journal.mark_changed(P1, 230.0)  # seen after the capture, before the backup ended
    journal.record_backup(P1, time=200.0, snapshot_id="s2", operation_id="op-2")
    state = freshness(journal, P1)
    assert state.dirty
    # The oldest change not in s2 was made after the capture at 200 and no later than 230.
    assert 200.0 <= state.unprotected_since <= 230.0
    # Nothing seen after the capture: the backup protects every change.
    journal.record_backup(P1, time=300.0, snapshot_id="s3", operation_id="op-3")
    assert since(journal, P1) is None


def test_capture_time_rule_a_change_first_seen_during_the_backup_keeps_its_time(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    journal.mark_changed(P1, 210.0)  # the project was clean at the capture at 200
    journal.record_backup(P1, time=200.0, snapshot_id="s2", operation_id="op-2")
    assert since(journal, P1) == 210.0


def test_a_change_of_unknown_moment_counts_from_its_earliest_bound(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    journal.mark_changed(P1, 300.0, since=250.0)  # a generation moved between looks at 250 and 300
    assert since(journal, P1) == 250.0
    assert freshness(journal, P1).last_change == 300.0  # dirty's own (later) bound is unchanged
    journal.record_backup(P1, time=400.0, snapshot_id="s2", operation_id="op-2")
    # The earlier bound is never before the capture of the last backup: such a change is not in it,
    # so it was made after it.
    journal.mark_changed(P1, 500.0, since=350.0)
    assert since(journal, P1) == 400.0


def test_a_never_backed_up_project_is_unprotected_since_first_heard_of(journal) -> None:
    before = time.time()
    journal.set_seen_generation(P1, "5/0")  # the first the journal hears of P1
    after = time.time()
    assert before <= since(journal, P1) <= after
    journal.mark_changed(P1, before - 1000)  # an older change (a directory's mtime) goes further back
    assert since(journal, P1) == before - 1000
    assert since(journal, P2) is None  # not known at all
    journal.mark_changed(P2, 50.0)
    assert since(journal, P2) == 50.0  # earlier than first heard of


def test_confirming_an_unchanged_project_protects_what_was_recorded_before(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1", generation="7/0")
    journal.mark_changed(P1, 150.0, since=90.0)  # seen after the capture: maybe in s1, maybe not
    assert since(journal, P1) == 100.0
    journal.confirm_unchanged(P1, 160.0)  # the generation is still s1's: it was in it
    assert since(journal, P1) is None and not freshness(journal, P1).dirty
    assert freshness(journal, P1).last_backup == 160.0
    journal.mark_changed(P1, 170.0)
    journal.confirm_unchanged(P1, 165.0)  # a check that began before the change does not cover it
    assert since(journal, P1) == 170.0


def test_looks_are_kept_across_a_close(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    assert journal.last_look(P1) == 100.0  # the capture: the generation was the backup's then
    assert journal.last_look(P2) is None
    journal.note_look(P1, 500.0)
    assert journal.last_look(P1) == 500.0
    journal.close()
    reopened = Journal(path)
    assert reopened.last_look(P1) == 500.0
    reopened.close()


def _op(op_id: str, project_id: str, state: OperationState, at: float,
        kind: OperationKind = OperationKind.BACKUP) -> OperationRecord:
    return OperationRecord(id=op_id, request_id=f"r-{op_id}", kind=kind, project_id=project_id, fingerprint="f",
                           params={}, state=state, created_at=at, finished_at=at + 1)


def test_last_backup_failed_reads_the_newest_finished_backup(journal) -> None:
    for record in (
        _op("a1", P1, OperationState.SUCCEEDED, 10), _op("a2", P1, OperationState.FAILED, 20),
        _op("b1", P2, OperationState.FAILED, 10), _op("b2", P2, OperationState.SUCCEEDED, 20),
        _op("b3", P2, OperationState.FAILED, 30, kind=OperationKind.VERIFY),  # not a backup
        _op("c1", P3, OperationState.FAILED, 10), _op("c2", P3, OperationState.CANCELLED, 20),
    ):
        journal.insert_operation(record)
        journal.update_operation(record)
    assert journal.last_backup_failed([P1, P2, P3, "unknown"]) == {P1, P3}
    assert journal.last_backup_failed([]) == set()


def test_project_ages_is_one_row_per_project(journal) -> None:
    journal.record_backup(P1, time=100.0, snapshot_id="s1", operation_id="op-1")
    journal.mark_changed(P2, 50.0)
    assert sorted(journal.project_ages()) == [(P1, 100.0, None, None), (P2, None, 50.0, 50.0)]
    before = time.time()
    journal.ensure_projects([P2, P3])
    after = time.time()
    ages = {row[0]: row for row in journal.project_ages()}
    assert ages[P2] == (P2, None, 50.0, 50.0)  # known already: untouched
    assert before <= ages[P3][3] <= after and ages[P3][1] is None


def test_version_3_journal_is_migrated_with_conservative_unprotected_times(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE p2 AS SELECT project_id, last_backup_time, last_backup_snapshot, last_backup_operation,"
        " last_backup_generation, last_backup_repository, last_change_time, seen_generation, last_restore"
        " FROM projects; DROP TABLE projects; ALTER TABLE p2 RENAME TO projects;"
        "UPDATE meta SET value='3' WHERE key='schema_version';"
        f"INSERT INTO projects(project_id, last_backup_time, last_change_time) VALUES ('{P1}', 100.0, 150.0),"
        f" ('{P2}', 100.0, 90.0), ('{P3}', NULL, 70.0);"
    )
    db.commit()
    db.close()
    journal = Journal(path)
    assert since(journal, P1) == 100.0  # dirty: changed at some moment after the last backup
    assert since(journal, P2) is None
    assert since(journal, P3) == 70.0  # never backed up
    assert journal._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    journal.close()


# ------------------------------------------------------------------ metrics

def test_metrics_give_the_ages_at_the_scrape_not_at_the_last_event() -> None:
    from agent.freshness import Freshness
    from agent.metrics import AgentMetrics

    clock = [1000.0]
    metrics = AgentMetrics(rpo_seconds=60.0, clock=lambda: clock[0])
    metrics.project_freshness(P1, Freshness(last_backup=900.0, last_backup_snapshot="s", last_change=950.0,
                                            unprotected_since=950.0))
    metrics.project_freshness(P2, Freshness(last_backup=900.0, last_backup_snapshot="s", last_change=None))
    metrics.project_freshness(P3, Freshness(last_backup=None, last_backup_snapshot="", last_change=None,
                                            unprotected_since=990.0))

    def sample(name: str, **labels) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("buckets_project_unprotected_age_seconds", project=P1) == 50.0
    assert sample("buckets_project_unprotected_age_seconds", project=P2) == 0.0
    assert sample("buckets_projects_over_rpo") == 0.0
    clock[0] = 1030.0  # no event: only time passes
    assert sample("buckets_project_unprotected_age_seconds", project=P1) == 80.0
    assert sample("buckets_project_unprotected_age_seconds", project=P3) == 40.0
    assert sample("buckets_projects_over_rpo") == 1.0
    assert sample("buckets_unprotected_age_seconds_bucket", le="0.0") == 1.0  # the clean one
    assert sample("buckets_unprotected_age_seconds_bucket", le="60.0") == 2.0
    assert sample("buckets_unprotected_age_seconds_bucket", le="300.0") == 3.0
    assert sample("buckets_unprotected_age_seconds_bucket", le="+Inf") == 3.0
    assert sample("buckets_unprotected_age_seconds_count") == 3.0
    assert sample("buckets_unprotected_age_seconds_sum") == 120.0
    assert sample("buckets_rpo_seconds") == 60.0
    metrics.forget_project(P1)
    assert sample("buckets_project_unprotected_age_seconds", project=P1) is None
    assert sample("buckets_unprotected_age_seconds_count") == 2.0
