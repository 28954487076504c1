"""Pure decisions of the backup scheduler: no clock, no journal, no processes.

Every input is a value (times are seconds since the epoch), so each rule is tested alone
(tests/unit/test_schedule_policy.py).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

# One look at the host per this fraction of the RPO (bounded below and above): often enough
# that a change waits a small part of the RPO to be seen, rarely enough to cost little.
CYCLE_FRACTION = 1 / 20
MIN_CYCLE = 0.5
MAX_CYCLE = 60.0
# A project is backed up once its oldest unprotected change is this fraction of the RPO old:
# writes close together share one backup, and most of the RPO is left for the queue and the
# backup itself.
SETTLE_FRACTION = 1 / 10
# Backoff after failed scheduled backups: the first retry waits BACKOFF_BASE_FRACTION of the
# RPO (at least MIN_BACKOFF), each further failure doubles it, up to BACKOFF_CAP_FRACTION of
# the RPO: a failing project is retried several times within one RPO, yet does not take the
# queue from the others.
BACKOFF_BASE_FRACTION = 1 / 64
MIN_BACKOFF = 1.0
BACKOFF_CAP_FRACTION = 1 / 4


@dataclass(frozen=True)
class ProjectFacts:
    """What the scheduler knows of one project present on the host.

    ``last_backup`` / ``last_change`` / ``dirty`` as in :mod:`agent.freshness`;
    ``unprotected_since`` the time of the oldest change not in a backup when the journal
    knows it (None: not known); ``busy`` an operation runs or waits on the project;
    ``failures`` / ``next_attempt`` the project's backoff state (0 / None when none)."""

    project_id: str
    dirty: bool
    last_backup: float | None
    last_change: float | None
    frozen: bool = False
    busy: bool = False
    unprotected_since: float | None = None
    failures: int = 0
    next_attempt: float | None = None


def cycle_seconds(rpo: float) -> float:
    """Seconds between two looks at the host for an RPO of ``rpo`` seconds."""
    return min(MAX_CYCLE, max(MIN_CYCLE, rpo * CYCLE_FRACTION))


def settle_seconds(rpo: float) -> float:
    return rpo * SETTLE_FRACTION


def unprotected_since(facts: ProjectFacts) -> float:
    """The time from which the project's changes count as unprotected, for its order and its
    due time: the journal's oldest unprotected change when known; otherwise its last backup
    (the oldest moment the first change after it can have happened: never later than the
    truth, so a project written all the time is never put off); ``-inf`` for a project never
    backed up (its data is in no backup at all). The one place that picks the fact: switch
    it here when a better one exists."""
    if facts.unprotected_since is not None:
        return facts.unprotected_since
    if facts.last_backup is not None:
        return facts.last_backup
    return -math.inf


def jitter_offset(project_id: str, jitter: float, salt: str = "") -> float:
    """A delay in [0, ``jitter``) for the project, the same for the same (project, salt):
    spreads projects (and hosts, with the host id as salt) that changed together."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{salt}/{project_id}".encode()).digest()
    return jitter * (int.from_bytes(digest[:8], "big") / 2**64)


def due_at(facts: ProjectFacts, *, rpo: float, jitter: float, salt: str = "") -> float | None:
    """When the project's next scheduled backup may start; None when it needs none (clean)."""
    if not facts.dirty:
        return None
    since = unprotected_since(facts)
    due = since + settle_seconds(rpo) + jitter_offset(facts.project_id, jitter, salt)
    if facts.next_attempt is not None:
        due = max(due, facts.next_attempt)
    return due


def due_projects(projects: Iterable[ProjectFacts], *, now: float, rpo: float, jitter: float,
                 salt: str = "") -> list[ProjectFacts]:
    """The projects to back up now, the oldest unprotected change first (ties by project id).

    Skipped: clean projects (they cost no engine run), frozen ones (a move owns them; not a
    failure), busy ones (never two backups of one project), and those not due yet (settling,
    jittered, or backing off)."""
    due = []
    for facts in projects:
        if facts.frozen or facts.busy:
            continue
        when = due_at(facts, rpo=rpo, jitter=jitter, salt=salt)
        if when is not None and when <= now:
            due.append(facts)
    return sorted(due, key=order_key)


def next_due(projects: Iterable[ProjectFacts], *, now: float, rpo: float, jitter: float,
             salt: str = "") -> float | None:
    """The earliest time after ``now`` at which a project not due yet becomes due (settling,
    jittered or backing off), None when none will without a new change: when to look next."""
    times = [when for facts in projects if not facts.frozen and not facts.busy
             and (when := due_at(facts, rpo=rpo, jitter=jitter, salt=salt)) is not None and when > now]
    return min(times, default=None)


def order_key(facts: ProjectFacts) -> tuple[float, str]:
    return (unprotected_since(facts), facts.project_id)


def backoff_seconds(failures: int, rpo: float) -> float:
    """The wait before the next attempt after ``failures`` (>= 1) failures in a row:
    exponential from the base, capped below the RPO."""
    base = max(MIN_BACKOFF, rpo * BACKOFF_BASE_FRACTION)
    cap = max(base, rpo * BACKOFF_CAP_FRACTION)
    exponent = min(max(failures, 1) - 1, 62)
    return min(cap, base * 2.0**exponent)


def in_quiet_window(minute_of_day: int, windows: Sequence[tuple[int, int]]) -> bool:
    """Whether ``minute_of_day`` (0..1439, local time) lies in one of the (start, end) windows;
    the start is inside, the end is not, and an end before the start wraps past midnight."""
    for start, end in windows:
        if start < end:
            if start <= minute_of_day < end:
                return True
        elif minute_of_day >= start or minute_of_day < end:
            return True
    return False


def scheduled_concurrency(configured: int, max_running: int) -> int:
    """Scheduled backups allowed to run at once: the configured number, but never every one of
    the host's running slots when it has more than one (one is left for operator and hub
    requests, which then never wait behind scheduled work); at least 1."""
    reserve = 1 if max_running > 1 else 0
    return max(1, min(configured, max_running - reserve))


def free_places(*, running: int, queued: int, max_running: int, scheduled_running: int,
                concurrency: int) -> int:
    """How many scheduled backups may be submitted now: only into free running slots (nothing
    of the operator's waits behind them) and within the scheduled concurrency."""
    return max(0, min(max_running - running - queued, concurrency - scheduled_running))


def retention_due(*, interval: float, last_retention: float | None, now: float) -> bool:
    """Whether a project just backed up by the scheduler gets the retention policy now: when
    ``[retention]`` is on (interval > 0) and it had none for ``interval`` seconds."""
    return interval > 0 and (last_retention is None or now - last_retention >= interval)
