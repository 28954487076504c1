"""The scheduler rows of `make bench` (bench/scale_rows.py): the ground truth of the worst
unprotected age from the writer's times and the snapshots holding its files, the peak of backups at once, and how
the rows are labelled and judged against the RPO. No process is started."""

from __future__ import annotations

from bench import bench as bench_module
from bench import scale_rows
from bench.scale_rows import Backed, LoadRun, ScheduleResult, ThroughputRun, Write

A, B = "project-a", "project-b"


def test_a_write_is_protected_by_the_first_snapshot_that_holds_its_file():
    writes = [Write(A, "w0.txt", began=10.0, acknowledged=10.5), Write(A, "w1.txt", began=12.0, acknowledged=12.1),
              Write(B, "w2.txt", began=11.0, acknowledged=11.2)]
    backups = [
        Backed(A, finished=14.0, files=frozenset({"w1.txt"})),  # not w0's: its capture came before w0
        Backed(A, finished=15.0, files=frozenset({"w0.txt", "w1.txt"})),
        Backed(A, finished=13.0, files=frozenset()),  # an older snapshot, listed out of order
        Backed(B, finished=11.9, files=frozenset({"w2.txt"})),
    ]
    worst, unprotected = scale_rows.worst_unprotected_age(writes, backups, end=100.0)
    assert (worst, unprotected) == (5.0, 0)  # w0: from 10.0 to 15.0


def test_a_write_no_snapshot_holds_counts_until_the_end_and_is_reported():
    writes = [Write(A, "w0.txt", began=10.0, acknowledged=10.1), Write(B, "w1.txt", began=20.0, acknowledged=20.1)]
    backups = [Backed(A, finished=12.0, files=frozenset({"w0.txt"})),
               Backed(B, finished=31.0, files=frozenset({"w0.txt"}))]  # another project's file of that name
    assert scale_rows.worst_unprotected_age(writes, backups, end=50.0) == (30.0, 1)
    assert scale_rows.worst_unprotected_age([], backups, end=50.0) == (0.0, 0)


def test_peak_overlap_counts_backups_running_at_once():
    assert scale_rows.peak_overlap([(0, 2), (1, 3), (2.5, 4), (5, 6)]) == 2
    assert scale_rows.peak_overlap([(0, 1), (1, 2)]) == 1  # one ends as the next starts
    assert scale_rows.peak_overlap([]) == 0


def load_run(truth: float, unprotected: int = 0) -> LoadRun:
    return LoadRun(rpo=30.0, concurrency=2, seconds=120.0, writes=120, writes_per_second=1.0, sampled_max_age=12.5,
                   sampled_over_rpo=0, samples=250, truth_worst_age=truth, unprotected_at_end=unprotected)


def test_the_rows_name_the_project_count_and_are_judged_against_the_rpo():
    result = ScheduleResult(backend="btrfs", projects=100, setup_seconds=50.0, setup_concurrency=4,
                            throughput=[ThroughputRun(concurrency=1, changed=8, seconds=16.0, peak=1),
                                        ThroughputRun(concurrency=4, changed=8, seconds=4.0, peak=4)],
                            load=load_run(31.0), engine="rustic-0.11.4")
    rows = scale_rows.schedule_figures(result, bench_module.Figure)
    names = [r.name for r in rows]
    assert names[0].startswith("scale btrfs scheduler, 100 projects: set-up")
    assert "scale btrfs scheduler, 100 projects, 8 changed: backups per second, concurrency 4" in names
    rates = {r.name[-1]: r.agent for r in rows if "backups per second" in r.name}
    assert rates == {"1": [0.5], "4": [2.0]}
    sampled, truth = rows[-2:]
    assert sampled.meets_target is True and truth.meets_target is False  # 31 s over an RPO of 30 s
    assert bench_module._ratio_cells(truth)[1] == "agent ≤ 30 s (over)"
    assert bench_module._span(rows[-3].agent, rows[-3].unit).startswith("2 projects/s")

    failed = scale_rows.schedule_figures(ScheduleResult(
        backend="directory", projects=10, setup_seconds=5.0, setup_concurrency=4, throughput=[],
        load=load_run(40.0, unprotected=2), engine="rustic-0.11.4"), bench_module.Figure)[-1]
    assert "2 writes not backed up" in failed.failed


def test_skipped_scheduler_rows_say_why():
    rows = scale_rows.figures([], bench_module.Figure, [], "the pinned rustic is not built (scripts/tools.sh)")
    assert [r.cell for r in rows] == ["not measured: the pinned rustic is not built (scripts/tools.sh)"]
