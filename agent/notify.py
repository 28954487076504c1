"""The sd_notify protocol, spoken by the agent itself: ready, stopping, alive.

Under ``Type=notify`` systemd counts the agent as started only when it says
``READY=1``, so units ordered after it (and ``systemctl start``) wait until the
gRPC port really answers. ``STOPPING=1`` tells it a stop is under way and not a
crash. With ``WatchdogSec=`` systemd restarts an agent that stops sending
``WATCHDOG=1``; the pings come from a task on the event loop, so a loop that
hangs stops them and gets the agent restarted.

The protocol is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET`` (a path, or an abstract name written ``@name``).
That is small enough to speak here, without python-systemd (a C extension on
every host for a few lines of socket code). Without ``$NOTIFY_SOCKET`` (a run
by hand, the tests, a container) every call is a no-op.

Notifying must never hurt the daemon: a failed send is logged once (and once
more when sending works again) and otherwise ignored; the socket is non-blocking
so a systemd that is slow to read cannot stall the event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["Notifier", "message", "notify_address", "watchdog_interval"]

log = structlog.get_logger("agent.notify")


def notify_address(environ: Mapping[str, str]) -> str | None:
    """Return the address to send notifications to, from ``$NOTIFY_SOCKET`` in ``environ``.

    Returns a file system path as given, an abstract socket name (``@name``)
    as ``"\\0name"`` (how Python's AF_UNIX sockets spell it), or None when the
    variable is unset or empty (not run by systemd: notifying is off).

    Raises:
        ValueError: the address is neither an absolute path nor ``@name``
            (e.g. a ``vsock:`` address, which this agent does not speak).
    """
    value = environ.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r} is neither an absolute path nor an abstract socket (@name)")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Return the seconds between ``WATCHDOG=1`` pings for process ``pid``, or None for no pings.

    systemd passes the watchdog period in ``$WATCHDOG_USEC`` (microseconds)
    and the process it watches in ``$WATCHDOG_PID``. The interval is half the
    period, as sd_watchdog_enabled(3) advises, so one late ping is not fatal.
    None when ``WATCHDOG_USEC`` is unset, not a positive integer, or when
    ``WATCHDOG_PID`` is set and names another process (a child that inherited
    the environment must not ping for its parent). A malformed
    ``WATCHDOG_PID`` also gives None, as in libsystemd.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watched = environ.get("WATCHDOG_PID", "")
    if watched:
        try:
            if int(watched) != pid:
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def message(**fields: str) -> bytes:
    """Return the datagram for ``fields``: ``KEY=value`` lines, e.g. ``message(READY="1", STATUS="ok")``.

    A newline inside a value would start a new assignment, so newlines in
    values become spaces.
    """
    lines = (f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items())
    return "\n".join(lines).encode("utf-8")


class Notifier:
    """Sends sd_notify messages to one socket; every method is a no-op when ``address`` is None.

    Build it with :meth:`from_environ`. Methods return True when the datagram
    was sent, False when notifying is off or the send failed (logged).
    """

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval if address is not None else None
        self._failing = False
        self._watchdog_task: asyncio.Task[None] | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """A notifier for the socket and watchdog that systemd gave this process (``os.environ``,
        ``os.getpid()`` unless given). An address it cannot use is logged and turns notifying off."""
        environ = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        try:
            address = notify_address(environ)
        except ValueError as exc:
            log.warning("systemd.notify_unsupported", reason=str(exc))
            return cls(None)
        notifier = cls(address, watchdog_interval=watchdog_interval(environ, pid))
        if address is not None:
            log.info("systemd.notify_enabled", socket=environ["NOTIFY_SOCKET"],
                     watchdog_interval=notifier.watchdog_interval)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram of ``fields`` (see :func:`message`); never raises."""
        if self.address is None:
            return False
        data = message(**fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Non-blocking: a full receive queue on systemd's side fails this send
                # (EAGAIN, logged) instead of freezing the event loop.
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failing:
                # Once per run of failures: a watchdog ping every few seconds must not flood the log.
                log.warning("systemd.notify_failed", socket=self.address.replace("\0", "@"),
                            fields=sorted(fields), error=str(exc))
                self._failing = True
            return False
        if self._failing:
            log.info("systemd.notify_recovered", socket=self.address.replace("\0", "@"))
            self._failing = False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1`` with ``STATUS=status``: start-up is complete and the agent serves."""
        sent = self.send(READY="1", STATUS=status)
        if sent:
            log.info("systemd.ready", status=status)
        return sent

    def stopping(self, status: str = "stopping") -> bool:
        """``STOPPING=1``: a requested stop has begun (systemd must not read the exit as a crash)."""
        sent = self.send(STOPPING="1", STATUS=status)
        if sent:
            log.info("systemd.stopping", status=status)
        return sent

    def status(self, text: str) -> bool:
        """``STATUS=text``: the line ``systemctl status`` shows."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the agent is alive."""
        return self.send(WATCHDOG="1")

    def start_watchdog(self) -> asyncio.Task[None] | None:
        """Start pinging ``WATCHDOG=1`` every :attr:`watchdog_interval` seconds from a task on the
        running loop (a ping at once, then one per interval); None when there is no watchdog.
        The pings stop with :meth:`stop_watchdog`, or by themselves when the loop stops turning."""
        if self.watchdog_interval is None or self._watchdog_task is not None:
            return self._watchdog_task
        self._watchdog_task = asyncio.get_running_loop().create_task(
            self._ping_forever(self.watchdog_interval), name="systemd-watchdog"
        )
        return self._watchdog_task

    def stop_watchdog(self) -> None:
        """Stop the pings (at shutdown: systemd stops watching once STOPPING=1 arrived)."""
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            self._watchdog_task = None

    async def _ping_forever(self, interval: float) -> None:
        while True:
            self.watchdog()
            await asyncio.sleep(interval)
