"""Following a job's log (hub_client/service/logs.py): replay without gap or duplicate, keep-alives,
and the end only after the entry that ended the job. A fake clock, no sleeping."""

from __future__ import annotations

from datetime import datetime, timezone

from hub_client.service.logs import Quiet, Sleep, follow
from hub_client.store import MovelogEntry

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Job:
    """A log the test writes to while the follower reads it; ``read`` gives at most ``page`` entries."""

    def __init__(self, page: int = 3) -> None:
        self.entries: list[MovelogEntry] = []
        self.status = "running"
        self.page = page
        self.now = 0.0

    def add(self, kind: str, message: str = "") -> None:
        self.entries.append(MovelogEntry("job", len(self.entries) + 1, T0, kind, message or kind, {}))

    def read(self, after: int) -> list[MovelogEntry]:
        return [e for e in self.entries if e.seq > after][: self.page]

    def clock(self) -> float:
        return self.now


def run(job: Job, script: dict[int, callable], **options) -> list:
    """Drive the follower; ``script[n]`` runs before the n-th Sleep is answered (time moves 1 s per sleep)."""
    out, sleeps = [], 0
    for item in follow(job.read, lambda: job.status, clock=job.clock, **options):
        if isinstance(item, Sleep):
            sleeps += 1
            job.now += 1.0
            script.get(sleeps, lambda: None)()
            assert sleeps < 100, "the follower never ended"
            continue
        out.append(item)
        assert len(out) < 1000, "the follower repeats itself"
    return out


def seqs(items) -> list[int]:
    return [i.seq for i in items if isinstance(i, MovelogEntry)]


def test_replay_then_live_entries_each_once_and_the_end_after_complete() -> None:
    job = Job()
    for kind in ("attempt", "step", "progress", "progress", "step"):
        job.add(kind)

    def finish() -> None:
        job.add("progress")
        job.add("complete")
        job.add("frozen")  # written in the completing transaction, after "complete"
        job.status = "succeeded"

    items = run(job, {2: finish}, keepalive=100)
    assert seqs(items) == list(range(1, 9))


def test_from_a_middle_seq_exactly_the_rest() -> None:
    job = Job(page=2)
    for kind in ("attempt", "step", "progress", "progress", "step", "complete"):
        job.add(kind)
    job.status = "succeeded"
    assert seqs(run(job, {}, from_seq=4)) == [4, 5, 6]
    assert seqs(run(job, {}, from_seq=0)) == [1, 2, 3, 4, 5, 6]
    assert seqs(run(job, {}, from_seq=1)) == [1, 2, 3, 4, 5, 6]
    assert seqs(run(job, {}, from_seq=9)) == []  # nothing after the end: ends at once


def test_a_failed_status_seen_before_its_entry_waits_for_the_entry() -> None:
    job = Job()
    job.add("attempt")
    job.add("step")
    job.status = "failed"  # the runner records the status first, then logs "failed"

    items = run(job, {3: lambda: (job.add("thaw"), job.add("failed"))}, keepalive=100, settle=30)
    assert seqs(items) == [1, 2, 3, 4] and items[-1].kind == "failed"


def test_a_resumed_job_does_not_end_at_its_earlier_failure() -> None:
    job = Job()
    for kind in ("attempt", "step", "failed", "attempt", "step"):
        job.add(kind)
    job.status = "running"

    def complete() -> None:
        job.add("complete")
        job.status = "succeeded"

    items = run(job, {4: complete}, keepalive=100, from_seq=4)
    assert seqs(items) == [4, 5, 6]


def test_keepalives_while_nothing_happens_and_an_end_without_its_entry_after_settle() -> None:
    job = Job()
    job.add("attempt")

    def stop_dead() -> None:  # a process that died between the status and the "failed" entry
        job.status = "failed"

    items = run(job, {6: stop_dead}, keepalive=2, settle=3)
    assert seqs(items) == [1]
    assert sum(isinstance(i, Quiet) for i in items) >= 2


def test_an_entry_not_visible_yet_is_waited_for_not_skipped() -> None:
    job = Job(page=10)
    for kind in ("attempt", "step", "progress", "progress"):
        job.add(kind)
    hidden = job.entries.pop(2)  # seq 3 committed after seq 4 became visible
    job.status = "running"

    def show() -> None:
        job.entries.insert(2, hidden)

    def complete() -> None:
        job.add("complete")
        job.status = "succeeded"

    items = run(job, {2: show, 4: complete}, keepalive=100)
    assert seqs(items) == [1, 2, 3, 4, 5]
