"""In-process tests of agent.operations.OperationManager with a real Journal and fake jobs.

No gRPC and no engine: jobs are small async functions the tests control through
asyncio events. Each test runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import errors
from agent import operations as operations_module
from agent.journal import Journal
from agent.model import OperationKind, OperationRecord, OperationState, ProgressEvent, Summary
from agent.operations import OperationContext, OperationManager

BACKUP = OperationKind.BACKUP
RESTORE = OperationKind.RESTORE
P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"
P3 = "33333333-3333-3333-3333-333333333333"


# ---------------------------------------------------------------- helpers


class Gate:
    """A fake job that reports it started and then waits until released."""

    def __init__(self, summary: Summary | None = None, *, raises: BaseException | None = None) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.summary = summary or Summary(snapshot_id="abcdef01")
        self.raises = raises
        self.calls = 0
        self.cancelled = False
        self.context: OperationContext | None = None

    async def job(self, context: OperationContext) -> Summary:
        self.calls += 1
        self.context = context
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.raises is not None:
            raise self.raises
        return self.summary


def make_manager(path: Path, **kwargs) -> OperationManager:
    kwargs.setdefault("max_running", 4)
    kwargs.setdefault("max_queued", 16)
    return OperationManager(Journal(path), **kwargs)


def submit(manager: OperationManager, job, *, request_id: str, project_id: str = P1, kind=BACKUP,
           params: dict | None = None, joinable: bool = False) -> tuple[OperationRecord, bool]:
    return manager.submit(
        kind=kind, project_id=project_id, request_id=request_id, params=params or {}, job=job, joinable=joinable
    )


async def until(predicate, timeout: float = 3.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def wait_terminal(manager: OperationManager, operation_id: str, timeout: float = 3.0) -> OperationRecord:
    await until(lambda: manager.get(operation_id).state.terminal, timeout)
    return manager.get(operation_id)


async def collect(manager: OperationManager, operation_id: str, from_seq: int = 1, timeout: float = 5.0) -> list:
    items = []
    async with asyncio.timeout(timeout):
        async for item in manager.watch(operation_id, from_seq):
            items.append(item)
    return items


def events_of(items: list) -> list[ProgressEvent]:
    return [item for item in items if isinstance(item, ProgressEvent)]


def assert_well_formed(events: list[ProgressEvent], first_seq: int = 1) -> None:
    """Strictly increasing seq from ``first_seq`` without gaps; exactly one terminal event, the last."""
    assert [e.seq for e in events] == list(range(first_seq, first_seq + len(events)))
    assert events[-1].terminal
    assert not any(e.terminal for e in events[:-1])


def journal_of(manager: OperationManager) -> Journal:
    return manager._journal


# ---------------------------------------------------------------- submit and states


def test_submit_returns_pending_then_runs(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        record, joined = submit(manager, gate.job, request_id="r1")
        state_at_return = record.state
        assert not joined
        assert state_at_return is OperationState.PENDING
        assert record.started_at is None
        stored = journal_of(manager).get_operation(record.id)
        assert stored.state is OperationState.PENDING
        first = journal_of(manager).events_since(record.id, 1)
        assert [(e.seq, e.state, e.phase) for e in first] == [(1, OperationState.PENDING, "queue")]

        await asyncio.wait_for(gate.started.wait(), 2)
        assert manager.get(record.id).state is OperationState.RUNNING
        assert manager.get(record.id).started_at is not None
        assert journal_of(manager).get_operation(record.id).state is OperationState.RUNNING
        assert gate.context.operation_id == record.id
        assert gate.context.project_id == P1

        gate.release.set()
        final = await wait_terminal(manager, record.id)
        assert final.state is OperationState.SUCCEEDED
        assert final.summary.snapshot_id == "abcdef01"
        assert final.error is None
        stored = journal_of(manager).get_operation(record.id)
        assert stored.state is OperationState.SUCCEEDED
        assert stored.summary.snapshot_id == "abcdef01"
        assert stored.finished_at >= stored.started_at >= stored.created_at
        events = journal_of(manager).events_since(record.id, 1)
        assert_well_formed(events)
        assert [e.phase for e in events] == ["queue", "start", "done"]
        assert events[-1].state is OperationState.SUCCEEDED
        assert events[-1].summary.snapshot_id == "abcdef01"

    asyncio.run(main())


def test_same_request_id_returns_same_operation(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        other = Gate()
        first, joined1 = submit(manager, gate.job, request_id="same", params={"force": True})
        second, joined2 = submit(manager, other.job, request_id="same", params={"force": True})
        assert (joined1, joined2) == (False, True)
        assert second.id == first.id
        gate.release.set()
        await wait_terminal(manager, first.id)
        # after it finished, too: the stored operation comes back and nothing new runs
        third, joined3 = submit(manager, other.job, request_id="same", params={"force": True})
        assert joined3 and third.id == first.id and third.state is OperationState.SUCCEEDED
        await asyncio.sleep(0.02)
        assert other.calls == 0
        assert len(journal_of(manager).list_operations()) == 1

    asyncio.run(main())


def test_same_request_id_other_parameters_is_already_exists(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        first, _ = submit(manager, gate.job, request_id="same", params={"force": False})
        with pytest.raises(errors.AlreadyExists) as info:
            submit(manager, gate.job, request_id="same", params={"force": True})
        assert first.id in str(info.value)
        with pytest.raises(errors.AlreadyExists):
            submit(manager, gate.job, request_id="same", project_id=P2, params={"force": False})
        with pytest.raises(errors.AlreadyExists):
            submit(manager, gate.job, request_id="same", kind=OperationKind.VERIFY, params={"force": False})
        gate.release.set()
        await wait_terminal(manager, first.id)
        assert len(journal_of(manager).list_operations()) == 1

    asyncio.run(main())


def test_bad_request_id_is_invalid_argument(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        with pytest.raises(errors.InvalidArgument):
            submit(manager, Gate().job, request_id="")
        with pytest.raises(errors.InvalidArgument):
            submit(manager, Gate().job, request_id="x" * 201)
        assert journal_of(manager).list_operations() == []

    asyncio.run(main())


def test_joinable_backup_joins_running_one_other_kind_conflicts(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        second_job = Gate()
        running, _ = submit(manager, gate.job, request_id="b1", joinable=True)
        await asyncio.wait_for(gate.started.wait(), 2)

        joined_record, joined = submit(manager, second_job.job, request_id="b2", joinable=True)
        assert joined
        assert joined_record.id == running.id

        with pytest.raises(errors.Conflict) as info:
            submit(manager, second_job.job, request_id="r1", kind=RESTORE, params={"snapshot": "latest"})
        assert running.id in str(info.value)
        # a non-joinable request of the same kind conflicts too
        with pytest.raises(errors.Conflict) as info:
            submit(manager, second_job.job, request_id="b3")
        assert running.id in str(info.value)
        # another project is not affected
        elsewhere, joined_elsewhere = submit(manager, second_job.job, request_id="b4", project_id=P2, joinable=True)
        assert not joined_elsewhere and elsewhere.id != running.id

        second_job.release.set()
        gate.release.set()
        await wait_terminal(manager, running.id)
        await wait_terminal(manager, elsewhere.id)
        assert gate.calls == 1
        # once the project is idle, a new operation of another kind is accepted
        restore, joined_restore = submit(manager, second_job.job, request_id="r2", kind=RESTORE)
        assert not joined_restore and restore.id != running.id
        await wait_terminal(manager, restore.id)

    asyncio.run(main())


def test_conflict_while_first_operation_is_still_queued(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=4)
        blocker, queued_gate = Gate(), Gate()
        submit(manager, blocker.job, request_id="a", project_id=P1)
        await asyncio.wait_for(blocker.started.wait(), 2)
        queued, _ = submit(manager, queued_gate.job, request_id="b", project_id=P2)
        assert queued.state is OperationState.PENDING
        with pytest.raises(errors.Conflict) as info:
            submit(manager, queued_gate.job, request_id="c", project_id=P2, kind=RESTORE)
        assert queued.id in str(info.value)
        blocker.release.set()
        queued_gate.release.set()
        await wait_terminal(manager, queued.id)

    asyncio.run(main())


def test_retry_of_a_joined_request_returns_the_joined_operation(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        running, _ = submit(manager, gate.job, request_id="b1", joinable=True)
        await asyncio.wait_for(gate.started.wait(), 2)
        joined_record, joined = submit(manager, gate.job, request_id="b2", joinable=True)
        assert joined and joined_record.id == running.id
        gate.release.set()
        await wait_terminal(manager, running.id)
        retry, _ = submit(manager, Gate().job, request_id="b2", joinable=True)
        assert retry.id == running.id

    asyncio.run(main())


# ---------------------------------------------------------------- host limit and queue


def test_host_limit_keeps_second_operation_pending_until_first_finishes(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=4)
        first_gate, second_gate = Gate(), Gate()
        first, _ = submit(manager, first_gate.job, request_id="a", project_id=P1)
        await asyncio.wait_for(first_gate.started.wait(), 2)
        second, _ = submit(manager, second_gate.job, request_id="b", project_id=P2)
        await asyncio.sleep(0.1)
        assert manager.get(second.id).state is OperationState.PENDING
        assert second_gate.calls == 0
        assert manager.counts() == (1, 1)

        first_gate.release.set()
        await asyncio.wait_for(second_gate.started.wait(), 2)
        assert manager.get(first.id).state is OperationState.SUCCEEDED
        assert manager.get(second.id).state is OperationState.RUNNING
        assert manager.counts() == (1, 0)
        # the second started only after the first's terminal event was written
        first_done = journal_of(manager).events_since(first.id, 1)[-1]
        second_start = [e for e in journal_of(manager).events_since(second.id, 1) if e.phase == "start"][0]
        assert first_done.terminal and second_start.time >= first_done.time

        second_gate.release.set()
        await wait_terminal(manager, second.id)
        assert manager.counts() == (0, 0)

    asyncio.run(main())


def test_queue_full_is_resource_exhausted(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=0)
        first_gate = Gate()
        first, _ = submit(manager, first_gate.job, request_id="a", project_id=P1)
        await asyncio.wait_for(first_gate.started.wait(), 2)
        with pytest.raises(errors.ResourceExhausted):
            submit(manager, Gate().job, request_id="b", project_id=P2)
        assert journal_of(manager).find_by_request_id("b") is None
        assert manager.counts() == (1, 0)
        first_gate.release.set()
        await wait_terminal(manager, first.id)
        # with a free slot the same request is accepted
        again, joined = submit(manager, Gate(Summary()).job, request_id="b", project_id=P2)
        assert not joined and again.state is OperationState.PENDING

    asyncio.run(main())


def test_queue_of_one_accepts_one_then_refuses(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=1)
        gates = [Gate(), Gate(), Gate()]
        submit(manager, gates[0].job, request_id="a", project_id=P1)
        await asyncio.wait_for(gates[0].started.wait(), 2)
        queued, _ = submit(manager, gates[1].job, request_id="b", project_id=P2)
        await asyncio.sleep(0.01)
        with pytest.raises(errors.ResourceExhausted):
            submit(manager, gates[2].job, request_id="c", project_id=P3)
        for gate in gates:
            gate.release.set()
        await wait_terminal(manager, queued.id)

    asyncio.run(main())


def test_queue_limit_holds_for_submits_in_the_same_loop_iteration(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=0)
        gate = Gate()
        submit(manager, gate.job, request_id="a", project_id=P1)
        try:
            with pytest.raises(errors.ResourceExhausted):
                submit(manager, gate.job, request_id="b", project_id=P2)
        finally:
            gate.release.set()
            await manager.shutdown(1)

    asyncio.run(main())


# ---------------------------------------------------------------- cancel


def test_cancel_pending_operation(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=4)
        blocker, waiting = Gate(), Gate()
        first, _ = submit(manager, blocker.job, request_id="a", project_id=P1)
        await asyncio.wait_for(blocker.started.wait(), 2)
        queued, _ = submit(manager, waiting.job, request_id="b", project_id=P2)
        await asyncio.sleep(0.02)  # its task now waits for a slot
        await manager.cancel(queued.id)
        final = await wait_terminal(manager, queued.id)
        assert final.state is OperationState.CANCELLED
        assert final.error.code == "CANCELLED"
        assert waiting.calls == 0
        events = journal_of(manager).events_since(queued.id, 1)
        assert_well_formed(events)
        assert events[-1].state is OperationState.CANCELLED
        assert manager.get(first.id).state is OperationState.RUNNING
        assert manager.counts() == (1, 0)
        # the project is free again
        submit(manager, Gate().job, request_id="c", project_id=P2, kind=RESTORE)
        blocker.release.set()
        await wait_terminal(manager, first.id)
        assert manager.get(first.id).state is OperationState.SUCCEEDED
        await manager.shutdown(1)

    asyncio.run(main())


def test_cancel_right_after_submit(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        record, _ = submit(manager, gate.job, request_id="a")
        await manager.cancel(record.id)
        final = await wait_terminal(manager, record.id, timeout=0.5)
        assert final.state is OperationState.CANCELLED

    asyncio.run(main())


def test_cancel_running_operation(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        record, _ = submit(manager, gate.job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        returned = await manager.cancel(record.id)
        assert returned.id == record.id
        final = await wait_terminal(manager, record.id)
        assert final.state is OperationState.CANCELLED
        assert final.error.code == "CANCELLED"
        assert gate.cancelled
        events = journal_of(manager).events_since(record.id, 1)
        assert_well_formed(events)
        assert [e.phase for e in events] == ["queue", "start", "cancel", "done"]
        assert events[2].state is OperationState.CANCELLING
        assert events[-1].state is OperationState.CANCELLED
        assert events[-1].error.code == "CANCELLED"
        assert journal_of(manager).get_operation(record.id).state is OperationState.CANCELLED
        # cancelling a finished operation changes nothing
        again = await manager.cancel(record.id)
        assert again.state is OperationState.CANCELLED
        assert len(journal_of(manager).events_since(record.id, 1)) == len(events)
        with pytest.raises(errors.NotFound):
            await manager.cancel("00000000-0000-0000-0000-000000000000")

    asyncio.run(main())


# ---------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    "raised, code",
    [
        (errors.Unavailable("repository is locked"), "UNAVAILABLE"),
        (errors.DataLoss("ciphertext verification failed"), "DATA_LOSS"),
        (errors.FailedPrecondition("wrong password"), "FAILED_PRECONDITION"),
    ],
)
def test_job_raising_agent_error_fails_with_its_code(tmp_path, raised, code):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate(raises=raised)
        record, _ = submit(manager, gate.job, request_id="a")
        gate.release.set()
        final = await wait_terminal(manager, record.id)
        assert final.state is OperationState.FAILED
        assert final.error.code == code
        assert final.error.message == raised.message
        assert final.summary is None
        events = journal_of(manager).events_since(record.id, 1)
        assert_well_formed(events)
        assert events[-1].state is OperationState.FAILED
        assert events[-1].error.code == code
        stored = journal_of(manager).get_operation(record.id)
        assert stored.error.code == code and stored.state is OperationState.FAILED

    asyncio.run(main())


def test_job_raising_plain_exception_fails_internal(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate(raises=KeyError("boom"))
        record, _ = submit(manager, gate.job, request_id="a")
        gate.release.set()
        final = await wait_terminal(manager, record.id)
        assert final.state is OperationState.FAILED
        assert final.error.code == "INTERNAL"
        assert "boom" in final.error.message
        assert journal_of(manager).events_since(record.id, 1)[-1].error.code == "INTERNAL"
        # the manager keeps working afterwards, on the same project too
        after = Gate()
        ok, _ = submit(manager, after.job, request_id="b")
        after.release.set()
        assert (await wait_terminal(manager, ok.id)).state is OperationState.SUCCEEDED

    asyncio.run(main())


def test_warnings_give_succeeded_with_warnings(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")

        async def warning_job(context: OperationContext) -> Summary:
            context.warn("could not read /project/secret")
            return Summary(snapshot_id="deadbeef", warnings=("one file changed during backup",))

        async def clean_job(context: OperationContext) -> Summary:
            return Summary(snapshot_id="deadbeef")

        record, _ = submit(manager, warning_job, request_id="a")
        clean, _ = submit(manager, clean_job, request_id="b", project_id=P2)
        final = await wait_terminal(manager, record.id)
        assert final.state is OperationState.SUCCEEDED_WITH_WARNINGS
        assert final.summary.warnings == ("one file changed during backup", "could not read /project/secret")
        terminal = journal_of(manager).events_since(record.id, 1)[-1]
        assert terminal.state is OperationState.SUCCEEDED_WITH_WARNINGS
        assert terminal.summary.warnings == final.summary.warnings
        assert (await wait_terminal(manager, clean.id)).state is OperationState.SUCCEEDED

    asyncio.run(main())


def test_up_to_date_summary_gives_up_to_date(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")

        async def job(context: OperationContext) -> Summary:
            return Summary(state=OperationState.UP_TO_DATE)

        record, _ = submit(manager, job, request_id="a")
        final = await wait_terminal(manager, record.id)
        assert final.state is OperationState.UP_TO_DATE
        assert final.error is None
        assert journal_of(manager).get_operation(record.id).state is OperationState.UP_TO_DATE
        assert journal_of(manager).events_since(record.id, 1)[-1].state is OperationState.UP_TO_DATE

    asyncio.run(main())


def test_set_recovery_is_persisted_while_running(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        record, _ = submit(manager, gate.job, request_id="a", kind=RESTORE)
        await asyncio.wait_for(gate.started.wait(), 2)
        gate.context.set_recovery(staging=record.id, swap=[{"staged": "/a", "live": "/b", "inode": 7}])
        stored = journal_of(manager).get_operation(record.id)
        assert stored.recovery == {"staging": record.id, "swap": [{"staged": "/a", "live": "/b", "inode": 7}]}
        gate.release.set()
        await wait_terminal(manager, record.id)

    asyncio.run(main())


# ---------------------------------------------------------------- watch


def test_watch_yields_record_then_all_events_and_ends(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        proceed = asyncio.Event()

        async def job(context: OperationContext) -> Summary:
            await proceed.wait()
            for i, phase in enumerate(["scan", "upload", "scan", "upload"]):
                context.progress(phase, files_done=i)
                await asyncio.sleep(0)
            return Summary(snapshot_id="cafebabe")

        record, _ = submit(manager, job, request_id="a")
        watcher = asyncio.create_task(collect(manager, record.id))
        await asyncio.sleep(0.02)
        proceed.set()
        items = await watcher
        assert isinstance(items[0], OperationRecord) and items[0].id == record.id
        events = events_of(items[1:])
        assert len(events) == len(items) - 1  # no keep-alives with the default interval
        assert_well_formed(events)
        assert [e.phase for e in events] == ["queue", "start", "scan", "upload", "scan", "upload", "done"]
        assert events[-1].summary.snapshot_id == "cafebabe"
        assert events == journal_of(manager).events_since(record.id, 1)

    asyncio.run(main())


def test_watch_unknown_operation_is_not_found(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        with pytest.raises(errors.NotFound):
            await collect(manager, "00000000-0000-0000-0000-000000000000")

    asyncio.run(main())


def test_watch_from_seq_replays_from_there_live_and_finished(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()

        async def job(context: OperationContext) -> Summary:
            for phase in ["a", "b", "c", "d"]:
                context.progress(phase)
            return await gate.job(context)

        record, _ = submit(manager, job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        live_watcher = asyncio.create_task(collect(manager, record.id, from_seq=4))
        await asyncio.sleep(0.02)
        gate.release.set()
        live_items = await live_watcher
        all_events = journal_of(manager).events_since(record.id, 1)
        assert [e.seq for e in all_events] == [1, 2, 3, 4, 5, 6, 7]
        assert events_of(live_items) == all_events[3:]

        finished_items = await collect(manager, record.id, from_seq=5)
        assert finished_items[0].state is OperationState.SUCCEEDED
        assert events_of(finished_items) == all_events[4:]
        # from_seq 0 means from the start; past the end yields the record and still the terminal
        # event, so a follower waiting for the end is never left waiting
        assert events_of(await collect(manager, record.id, from_seq=0)) == all_events
        past_the_end = await collect(manager, record.id, from_seq=99)
        assert past_the_end[0] == finished_items[0] and events_of(past_the_end) == all_events[-1:]
        assert all_events[-1].terminal

    asyncio.run(main())


def test_a_live_follower_asking_past_the_end_gets_the_terminal_event(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()
        record, _ = submit(manager, gate.job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        watcher = asyncio.create_task(collect(manager, record.id, from_seq=1000))
        await asyncio.sleep(0.02)
        gate.release.set()
        events = events_of(await asyncio.wait_for(watcher, 5))
        assert len(events) == 1 and events[0].terminal and events[0].state is OperationState.SUCCEEDED

    asyncio.run(main())


def test_the_terminal_event_carries_the_final_figures(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")

        async def job(context: OperationContext) -> Summary:
            context.progress("upload", bytes_done=10, bytes_total=4000, files_done=1, files_total=3, percent=0.25)
            return Summary(snapshot_id="s", bytes_processed=4000, files_processed=3)

        async def failing(context: OperationContext) -> Summary:
            context.progress("upload", bytes_done=1500, bytes_total=4000, files_done=1, files_total=3, percent=37.5)
            raise errors.Unavailable("the repository went away")

        done, _ = submit(manager, job, request_id="a")
        failed, _ = submit(manager, failing, request_id="b", project_id="22222222-2222-2222-2222-222222222222")
        await wait_terminal(manager, done.id)
        await wait_terminal(manager, failed.id)
        journal = journal_of(manager)
        end = journal.events_since(done.id, 1)[-1]
        assert end.terminal and (end.percent, end.bytes_done, end.bytes_total, end.files_done, end.files_total) == (
            100.0, 4000, 4000, 3, 3)
        end = journal.events_since(failed.id, 1)[-1]
        assert end.terminal and end.state is OperationState.FAILED
        # where it stopped, not zeros and not 100%
        assert (end.percent, end.bytes_done, end.bytes_total, end.files_done) == (37.5, 1500, 4000, 1)

    asyncio.run(main())


def test_two_concurrent_watchers_see_identical_events(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        proceed = asyncio.Event()

        async def job(context: OperationContext) -> Summary:
            await proceed.wait()
            for i in range(20):
                context.progress("scan" if i % 2 else "upload", files_done=i, message=f"step {i}")
                if i % 3 == 0:
                    await asyncio.sleep(0.001)
            return Summary()

        record, _ = submit(manager, job, request_id="a")
        first = asyncio.create_task(collect(manager, record.id))
        second = asyncio.create_task(collect(manager, record.id))
        await asyncio.sleep(0.02)
        proceed.set()
        items1, items2 = await asyncio.gather(first, second)
        events1, events2 = events_of(items1), events_of(items2)
        assert events1 == events2
        assert_well_formed(events1)
        assert len(events1) == 2 + 20 + 1
        assert events1 == journal_of(manager).events_since(record.id, 1)

    asyncio.run(main())


def test_watch_sends_keepalives_while_nothing_happens(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", keepalive_interval=0.05)
        gate = Gate()
        record, _ = submit(manager, gate.job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        items = []
        async with asyncio.timeout(5):
            async for item in manager.watch(record.id, 1):
                items.append(item)
                if item is None and items.count(None) == 2:
                    gate.release.set()
        assert isinstance(items[0], OperationRecord)
        kinds = ["keepalive" if i is None else i.phase for i in items[1:]]
        assert kinds[:2] == ["queue", "start"]
        assert kinds[2:4] == ["keepalive", "keepalive"]
        assert kinds[-1] == "done"
        assert_well_formed(events_of(items))

    asyncio.run(main())


def test_watch_live_operation_beyond_the_memory_window_has_no_gaps(tmp_path, monkeypatch):
    monkeypatch.setattr(operations_module, "LIVE_EVENT_WINDOW", 5)
    monkeypatch.setattr(operations_module, "PROGRESS_INTERVAL", 0.0)

    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()

        async def job(context: OperationContext) -> Summary:
            for i in range(30):
                context.progress("upload", files_done=i)
            return await gate.job(context)

        record, _ = submit(manager, job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        watcher = asyncio.create_task(collect(manager, record.id, from_seq=1))
        await asyncio.sleep(0.02)
        gate.release.set()
        events = events_of(await watcher)
        assert_well_formed(events)
        assert len(events) == 2 + 30 + 1
        assert [e.files_done for e in events if e.phase == "upload"] == list(range(30))

    asyncio.run(main())


def test_watch_finished_operation_reads_the_journal(tmp_path):
    path = tmp_path / "j.db"

    async def first_run():
        manager = make_manager(path)

        async def job(context: OperationContext) -> Summary:
            context.progress("scan", files_total=3)
            context.progress("upload", files_done=3)
            return Summary(snapshot_id="0123abcd", bytes_added=42)

        record, _ = submit(manager, job, request_id="a")
        items = await collect(manager, record.id)
        return record.id, events_of(items)

    operation_id, seen_live = asyncio.run(first_run())
    assert_well_formed(seen_live)

    async def second_run():
        manager = make_manager(path)  # a new process: nothing in memory
        return await collect(manager, operation_id)

    items = asyncio.run(second_run())
    assert isinstance(items[0], OperationRecord)
    assert items[0].state is OperationState.SUCCEEDED
    assert items[0].summary.bytes_added == 42
    assert events_of(items) == seen_live
    assert len(items) == len(seen_live) + 1


# ---------------------------------------------------------------- progress coalescing


def test_rapid_progress_is_coalesced_and_last_figures_published_before_terminal(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")

        async def job(context: OperationContext) -> Summary:
            for i in range(1, 101):
                context.progress("upload", percent=float(i), files_done=i, files_total=100, bytes_done=i * 10)
            return Summary()

        record, _ = submit(manager, job, request_id="a")
        events = events_of(await collect(manager, record.id))
        assert_well_formed(events)
        upload = [e for e in events if e.phase == "upload"]
        assert 1 <= len(upload) <= 5, [e.files_done for e in upload]
        assert upload[0].files_done == 1  # a new phase is published at once
        before_terminal = events[-2]
        assert before_terminal.phase == "upload"
        assert (before_terminal.files_done, before_terminal.percent, before_terminal.bytes_done) == (100, 100.0, 1000)
        assert events[-1].terminal

    asyncio.run(main())


def test_last_progress_before_a_quiet_period_is_published(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()

        async def job(context: OperationContext) -> Summary:
            for i in range(1, 11):
                context.progress("upload", files_done=i)
            return await gate.job(context)

        record, _ = submit(manager, job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        def uploads() -> list[ProgressEvent]:
            return [e for e in journal_of(manager).events_since(record.id, 1) if e.phase == "upload"]

        assert uploads()[-1].files_done == 1  # the rest is held back for now
        # still running, yet the newest figures come out once the interval has passed
        await until(lambda: uploads()[-1].files_done == 10, timeout=operations_module.PROGRESS_INTERVAL + 2)
        upload = uploads()
        assert len(upload) < 10
        assert manager.get(record.id).state is OperationState.RUNNING
        gate.release.set()
        await wait_terminal(manager, record.id)
        events = journal_of(manager).events_since(record.id, 1)
        assert_well_formed(events)
        assert [e.files_done for e in events if e.phase == "upload"] == [e.files_done for e in upload]

    asyncio.run(main())


def test_phase_change_is_published_immediately(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        gate = Gate()

        async def job(context: OperationContext) -> Summary:
            context.progress("scan", files_total=5)
            context.progress("upload", files_done=1)
            return await gate.job(context)

        record, _ = submit(manager, job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        phases = [e.phase for e in journal_of(manager).events_since(record.id, 1)]
        assert phases == ["queue", "start", "scan", "upload"]
        gate.release.set()
        await wait_terminal(manager, record.id)

    asyncio.run(main())


# ---------------------------------------------------------------- recovery at start-up


def _leave_unfinished(path: Path):
    """Simulate an agent that died with one operation RUNNING and one PENDING.

    Runs a manager on its own loop until both are in those states, then closes
    its journal connection (nothing more reaches the file) and stops running
    that loop. Returns (loop, running id, pending id).
    """
    loop = asyncio.new_event_loop()
    journal = Journal(path)
    manager = OperationManager(journal, max_running=1, max_queued=4)

    async def setup():
        never = asyncio.Event()

        async def job(context: OperationContext) -> Summary:
            context.set_recovery(staging=context.operation_id)
            context.progress("restore", percent=40.0)
            await never.wait()
            return Summary()

        running, _ = manager.submit(kind=RESTORE, project_id=P1, request_id="r", params={}, job=job)
        pending, _ = manager.submit(kind=BACKUP, project_id=P2, request_id="b", params={}, job=job)
        await until(lambda: running.state is OperationState.RUNNING)
        await asyncio.sleep(0.01)
        return running.id, pending.id

    running_id, pending_id = loop.run_until_complete(setup())
    journal.close()
    return loop, running_id, pending_id


def _dispose(loop: asyncio.AbstractEventLoop) -> None:
    """Let the dead manager's tasks end (their journal is closed, so they fail) and close the loop."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()

    async def settle() -> None:
        await asyncio.gather(*tasks, return_exceptions=True)

    loop.run_until_complete(settle())
    loop.close()


