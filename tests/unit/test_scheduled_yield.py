"""Scheduled backups yield to requests (agent.operations with yields=True, agent.slots): a
queued one is superseded, a running one is waited for by the request's Backup, which then runs
its own job; slots go to requests before scheduled work. In-process, real Journal, fake jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import errors
from agent.journal import Journal
from agent.model import OperationKind, OperationState, Summary
from agent.operations import OperationManager
from agent.slots import OPERATOR, SCHEDULED, PrioritySlots
from tests.unit.test_operations_manager import Gate

BACKUP = OperationKind.BACKUP
RESTORE = OperationKind.RESTORE
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
        # Other kinds still conflict, naming the request that waits.
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
