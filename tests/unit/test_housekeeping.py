"""Background work after an operation's result: it runs, its failure is logged (never raised
into the event loop), and drain waits for it, up to a limit."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from agent.housekeeping import Housekeeping


def test_work_runs_in_the_background_and_drain_waits_for_it() -> None:
    done: list[str] = []

    async def main() -> tuple[int, int, bool]:
        housekeeping = Housekeeping()
        release = asyncio.Event()

        async def remove(name: str) -> None:
            await release.wait()
            done.append(name)

        housekeeping.later("first", remove("a"))
        housekeeping.later("second", remove("b"))
        await asyncio.sleep(0)
        pending_before = housekeeping.pending
        assert done == []  # later() returned at once: nothing waited for the work
        release.set()
        settled = await housekeeping.drain(timeout=10)
        return pending_before, housekeeping.pending, settled

    assert asyncio.run(main()) == (2, 0, True)
    assert sorted(done) == ["a", "b"]


def test_a_failure_is_logged_and_the_others_still_run() -> None:
    async def main() -> bool:
        housekeeping = Housekeeping()

        async def fail() -> None:
            raise OSError(16, "Device or resource busy")

        async def fine() -> None:
            await asyncio.sleep(0.01)

        housekeeping.later("remove the old trees of restore op-1", fail())
        housekeeping.later("other", fine())
        return await housekeeping.drain(timeout=10)

    with capture_logs() as logs:
        assert asyncio.run(main()) is True
    failures = [entry for entry in logs if entry["event"] == "housekeeping.failed"]
    assert [(f["what"], f["error"]) for f in failures] == [
        ("remove the old trees of restore op-1", "[Errno 16] Device or resource busy")]


def test_drain_gives_up_after_its_timeout() -> None:
    async def main() -> tuple[bool, int]:
        housekeeping = Housekeeping()
        housekeeping.later("stuck", asyncio.sleep(30))
        settled = await housekeeping.drain(timeout=0.05)
        return settled, housekeeping.pending

    assert asyncio.run(main()) == (False, 1)
