"""The agent's Prometheus metrics: agent.metrics on private registries, the hooks that feed it
(operation manager, journal, engine drivers) and the [metrics] config. No agent process."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from agent import errors
from agent.config import ConfigError, parse_config
from agent.engine.restic import ResticEngine
from agent.freshness import Freshness
from agent.journal import Journal
from agent.metrics import AgentMetrics, failure_class, serve, state_label
from agent.model import OperationKind, OperationRecord, OperationState, Summary
from agent.operations import OperationManager
from agent.repository import Repository

P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"


def finished(kind: OperationKind, state: OperationState, *, summary: Summary | None = None,
             took: float = 2.0, started: bool = True) -> OperationRecord:
    now = time.time()
    return OperationRecord(
        id="op", request_id="req", kind=kind, project_id=P1, fingerprint="", params={}, state=state,
        created_at=now - took - 1, started_at=now - took if started else None, finished_at=now, summary=summary,
    )


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# ---------------------------------------------------------------- naming


@pytest.mark.parametrize("state, outcome", [
    (OperationState.SUCCEEDED, "succeeded"),
    (OperationState.SUCCEEDED_WITH_WARNINGS, "succeeded_with_warnings"),
    (OperationState.UP_TO_DATE, "up_to_date"),
    (OperationState.FAILED, "failed"),
    (OperationState.CANCELLED, "cancelled"),
    (OperationState.INTERRUPTED, "interrupted"),
])
def test_outcome_is_the_state_name_lowercased(state, outcome) -> None:
    assert state_label(state) == outcome


@pytest.mark.parametrize("error, expected", [
    (errors.DataLoss("MAC"), "data_loss"),
    (errors.Unavailable("locked"), "unavailable"),
    (errors.FailedPrecondition("wrong password"), "failed_precondition"),
    (errors.DeadlineExceeded("timed out"), "deadline_exceeded"),
    (errors.Internal("exit 1"), "internal"),
])
def test_failure_class_is_the_status_code_lowercased(error, expected) -> None:
    assert failure_class(error) == expected


# ---------------------------------------------------------------- AgentMetrics


def test_finished_backup_is_timed_and_its_bytes_counted() -> None:
    metrics = AgentMetrics()
    summary = Summary(snapshot_id="abc", bytes_processed=5000, bytes_added=1200)
    metrics.operation_finished(finished(OperationKind.BACKUP, OperationState.SUCCEEDED, summary=summary, took=2.0))
    labels = {"kind": "backup", "outcome": "succeeded"}
    assert value(metrics, "buckets_operation_duration_seconds_count", **labels) == 1
    assert value(metrics, "buckets_operation_duration_seconds_sum", **labels) == pytest.approx(2.0, abs=0.05)
    assert value(metrics, "buckets_operation_duration_seconds_bucket", le="1.0", **labels) == 0
    assert value(metrics, "buckets_operation_duration_seconds_bucket", le="5.0", **labels) == 1
    assert value(metrics, "buckets_bytes_backed_up_total") == 5000
    assert value(metrics, "buckets_bytes_added_total") == 1200
    assert value(metrics, "buckets_bytes_restored_total") == 0


def test_restores_count_restored_bytes_and_failures_count_none() -> None:
    metrics = AgentMetrics()
    metrics.operation_finished(finished(OperationKind.RESTORE, OperationState.SUCCEEDED,
                                        summary=Summary(bytes_processed=700)))
    metrics.operation_finished(finished(OperationKind.ENSURE, OperationState.SUCCEEDED,
                                        summary=Summary(bytes_processed=300)))
    # A drain fails with a summary; its backups are counted as operations of their own.
    metrics.operation_finished(finished(OperationKind.DRAIN, OperationState.FAILED,
                                        summary=Summary(bytes_processed=10**9)))
    metrics.operation_finished(finished(OperationKind.BACKUP, OperationState.FAILED))
    assert value(metrics, "buckets_bytes_restored_total") == 1000
    assert value(metrics, "buckets_bytes_backed_up_total") == 0
    assert value(metrics, "buckets_operation_duration_seconds_count", kind="backup", outcome="failed") == 1
    assert value(metrics, "buckets_operation_duration_seconds_count", kind="drain", outcome="failed") == 1


def test_an_operation_that_never_started_is_timed_from_its_creation() -> None:
    metrics = AgentMetrics()
    metrics.operation_finished(finished(OperationKind.BACKUP, OperationState.CANCELLED, took=2.0, started=False))
    assert value(metrics, "buckets_operation_duration_seconds_sum", kind="backup",
                 outcome="cancelled") == pytest.approx(3.0, abs=0.05)


def test_freshness_gauges_and_their_removal() -> None:
    metrics = AgentMetrics()
    metrics.project_freshness(P1, Freshness(last_backup=1000.0, last_backup_snapshot="s", last_change=900.0))
    metrics.project_freshness(P2, Freshness(last_backup=None, last_backup_snapshot="", last_change=None))
    assert value(metrics, "buckets_project_last_backup_timestamp_seconds", project=P1) == 1000.0
    assert value(metrics, "buckets_project_dirty", project=P1) == 0
    # Never backed up: dirty, and no made-up time.
    assert value(metrics, "buckets_project_last_backup_timestamp_seconds", project=P2) is None
    assert value(metrics, "buckets_project_dirty", project=P2) == 1

    metrics.project_freshness(P1, Freshness(last_backup=1000.0, last_backup_snapshot="s", last_change=1100.0))
    assert value(metrics, "buckets_project_dirty", project=P1) == 1

    metrics.forget_project(P1)
    metrics.forget_project(P1)  # twice, and for a project never seen: no error
    metrics.forget_project("33333333-3333-3333-3333-333333333333")
    assert value(metrics, "buckets_project_last_backup_timestamp_seconds", project=P1) is None
    assert value(metrics, "buckets_project_dirty", project=P1) is None
    assert value(metrics, "buckets_project_dirty", project=P2) == 1  # the other project keeps its series


def test_operations_in_flight_are_read_at_scrape_time_with_zeros() -> None:
    states = [OperationState.RUNNING, OperationState.RUNNING, OperationState.PENDING]
    metrics = AgentMetrics(operation_states=lambda: states)
    assert value(metrics, "buckets_operations", state="running") == 2
    assert value(metrics, "buckets_operations", state="pending") == 1
    assert value(metrics, "buckets_operations", state="cancelling") == 0
    states.clear()
    assert value(metrics, "buckets_operations", state="running") == 0


def test_engine_failures_by_class() -> None:
    metrics = AgentMetrics()
    metrics.engine_failed(errors.Unavailable("restic backup failed: repository is locked"))
    metrics.engine_failed(errors.Unavailable("restic backup failed: repository storage is unreachable"))
    metrics.engine_failed(errors.DataLoss("restic check failed: repository check found errors"))
    assert value(metrics, "buckets_engine_failures_total", **{"class": "unavailable"}) == 2
    assert value(metrics, "buckets_engine_failures_total", **{"class": "data_loss"}) == 1


def test_two_agents_in_one_process_keep_their_own_series() -> None:
    first, second = AgentMetrics(), AgentMetrics()
    first.engine_failed(errors.Internal("x"))
    assert value(first, "buckets_engine_failures_total", **{"class": "internal"}) == 1
    assert value(second, "buckets_engine_failures_total", **{"class": "internal"}) is None


def test_endpoint_on_port_0_serves_the_registry() -> None:
    metrics = AgentMetrics()
    metrics.project_freshness(P1, Freshness(last_backup=1000.0, last_backup_snapshot="s", last_change=None))
    endpoint = serve(metrics.registry, "127.0.0.1:0")
    try:
        assert endpoint.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert f'buckets_project_dirty{{project="{P1}"}} 0.0' in text
        assert 'buckets_operations{state="running"} 0.0' in text
    finally:
        endpoint.close()


# ---------------------------------------------------------------- the hooks that feed it


def test_manager_reports_each_terminal_state_once(tmp_path: Path) -> None:
    seen: list[OperationRecord] = []

    async def scenario() -> None:
        manager = OperationManager(Journal(tmp_path / "j.sqlite"), max_running=1, max_queued=4, on_finish=seen.append)
        release = asyncio.Event()

        async def job(context) -> Summary:
            await release.wait()
            return Summary(bytes_processed=10)

        record, _ = manager.submit(kind=OperationKind.BACKUP, project_id=P1, request_id="r-1", params={}, job=job)
        await asyncio.sleep(0.05)
        assert manager.states() == [OperationState.RUNNING]
        assert seen == []
        release.set()
        await manager.wait(record.id)
        assert manager.states() == []

    asyncio.run(scenario())
    assert [(r.kind, r.state, r.summary.bytes_processed) for r in seen] == [
        (OperationKind.BACKUP, OperationState.SUCCEEDED, 10)
    ]


def test_a_failing_observer_does_not_break_the_operation(tmp_path: Path) -> None:
    def broken(record: OperationRecord) -> None:
        raise RuntimeError("observer bug")

    async def scenario() -> OperationRecord:
        manager = OperationManager(Journal(tmp_path / "j.sqlite"), max_running=1, max_queued=4, on_finish=broken)

        async def job(context) -> Summary:
            return Summary()

        record, _ = manager.submit(kind=OperationKind.BACKUP, project_id=P1, request_id="r-1", params={}, job=job)
        return await manager.wait(record.id)

    assert asyncio.run(scenario()).state is OperationState.SUCCEEDED


def test_journal_reports_every_freshness_write(tmp_path: Path) -> None:
    changed: list[str] = []
    journal = Journal(tmp_path / "j.sqlite", on_freshness_change=changed.append)
    journal.mark_changed(P1, 100.0)
    journal.record_backup(P1, time=200.0, snapshot_id="s", operation_id="op")
    journal.forget_project(P1)
    assert changed == [P1, P1, P1]


def test_engine_reports_failed_runs(tmp_path: Path) -> None:
    stand_in = tmp_path / "restic"
    stand_in.write_text("#!/bin/sh\necho 'Fatal: wrong password or no key found' >&2\nexit 1\n")
    stand_in.chmod(0o755)
    failures: list[errors.BucketsError] = []
    repo = Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="pw")

    def engine(binary: str) -> ResticEngine:
        return ResticEngine(binary=binary, state_dir=tmp_path / "state", timeout=30, kill_grace=1,
                            on_failure=failures.append)

    with pytest.raises(errors.FailedPrecondition):
        asyncio.run(engine(str(stand_in)).snapshots(repo))
    with pytest.raises(errors.Unimplemented):  # the run cannot even start: no such binary
        asyncio.run(engine(str(tmp_path / "missing")).snapshots(repo))
    assert [failure_class(f) for f in failures] == ["failed_precondition", "unimplemented"]


# ---------------------------------------------------------------- [metrics] config


def test_metrics_config_is_off_unless_listen_is_set(tmp_path: Path) -> None:
    assert parse_config({}, source="t", relative_to=tmp_path).metrics.listen is None
    assert parse_config({"metrics": {"listen": ""}}, source="t", relative_to=tmp_path).metrics.listen is None
    config = parse_config({"metrics": {"listen": "127.0.0.1:9464", "port_file": "metrics.port"}},
                          source="t", relative_to=tmp_path)
    assert config.metrics.listen == "127.0.0.1:9464"
    assert config.metrics.port_file == str(tmp_path / "metrics.port")


def test_metrics_config_problems_are_reported_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"metrics": {"listen": "9464", "lisen": "x"}}, source="t", relative_to=tmp_path)
    assert caught.value.problems == (
        'metrics.listen: must be "host:port" with a port in 0..65535, got "9464"',
        "metrics.lisen: unknown key (did you mean 'listen'?)",
    )