def test_recover_interrupted_marks_unfinished_operations(tmp_path):
    path = tmp_path / "j.db"
    loop, running_id, pending_id = _leave_unfinished(path)
    try:
        before = Journal(path)
        assert before.get_operation(running_id).state is OperationState.RUNNING
        assert before.get_operation(pending_id).state is OperationState.PENDING
        last_seq_before = before.get_operation(running_id).last_seq
        before.close()

        seen: list[OperationRecord] = []

        def recover(record: OperationRecord) -> str | None:
            seen.append(record)
            return "staging removed during recovery" if record.kind is RESTORE else None

        manager = OperationManager(Journal(path), max_running=1, max_queued=4, recover=recover)
        recovered = manager.recover_interrupted()
        assert {r.id for r in recovered} == {running_id, pending_id}
        assert {r.id for r in seen} == {running_id, pending_id}
        restore_seen = next(r for r in seen if r.id == running_id)
        assert restore_seen.recovery == {"staging": running_id}

        journal = Journal(path)
        ran = journal.get_operation(running_id)
        assert ran.state is OperationState.INTERRUPTED
        assert ran.finished_at is not None
        assert ran.error.code == "ABORTED"
        assert "staging removed during recovery" in ran.error.message
        events = journal.events_since(running_id, 1)
        assert_well_formed(events)
        assert events[-1].seq == last_seq_before + 1
        assert events[-1].state is OperationState.INTERRUPTED
        assert "staging removed during recovery" in events[-1].message
        assert events[-1].error.code == "ABORTED"

        queued = journal.get_operation(pending_id)
        assert queued.state is OperationState.INTERRUPTED
        assert "before this operation started" in queued.error.message
        assert_well_formed(journal.events_since(pending_id, 1))

        assert journal.unfinished_operations() == []
        # a second recovery finds nothing to do
        assert manager.recover_interrupted() == []
        assert len(seen) == 2

        async def watch_it():
            return await collect(manager, running_id)

        items = asyncio.run(watch_it())
        assert items[0].state is OperationState.INTERRUPTED
        assert events_of(items) == events

        # the projects are free again in the new process
        async def submit_again():
            record, joined = submit(manager, Gate(Summary()).job, request_id="new", project_id=P1, kind=RESTORE)
            assert not joined
            await manager.shutdown(1)

        asyncio.run(submit_again())
    finally:
        _dispose(loop)


