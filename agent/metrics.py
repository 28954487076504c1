"""The agent's Prometheus metrics, and the HTTP endpoint that serves them.

Every agent owns one :class:`AgentMetrics` with a private registry (never
prometheus_client's global one), so several agents or tests in one process
never share series. It is fed from a few places only:

* :meth:`AgentMetrics.operation_finished` — the operation manager, once per
  operation that reaches a terminal state;
* :meth:`AgentMetrics.project_freshness` / :meth:`AgentMetrics.forget_project`
  — the service, whenever the journal writes a project's freshness, after every
  operation on a project, and for every project at start;
* :meth:`AgentMetrics.engine_failed` — the engine drivers, for every engine run
  that failed;
* the ``buckets_operations`` gauge is read from the operation manager when
  scraped, so it can never drift from what the manager holds;
* the unprotected ages (``buckets_project_unprotected_age_seconds`` per
  project, the host's ``buckets_unprotected_age_seconds`` histogram,
  ``buckets_projects_over_rpo``) are computed at each scrape from each
  project's ``unprotected_since`` (kept by ``project_freshness``) and the clock:
  an age grows with time without any event, so a value set at the last event
  would be stale.

Operations that finished are counted by the duration histogram's ``_count``
series (per kind and outcome); a separate ``_total`` counter would say the same
thing twice.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from agent import errors
from agent.freshness import Freshness
from agent.model import OperationKind, OperationRecord, OperationState
from agent.rpo import is_over_rpo, unprotected_age
from agent.status_codes import code_name_for

# An operation takes from milliseconds (a backup of an unchanged project) to hours (the
# first backup of a large one): the default buckets, which end at 10 s, would put every
# real backup into +Inf.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600)
IN_FLIGHT_STATES = (OperationState.PENDING, OperationState.RUNNING, OperationState.CANCELLING)
_SUCCEEDED = (OperationState.SUCCEEDED, OperationState.SUCCEEDED_WITH_WARNINGS)


def state_label(state: OperationState) -> str:
    """The label value of a state: its name lowercased (``UP_TO_DATE`` → ``up_to_date``)."""
    return state.value.lower()


# The engine failures the running task expects as an answer (see failures_expected).
_EXPECTED_FAILURES: ContextVar[tuple[type[errors.BucketsError], ...]] = ContextVar("expected_failures", default=())


@contextmanager
def failures_expected(*kinds: type[errors.BucketsError]) -> Iterator[None]:
    """Inside the block, engine failures of ``kinds`` are not counted in
    ``buckets_engine_failures_total``: the caller asked a question whose answer they are (a new
    project's "is there a repository yet?" is answered by NotFound). Follows the asyncio task
    (context variables), so other operations running meanwhile still count theirs."""
    token = _EXPECTED_FAILURES.set(kinds)
    try:
        yield
    finally:
        _EXPECTED_FAILURES.reset(token)


def failure_class(error: errors.BucketsError) -> str:
    """The label value of an engine failure: its status code name lowercased (``data_loss``)."""
    return code_name_for(error).lower()


class _OperationsInFlight(Collector):
    """``buckets_operations{state}``, computed from the manager's states at each scrape."""

    def __init__(self, states: Callable[[], Iterable[OperationState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = collections.Counter(self._states())
        family = GaugeMetricFamily("buckets_operations", "Operations not finished yet, by state.", labels=["state"])
        for state in IN_FLIGHT_STATES:  # every state, 0 included: an absent series is not a zero
            family.add_metric([state_label(state)], counts.get(state, 0))
        yield family


# Unprotected ages: 0 (clean) in a bucket of its own, then from a minute to a week.
AGE_BUCKETS = (0, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, 24 * 3600,
               2 * 24 * 3600, 7 * 24 * 3600)


class _UnprotectedAges(Collector):
    """The unprotected-age series, computed at each scrape from ``since`` (project id → the
    moment of its oldest change not in a backup, None when clean) at ``clock()``."""

    def __init__(self, since: Callable[[], dict[str, float | None]], rpo_seconds: float,
                 clock: Callable[[], float]) -> None:
        self._since, self._rpo, self._clock = since, rpo_seconds, clock

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        now = self._clock()
        ages = {project_id: unprotected_age(since, now) for project_id, since in self._since().items()}
        per_project = GaugeMetricFamily(
            "buckets_project_unprotected_age_seconds",
            "Seconds the project's oldest change not in a backup has waited (0 when clean), at the scrape.",
            labels=["project"])
        for project_id, age in sorted(ages.items()):
            per_project.add_metric([project_id], age)
        yield per_project
        counts = [sum(1 for age in ages.values() if age <= bound) for bound in AGE_BUCKETS]
        yield HistogramMetricFamily(
            "buckets_unprotected_age_seconds",
            "The unprotected ages of the host's projects at the scrape (clean ones count 0): one "
            "observation per project, not a history.",
            buckets=[*((str(float(bound)), count) for bound, count in zip(AGE_BUCKETS, counts)),
                     ("+Inf", len(ages))],
            sum_value=sum(ages.values()))
        yield GaugeMetricFamily("buckets_projects_over_rpo",
                                "Projects whose unprotected age is over the RPO (0 when none is configured).",
                                value=sum(1 for age in ages.values() if is_over_rpo(age, self._rpo)))
        yield GaugeMetricFamily("buckets_rpo_seconds", "The configured recovery-point objective; 0 = none.",
                                value=self._rpo)


class AgentMetrics:
    """Takes a callable returning the state of every unfinished operation (read at scrape time,
    from the HTTP server's thread: it must be safe to call from there), the host's RPO in
    seconds (0: none configured) and the clock of the ages."""

    def __init__(self, operation_states: Callable[[], Iterable[OperationState]] = tuple, *,
                 rpo_seconds: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        # Written from the event loop, read by scrapes on the HTTP server's thread.
        self._unprotected_since: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self.last_backup = Gauge(
            "buckets_project_last_backup_timestamp_seconds",
            "When the project's data was last known to be in a backup (a backup captured it, or a restore "
            "put a snapshot in place), seconds since the epoch; absent when it never was.",
            ["project"], registry=self.registry,
        )
        self.dirty = Gauge(
            "buckets_project_dirty",
            "1 when the project changed since its last backup or was never backed up, else 0.",
            ["project"], registry=self.registry,
        )
        self.operation_duration = Histogram(
            "buckets_operation_duration_seconds",
            "Time from an operation's start to its end (for one that never started: time it waited), "
            "by kind and outcome (its final state lowercased).",
            ["kind", "outcome"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.engine_failures = Counter(
            "buckets_engine_failures",
            "Engine runs that failed, by class (the status code name of the error, lowercased).",
            ["class"], registry=self.registry,
        )
        self.bytes_backed_up = Counter(
            "buckets_bytes_backed_up", "Bytes read from projects by successful backups.", registry=self.registry,
        )
        self.bytes_added = Counter(
            "buckets_bytes_added",
            "New data successful backups added to repositories (after deduplication).", registry=self.registry,
        )
        self.bytes_restored = Counter(
            "buckets_bytes_restored", "Bytes written into projects by successful restores.", registry=self.registry,
        )
        self.registry.register(_OperationsInFlight(operation_states))
        self.registry.register(_UnprotectedAges(self._unprotected_snapshot, rpo_seconds, clock))

    def _unprotected_snapshot(self) -> dict[str, float | None]:
        with self._lock:
            return dict(self._unprotected_since)

    def operation_finished(self, record: OperationRecord) -> None:
        """Count an operation that reached its terminal state (with its summary's bytes)."""
        started = record.started_at or record.created_at
        duration = max(0.0, (record.finished_at or started) - started)
        self.operation_duration.labels(kind=record.kind.value, outcome=state_label(record.state)).observe(duration)
        summary = record.summary
        if summary is None or record.state not in _SUCCEEDED:
            return
        if record.kind is OperationKind.BACKUP:
            self.bytes_backed_up.inc(summary.bytes_processed)
            self.bytes_added.inc(summary.bytes_added)
        elif record.kind in (OperationKind.RESTORE, OperationKind.ENSURE):  # an ensure may restore
            self.bytes_restored.inc(summary.bytes_processed)

    def project_freshness(self, project_id: str, freshness: Freshness) -> None:
        """Set the project's last backup time, dirty flag and unprotected since."""
        if freshness.last_backup is None:
            self.last_backup.remove(project_id)  # never backed up: no time to show, dirty says it
        else:
            self.last_backup.labels(project=project_id).set(freshness.last_backup)
        self.dirty.labels(project=project_id).set(1 if freshness.dirty else 0)
        with self._lock:
            self._unprotected_since[project_id] = freshness.unprotected_since

    def forget_project(self, project_id: str) -> None:
        """Remove every series of a project that is no longer on this host."""
        for gauge in (self.last_backup, self.dirty):
            gauge.remove(project_id)  # a no-op for a project without series
        with self._lock:
            self._unprotected_since.pop(project_id, None)

    def engine_failed(self, error: errors.BucketsError) -> None:
        if isinstance(error, _EXPECTED_FAILURES.get()):
            return  # an answer the caller asked for (e.g. "no repository yet"), not a failure
        self.engine_failures.labels(failure_class(error)).inc()


@dataclass
class MetricsEndpoint:
    """The HTTP server of ``/metrics`` (prometheus_client's, on a daemon thread) and its bound port."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(registry: CollectorRegistry, listen: str) -> MetricsEndpoint:
    """Serve ``registry`` over HTTP on ``listen`` (``host:port``, IPv6 as ``[::1]:port``; port 0
    picks a free one). Raises OSError when the address cannot be bound."""
    host, _, port = listen.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    return MetricsEndpoint(server=server, thread=thread, port=server.server_port)
