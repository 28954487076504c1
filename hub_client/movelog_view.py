"""Reading a move's movelog: one line per entry (pure), JSON records, and following it live."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterator, TextIO

from hub_client.progress import LiveLine, render
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MovelogEntry, MoveStatus, Store

# Entries that end an attempt: after one of them the move is not running any more.
ENDING_KINDS = frozenset({"complete", "failed", "cancelled"})


def render_entry(entry: MovelogEntry) -> str:
    """``HH:MM:SS kind message``; progress entries carry the agent's progress line (bar, bytes,
    files, rate) after the host."""
    stamp = entry.time.strftime("%H:%M:%S")
    if entry.kind != "progress":
        return f"{stamp} {entry.kind:<9} {entry.message}"
    data = entry.data
    if data.get("terminal"):
        return f"{stamp} {'progress':<9} {data.get('host', '')} {data.get('phase', '')}: {data.get('state', '')}"
    return f"{stamp} {'progress':<9} {data.get('host', '')} {render(event_of(entry))}"


def event_of(entry: MovelogEntry) -> pb.ProgressEvent:
    """The agent's progress event a movelog progress entry was copied from (see ``move.event_data``)."""
    data = entry.data
    return pb.ProgressEvent(
        phase=data.get("phase", ""), percent=data.get("percent", 0.0), message=entry.message,
        bytes_done=data.get("bytes_done", 0), bytes_total=data.get("bytes_total", 0),
        files_done=data.get("files_done", 0), files_total=data.get("files_total", 0),
        bytes_per_second=data.get("bytes_per_second", 0.0), eta_seconds=data.get("eta_seconds", -1.0),
    )


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
        self._live = LiveLine(stream)

    def show(self, entry: MovelogEntry) -> None:
        if entry.kind == "progress" and not entry.data.get("terminal"):
            self._live.redraw(render_entry(entry))
        else:
            self._live.println(render_entry(entry))