def test_recover_callback_failure_does_not_stop_recovery(tmp_path):
    path = tmp_path / "j.db"
    loop, running_id, pending_id = _leave_unfinished(path)
    try:
        def recover(record: OperationRecord) -> str | None:
            raise RuntimeError("disk gone")

        manager = OperationManager(Journal(path), max_running=1, max_queued=4, recover=recover)
        recovered = manager.recover_interrupted()
        assert {r.id for r in recovered} == {running_id, pending_id}
        ran = Journal(path).get_operation(running_id)
        assert ran.state is OperationState.INTERRUPTED
        assert "recovery failed: disk gone" in ran.error.message
    finally:
        _dispose(loop)


# ---------------------------------------------------------------- shutdown


def test_shutdown_interrupts_running_and_refuses_new_work(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=4)
        running_gate, pending_gate = Gate(), Gate()
        running, _ = submit(manager, running_gate.job, request_id="a", project_id=P1)
        await asyncio.wait_for(running_gate.started.wait(), 2)
        pending, _ = submit(manager, pending_gate.job, request_id="b", project_id=P2)
        await asyncio.sleep(0.02)

        await manager.shutdown(grace=2)
        for operation_id in (running.id, pending.id):
            record = manager.get(operation_id)
            assert record.state is OperationState.INTERRUPTED, operation_id
            assert record.error.code == "ABORTED"
            assert "shut down" in record.error.message
            events = journal_of(manager).events_since(operation_id, 1)
            assert_well_formed(events)
            assert events[-1].state is OperationState.INTERRUPTED
        assert running_gate.cancelled
        assert pending_gate.calls == 0
        assert manager.counts() == (0, 0)
        assert journal_of(manager).unfinished_operations() == []

        with pytest.raises(errors.Unavailable):
            submit(manager, Gate().job, request_id="c", project_id=P3)
        assert journal_of(manager).find_by_request_id("c") is None

    asyncio.run(main())


