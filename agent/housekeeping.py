"""Work that follows an operation's result but is not part of it, run in the background.

A restore's project is in place once its staged trees are swapped in; removing the old trees
(hundreds of megabytes on a large project) is only reclaiming space, and the operation answers
without waiting for it. Nothing here is needed for correctness: what a stopped agent leaves
undone is staging that :meth:`~agent.backends.base.Backend.remove_stale` removes at the next start.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Coroutine

import structlog

log = structlog.get_logger("agent.housekeeping")



async def run_to_end(cleanup: Awaitable, *, failure_event: str) -> None:
    """Await ``cleanup`` to its end even when the calling task is cancelled meanwhile (the
    cancellation is raised afterwards): an operation's staging must be gone when it ends. A
    failure is logged as ``failure_event``, never raised over the operation's own outcome (the next
    start removes leftovers)."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if not task.cancelled() and task.exception() is not None:
        log.warning(failure_event, error=str(task.exception()))
    if cancelled:
        raise asyncio.CancelledError

class Housekeeping:
    """Background tasks of the agent's event loop, each logged when it fails; ``drain`` waits
    for them (at shutdown, and wherever a caller needs the host settled)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def later(self, what: str, work: Coroutine[object, object, object]) -> None:
        """Run ``work`` in the background; ``what`` names it in the log."""
        task = asyncio.get_running_loop().create_task(self._run(what, work), name=f"housekeeping: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every task has ended (``timeout`` seconds at most); True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._tasks:  # work may add work: wait again until none is left, within the one deadline
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(set(self._tasks), timeout=left)
            if not done:
                return False
        return True

    @staticmethod
    async def _run(what: str, work: Coroutine[object, object, object]) -> None:
        started = time.monotonic()
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failure here loses nothing: the next start cleans up
            log.warning("housekeeping.failed", what=what, error=str(exc) or type(exc).__name__)
        else:
            log.info("housekeeping.done", what=what, seconds=round(time.monotonic() - started, 3))
