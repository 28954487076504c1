"""Keeping the store's freshness figures current: every ``interval`` seconds the service asks
each host's agent for all its projects' last backup and last change
(:meth:`hub_client.hub.Hub.refresh_hosts`, recorded through :mod:`hub_client.freshness`), so a
reachable host's figures are never older than the interval plus one round of calls. Refresh
does the same on demand. A host that does not answer keeps its last figures, which age past the
configured bound and are then reported stale (:func:`hub_client.service.convert.is_stale`)."""

from __future__ import annotations

import threading

import structlog

from hub_client.hub import Hub

log = structlog.get_logger("hub.freshness")


class FreshnessPoller:
    """Polls on its own thread until :meth:`stop`; ``interval`` 0: never (Refresh only)."""

    def __init__(self, hub: Hub, interval: float) -> None:
        self.hub = hub
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="hub-freshness", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                answered = self.hub.refresh_hosts()
                self.rounds += 1
                down = sorted(host for host, up in answered.items() if not up)
                if down:
                    log.warning("freshness.unreachable", hosts=down)
            except Exception:
                log.exception("freshness.poll_failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
