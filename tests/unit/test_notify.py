"""Tests of agent.notify: the sd_notify datagrams reach a real AF_UNIX socket, the environment is read
as systemd writes it, and a notifier never raises."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
import structlog.testing

from agent.notify import Notifier, message, notify_address, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path):
    """A datagram socket bound in tmp_path, as systemd's notify socket is; yields (socket, its path)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``, without waiting."""
    received = []
    sock.setblocking(False)
    try:
        while True:
            received.append(sock.recv(4096))
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(5)


# ------------------------------------------------------------ pure helpers


def test_notify_address_path_abstract_and_unset():
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/123"}) == (
        "\0/org/freedesktop/systemd1/notify/123"
    )
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": ""}) is None


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify", "@"])
def test_notify_address_rejects_what_it_cannot_use(value):
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        notify_address({"NOTIFY_SOCKET": value})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),  # half of WatchdogSec=30
        ({"WATCHDOG_USEC": "400000"}, 0.2),  # no WATCHDOG_PID: the watchdog is ours
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # meant for another process
        ({"WATCHDOG_PID": "42"}, None),  # watchdog off
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "forty-two"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ, expected):
    assert watchdog_interval(environ, pid=42) == expected


def test_message_lines_and_newlines_in_values():
    assert message(READY="1", STATUS="serving") == b"READY=1\nSTATUS=serving"
    # A newline in a value would smuggle in another assignment (here: a fake READY).
    assert message(STATUS="bad\nREADY=1") == b"STATUS=bad READY=1"


# ------------------------------------------------------------ a real socket


def test_notifier_sends_each_message_to_a_path_socket(listener):
    sock, path = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path}, pid=os.getpid())
    assert notifier.enabled and notifier.watchdog_interval is None

    assert notifier.ready("serving on 127.0.0.1:50051")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:50051"
    assert notifier.status("2 operations running")
    assert sock.recv(4096) == b"STATUS=2 operations running"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping("stopping")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_notifier_sends_to_an_abstract_socket():
    name = f"buckets-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}, pid=1)
        assert notifier.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "400000"}, pid=1)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None  # no socket, nothing to ping
    assert not notifier.ready("up") and not notifier.watchdog() and not notifier.stopping()

    async def main():
        assert notifier.start_watchdog() is None
        notifier.stop_watchdog()

    asyncio.run(main())


def test_an_unusable_address_turns_notifying_off_with_a_log_line():
    with structlog.testing.capture_logs() as logs:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}, pid=1)
    assert not notifier.enabled and not notifier.ready("up")
    assert [e["event"] for e in logs] == ["systemd.notify_unsupported"]


def test_send_failures_are_logged_once_and_never_raise(tmp_path, listener):
    sock, path = listener
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    with structlog.testing.capture_logs() as logs:
        assert notifier.ready("up") is False
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert [e["event"] for e in logs] == ["systemd.notify_failed"]

    # The socket comes back (systemd re-executed): one line says so, and sending works.
    notifier.address = path
    with structlog.testing.capture_logs() as logs:
        assert notifier.watchdog() and notifier.watchdog()
    assert [e["event"] for e in logs] == ["systemd.notify_recovered"]
    assert pending(sock) == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_a_full_socket_fails_the_send_instead_of_blocking(listener):
    sock, path = listener
    notifier = Notifier(path)
    started = time.monotonic()
    results = [notifier.send(STATUS="x" * 1024) for _ in range(2000)]  # far beyond the receive queue
    assert results[0] and not results[-1]
    assert time.monotonic() - started < 5  # returned at once: would hang forever on a blocking socket


# ------------------------------------------------------------ the watchdog task


def test_watchdog_pings_while_the_loop_turns_and_stops_when_told(listener):
    sock, path = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"}, pid=os.getpid())
    assert notifier.watchdog_interval == 0.01

    async def main():
        task = notifier.start_watchdog()
        assert task is not None and notifier.start_watchdog() is task  # one task, however often started
        while len(pending_pings) < 3:
            pending_pings.extend(pending(sock))
            await asyncio.sleep(0.01)
        # A blocked loop sends nothing: the pings come from the loop itself.
        pending_pings.extend(pending(sock))
        time.sleep(0.2)
        assert pending(sock) == []
        await asyncio.sleep(0)  # let the pending ping go
        notifier.stop_watchdog()
        await asyncio.sleep(0)
        assert task.cancelled()
        pending(sock)
        await asyncio.sleep(0.1)
        assert pending(sock) == []  # stopped: no more pings

    pending_pings: list[bytes] = []
    asyncio.run(main())
    assert set(pending_pings) == {b"WATCHDOG=1"}


def test_no_watchdog_task_when_the_watchdog_is_off(listener):
    _sock, path = listener

    async def main():
        return Notifier.from_environ({"NOTIFY_SOCKET": path}, pid=1).start_watchdog()

    assert asyncio.run(main()) is None
