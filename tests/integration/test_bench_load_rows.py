"""Smoke test of the load rows of `make bench` (bench/load_rows.py) at a tiny scale: one agent,
3 projects, 3 progress watchers, half a second of GetProjectStatus. It checks that the functions
return well-formed figures and that the table renders them; it asserts nothing about speed."""

from __future__ import annotations

import math

from bench import bench as bench_module
from bench import load_rows
from tests.conftest import requires_restic

pytestmark = requires_restic

SETTINGS = load_rows.LoadSettings(
    projects=3, runs=1, watchers=3, concurrencies=(4,), rpc_threads=(2,), rpc_seconds=0.5, idle_seconds=0.3
)


def params() -> dict:
    return {
        "size_mb": 0, "files": 0, "persist_files": 0, "runs": 0, "warmup": 0, "sync_before_each_step": False,
        "repository_kinds": ["local"], "unchanged_runs": 0, "btrfs": {"skipped": "not in this test"},
        "load": {"skipped": None, **SETTINGS.to_json()}, "load_average_start": [0.0, 0.0, 0.0],
    }


def machine() -> dict:
    return {"cpu": "test", "cores": 1, "usable_cores": 1, "memory_bytes": 2**30, "kernel": "k", "filesystem": "fs",
            "restic": "restic", "python": "3", "date": "today", "load_average": [0.0, 0.0, 0.0]}


def test_load_rows_at_tiny_scale(tmp_path):
    agent = load_rows.start_load_agent(tmp_path / "agent", start=False)
    try:
        idle = load_rows.idle_run(agent, seconds=SETTINGS.idle_seconds)  # starts it
        assert idle.start_rss > 0 and idle.end_rss > 0 and idle.usage.cpu_percent >= 0
        pid = agent.process.pid
        with load_rows.client_for(agent) as client:
            projects = load_rows.make_projects(agent, SETTINGS.projects, files=3)
            drain = load_rows.drain_run(client, concurrency=4, expected=set(projects), pid=pid)
            assert drain.projects == 3 and drain.seconds > 0 and drain.rate > 0
            assert drain.usage is not None and drain.usage.peak_rss > 0

            load_rows.make_dirty(agent, client, projects[:1])
            fanout = load_rows.fanout_run(agent, client, projects[0], watchers=SETTINGS.watchers, pid=pid)
            assert fanout.state == "SUCCEEDED"
            assert fanout.incomplete == [], fanout.describe()
            assert len(set(fanout.counts)) == 1 and fanout.counts[0] == fanout.emitted > 0
            assert fanout.last_latency is not None and not math.isnan(fanout.last_latency)

            rate = load_rows.unary_rate(f"127.0.0.1:{agent.port}", projects, threads=2,
                                        seconds=SETTINGS.rpc_seconds, pid=pid)
            assert rate.error_count == 0, rate.errors
            assert rate.calls > 0 and rate.rate > 0
    finally:
        agent.stop()

    results = load_rows.LoadResults(settings=SETTINGS, drains=[drain], fanouts=[fanout], rates=[rate], idles=[idle])
    figures = load_rows.figures(results, bench_module.Figure)
    names = [f.name for f in figures]
    assert "Drain, 3 projects, concurrency 4" in names
    assert "GetProjectStatus, 2 client threads" in names
    assert any(name.startswith("Watcher fan-out, 3 watchers: events") for name in names)
    for figure in figures:
        assert figure.agent and not figure.raw and figure.target is None and not figure.failed, figure
        assert figure.to_json()["agent"]["median"] is not None
    table = bench_module.render(figures, machine(), params())
    assert "all 3 got all" in table and "FAILED" not in table


def test_a_watcher_that_missed_events_is_a_failed_figure():
    complete = load_rows.Watcher(seqs=[1, 2, 3], terminal_received=10.02)
    missed = load_rows.Watcher(seqs=[1, 3], terminal_received=10.05)
    fanout = load_rows.FanoutRun(watchers=[complete, missed], emitted=3, terminal_time=10.0, state="SUCCEEDED")
    assert [index for index, _ in fanout.incomplete] == [1]
    assert math.isclose(fanout.last_latency, 0.05)
    results = load_rows.LoadResults(settings=SETTINGS, fanouts=[fanout])
    events = next(f for f in load_rows.figures(results, bench_module.Figure) if f.unit == "events")
    assert "2 of 3 events" in events.failed
    table = bench_module.render([events], machine(), params())
    assert "FAILED: run 1: 2 watchers got min 2 / max 3 events of 3 emitted" in table
