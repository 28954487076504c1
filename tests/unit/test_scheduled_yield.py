"""Scheduled backups yield to requests (agent.operations with yields=True, agent.slots): a
queued one is superseded, a running one is waited for by the request's Backup, which then runs
its own job, and cancelled by a request of another kind, which runs once it has ended; slots go
to requests before scheduled work. In-process, real Journal, fake jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import errors
from agent.journal import Journal
from agent.model import OperationKind, OperationState, Summary
from agent.operations import OperationManager, Yielding, yielding
from agent.slots import OPERATOR, SCHEDULED, PrioritySlots
from tests.unit.test_operations_manager import Gate

BACKUP = OperationKind.BACKUP
RESTORE = OperationKind.RESTORE
DELETE = OperationKind.DELETE
P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"


def manager(tmp_path: Path, max_running: int = 2) -> OperationManager:
    return OperationManager(Journal(tmp_path / "j.sqlite"), max_running=max_running, max_queued=16)


def submit(ops: OperationManager, gate: Gate, *, project=P1, kind=BACKUP, yields=False, purpose="backup",
           request_id=None):
    return ops.submit(kind=kind, project_id=project, request_id=request_id or f"{purpose}-{id(gate)}",
                      params={"purpose": purpose}, job=gate.job, joinable=True, yields=yields)


def test_a_queued_scheduled_backup_is_superseded_by_a_request_and_never_runs(tmp_path):
    async def main():
        ops = manager(tmp_path, max_running=1)
        blocker, scheduled, hub = Gate(), Gate(), Gate()
        submit(ops, blocker, project=P2)
        await blocker.started.wait()
        queued, _ = submit(ops, scheduled, yields=True, purpose="scheduled")
        await asyncio.sleep(0.01)
        assert ops.get(queued.id).state is OperationState.PENDING
        record, joined = submit(ops, hub, purpose="move")
        assert not joined and record.id != queued.id
        old = ops.get(queued.id)
        assert old.state is OperationState.CANCELLED and record.id in old.error.message
        blocker.release.set()
        hub.release.set()
        assert (await ops.wait(record.id)).state is OperationState.SUCCEEDED
        assert scheduled.calls == 0 and hub.calls == 1
        assert ops._slots.free == 1  # the superseded one took no slot with it
    asyncio.run(main())


def test_a_backup_request_waits_for_a_running_scheduled_one_then_runs_its_own_job(tmp_path):
    async def main():
        ops = manager(tmp_path)
        scheduled, hub = Gate(Summary(snapshot_id="aaaaaaaa")), Gate(Summary(snapshot_id="bbbbbbbb"))
        first, _ = submit(ops, scheduled, yields=True, purpose="scheduled")
        await scheduled.started.wait()
        record, joined = submit(ops, hub, purpose="move")
        assert not joined and record.state is OperationState.PENDING
        # A retry of the same request joins the request's operation, not the scheduled one.
        again, joined = submit(ops, hub, purpose="move", request_id="another")
        assert joined and again.id == record.id
        # Behind the waiting request, other kinds conflict with it, naming it.
        with pytest.raises(errors.Conflict, match=record.id):
            submit(ops, Gate(), kind=RESTORE)
        await asyncio.sleep(0.05)
        assert hub.calls == 0  # never two jobs of one project at once
        scheduled.release.set()
        await hub.started.wait()
        assert ops.get(first.id).state is OperationState.SUCCEEDED
        hub.release.set()
        final = await ops.wait(record.id)
        assert final.state is OperationState.SUCCEEDED and final.summary.snapshot_id == "bbbbbbbb"
    asyncio.run(main())


def test_a_scheduled_backup_does_not_supersede_or_follow_another_operation(tmp_path):
    async def main():
        ops = manager(tmp_path)
        running = Gate()
        submit(ops, running, purpose="backup")
        await running.started.wait()
        with pytest.raises(errors.Conflict):
            submit(ops, Gate(), yields=True, purpose="scheduled")
        running.release.set()
    asyncio.run(main())


def test_requests_get_slots_before_scheduled_work_that_queued_earlier():
    async def main():
        slots = PrioritySlots(1)
        await slots.acquire(OPERATOR)
        order = []

        async def take(name, priority):
            async with slots.slot(priority):
                order.append(name)

        tasks = [asyncio.create_task(take("scheduled", SCHEDULED))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(take("operator", OPERATOR)))
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        assert order == ["operator", "scheduled"]
        assert slots.free == 1
    asyncio.run(main())


def test_a_cancelled_waiter_takes_no_slot():
    async def main():
        slots = PrioritySlots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire(SCHEDULED))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        slots.release()
        assert slots.free == 1
        # Handed a slot and cancelled in the same moment: it gives the slot back.
        await slots.acquire()
        late = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # hands the slot to ``late``
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)
        assert slots.free == 1
    asyncio.run(main())


@pytest.mark.parametrize("state, kind, expected", [
    (OperationState.PENDING, RESTORE, Yielding.SUPERSEDE),
    (OperationState.PENDING, BACKUP, Yielding.SUPERSEDE),
    (OperationState.RUNNING, BACKUP, Yielding.FOLLOW),
    (OperationState.CANCELLING, RESTORE, Yielding.FOLLOW),
    (OperationState.RUNNING, RESTORE, Yielding.CANCEL),
    (OperationState.RUNNING, DELETE, Yielding.CANCEL),
    (OperationState.RUNNING, OperationKind.ENSURE, Yielding.CANCEL),
    (OperationState.RUNNING, OperationKind.FORGET, Yielding.CANCEL),
    (OperationState.RUNNING, OperationKind.VERIFY, Yielding.CANCEL),
])
def test_how_a_request_gets_past_a_scheduled_backup(state, kind, expected):
    assert yielding(scheduled_state=state, scheduled_kind=BACKUP, kind=kind) is expected


class SlowToStop(Gate):
    """A job that, cancelled, takes until ``stopped`` is set to end (an engine being stopped)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = asyncio.Event()

    async def job(self, context):
        try:
            return await super().job(context)
        except asyncio.CancelledError:
            await self.stopped.wait()
            raise


