"""The host-wide running slots, handed out by priority.

Like an asyncio.Semaphore, except that when slots are short the waiter with the lowest
priority number goes first (ties: first come, first served): operator and hub requests
(priority 0) never wait behind scheduled backups (priority 1) that queued earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from typing import AsyncIterator

OPERATOR = 0
SCHEDULED = 1


class PrioritySlots:
    """Takes the number of slots (>= 1)."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    @property
    def free(self) -> int:
        return self._free

    async def acquire(self, priority: int = OPERATOR) -> None:
        """Wait for a slot; a cancelled waiter takes none (and gives back one handed to it)."""
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        self._hand_out()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot in the same moment it was cancelled
            raise

    def release(self) -> None:
        self._free += 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._free > 0 and self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if future.done():
                continue  # its waiter was cancelled
            self._free -= 1
            future.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = OPERATOR) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
