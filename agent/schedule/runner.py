"""The scheduler's loop: looks at the host, asks :mod:`agent.schedule.policy` what is due and
submits scheduled backups as ordinary BACKUP operations (purpose "scheduled").

Every cycle (a fraction of the RPO) it refreshes what changed (``AgentService.reconcile``),
reads every present project's freshness and scheduler state from the journal, and submits the
due ones, oldest unprotected change first, into free running slots only, at most the scheduled
concurrency at once. A backup that ends wakes the loop, so the next due project starts without
waiting for the next cycle. The operation manager keeps the rest: never two operations on one
project, scheduled backups yield to every other request (``OperationManager.submit`` yields).

Per project the journal keeps the failures in a row, the earliest next attempt and the last
error (``Journal.schedule_state``): a failing project backs off exponentially (capped below the
RPO) and is reported (``schedule.backup_failed`` events; the FAILED operations), the others go
on. The state survives restarts; a scheduled backup cut short by a shutdown or superseded by a
request is not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

from agent import errors
from agent import freshness as fresh
from agent.model import OperationError, OperationRecord, OperationState
from agent.schedule import policy
from agent.status_codes import code_name_for

if TYPE_CHECKING:
    from agent.service import AgentService

log = structlog.get_logger("agent.schedule")

OK_STATES = frozenset({OperationState.SUCCEEDED, OperationState.SUCCEEDED_WITH_WARNINGS, OperationState.UP_TO_DATE})


def minute_of_day(now: float) -> int:
    local = time.localtime(now)
    return local.tm_hour * 60 + local.tm_min


class Scheduler:
    """Takes the agent's service (its config's ``[schedule]`` must be enabled)."""

    def __init__(self, service: "AgentService") -> None:
        self._service = service
        self._config = service.config.schedule
        self._max_running = service.config.limits.max_concurrent_operations
        self._concurrency = policy.scheduled_concurrency(self._config.concurrency, self._max_running)
        self._cycle = policy.cycle_seconds(self._config.rpo)
        # [limits] reconcile_interval says how often the host's projects are looked at; the
        # schedule looks each cycle when that is sooner. 0: only GetProjectStatus and MarkEdited
        # tell of changes (no look of its own).
        interval = service.config.limits.reconcile_interval
        self._look_every = min(self._cycle, interval) if interval > 0 else None
        self._quiet = self._config.quiet_minutes()
        self._running: dict[str, str] = {}  # scheduled operation id -> project id
        self._followers: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._last_look = 0.0
        self._next_due: float | None = None

    async def run_forever(self) -> None:
        log.info("schedule.started", rpo=self._config.rpo, cycle=self._cycle, concurrency=self._concurrency,
                 jitter=self._config.jitter, quiet_windows=list(self._config.quiet_windows))
        try:
            while True:
                try:
                    await self.cycle()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the scheduler must outlive any one bad cycle
                    log.exception("schedule.cycle_failed")
                self._wake.clear()
                pause = self._cycle
                if self._next_due is not None:  # a project becomes due before the next cycle
                    pause = min(pause, max(0.05, self._next_due - time.time()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
        finally:
            for task in list(self._followers):
                task.cancel()

    async def cycle(self) -> list[str]:
        """One look: refresh what changed (once per cycle), start what is due. Returns the ids of
        the operations it started."""
        service = self._service
        self._next_due = None
        now = time.time()
        if self._look_every is not None and now - self._last_look >= self._look_every:
            self._last_look = now
            await service.reconcile()
            now = time.time()
        if policy.in_quiet_window(minute_of_day(now), self._quiet):
            log.debug("schedule.quiet", minute=minute_of_day(now))
            return []
        running, queued = service.operations.counts()
        places = policy.free_places(running=running, queued=queued, max_running=self._max_running,
                                    scheduled_running=len(self._running), concurrency=self._concurrency)
        if places <= 0:
            return []
        states = service.journal.schedule_states()
        # Busy until its outcome (and backoff) is recorded, not only while its operation runs.
        following = set(self._running.values())
        facts_list = []
        for project_id in service._present_projects():
            freshness = fresh.freshness(service.journal, project_id)
            state = states.get(project_id) or {}
            facts_list.append(policy.ProjectFacts(
                project_id=project_id, dirty=freshness.dirty, last_backup=freshness.last_backup,
                last_change=freshness.last_change,
                unprotected_since=getattr(freshness, "unprotected_since", None),
                busy=project_id in following or service.operations.active_operation(project_id) is not None,
                failures=state.get("failures") or 0, next_attempt=state.get("next_attempt"),
            ))
        started: list[str] = []
        timing = {"rpo": self._config.rpo, "jitter": self._config.jitter, "salt": service.config.host_id}
        due = policy.due_projects(facts_list, now=now, **timing)
        self._next_due = policy.next_due(facts_list, now=now, **timing)
        for facts in due:
            if len(started) >= places:
                break
            # Looked at only for due projects: on btrfs it reads a property.
            if await service.backend.is_frozen(facts.project_id):
                log.debug("schedule.frozen_skipped", project_id=facts.project_id)
                continue
            operation_id = self._start(facts, now)
            if operation_id:
                started.append(operation_id)
        log.debug("schedule.cycle", projects=len(facts_list), due=len(due), started=len(started))
        return started

    def _start(self, facts: policy.ProjectFacts, now: float) -> str:
        project_id = facts.project_id
        try:
            record, _ = self._service.scheduled_backup(project_id)
        except (errors.Conflict, errors.ResourceExhausted, errors.Unavailable, errors.NotFound) as exc:
            log.debug("schedule.not_started", project_id=project_id, error=str(exc))
            return ""
        except errors.BucketsError as exc:  # the project's repository cannot even be resolved
            self._failed(project_id, now, "", code_name_for(exc), str(exc))
            return ""
        since = policy.unprotected_since(facts)
        log.info("schedule.backup_started", project_id=project_id, operation_id=record.id,
                 unprotected_for=None if since == float("-inf") else round(now - since, 3),
                 failures=facts.failures)
        self._running[record.id] = project_id
        task = asyncio.get_running_loop().create_task(self._follow(record, now), name=f"schedule-{record.id}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)
        return record.id

    async def _follow(self, record: OperationRecord, attempt: float) -> None:
        try:
            self._record(await self._service.operations.wait(record.id), attempt)
        finally:
            self._running.pop(record.id, None)
            self._wake.set()

    def _record(self, final: OperationRecord, attempt: float) -> None:
        service = self._service
        project_id = final.project_id
        if final.state in OK_STATES:
            service.journal.record_schedule_outcome(project_id, attempt=attempt, operation_id=final.id, error=None,
                                                    next_attempt=None)
            log.info("schedule.backed_up", project_id=project_id, operation_id=final.id, state=final.state.value,
                     snapshot_id=final.summary.snapshot_id if final.summary else "")
            if final.state is not OperationState.UP_TO_DATE:
                self._retention(project_id)
        elif final.state is OperationState.FAILED:
            error = final.error
            self._failed(project_id, attempt, final.id, error.code if error else "UNKNOWN",
                         error.message if error else "")
        # CANCELLED (superseded by a request, or cancelled by an operator) and INTERRUPTED (the
        # agent stopped) are not failures of the project: it is simply due again.

    def _failed(self, project_id: str, attempt: float, operation_id: str, code: str, message: str) -> None:
        journal = self._service.journal
        failures = ((journal.schedule_state(project_id) or {}).get("failures") or 0) + 1
        next_attempt = time.time() + policy.backoff_seconds(failures, self._config.rpo)
        journal.record_schedule_outcome(project_id, attempt=attempt, operation_id=operation_id,
                                        error=OperationError(code, message), next_attempt=next_attempt)
        log.warning("schedule.backup_failed", project_id=project_id, operation_id=operation_id, failures=failures,
                    next_attempt=next_attempt, code=code, error=message[:500])

    def _retention(self, project_id: str) -> None:
        service = self._service
        state = service.journal.schedule_state(project_id) or {}
        now = time.time()
        if not policy.retention_due(interval=service.config.retention.interval,
                                    last_retention=state.get("last_retention"), now=now):
            return
        if service.retain(project_id, round_id=f"scheduled-{int(now)}"):
            service.journal.record_schedule_retention(project_id, now)
