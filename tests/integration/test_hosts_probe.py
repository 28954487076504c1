"""`buckets hosts` probes every host at once, each with one short deadline: hosts that never
answer are all being waited for together, not one after another.

No timing is asserted. Each fake host is a TCP listener that takes the client's HTTP/2 connection
(the preface, an empty SETTINGS and the ACK of the client's: the channel is ready and the call is
sent) and then never answers the call; it records when each connection opens and when the client
gives its call up (RST_STREAM at the deadline, GOAWAY or EOF when the channel closes). Probed in
parallel, every host has been dialled before the first call is given up; probed one at a time, the
first call is given up at its deadline before the second host is dialled.

(A listener that sends nothing at all would not tell the two apart: gRPC keeps a connection that
never finished its handshake open until the process exits, after the channel is closed.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from hub_client.hub import Hub
from hub_client.store import open_store
from tests.harness import REPO_ROOT

HOSTS = 4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, SETTINGS_ACK = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
RST_STREAM, GOAWAY = 0x3, 0x7


def frame_types(buffer: bytearray) -> list[int]:
    """The types of the whole HTTP/2 frames at the start of ``buffer``, removed from it (a
    partial frame stays for the next read)."""
    types = []
    while len(buffer) >= 9:
        length = int.from_bytes(buffer[:3], "big")
        if len(buffer) < 9 + length:
            break
        types.append(buffer[3])
        del buffer[:9 + length]
    return types


class SilentHosts:
    """``count`` listeners on 127.0.0.1 that take gRPC connections and never answer a call;
    ``events`` is the ordered list of ``("open" | "gave-up", host index)``."""

    def __init__(self, count: int) -> None:
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners = []
        self._threads = []
        for index in range(count):
            listener = socket.create_server(("127.0.0.1", 0))
            listener.settimeout(0.2)
            self._listeners.append(listener)
            self._start(self._accept, listener, index)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{listener.getsockname()[1]}" for listener in self._listeners]

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _record(self, kind: str, index: int) -> None:
        with self._lock:
            self.events.append((kind, index))

    def _accept(self, listener: socket.socket, index: int) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self._record("open", index)
            self._start(self._serve, conn, index)

    def _serve(self, conn: socket.socket, index: int) -> None:
        """Answer the connection's setup, never a call; record the client's giving up once."""
        conn.settimeout(0.2)
        buffer, preface_seen, given_up = bytearray(), False, False
        with conn:
            while not self._stopping.is_set():
                try:
                    data = conn.recv(65536)
                except (TimeoutError, socket.timeout):
                    continue
                except OSError:
                    data = b""
                if data == b"":
                    break
                buffer += data
                if not preface_seen and len(buffer) >= len(PREFACE):
                    assert bytes(buffer[:len(PREFACE)]) == PREFACE, bytes(buffer[:len(PREFACE)])
                    del buffer[:len(PREFACE)]
                    preface_seen = True
                    conn.sendall(SETTINGS + SETTINGS_ACK)
                if preface_seen and not given_up and {RST_STREAM, GOAWAY} & set(frame_types(buffer)):
                    given_up = True
                    self._record("gave-up", index)
            if not given_up and not self._stopping.is_set():
                self._record("gave-up", index)

    def stop(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


def dialled_before_first_give_up(events: list[tuple[str, int]]) -> set[int]:
    """The hosts whose connection was opened before any call was given up."""
    opened = set()
    for kind, index in events:
        if kind == "gave-up":
            break
        opened.add(index)
    return opened


def test_hosts_probes_every_silent_host_at_once_and_marks_each_unreachable(tmp_path: Path) -> None:
    silent = SilentHosts(HOSTS)
    store_path = tmp_path / "hub.sqlite"
    names = [f"silent-{index}" for index in range(HOSTS)]
    try:
        store = open_store(str(store_path))
        try:
            hub = Hub(store)
            for name, address in zip(names, silent.addresses):
                hub.add_host(name, address, "eu")
        finally:
            store.close()
        listed = subprocess.run([sys.executable, "-m", "hub_client", "--store", str(store_path), "hosts"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        events = list(silent.events)
    finally:
        silent.stop()

    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert sorted(lines) == names, listed.stdout
    for name in names:
        assert "UNREACHABLE" in lines[name].split(), lines[name]
    assert {index for kind, index in events if kind == "open"} == set(range(HOSTS)), events  # every host dialled
    assert {index for kind, index in events if kind == "gave-up"} == set(range(HOSTS)), events  # every call ended
    # All waited for together: every host was dialled before the first call was given up.
    assert dialled_before_first_give_up(events) == set(range(HOSTS)), events
