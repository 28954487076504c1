"""A hub process's hold on one move or copy: its lease in the store, renewed by a heartbeat
thread while the job runs, checked before each step, released at the end.

How the lease and the project's move lock work together (see also the store's ``Store`` docs):

* the *move lock* is held while a process executes the job's steps; the database (advisory
  lock) or the kernel (flock) drops it the moment that process dies. It guarantees that at most
  one process executes steps at any instant, but leaves no trace once its holder is gone;
* the *lease* records who owns the job and until when. A process that dies stops renewing it;
  once it lapses, a worker's scan claims it and resumes the job from its recorded step. The
  claim bumps the lease's epoch, so the previous owner — if it was only slow (paused,
  cut off from the database) — fails its next renew or step check and stops acting on the job
  (no further step, no undo of the new owner's work). Until it stops it still holds the move
  lock, so the new owner cannot start meanwhile: it hands the lease back and claims it again on
  a later scan.

Each runner acquires its lease *inside* the move lock. Holding that lock proves no live process
is executing the job, so an explicit command (``buckets resume``) may take the lease over at once
even before it lapses; a worker's scan only ever claims lapsed leases.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

from hub_client.store import Lease, LeaseLost, Store

log = logging.getLogger("buckets.hub.lease")

DEFAULT_LEASE_SECONDS = 15.0


@dataclass(frozen=True)
class LeaseSettings:
    """``seconds``: how long a claim or renew holds; ``heartbeat``: seconds between renews
    (default a third of the lease, so two renews may fail before it lapses); ``scan``: seconds
    between a worker's scans for lapsed leases (default the heartbeat, at most 1: a scan is one
    indexed UPDATE per job kind, and the scan interval adds to every takeover's delay). A dead
    owner's job is resumed within about ``seconds + scan`` of its last renew."""

    seconds: float = DEFAULT_LEASE_SECONDS
    heartbeat: float | None = None
    scan: float | None = None

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"lease seconds must be positive, got {self.seconds}")
        for name in ("heartbeat", "scan"):
            value = getattr(self, name)
            if value is not None and not 0 < value:
                raise ValueError(f"lease {name} seconds must be positive, got {value}")
        if self.heartbeat is not None and self.heartbeat >= self.seconds:
            raise ValueError(f"the heartbeat ({self.heartbeat} s) must be shorter than the lease ({self.seconds} s)")

    @property
    def heartbeat_seconds(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.seconds / 3

    @property
    def scan_seconds(self) -> float:
        return self.scan if self.scan is not None else min(1.0, self.heartbeat_seconds)


def new_owner() -> str:
    """A lease owner id unique to this process (and this start of it): host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobLease:
    """One runner's lease of job ``kind``/``job_id`` for ``owner``.

    ``claimed``: a lease this owner claimed already (a worker's scan, :meth:`HubWorker.run_move`);
    :meth:`acquire` then confirms it is still this owner's. Without it, :meth:`acquire` takes the
    lease over (the caller holds the project's move lock). Thread-safe: the heartbeat thread and
    the runner renew the same claim.
    """

    def __init__(self, store: Store, kind: str, job_id: str, owner: str, settings: LeaseSettings, *,
                 claimed: Lease | None = None) -> None:
        self.store = store
        self.kind = kind
        self.job_id = job_id
        self.owner = owner
        self.settings = settings
        self._lease = claimed
        self._lost: LeaseLost | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False

    @property
    def lease(self) -> Lease | None:
        return self._lease

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def acquire(self) -> Lease:
        """Claim (or confirm) the lease and start the heartbeat; raises LeaseLost when a claimed
        lease was taken over meanwhile."""
        with self._mutex:
            if self._lease is None:
                self._lease = self.store.claim_lease(self.kind, self.job_id, self.owner, self.settings.seconds,
                                                     take_over=True)
            else:
                self._renew_locked()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.kind}-{self.job_id[:8]}", daemon=True)
        self._thread.start()
        return self._lease

    def check(self) -> None:
        """The fence before each step: renew now, and raise LeaseLost if this owner lost the job."""
        with self._mutex:
            if self._lost is not None:
                raise self._lost
            self._renew_locked()

    def _renew_locked(self) -> None:
        assert self._lease is not None
        try:
            self._lease = self.store.renew_lease(self._lease, self.settings.seconds)
        except LeaseLost as exc:
            self._lost = exc
            raise

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with self._mutex:
                    if self._lost is not None:
                        return
                    self._renew_locked()
            except LeaseLost as exc:
                log.warning("%s; stopping at its next step", exc)
                return
            except Exception as exc:  # the store unreachable for a moment: the next beat tries again
                log.warning("renewing the lease of %s %s failed: %s", self.kind, self.job_id, exc)

    def release(self, *, hand_over: bool) -> None:
        """Stop the heartbeat and end this owner's claim (``hand_over``: the job still needs an
        owner, so it is claimable at once). Idempotent; a lost lease is left alone."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if self._done or self._lease is None or self._lost is not None:
                self._done = True
                return
            self._done = True
            try:
                self.store.release_lease(self._lease, hand_over=hand_over)
            except Exception as exc:  # the database unreachable: the lease lapses by itself
                log.warning("releasing the lease of %s %s failed (it lapses by itself): %s", self.kind,
                            self.job_id, exc)
