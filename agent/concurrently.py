"""Running a few awaitables together so that a failure surfaces as the error it is.

``asyncio.TaskGroup`` wraps a failure in an ExceptionGroup, which the agent's one error mapping
(:mod:`agent.errors`, :mod:`agent.status_codes`) does not know; :func:`first_error` raises the
first failure itself and cancels the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_error(*awaitables: Awaitable[Any]) -> list[Any]:
    """The results of ``awaitables``, run together, in their order. The first to fail has the
    others cancelled (and waited for) and its own error raised as it is."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