@pytest.mark.parametrize("kind", [RESTORE, DELETE, OperationKind.ENSURE])
def test_a_request_of_another_kind_cancels_a_running_scheduled_backup_and_runs_once_it_ended(tmp_path, kind):
    async def main():
        ops = manager(tmp_path)
        scheduled, request = SlowToStop(), Gate()
        first, _ = submit(ops, scheduled, yields=True, purpose="scheduled")
        await scheduled.started.wait()
        record, joined = submit(ops, request, kind=kind, purpose="hub")
        assert not joined and record.state is OperationState.PENDING
        await asyncio.sleep(0.05)
        assert scheduled.cancelled and ops.get(first.id).state is OperationState.CANCELLING
        assert request.calls == 0  # never beside the scheduled job, which is still stopping
        # A second scheduled backup meanwhile conflicts with the request (never two jobs at once).
        with pytest.raises(errors.Conflict, match=record.id):
            submit(ops, Gate(), yields=True, purpose="scheduled-again")
        scheduled.stopped.set()
        await request.started.wait()
        ended = ops.get(first.id)
        assert ended.state is OperationState.CANCELLED
        assert record.id in ended.error.message and kind.value in ended.error.message
        request.release.set()
        assert (await ops.wait(record.id)).state is OperationState.SUCCEEDED
        assert ops._slots.free == 2
    asyncio.run(main())


def test_a_refused_request_cancels_nothing(tmp_path):
    async def main():
        ops = OperationManager(Journal(tmp_path / "j.sqlite"), max_running=1, max_queued=0)
        scheduled = Gate()
        first, _ = submit(ops, scheduled, yields=True, purpose="scheduled")
        await scheduled.started.wait()
        with pytest.raises(errors.ResourceExhausted):
            submit(ops, Gate(), kind=RESTORE, purpose="hub")
        await asyncio.sleep(0.01)
        assert not scheduled.cancelled and ops.get(first.id).state is OperationState.RUNNING
        scheduled.release.set()
        assert (await ops.wait(first.id)).state is OperationState.SUCCEEDED
    asyncio.run(main())
