"""The drain without an agent: its pure parts, and the drain job on a real OperationManager and
Journal with fake backup jobs (no engine, no gRPC). Each test runs its own loop (asyncio.run)."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path

import pytest

from agent import convert, errors
from agent import drain as draining
from agent.freshness import Freshness
from agent.journal import Journal, _summary_from_json, _summary_to_json, event_from_json, event_to_json
from agent.model import (
    OperationError, OperationKind, OperationRecord, OperationState, ProgressEvent, ProjectOutcome, Summary,
)
from agent.operations import PROGRESS_INTERVAL, FailedWithSummary, OperationContext, OperationManager
from hub_client.proto.buckets.v1 import agent_pb2 as pb

P = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(1, 9)]
S = OperationState


# ---------------------------------------------------------------- pure parts


def test_effective_concurrency_defaults_and_caps():
    assert draining.effective_concurrency(0, 4) == draining.DEFAULT_CONCURRENCY == 2
    assert draining.effective_concurrency(0, 1) == 1
    assert draining.effective_concurrency(3, 4) == 3
    assert draining.effective_concurrency(100, 4) == 4


def test_backup_request_ids_derive_from_the_drain_and_the_project():
    assert draining.backup_request_id("d1", P[0]) == f"drain-d1-{P[0]}"
    assert draining.backup_request_id("d1", P[0], 2) == f"drain-d1-{P[0]}-2"


def test_outcome_messages():
    assert draining.outcome_message(ProjectOutcome(P[0], S.SUCCEEDED, "1a2b3c4d5e6f")) == f"{P[0]}: snapshot 1a2b3c4d"
    assert draining.outcome_message(ProjectOutcome(P[0], S.SUCCEEDED_WITH_WARNINGS, "1a2b3c4d")).endswith(
        "snapshot 1a2b3c4d (with warnings)")
    assert draining.outcome_message(ProjectOutcome(P[0], S.UP_TO_DATE, "1a2b3c4d")) == f"{P[0]}: up to date"
    failed = ProjectOutcome(P[0], S.FAILED, error=OperationError("UNAVAILABLE", "bucket unreachable"))
    assert draining.outcome_message(failed) == f"{P[0]}: FAILED UNAVAILABLE: bucket unreachable"


def test_failure_message_names_a_few_and_counts_the_rest():
    assert draining.failure_message([P[0]], 12) == f"1 of 12 projects failed: {P[0]}"
    message = draining.failure_message(P[:7], 50, shown=5)
    assert message == f"7 of 50 projects failed: {', '.join(P[:5])} and 2 more"


def test_summarise_orders_by_project_and_adds_up_the_backups():
    outcomes = [ProjectOutcome(P[2], S.SUCCEEDED, "cc", operation_id="op-c"),
                ProjectOutcome(P[0], S.UP_TO_DATE, "aa"),
                ProjectOutcome(P[1], S.SUCCEEDED_WITH_WARNINGS, "bb", operation_id="op-b")]
    children = {"op-c": Summary(bytes_added=10, files_new=1), "op-b": Summary(bytes_added=5, warnings=("w",))}
    summary = draining.summarise(outcomes, children, 1.5)
    assert [o.project_id for o in summary.projects] == P[:3]
    assert summary.bytes_added == 15 and summary.files_new == 1 and summary.duration_seconds == 1.5
    assert summary.warnings == (f"{P[1]}: w",)


OUTCOMES = (
    ProjectOutcome(P[0], S.SUCCEEDED, "0123abcd", operation_id="op-1"),
    ProjectOutcome(P[1], S.FAILED, error=OperationError("UNAVAILABLE", "locked"), operation_id="op-2"),
    ProjectOutcome(P[2], S.UP_TO_DATE, "feedbeef"),
)


def test_summary_with_projects_round_trips_through_the_journal_and_old_rows_still_read(tmp_path):
    summary = Summary(snapshot_id="", bytes_added=3, projects=OUTCOMES)
    assert _summary_from_json(_summary_to_json(summary)) == summary
    event = ProgressEvent(operation_id="d", seq=4, time=1.0, state=S.FAILED, phase="done", terminal=True,
                          summary=summary, error=OperationError("UNAVAILABLE", "1 of 3 projects failed"))
    assert event_from_json(event_to_json(event)) == event
    # A summary stored before ProjectOutcome existed has no "projects" key.
    old = json.dumps({"snapshot_id": "abc", "bytes_added": 1, "bytes_processed": 2, "files_processed": 3,
                      "files_new": 0, "files_changed": 0, "duration_seconds": 1.0, "warnings": ["w"],
                      "state": "UP_TO_DATE"})
    assert _summary_from_json(old) == Summary(snapshot_id="abc", bytes_added=1, bytes_processed=2,
                                              files_processed=3, duration_seconds=1.0, warnings=("w",),
                                              state=S.UP_TO_DATE)
    journal = Journal(tmp_path / "j.db")
    record = OperationRecord(id="d1", request_id="r1", kind=OperationKind.DRAIN, project_id="", fingerprint="f",
                             params={}, state=S.FAILED, created_at=1.0, summary=summary,
                             error=OperationError("UNAVAILABLE", "x"))
    journal.insert_operation(record)
    journal.update_operation(record)
    assert journal.get_operation("d1").summary.projects == OUTCOMES


def test_outcomes_convert_to_the_wire():
    message = convert.summary_to_proto(Summary(projects=OUTCOMES))
    assert [(o.project_id, pb.OperationState.Name(o.state), o.snapshot_id, o.operation_id, o.error.code)
            for o in message.projects] == [
        (P[0], "SUCCEEDED", "0123abcd", "op-1", ""),
        (P[1], "FAILED", "", "op-2", "UNAVAILABLE"),
        (P[2], "UP_TO_DATE", "feedbeef", "", ""),
    ]


# ---------------------------------------------------------------- the drain job on a real manager


class FakeHost:
    """Projects with freshness facts, and a backup job that takes ``duration`` seconds, fails for
    the projects in ``failing`` and records a backup for the others."""

    def __init__(self, manager: OperationManager, projects: dict[str, bool], *, duration: float = 0.05) -> None:
        self.manager = manager
        now = time.time()
        # project -> (last_backup, last_change)
        self.facts = {p: ((None, None) if dirty else (now - 100, now - 200)) for p, dirty in projects.items()}
        self.failing: dict[str, errors.BucketsError] = {}
        self.duration = duration
        self.running = 0
        self.peak = 0
        self.started: list[tuple[str, bool]] = []  # (project, force) per backup job run
        self.release: asyncio.Event | None = None  # when set, backups wait for it
        self.skip_unchanged: set[str] = set()  # projects whose unforced backup ends UP_TO_DATE

    def fresh(self, project_id: str) -> Freshness:
        last_backup, last_change = self.facts[project_id]
        return Freshness(last_backup=last_backup, last_backup_snapshot="old" if last_backup else "",
                         last_change=last_change)

    async def look(self, project_id: str) -> Freshness:
        return self.fresh(project_id)

    async def job(self, context: OperationContext, *, force: bool) -> Summary:
        project_id = context.project_id
        self.started.append((project_id, force))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.release is not None:
                await self.release.wait()
            await asyncio.sleep(self.duration)
            if project_id in self.failing:
                raise self.failing[project_id]
            if project_id in self.skip_unchanged and not force:
                return Summary(snapshot_id="old", state=S.UP_TO_DATE)
            self.facts[project_id] = (time.time(), self.facts[project_id][1])
            return Summary(snapshot_id=f"snap{project_id[:4]}", bytes_added=100, files_new=1)
        finally:
            self.running -= 1

    def start_backup(self, request_id: str, project_id: str, force: bool) -> tuple[OperationRecord, bool]:
        return self.manager.submit(kind=OperationKind.BACKUP, project_id=project_id, request_id=request_id,
                                   params={"force": force}, job=functools.partial(self.job, force=force),
                                   joinable=True)

    def hooks(self) -> draining.DrainHooks:
        return draining.DrainHooks(
            projects=lambda: sorted(self.facts), look=self.look, freshness=self.fresh,
            start_backup=self.start_backup, active=self.manager.active_operation, wait=self.manager.wait,
            cancel=self.manager.cancel,
        )

    def submit_drain(self, concurrency: int, request_id: str = "drain-1") -> OperationRecord:
        job = functools.partial(draining.drain, hooks=self.hooks(), concurrency=concurrency)
        record, _ = self.manager.submit(kind=OperationKind.DRAIN, project_id="", request_id=request_id,
                                        params={"concurrency": concurrency}, job=job, joinable=True,
                                        takes_slot=False)
        return record


def manager_at(path: Path, **kwargs) -> OperationManager:
    kwargs.setdefault("max_running", 4)
    kwargs.setdefault("max_queued", 16)
    return OperationManager(Journal(path), **kwargs)


def run(coroutine_function):
    return asyncio.run(asyncio.wait_for(coroutine_function(), 10))


def test_clean_projects_need_no_backup_and_dirty_ones_get_one_each(tmp_path):
    async def main():
        host = FakeHost(manager_at(tmp_path / "j.db"), {P[0]: True, P[1]: False, P[2]: True, P[3]: False})
        record = host.submit_drain(2)
        final = await host.manager.wait(record.id)
        assert final.state is S.SUCCEEDED, final.error
        assert [(o.project_id, o.state) for o in final.summary.projects] == [
            (P[0], S.SUCCEEDED), (P[1], S.UP_TO_DATE), (P[2], S.SUCCEEDED), (P[3], S.UP_TO_DATE)]
        assert sorted(p for p, _ in host.started) == [P[0], P[2]]
        assert final.summary.bytes_added == 200 and final.summary.files_new == 2
        messages = [e.message for e in host.manager._journal.events_since(record.id, 1) if e.phase == "drain"]
        # Every project's line is its own event although they all finished within PROGRESS_INTERVAL.
        for project_id in P[:4]:
            assert sum(m.startswith(f"{project_id}: ") for m in messages) == 1
        assert messages[-1].endswith("(4 of 4 done)")
        assert PROGRESS_INTERVAL > 0.05

    run(main)


def test_failures_do_not_stop_the_others_and_the_first_sets_the_code(tmp_path):
    async def main():
        host = FakeHost(manager_at(tmp_path / "j.db"), {p: True for p in P[:5]})
        host.failing = {P[1]: errors.Unavailable("repository locked"), P[3]: errors.DataLoss("MAC mismatch")}
        final = await host.manager.wait(host.submit_drain(1).id)
        assert final.state is S.FAILED
        assert final.error == OperationError("UNAVAILABLE", f"2 of 5 projects failed: {P[1]}, {P[3]}", "UNAVAILABLE")
        states = {o.project_id: (o.state, o.error.code if o.error else "") for o in final.summary.projects}
        assert states == {P[0]: (S.SUCCEEDED, ""), P[1]: (S.FAILED, "UNAVAILABLE"), P[2]: (S.SUCCEEDED, ""),
                          P[3]: (S.FAILED, "DATA_LOSS"), P[4]: (S.SUCCEEDED, "")}
        assert host.manager._journal.get_operation(final.id).summary == final.summary

    run(main)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_at_most_concurrency_backups_run_at_once(tmp_path, concurrency):
    async def main():
        host = FakeHost(manager_at(tmp_path / "j.db", max_running=4), {p: True for p in P[:7]}, duration=0.03)
        final = await host.manager.wait(host.submit_drain(concurrency).id)
        assert final.state is S.SUCCEEDED
        assert host.peak == concurrency

    run(main)


def test_the_drain_takes_no_slot_so_a_limit_of_one_still_runs_its_backups(tmp_path):
    async def main():
        host = FakeHost(manager_at(tmp_path / "j.db", max_running=1, max_queued=0), {p: True for p in P[:3]})
        final = await host.manager.wait(host.submit_drain(1).id)
        assert final.state is S.SUCCEEDED and len(host.started) == 3

    run(main)


def test_one_drain_per_host_joins_equal_and_refuses_other_parameters(tmp_path):
    async def main():
        host = FakeHost(manager_at(tmp_path / "j.db"), {P[0]: True})
        host.release = asyncio.Event()
        first = host.submit_drain(2)
        again = host.submit_drain(2, request_id="drain-2")
        assert again.id == first.id
        with pytest.raises(errors.Conflict, match=f"this host has a running drain operation {first.id}"):
            host.submit_drain(1, request_id="drain-3")
        host.release.set()
        assert (await host.manager.wait(first.id)).state is S.SUCCEEDED
        assert host.manager._journal.find_by_request_id("drain-2").id == first.id

    run(main)


def test_a_skipped_or_joined_backup_that_misses_the_change_is_followed_by_a_forced_one(tmp_path):
    async def main():
        host = FakeHost(manager_at(tmp_path / "j.db"), {P[0]: True, P[1]: True})
        now = time.time()
        host.facts[P[0]] = (now - 100, now - 50)  # changed after its last backup
        host.skip_unchanged = {P[0]}  # but the backup's own test finds it unchanged
        final = await host.manager.wait(host.submit_drain(2).id)
        assert final.state is S.SUCCEEDED
        assert sorted(host.started) == [(P[0], False), (P[0], True), (P[1], False)]
        outcome = final.summary.projects[0]
        assert outcome.state is S.SUCCEEDED and outcome.snapshot_id == f"snap{P[0][:4]}"
        forced = host.manager.get(outcome.operation_id)
        assert forced.request_id == f"drain-{final.id}-{P[0]}-1"

    run(main)


def test_a_conflicting_operation_is_waited_for_then_the_project_looked_at_again(tmp_path):
    async def main():
        manager = manager_at(tmp_path / "j.db")
        host = FakeHost(manager, {P[0]: True, P[1]: True})
        release = asyncio.Event()

        async def restore(context: OperationContext) -> Summary:
            await release.wait()
            host.facts[P[0]] = (time.time(), host.facts[P[0]][1])  # a restore leaves it clean
            return Summary(snapshot_id="restored")

        other, _ = manager.submit(kind=OperationKind.RESTORE, project_id=P[0], request_id="restore-1", params={},
                                  job=restore)
        drain_record = host.submit_drain(2)
        await asyncio.sleep(0.2)
        assert manager.get(drain_record.id).state is S.RUNNING  # waiting for the restore
        release.set()
        final = await manager.wait(drain_record.id)
        assert final.state is S.SUCCEEDED
        assert [(o.project_id, o.state) for o in final.summary.projects] == [(P[0], S.UP_TO_DATE),
                                                                              (P[1], S.SUCCEEDED)]
        assert [p for p, _ in host.started] == [P[1]]

    run(main)


def test_cancel_cancels_the_backups_the_drain_started_but_not_one_it_joined(tmp_path):
    async def main():
        manager = manager_at(tmp_path / "j.db")
        host = FakeHost(manager, {p: True for p in P[:4]})
        host.release = asyncio.Event()
        joined, _ = host.start_backup("someone-else", P[0], False)  # a caller's own backup, running
        record = host.submit_drain(2)
        await asyncio.sleep(0.1)
        children = [o for o in manager._live.values() if o.record.kind is OperationKind.BACKUP]
        assert len(children) == 2 and joined.id in {c.record.id for c in children}
        own = next(c.record.id for c in children if c.record.id != joined.id)
        await manager.cancel(record.id)
        final = await manager.wait(record.id)
        assert final.state is S.CANCELLED
        assert manager.get(own).state is S.CANCELLED
        assert manager.get(joined.id).state is S.RUNNING  # not the drain's to cancel
        assert len(host.started) == 2  # nothing more was submitted
        host.release.set()
        assert (await manager.wait(joined.id)).state is S.SUCCEEDED

    run(main)


def test_failed_with_summary_keeps_the_summary(tmp_path):
    async def main():
        manager = manager_at(tmp_path / "j.db")
        summary = Summary(projects=OUTCOMES)

        async def job(context: OperationContext) -> Summary:
            raise FailedWithSummary(errors.Unavailable("1 of 3 projects failed"), summary)

        record, _ = manager.submit(kind=OperationKind.DRAIN, project_id="", request_id="d", params={}, job=job,
                                   takes_slot=False)
        final = await manager.wait(record.id)
        assert final.state is S.FAILED and final.error == OperationError("UNAVAILABLE", "1 of 3 projects failed", "UNAVAILABLE")
        assert final.summary == summary
        terminal = manager._journal.events_since(record.id, 1)[-1]
        assert terminal.terminal and terminal.summary == summary

    run(main)
