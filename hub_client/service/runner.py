"""Moves and copies started over the API run here, in this process's threads, never inside an RPC.

:func:`run_job` is the single entry point that runs one move or copy by id (start, resume or
retry); :class:`Runner` owns the thread pool that calls it and knows which jobs this process is
running now. Whatever a job's steps decide (done, failed and undone, refused) the library
records in the store and the job's log; an exception that escapes here (another process holds
the project's move lock, a store outage) is logged, and the job stays as recorded, to be resumed.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import structlog

from agent.errors import Conflict
from hub_client.hub import Hub
from hub_client.steps import JobError, Observer
from hub_client.store import CopyInProgress, MoveInProgress

log = structlog.get_logger("hub.runner")

MOVE, COPY = "move", "copy"
HOWS = ("start", "resume", "retry")


def run_job(hub: Hub, kind: str, job_id: str, how: str, *, force: bool | None = None,
            force_target: bool | None = None, observer: Observer | None = None) -> None:
    """Run the move or copy ``job_id`` (``kind``) to its end, as ``how`` says: ``start`` (a
    pending job from its preflight), ``resume`` (where it stopped), ``retry`` (a failed move from
    preflight, with ``force`` and ``force_target`` when given; a copy's retry is its resume, which starts a failed copy
    again from preflight). ``observer`` sees each log entry as it is written. A finished move's
    source copy is removed right away (or left pending for the next cleanup when that fails).
    Raises what the library raises."""
    if kind == MOVE:
        if how == "start":
            hub.start_move(job_id, observer=observer)
        elif how == "resume":
            hub.resume(job_id, observer=observer)
        else:
            hub.retry(job_id, force=force, force_target=force_target, observer=observer)
    elif kind == COPY:
        if how == "start":
            hub.copy_runner(job_id, observer=observer).start()
        else:
            hub.resume_copy(job_id, observer=observer)
    else:
        raise ValueError(f"unknown job kind {kind!r}")


class Runner:
    """Runs jobs with ``run`` (default :func:`run_job`) on ``workers`` threads; at most one run
    of a job at a time in this process."""

    def __init__(self, hub: Hub, workers: int, run: Callable[..., None] = run_job) -> None:
        self.hub = hub
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub-job")
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}

    def submit(self, kind: str, job_id: str, how: str, *, force: bool | None = None,
               force_target: bool | None = None) -> threading.Event:
        """Queue the job; returns an event set once its attempt has begun (its first log entry is
        written: the job is recorded running) or it ended without one. Raises
        agent.errors.Conflict (ABORTED) when this process runs it already."""
        if how not in HOWS:
            raise ValueError(f"unknown way to run a job: {how!r}")
        begun = threading.Event()
        with self._lock:
            if job_id in self._running:
                raise Conflict(f"{kind} {job_id} is running in this hub process already")
            self._running[job_id] = future = self._pool.submit(self._guarded, kind, job_id, how, force, force_target,
                                                                   begun)
        future.add_done_callback(lambda _: (self._done(job_id), begun.set()))
        return begun

    def running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running

    def active(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def _done(self, job_id: str) -> None:
        with self._lock:
            self._running.pop(job_id, None)

    def _guarded(self, kind: str, job_id: str, how: str, force: bool | None, force_target: bool | None,
                 begun: threading.Event) -> None:
        log.info("job.started", kind=kind, job_id=job_id, how=how)
        try:
            self._run(self.hub, kind, job_id, how, force=force, force_target=force_target,
                      observer=lambda _entry: begun.set())
        except JobError as exc:  # recorded in the store and the job's log by the library
            log.info("job.failed", kind=kind, job_id=job_id, error=str(exc))
        except (MoveInProgress, CopyInProgress) as exc:
            log.warning("job.not_run", kind=kind, job_id=job_id, reason=str(exc))
        except Exception:
            log.exception("job.crashed", kind=kind, job_id=job_id)
        else:
            log.info("job.ended", kind=kind, job_id=job_id)

    def shutdown(self, wait: bool) -> None:
        """Stop taking jobs; ``wait``: until the running ones end."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
