"""Writer processes for tests that race a freeze: each appends numbered lines to a file in a
project, fsyncs, and only then records the line in a ledger OUTSIDE the project. The ledger is
the ground truth of what the writer saw acknowledged: after a freeze, a move or a crash, every
ledger line must be in the project's file.

Kinds (``python -I tests/writers.py KIND TARGET LEDGER [INTERVAL [ignore-term]]``, standard
library only; ``ignore-term``: SIGTERM is ignored, only SIGKILL stops it):

- ``reopen``: opens the log for appending for every line, writes, fsyncs, closes; stops at the
  first error;
- ``held``: one fd held open, a line + fsync every INTERVAL seconds (default 0.02); stops at
  the first error;
- ``persistent``: like ``reopen`` but never gives up: after an error it waits and tries again
  (so a project that became writable again would be written);
- ``mmap``: a writable shared mapping of a 1 MiB file; writes a line into it and msyncs.

:class:`Writer` starts one as a child process and reads its ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("reopen", "held", "persistent", "mmap")
MMAP_SIZE = 1 << 20


def _ledger_append(ledger: int, line: bytes) -> None:
    os.write(ledger, line)
    os.fsync(ledger)


def _run(kind: str, target: str, ledger_path: str, interval: float, ignore_term: bool = False) -> None:
    if ignore_term:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name = os.path.basename(target).encode()
    ledger = os.open(ledger_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    _ledger_append(ledger, b"")
    print("ready", flush=True)
    seq = 0
    if kind == "held":
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        while True:
            line = b"%s %d\n" % (name, seq)
            os.write(fd, line)
            os.fsync(fd)
            _ledger_append(ledger, line)
            seq += 1
            time.sleep(interval)
    if kind == "mmap":
        import mmap

        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, MMAP_SIZE)
        region = mmap.mmap(fd, MMAP_SIZE, mmap.MAP_SHARED)
        offset = 0
        while offset < MMAP_SIZE - 64:
            line = b"%s %d\n" % (name, seq)
            region[offset : offset + len(line)] = line
            region.flush()
            _ledger_append(ledger, line)
            offset += len(line)
            seq += 1
            time.sleep(interval)
        time.sleep(3600)
    while True:
        line = b"%s %d\n" % (name, seq)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            if kind != "persistent":
                raise
            time.sleep(interval)
            continue
        _ledger_append(ledger, line)
        seq += 1
        time.sleep(interval)


@dataclass
class Writer:
    """One writer process: ``kind`` appending to ``target`` with its ledger at ``ledger``."""

    kind: str
    target: Path
    ledger: Path
    interval: float = 0.02
    ignore_term: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> "Writer":
        """Start it and wait until it runs (its ledger exists)."""
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-I", __file__, self.kind, str(self.target), str(self.ledger), str(self.interval),
             *(["ignore-term"] if self.ignore_term else [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.ledger.parent,
        )
        assert self.process.stdout.readline() == b"ready\n", f"writer {self.kind} did not start"
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def acknowledged(self) -> list[str]:
        """Every line the writer saw written and fsynced."""
        return self.ledger.read_text().splitlines()

    def wait_acknowledged(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the writer has at least ``count`` acknowledged lines (or has ended)."""
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            if self.process.poll() is not None:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"writer {self.kind} wrote {len(self.acknowledged())} lines, not {count}")
            time.sleep(0.02)

    def alive(self) -> bool:
        """Whether the process still runs (a child: reaped here once it ended)."""
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()
            self.process.stdout.close()


def missing(writer: Writer, tree_file: Path) -> list[str]:
    """The writer's acknowledged lines that are not in ``tree_file`` (must be empty)."""
    try:
        present = set(tree_file.read_bytes().replace(b"\0", b"").decode().splitlines())
    except FileNotFoundError:
        present = set()
    return [line for line in writer.acknowledged() if line not in present]


def start_writers(home: Path, ledgers: Path, kinds=("reopen", "held", "persistent")) -> list[Writer]:
    """One writer of each of ``kinds`` in ``home`` (files ``<kind>.log``), ledgers in ``ledgers``."""
    started = []
    try:
        for kind in kinds:
            started.append(Writer(kind, home / f"{kind}.log", ledgers / f"{kind}.ledger").start())
    except BaseException:
        for writer in started:
            writer.stop()
        raise
    return started


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.02,
         ignore_term=sys.argv[5:6] == ["ignore-term"])
