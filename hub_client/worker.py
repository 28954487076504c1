"""Work that outlives its starter: a hub process that runs moves and copies under leases and
takes over those whose owner died.

:class:`HubWorker` over a :class:`~hub_client.hub.Hub` (whose ``owner`` and ``leases`` it uses):

* :meth:`HubWorker.run_move` / :meth:`HubWorker.run_copy` run one job to its end under this
  process's lease (claimed first: a job another live process owns is refused with LeaseHeld
  naming it), renewed by a heartbeat and released at the end — what a service's background
  runner calls for a job it accepted;
* :meth:`HubWorker.take_over_lapsed` claims moves and copies whose lease lapsed (their owner died
  or stopped renewing) and resumes each from its recorded step in a thread of its own;
  :meth:`HubWorker.serve` does that every ``leases.scan_seconds`` until stopped
  (``buckets-hub work``).

A taken-over move either completes or fails through the runner's own failure handling (which
thaws the source and keeps the old placement), so no project stays frozen because a hub died.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from hub_client.copying import CopyError
from hub_client.hub import Hub
from hub_client.lease import JobLease
from hub_client.move import MoveError, clean_source
from hub_client.steps import Observer
from hub_client.store import (
    Copy, CopyInProgress, CopyStatus, JobKind, Lease, LeaseLost, Move, MoveInProgress, MoveStatus,
)

log = logging.getLogger("buckets.hub.worker")

DEFAULT_MAX_JOBS = 4


class HubWorker:
    """Runs jobs for ``hub`` under its leases; at most ``max_jobs`` taken-over jobs at once."""

    def __init__(self, hub: Hub, *, max_jobs: int = DEFAULT_MAX_JOBS) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.hub = hub
        self.store = hub.store
        self.max_jobs = max_jobs
        self._threads: dict[str, threading.Thread] = {}
        self._mutex = threading.Lock()

    @property
    def owner(self) -> str:
        return self.hub.owner

    # ------------------------------------------------------------ one job

    def run_move(self, move_id: str, *, observer: Observer | None = None,
                 before_step: Callable[[str], None] | None = None) -> Move:
        """Run the move to its end under this process's lease: start it when pending, resume it
        when running (its owner gone) or failed; then remove the source copy of a completed move.
        Raises LeaseHeld (another live process owns it), MoveInProgress (its project's move lock
        is held), LeaseLost (taken over meanwhile: this process stopped), MoveError (it failed:
        recorded as failed, source thawed), NotFound."""
        lease = self.store.claim_lease(JobKind.MOVE, move_id, self.owner, self.hub.leases.seconds)
        return self._move(lease, observer=observer, before_step=before_step)

    def run_copy(self, copy_id: str, *, observer: Observer | None = None,
                 before_step: Callable[[str], None] | None = None) -> Copy:
        """Run the copy to its end under this process's lease (start or resume); raises as
        :meth:`run_move` (CopyInProgress, CopyError)."""
        lease = self.store.claim_lease(JobKind.COPY, copy_id, self.owner, self.hub.leases.seconds)
        return self._copy(lease, observer=observer, before_step=before_step)

    def _move(self, lease: Lease, *, observer: Observer | None = None,
              before_step: Callable[[str], None] | None = None) -> Move:
        guard = self.hub.job_lease(JobKind.MOVE, lease.job_id, claimed=lease)
        try:
            move = self.store.get_move(lease.job_id)
            runner = self.hub.runner(move.id, observer=observer, before_step=before_step, lease=guard)
            if move.status == MoveStatus.PENDING:
                move = runner.start()
            elif move.active:
                move = runner.resume()
        finally:
            # Not acquired by the runner (its move lock was busy, or it refused): give the claim
            # back, claimable at once while the move still needs an owner.
            guard.release(hand_over=self._needs_owner(JobKind.MOVE, lease.job_id))
        return clean_source(self.store, self.hub.client, move, observer=observer, buckets=self.hub.settings.buckets,
                            timeout=self.hub.settings.operation_timeout)

    def _copy(self, lease: Lease, *, observer: Observer | None = None,
              before_step: Callable[[str], None] | None = None) -> Copy:
        guard = self.hub.job_lease(JobKind.COPY, lease.job_id, claimed=lease)
        try:
            copy = self.store.get_copy(lease.job_id)
            runner = self.hub.copy_runner(copy.id, observer=observer, before_step=before_step, lease=guard)
            if copy.status == CopyStatus.PENDING:
                copy = runner.start()
            elif copy.unfinished:
                copy = runner.resume()
        finally:
            guard.release(hand_over=self._needs_owner(JobKind.COPY, lease.job_id))
        return copy

    def _needs_owner(self, kind: str, job_id: str) -> bool:
        try:
            if kind == JobKind.MOVE:
                return self.store.get_move(job_id).status in (MoveStatus.PENDING, MoveStatus.RUNNING)
            return self.store.get_copy(job_id).status in CopyStatus.BLOCKING
        except Exception:
            return True

    # ------------------------------------------------------------ taking over

    def take_over_lapsed(self) -> list[Lease]:
        """Claim lapsed moves and copies (as many as free job slots) and start resuming each in
        its own thread; returns the claims."""
        claimed: list[Lease] = []
        for kind in (JobKind.MOVE, JobKind.COPY):
            free = self.max_jobs - self.running()
            if free <= 0:
                break
            for lease in self.store.claim_lapsed(kind, self.owner, self.hub.leases.seconds, limit=free):
                log.info("taking over %s %s (claim %d)", kind, lease.job_id, lease.epoch)
                thread = threading.Thread(target=self._resume_claimed, args=(lease,),
                                          name=f"{kind}-{lease.job_id[:8]}", daemon=True)
                with self._mutex:
                    self._threads[f"{kind}:{lease.job_id}"] = thread
                thread.start()
                claimed.append(lease)
        return claimed

    def _resume_claimed(self, lease: Lease) -> None:
        try:
            if lease.kind == JobKind.MOVE:
                job = self._move(lease)
            else:
                job = self._copy(lease)
            log.info("%s %s: %s", lease.kind, lease.job_id, job.status)
        except LeaseLost as exc:
            log.warning("%s", exc)
        except (MoveInProgress, CopyInProgress) as exc:
            # Its previous owner still runs it (alive but late renewing): the claim went back,
            # and a later scan claims it again once that owner has stopped.
            log.info("%s %s still runs elsewhere: %s", lease.kind, lease.job_id, exc)
        except (MoveError, CopyError) as exc:
            log.warning("%s %s failed: %s", lease.kind, lease.job_id, exc)
        except Exception:
            log.exception("%s %s: unexpected error", lease.kind, lease.job_id)
        finally:
            with self._mutex:
                self._threads.pop(f"{lease.kind}:{lease.job_id}", None)

    def running(self) -> int:
        """Taken-over jobs still running in this process."""
        with self._mutex:
            return len(self._threads)

    def serve(self, stop: threading.Event) -> None:
        """Take over lapsed work every ``scan_seconds`` until ``stop`` is set; then wait for the
        jobs running here to end."""
        log.info("hub worker %s: lease %.1f s, heartbeat %.1f s, scan every %.1f s", self.owner,
                 self.hub.leases.seconds, self.hub.leases.heartbeat_seconds, self.hub.leases.scan_seconds)
        while not stop.is_set():
            try:
                self.take_over_lapsed()
            except Exception as exc:  # the store unreachable for a moment: scan again later
                log.warning("scanning for lapsed leases failed: %s", exc)
            stop.wait(self.hub.leases.scan_seconds)
        self.join()

    def join(self) -> None:
        """Wait for the taken-over jobs running in this process."""
        while True:
            with self._mutex:
                threads = list(self._threads.values())
            if not threads:
                return
            for thread in threads:
                thread.join()


__all__ = ["DEFAULT_MAX_JOBS", "HubWorker", "JobLease"]
