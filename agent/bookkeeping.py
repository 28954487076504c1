"""Where the agent's own bookkeeping walks run: threads at a lower CPU priority than the engines.

Walks of a project's tree for progress (the staged size of a restore whose engine reports none)
and for changes (the newest mtime/ctime before a restore replaces the project) run beside an
engine that is doing the user's work. On a host with few cores they would take cycles from it;
at ``nice`` :data:`NICENESS` they take the cycles the engine leaves, and still finish long before
it on any host where the engine waits for a disk or a network now and then. Linux applies
``setpriority`` to one thread when given its thread id, so only these threads are lowered.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

NICENESS = 10
WORKERS = 4

T = TypeVar("T")


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except OSError as exc:  # not allowed (a container's policy): the walk runs at normal priority
        log.warning("bookkeeping.priority_unchanged", error=str(exc))


_executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bookkeeping", initializer=_lower_priority)


async def run(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a low-priority thread; its result or its exception."""
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(function, *args))
