"""Counting a servicer's calls in flight, so a graceful stop can wait for them (the agent's and
the hub's servicers both stop this way)."""

from __future__ import annotations

import asyncio


class CallsInFlight:
    """A mixin: :meth:`_enter` / :meth:`_leave` around every call, :meth:`wait_idle` at a stop.
    Call :meth:`_init_in_flight` from ``__init__``."""

    def _init_in_flight(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until none of this servicer's calls is in flight; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