# ---------------------------------------------------------------- list


def test_list_paginates_newest_first(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db")
        created = []

        async def quick_job(context: OperationContext) -> Summary:
            return Summary()
        for i in range(5):
            record, _ = submit(manager, quick_job, request_id=f"r{i}", project_id=P1 if i % 2 else P2)
            created.append(record.id)
            await asyncio.sleep(0.002)
        blocker = Gate()
        running, _ = submit(manager, blocker.job, request_id="r5", project_id=P3)
        created.append(running.id)
        await asyncio.wait_for(blocker.started.wait(), 2)
        for record_id in created[:-1]:
            assert (await wait_terminal(manager, record_id)).state is OperationState.SUCCEEDED

        pages, token = [], ""
        while True:
            records, token = manager.list(project_id=None, states=[], page_size=2, page_token=token)
            pages.append([r.id for r in records])
            if not token:
                break
        assert pages == [created[5:3:-1], created[3:1:-1], created[1::-1]]
        flat = [i for page in pages for i in page]
        assert flat == list(reversed(created))

        # the running one is reported with its live state
        first_page, _ = manager.list(project_id=None, states=[], page_size=1, page_token="")
        assert first_page[0].id == running.id and first_page[0].state is OperationState.RUNNING

        only_p1, token = manager.list(project_id=P1, states=[], page_size=10, page_token="")
        assert [r.id for r in only_p1] == [created[3], created[1]] and token == ""
        running_only, _ = manager.list(project_id=None, states=[OperationState.RUNNING], page_size=10, page_token="")
        assert [r.id for r in running_only] == [running.id]

        for bad in ("garbage", "abc:def", "1.5e:"):
            with pytest.raises(errors.InvalidArgument):
                manager.list(project_id=None, states=[], page_size=2, page_token=bad)

        blocker.release.set()
        await wait_terminal(manager, running.id)

    asyncio.run(main())


def test_recover_interrupted_adds_the_notes_given_per_operation(tmp_path):
    """What became of an interrupted operation's repository locks (agent/locks.py) joins the
    recover callback's note in its record and terminal event."""
    path = tmp_path / "j.db"
    loop, running_id, pending_id = _leave_unfinished(path)
    try:
        manager = OperationManager(Journal(path), max_running=1, max_queued=4,
                                   recover=lambda record: "staging removed" if record.id == running_id else None)
        manager.recover_interrupted(notes={running_id: "stale locks removed from repository /r",
                                           "unknown": "ignored"})
        journal = Journal(path)
        ran = journal.get_operation(running_id)
        assert ran.error.message == ("the agent stopped while this operation ran; staging removed; "
                                     "stale locks removed from repository /r")
        assert journal.events_since(running_id, 1)[-1].message == ran.error.message
        assert journal.get_operation(pending_id).error.message == "the agent stopped before this operation started"
    finally:
        _dispose(loop)


def test_the_queue_event_says_waiting_for_a_slot_only_when_every_slot_is_taken(tmp_path):
    async def main():
        manager = make_manager(tmp_path / "j.db", max_running=1, max_queued=4)
        gate = Gate()
        first, _ = submit(manager, gate.job, request_id="a")
        await asyncio.wait_for(gate.started.wait(), 2)
        second, _ = submit(manager, Gate().job, request_id="b", project_id="22222222-2222-2222-2222-222222222222")
        journal = journal_of(manager)
        assert journal.events_since(first.id, 1)[0].message == "starting"
        waiting = journal.events_since(second.id, 1)[0]
        assert waiting.phase == "queue" and waiting.message.startswith("waiting for a free slot (1 operations ahead")
        gate.release.set()
        await wait_terminal(manager, first.id)
        await manager.shutdown(grace=0.1)

    asyncio.run(main())
