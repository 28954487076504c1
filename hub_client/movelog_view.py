"""Reading a move's movelog: one line per entry (pure), JSON records, and following it live."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterator, TextIO

from hub_client.progress import BAR_WIDTH, human_bytes
from hub_client.store import MovelogEntry, MoveStatus, Store

# Entries that end an attempt: after one of them the move is not running any more.
ENDING_KINDS = frozenset({"complete", "failed", "cancelled"})


def render_entry(entry: MovelogEntry) -> str:
    """``HH:MM:SS kind message``; progress entries carry a bar, bytes, files and rate."""
    stamp = entry.time.strftime("%H:%M:%S")
    if entry.kind != "progress":
        return f"{stamp} {entry.kind:<9} {entry.message}"
    data = entry.data
    if data.get("terminal"):
        return f"{stamp} {'progress':<9} {data.get('host', '')} {data.get('phase', '')}: {data.get('state', '')}"
    percent = max(0.0, min(float(data.get("percent", 0.0)), 100.0))
    filled = int(BAR_WIDTH * percent / 100)
    parts = [f"{stamp} {'progress':<9} {data.get('host', '')} {data.get('phase', ''):<8}",
             f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:5.1f}%"]
    if data.get("bytes_total") or data.get("bytes_done"):
        parts.append(f"{human_bytes(data.get('bytes_done', 0))}/{human_bytes(data.get('bytes_total', 0))}")
    if data.get("files_total") or data.get("files_done"):
        parts.append(f"{data.get('files_done', 0)}/{data.get('files_total', 0)} files")
    if data.get("bytes_per_second", 0) > 0:
        parts.append(f"{human_bytes(data['bytes_per_second'])}/s")
    if not (data.get("bytes_total") or data.get("files_total")) and entry.message:
        parts.append(entry.message[:60])
    return " ".join(parts)


def entry_record(entry: MovelogEntry) -> dict[str, Any]:
    return {"move_id": entry.move_id, "seq": entry.seq, "time": entry.time.isoformat(), "kind": entry.kind,
            "message": entry.message, "data": entry.data}


def follow(store: Store, move_id: str, *, after_seq: int = 0, poll: float = 0.5,
           until_idle: bool = True) -> Iterator[MovelogEntry]:
    """Yield the move's entries from ``after_seq`` on, waiting for new ones while the move runs
    (or is pending); stops when the move is not running and nothing new is left."""
    seq = after_seq
    while True:
        entries = store.movelog(move_id, after_seq=seq)
        for entry in entries:
            seq = entry.seq
            yield entry
        if entries:
            continue
        move = store.get_move(move_id)
        if until_idle and move.status not in (MoveStatus.RUNNING, MoveStatus.PENDING):
            return
        time.sleep(poll)


class MovelogPrinter:
    """Prints entries as they come; on a terminal the progress entries redraw one live bar line
    and every other entry gets a line of its own."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._live = 0  # width of the bar line being redrawn, 0 when none

    def show(self, entry: MovelogEntry) -> None:
        line = render_entry(entry)
        if self._tty and entry.kind == "progress" and not entry.data.get("terminal"):
            self._stream.write("\r" + line + " " * max(0, self._live - len(line)))
            self._live = len(line)
        else:
            if self._live:
                self._stream.write("\n")
                self._live = 0
            self._stream.write(line + "\n")
        self._stream.flush()
