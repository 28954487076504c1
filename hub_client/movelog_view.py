"""Reading a move's movelog or a copy's copylog: one line per entry (pure), JSON records, and
following it live."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterator, TextIO

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
    """The agent's progress event a movelog progress entry was copied from (see ``steps.event_data``)."""
    data = entry.data
    return pb.ProgressEvent(
        phase=data.get("phase", ""), percent=data.get("percent", 0.0), message=entry.message,
        bytes_done=data.get("bytes_done", 0), bytes_total=data.get("bytes_total", 0),
        files_done=data.get("files_done", 0), files_total=data.get("files_total", 0),
        bytes_per_second=data.get("bytes_per_second", 0.0), eta_seconds=data.get("eta_seconds", -1.0),
    )


def entry_record(entry: MovelogEntry, key: str = "move_id") -> dict[str, Any]:
    """The entry as JSON-ready data; ``key`` names the job's id ("copy_id" for a copylog)."""
    return {key: entry.move_id, "seq": entry.seq, "time": entry.time.isoformat(), "kind": entry.kind,
            "message": entry.message, "data": entry.data}


def follow_log(read: Callable[[int], list[MovelogEntry]], status: Callable[[], str], *, after_seq: int = 0,
               poll: float = 0.5, until_idle: bool = True) -> Iterator[MovelogEntry]:
    """Yield a job's entries (``read(after_seq)``) from ``after_seq`` on, waiting for new ones
    while the job runs or is pending (``status()``); stops when it is not running and nothing
    new is left."""
    seq = after_seq
    while True:
        entries = read(seq)
        for entry in entries:
            seq = entry.seq
            yield entry
        if entries:
            continue
        if until_idle and status() not in (MoveStatus.RUNNING, MoveStatus.PENDING):
            return
        time.sleep(poll)


def follow(store: Store, move_id: str, **options) -> Iterator[MovelogEntry]:
    """The move's movelog, live (see :func:`follow_log`)."""
    return follow_log(lambda seq: store.movelog(move_id, after_seq=seq), lambda: store.get_move(move_id).status,
                      **options)


def follow_copy(store: Store, copy_id: str, **options) -> Iterator[MovelogEntry]:
    """The copy's copylog, live (see :func:`follow_log`)."""
    return follow_log(lambda seq: store.copylog(copy_id, after_seq=seq), lambda: store.get_copy(copy_id).status,
                      **options)


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
