"""The window of changes an offline move cannot vouch for (hub_client.freshness.offline_window)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hub_client.freshness import offline_window
from hub_client.store import Project

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
VALID = timedelta(minutes=10)
SNAP = "4488a640" * 8
NOW = T0 + timedelta(hours=2)


def project(*, backup=None, edited=None, reported=None, snapshot="") -> Project:
    return Project("p", "host-a", "eu", last_backup=backup, last_edited=edited, reported_at=reported,
                   last_backup_snapshot=snapshot)


def test_a_fresh_report_of_no_edit_after_the_backup_is_clean() -> None:
    assert offline_window(project(backup=T0, edited=T0, reported=NOW - timedelta(minutes=9)), SNAP, T0, NOW, VALID) is None


def test_a_fresh_report_of_edits_after_the_backup_names_them() -> None:
    window = offline_window(project(backup=T0, edited=T0 + timedelta(minutes=41, seconds=30),
                                    reported=NOW - timedelta(minutes=1)), SNAP, T0, NOW, VALID)
    assert window.known and (window.since, window.until, window.minutes) == (
        T0, T0 + timedelta(minutes=41, seconds=30), 42)
    assert "up to 42 minutes" in window.describe(VALID)


@pytest.mark.parametrize("reported", [None, NOW - timedelta(minutes=11)])
def test_no_fresh_report_is_unknown_never_clean(reported) -> None:
    # The store says "never edited" (or clean at an old report): that is not "clean" now.
    window = offline_window(project(backup=T0, reported=reported), SNAP, T0, NOW, VALID)
    assert window is not None and not window.known
    assert window.since == max(T0, reported or T0) and window.until == NOW
    text = window.describe(VALID)
    assert "UNKNOWN" in text and "cannot be vouched for" in text
    assert ("no report" in text) == (reported is None)
    assert window.as_data()["freshness"] == "unknown" and window.as_data()["loss_minutes"] == window.minutes


def test_unknown_with_known_edits_starts_at_the_backup_and_ends_at_the_later_of_now_and_the_edit() -> None:
    later = NOW + timedelta(minutes=5)  # an edit reported with a clock ahead of the hub's
    window = offline_window(project(backup=T0, edited=later, reported=T0 + timedelta(minutes=30)), SNAP, T0, NOW, VALID)
    assert not window.known and (window.since, window.until) == (T0, later)
    assert window.minutes == 125 and "is recorded after the backup" in window.describe(VALID)


def test_the_window_starts_at_the_newer_of_the_moved_backup_and_the_stores_last_backup() -> None:
    snapshot = T0 + timedelta(minutes=20)
    window = offline_window(project(backup=T0, reported=T0 + timedelta(minutes=5)), SNAP, snapshot, NOW, VALID)
    assert window.since == snapshot and window.minutes == 100


def test_a_recorded_backup_newer_than_the_moved_one_is_not_vouched_for() -> None:
    # The agent reported a backup at T0+30 the target cannot see; the move takes the one of T0.
    fresh = NOW - timedelta(minutes=1)
    newer = project(backup=T0 + timedelta(minutes=30), edited=T0 + timedelta(minutes=29), reported=fresh,
                    snapshot="0123abcd" * 8)
    window = offline_window(newer, SNAP, T0, NOW, VALID)
    assert window.known and (window.since, window.until, window.minutes) == (T0, T0 + timedelta(minutes=30), 30)
    # The same snapshot, recorded with a capture time a little before restic's time: clean.
    same = project(backup=T0 + timedelta(seconds=2), edited=T0, reported=fresh, snapshot=SNAP[:8])
    assert offline_window(same, SNAP, T0, NOW, VALID) is None
