"""Following a move's movelog or a copy's copylog for a FollowLog stream (no proto types).

The log is read from the store (another hub process may be the one writing it): every entry
with seq >= from_seq in order, each once; then, while the job runs, new entries as they are
written. The follower ends once the job does not run (not pending, not running) and the entry
that ended its last attempt (complete, failed, cancelled) has been given out: a failing job's
status is recorded just before its "failed" entry, so a follower that saw the status alone
waits for that entry (at most ``settle`` seconds: a process that died between the two writes
leaves no such entry).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from hub_client.movelog_view import ENDING_KINDS
from hub_client.store import MovelogEntry, MoveStatus

RUNNING = frozenset({MoveStatus.PENDING, MoveStatus.RUNNING})


@dataclass(frozen=True)
class Quiet:
    """Nothing new for a while: time for a keep-alive."""


@dataclass(frozen=True)
class Sleep:
    """Nothing new now: the consumer waits its poll interval before asking for more (so no
    thread sleeps inside the follower)."""


def ended(entries: list[MovelogEntry]) -> bool:
    """Whether the last attempt in ``entries`` (a whole log, in order) has its ending entry."""
    done = False
    for entry in entries:
        if entry.kind == "attempt":
            done = False
        elif entry.kind in ENDING_KINDS:
            done = True
    return done


def contiguous(entries: list[MovelogEntry], after: int) -> list[MovelogEntry] | None:
    """The entries that follow ``after`` without a gap; None when the first one visible is not
    ``after + 1`` (the store gives numbers in commit order, so this only guards against a
    reader that would otherwise skip one for good)."""
    if entries and entries[0].seq != after + 1:
        return None
    for index in range(1, len(entries)):
        if entries[index].seq != entries[index - 1].seq + 1:
            return entries[:index]
    return entries


def _ended_before(read: Callable[[int], list[MovelogEntry]], seq: int) -> bool:
    """:func:`ended` of the entries up to ``seq`` (read in as many pages as ``read`` gives)."""
    entries: list[MovelogEntry] = []
    after = 0
    while after < seq:
        page = [entry for entry in read(after) if entry.seq <= seq]
        if not page:
            break
        entries.extend(page)
        after = page[-1].seq
    return ended(entries)


def follow(read: Callable[[int], list[MovelogEntry]], status: Callable[[], str], *, from_seq: int = 0,
           keepalive: float = 10.0, settle: float = 5.0, clock: Callable[[], float] = time.monotonic,
           ) -> Iterator[MovelogEntry | Quiet | Sleep]:
    """Yield the entries of a job's log from ``from_seq`` (``read(after_seq)`` gives the entries
    after a seq in order, maybe a page of them; ``status()`` the job's status), a :class:`Quiet`
    after ``keepalive`` seconds without one, and a :class:`Sleep` whenever nothing is new; ends
    as the module says."""
    seq = max(0, from_seq - 1)
    done = _ended_before(read, seq) if seq else False
    last_sent = clock()
    stopped_since: float | None = None
    gap_since: float | None = None
    while True:
        state = status()  # before the read: whatever was written before this status is read below
        entries = contiguous(read(seq), seq)
        if entries is None:  # seq+1 not visible yet while a later one is: never skip it
            gap_since = gap_since if gap_since is not None else clock()
            if clock() - gap_since < settle:
                yield Sleep()
                continue
            entries = read(seq)  # a number that never comes (deleted): go on rather than hang
        gap_since = None
        for entry in entries:
            seq = entry.seq
            if entry.kind == "attempt":
                done = False
            elif entry.kind in ENDING_KINDS:
                done = True
            last_sent = clock()
            yield entry
        if entries:
            continue
        if state not in RUNNING:
            if done:
                return
            stopped_since = stopped_since if stopped_since is not None else clock()
            if clock() - stopped_since >= settle:
                return
        else:
            stopped_since = None
        if clock() - last_sent >= keepalive:
            last_sent = clock()
            yield Quiet()
        yield Sleep()
