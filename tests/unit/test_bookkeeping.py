"""agent.bookkeeping: the agent's own walks run in threads of lower CPU priority, nothing else does."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from agent import bookkeeping


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_work_runs_at_the_lower_priority_and_the_rest_of_the_agent_does_not() -> None:
    before = _niceness()
    if before >= bookkeeping.NICENESS:
        pytest.skip(f"this test process already runs at niceness {before}")

    async def main() -> tuple[int, int]:
        walked = await bookkeeping.run(_niceness)
        other = await asyncio.to_thread(_niceness)  # the default executor, where engines' helpers run
        return walked, other

    walked, other = asyncio.run(main())
    assert walked == bookkeeping.NICENESS
    assert other == before
    assert _niceness() == before


def test_an_exception_comes_back_to_the_caller() -> None:
    def fails() -> None:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError, match="gone"):
        asyncio.run(bookkeeping.run(fails))
