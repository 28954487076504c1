"""The scheduler's pure decisions (agent.schedule.policy): what is due and in which order,
backoff growth and cap, quiet windows across midnight, jitter bounds, free places."""

from __future__ import annotations

import math

import pytest

from agent.schedule import policy
from agent.schedule.policy import ProjectFacts

RPO = 3600.0
NOW = 1_000_000.0


def facts(project_id: str, *, last_backup: float | None = NOW - 7200, last_change: float | None = None,
          dirty: bool | None = None, **extra) -> ProjectFacts:
    if dirty is None:
        dirty = last_backup is None or (last_change is not None and last_change > last_backup)
    return ProjectFacts(project_id=project_id, dirty=dirty, last_backup=last_backup, last_change=last_change,
                        **extra)


def due_ids(projects, now=NOW, rpo=RPO, jitter=0.0) -> list[str]:
    return [f.project_id for f in policy.due_projects(projects, now=now, rpo=rpo, jitter=jitter)]


def test_oldest_unprotected_change_first_never_backed_up_before_all():
    projects = [
        facts("b", last_backup=NOW - 1000, last_change=NOW - 10),
        facts("a", last_backup=NOW - 5000, last_change=NOW - 1),
        facts("never", last_backup=None),
        facts("c", last_backup=NOW - 1000, last_change=NOW - 500),  # same age as b: by id
    ]
    assert due_ids(projects) == ["never", "a", "b", "c"]


def test_the_journals_unprotected_since_wins_over_the_last_backup_when_known():
    projects = [
        facts("a", last_backup=NOW - 5000, last_change=NOW - 400, unprotected_since=NOW - 450),
        facts("b", last_backup=NOW - 1000, last_change=NOW - 500, unprotected_since=NOW - 900),
    ]
    assert due_ids(projects) == ["b", "a"]


def test_clean_frozen_busy_settling_and_backing_off_projects_are_not_due():
    settle = policy.settle_seconds(RPO)
    projects = [
        facts("clean", last_backup=NOW - 5000, last_change=NOW - 6000),
        facts("frozen", last_change=NOW, frozen=True),
        facts("busy", last_change=NOW, busy=True),
        facts("settling", last_backup=NOW - settle / 2, last_change=NOW - 1),
        facts("backing-off", last_change=NOW, failures=2, next_attempt=NOW + 1),
        facts("retry-due", last_change=NOW, failures=2, next_attempt=NOW),
    ]
    assert due_ids(projects) == ["retry-due"]
    assert policy.due_at(projects[0], rpo=RPO, jitter=0) is None
    # The next look: the earliest of the settling one's due time and the backing-off one's retry.
    assert policy.next_due(projects, now=NOW, rpo=RPO, jitter=0) == NOW + 1


def test_a_project_written_all_the_time_is_not_put_off():
    # Its last change is always "now"; its due time runs from its last backup, not its last write.
    busy_writer = facts("w", last_backup=NOW - policy.settle_seconds(RPO), last_change=NOW)
    assert due_ids([busy_writer]) == ["w"]


def test_backoff_grows_exponentially_and_is_capped_below_the_rpo():
    waits = [policy.backoff_seconds(n, RPO) for n in range(1, 12)]
    assert waits[0] == RPO / 64
    assert all(b == 2 * a for a, b in zip(waits[:4], waits[1:5]))
    assert max(waits) == RPO / 4 < RPO
    assert waits[-1] == RPO / 4
    assert policy.backoff_seconds(10_000, RPO) == RPO / 4  # no overflow
    assert policy.backoff_seconds(1, 10.0) == policy.MIN_BACKOFF  # a small RPO: at least the minimum


@pytest.mark.parametrize("minute, quiet", [
    (22 * 60, True), (23 * 60 + 59, True), (0, True), (5 * 59, True), (6 * 60 - 1, True),
    (6 * 60, False), (12 * 60, False), (22 * 60 - 1, False),
])
def test_quiet_window_across_midnight(minute, quiet):
    assert policy.in_quiet_window(minute, [(22 * 60, 6 * 60)]) is quiet


def test_quiet_window_within_a_day_and_several_windows():
    windows = [(9 * 60, 10 * 60), (13 * 60, 13 * 60 + 30)]
    assert policy.in_quiet_window(9 * 60, windows)
    assert not policy.in_quiet_window(10 * 60, windows)
    assert policy.in_quiet_window(13 * 60 + 29, windows)
    assert not policy.in_quiet_window(12 * 60, windows)
    assert not policy.in_quiet_window(12 * 60, [])


def test_jitter_is_within_bounds_stable_and_spread():
    offsets = [policy.jitter_offset(f"project-{i}", 30.0, "host-a") for i in range(500)]
    assert all(0 <= o < 30.0 for o in offsets)
    assert max(offsets) - min(offsets) > 25  # spread over the range, not one value
    assert policy.jitter_offset("project-1", 30.0, "host-a") == offsets[1]
    assert policy.jitter_offset("project-1", 30.0, "host-b") != offsets[1]
    assert policy.jitter_offset("project-1", 0.0) == 0.0
    # Jitter delays the due time by the project's offset.
    one = facts("project-1", last_backup=NOW - 1000, last_change=NOW)
    plain = policy.due_at(one, rpo=RPO, jitter=0)
    assert policy.due_at(one, rpo=RPO, jitter=30.0, salt="host-a") == plain + offsets[1]


def test_never_backed_up_is_unprotected_since_forever():
    assert policy.unprotected_since(facts("n", last_backup=None)) == -math.inf


def test_scheduled_concurrency_leaves_a_slot_for_requests():
    assert policy.scheduled_concurrency(4, 4) == 3
    assert policy.scheduled_concurrency(1, 4) == 1
    assert policy.scheduled_concurrency(3, 1) == 1
    assert policy.free_places(running=1, queued=0, max_running=4, scheduled_running=1, concurrency=3) == 2
    assert policy.free_places(running=3, queued=1, max_running=4, scheduled_running=0, concurrency=3) == 0
    assert policy.free_places(running=0, queued=0, max_running=4, scheduled_running=3, concurrency=3) == 0


def test_cycle_and_retention_rules():
    assert policy.cycle_seconds(3600) == 60.0
    assert policy.cycle_seconds(60) == 3.0
    assert policy.cycle_seconds(1) == policy.MIN_CYCLE
    assert policy.retention_due(interval=0, last_retention=None, now=NOW) is False
    assert policy.retention_due(interval=100, last_retention=None, now=NOW) is True
    assert policy.retention_due(interval=100, last_retention=NOW - 50, now=NOW) is False
    assert policy.retention_due(interval=100, last_retention=NOW - 100, now=NOW) is True
