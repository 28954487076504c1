"""The frozen-window rows of `make bench` (bench/frozen_rows.py): which files the 1% rewrite
takes, the frozen window and caught-up bytes read from a movelog, and how a row whose target is a
maximum of the agent median itself is judged and shown (bench/bench.py). No process is started."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import bench as bench_module
from bench import frozen_rows

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)


@dataclass
class Entry:
    kind: str
    message: str
    seconds: float
    data: dict = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)


def test_the_rewrite_takes_the_fewest_files_in_path_order_reaching_the_fraction():
    sizes = {Path("b"): 30, Path("a"): 50, Path("c"): 20}
    assert frozen_rows.files_to_change(sizes, 0.01) == [Path("a")]
    assert frozen_rows.files_to_change(sizes, 0.5) == [Path("a")]
    assert frozen_rows.files_to_change(sizes, 0.51) == [Path("a"), Path("b")]
    assert frozen_rows.files_to_change(sizes, 1.0) == [Path("a"), Path("b"), Path("c")]


def test_the_frozen_window_runs_from_the_freeze_step_to_placement():
    entries = [Entry("step", "precopy", 1.0), Entry("step", "freeze", 10.0), Entry("step", "restore", 11.0),
               Entry("complete", "complete: project p is on b", 11.75)]
    assert frozen_rows.frozen_window(entries) == 1.75
    assert str(frozen_rows.frozen_window(entries[:3])) == "nan"  # never placed


def test_each_frozen_step_lasts_until_the_next_step_or_placement():
    entries = [Entry("step", "precopy", 1.0), Entry("step", "freeze", 10.0), Entry("step", "final_backup", 10.25),
               Entry("step", "restore", 11.0), Entry("step", "verify", 11.5), Entry("step", "finalize", 11.75),
               Entry("complete", "complete", 12.0)]
    assert frozen_rows.frozen_steps(entries) == {"freeze": 0.25, "final_backup": 0.75, "restore": 0.5,
                                                 "verify": 0.25, "finalize": 0.25}
    assert sum(frozen_rows.frozen_steps(entries).values()) == frozen_rows.frozen_window(entries)


def test_caught_up_bytes_are_the_catch_up_restores_not_a_pre_copys():
    entries = [Entry("precopy", "pre-copied", 2.0, {"step": "precopy", "bytes_fetched": 10_000_000}),
               Entry("restore", "caught up", 12.0, {"step": "restore", "bytes_fetched": 123_456}),
               Entry("complete", "complete", 13.0)]
    assert frozen_rows.caught_up_bytes(entries) == 123_456
    assert str(frozen_rows.caught_up_bytes(entries[:1])) == "nan"
    uncounted = [Entry("restore", "caught up", 12.0, {"step": "restore", "bytes_fetched": 0, "files_fetched": 3})]
    assert str(frozen_rows.caught_up_bytes(uncounted)) == "nan"


def test_an_absolute_target_judges_the_agent_median_itself():
    figure = bench_module.Figure("Move frozen window, 1 GB", agent=[1.2, 1.4, 3.0], raw=[9.0, 9.5, 10.0],
                                 target=1.5)
    figure.target_is_absolute = True
    assert figure.meets_target is True
    assert bench_module._ratio_cells(figure) == ("0.147", "agent ≤ 1.5 s (met)")
    figure.agent = [1.6, 1.7, 1.8]
    assert figure.meets_target is False
    assert bench_module._ratio_cells(figure)[1] == "agent ≤ 1.5 s (over)"
    assert figure.to_json()["target_kind"] == "max_agent"
    growth = bench_module.Figure("growth", agent=[1.2], target=1.5, unit="×")
    growth.target_is_absolute = True
    assert bench_module._ratio_cells(growth) == ("-", "agent ≤ 1.5 (met)")
