"""The recovery-point objective (RPO) as a figure: pure computations, no I/O.

A project's *unprotected age* is how long its oldest change not in a backup has
waited: ``now - unprotected_since`` (0 when the project is clean; see
:mod:`agent.freshness` for how ``unprotected_since`` is kept). A host reports the
distribution of its projects' ages (max and p99, clean projects counted as 0)
and the projects whose age is over the configured RPO, each with one reason:

* ``failing_backups`` — the project's last backup attempt failed: backups are
  tried and do not succeed (a broken repository, a wrong password ...);
* ``never_backed_up`` — the project has no backup at all (and no failed
  attempt says why): it is unprotected since the agent first saw it;
* ``queue_too_long`` — otherwise: the project is waiting its turn, the host
  does not back up fast enough for its RPO.

The reason is decided by :func:`over_rpo_reason` alone, so that whatever
knows more about failures (a per-project failure record of the scheduler)
changes one function. The scheduler orders its work with
:func:`oldest_first`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FAILING_BACKUPS = "failing_backups"
NEVER_BACKED_UP = "never_backed_up"
QUEUE_TOO_LONG = "queue_too_long"
# Every reason a project can be over its RPO (the wire strings of agent.proto's OverRpoProject.reason).
REASONS = (FAILING_BACKUPS, NEVER_BACKED_UP, QUEUE_TOO_LONG)


@dataclass(frozen=True)
class ProjectAge:
    """What the RPO figures need of one project (one row of the journal's projects table).

    ``unprotected_since``: seconds since the epoch, None when clean; ``backed_up``: it has a
    backup; ``last_backup_failed``: its last finished backup attempt failed."""

    project_id: str
    unprotected_since: float | None
    backed_up: bool
    last_backup_failed: bool = False


@dataclass(frozen=True)
class OverRpo:
    project_id: str
    unprotected_since: float
    age: float
    reason: str


@dataclass(frozen=True)
class HostRpo:
    """A host's RPO figures at one moment: ``rpo_seconds`` 0 means no RPO is configured (then
    no project is over it, the ages are still measured)."""

    rpo_seconds: float
    max_age: float
    p99_age: float
    over_rpo_count: int
    over_rpo: tuple[OverRpo, ...]  # oldest unprotected first, at most the limit asked for


def unprotected_age(unprotected_since: float | None, now: float) -> float:
    """Seconds the oldest unprotected change has waited at ``now``; 0 when clean. A since in the
    future (a change recorded with a later clock) counts as 0, never as a negative age."""
    if unprotected_since is None:
        return 0.0
    return max(0.0, now - unprotected_since)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in (0, 1]): the smallest value
    with at least ``fraction`` of the values at or below it; 0 for no values. With fewer than
    100 values p99 is the maximum: no interpolation invents an age no project has."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered))
    return float(ordered[rank - 1])


def is_over_rpo(age: float, rpo_seconds: float) -> bool:
    """Whether an unprotected age breaks the RPO (never when no RPO is configured)."""
    return rpo_seconds > 0 and age > rpo_seconds


def over_rpo_reason(*, backed_up: bool, last_backup_failed: bool) -> str:
    """Why a project is over its RPO (one of :data:`REASONS`). A failed attempt comes first: it
    says what to fix even for a project that was never backed up."""
    if last_backup_failed:
        return FAILING_BACKUPS
    if not backed_up:
        return NEVER_BACKED_UP
    return QUEUE_TOO_LONG


def over_rpo(projects: Iterable[ProjectAge], rpo_seconds: float, now: float) -> list[OverRpo]:
    """The projects over the RPO at ``now``, oldest unprotected change first, with their reasons."""
    found = []
    for project in projects:
        age = unprotected_age(project.unprotected_since, now)
        if is_over_rpo(age, rpo_seconds):
            found.append(OverRpo(
                project_id=project.project_id, unprotected_since=project.unprotected_since, age=age,
                reason=over_rpo_reason(backed_up=project.backed_up, last_backup_failed=project.last_backup_failed),
            ))
    found.sort(key=lambda item: (item.unprotected_since, item.project_id))
    return found


def oldest_first(projects: Iterable[ProjectAge]) -> list[ProjectAge]:
    """The unprotected projects, oldest unprotected change first (ties by id): the order in which
    backing them up keeps the worst age lowest."""
    return sorted((p for p in projects if p.unprotected_since is not None),
                  key=lambda p: (p.unprotected_since, p.project_id))


def host_rpo(projects: Sequence[ProjectAge], rpo_seconds: float, now: float, *, limit: int) -> HostRpo:
    """The host's figures over ``projects`` (every project present, clean ones included); the
    over-RPO list is cut to ``limit`` entries (the count is of all)."""
    ages = [unprotected_age(p.unprotected_since, now) for p in projects]
    over = over_rpo(projects, rpo_seconds, now)
    return HostRpo(
        rpo_seconds=rpo_seconds,
        max_age=max(ages, default=0.0),
        p99_age=percentile(ages, 0.99),
        over_rpo_count=len(over),
        over_rpo=tuple(over[:limit]),
    )
