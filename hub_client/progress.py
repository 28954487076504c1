"""Rendering progress events as one terminal line (pure) and a printer that redraws it."""

from __future__ import annotations

import sys
from typing import TextIO

from hub_client.proto.buckets.v1 import agent_pb2 as pb

BAR_WIDTH = 28


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def render(event: pb.ProgressEvent) -> str:
    """One line: phase, bar, percent, bytes and files done/total, rate, ETA or the final state."""
    if event.terminal:
        state = pb.OperationState.Name(event.state)
        detail = event.error.message if event.error.message else event.message
        return f"{state:<10} {detail}"
    filled = int(BAR_WIDTH * max(0.0, min(event.percent, 100.0)) / 100)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    parts = [f"{event.phase:<8}", f"[{bar}]", f"{event.percent:5.1f}%"]
    if event.bytes_total or event.bytes_done:
        parts.append(f"{human_bytes(event.bytes_done)}/{human_bytes(event.bytes_total)}")
    if event.files_total or event.files_done:
        parts.append(f"{event.files_done}/{event.files_total} files")
    if event.bytes_per_second > 0:
        parts.append(f"{human_bytes(event.bytes_per_second)}/s")
    if event.eta_seconds >= 0 and not event.terminal and event.percent > 0:
        parts.append(f"ETA {event.eta_seconds:.0f}s")
    if event.message and not (event.bytes_total or event.files_total):
        parts.append(event.message[:60])
    return " ".join(parts)


class LiveLine:
    """One line redrawn in place on a terminal, among plain lines; off a terminal every line is plain."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._width = 0  # of the line being redrawn; 0 when there is none

    def redraw(self, line: str, *, final: bool = False) -> None:
        """Draw ``line`` over the live one; ``final`` ends it there."""
        if not self._tty:
            self.println(line)
            return
        self._stream.write(f"\r{line}{' ' * max(0, self._width - len(line))}")
        self._width = len(line)
        if final:
            self._stream.write("\n")
            self._width = 0
        self._stream.flush()

    def end(self) -> None:
        """End the live line where it stands, so what follows (e.g. on stderr) starts a line."""
        if self._width:
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0

    def println(self, line: str) -> None:
        """A line of its own, below the live one (which stays as it was last drawn)."""
        if self._width:
            self._stream.write("\n")
            self._width = 0
        self._stream.write(line + "\n")
        self._stream.flush()


class ProgressPrinter:
    """Redraws one line per event on a terminal; prints plain lines otherwise."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._live = LiveLine(stream)

    def show(self, event: pb.ProgressEvent) -> None:
        self._live.redraw(render(event), final=event.terminal)

    def end_line(self) -> None:
        """End the bar's line before a message of another stream is printed."""
        self._live.end()
