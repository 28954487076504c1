"""The runner side of leases, on a real (SQLite) store with a job of three steps and no agents:
the fence before each step, no undo by an owner that lost the job, the heartbeat, release."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub_client.lease import JobLease, LeaseSettings
from hub_client.steps import JobError, JobRunner
from hub_client.store import Host, JobKind, LeaseLost, MovelogEntry, MoveStatus, Project, open_store


@pytest.fixture
def store(tmp_path):
    opened = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        yield opened
    finally:
        opened.close()


def a_move(store) -> str:
    store.upsert_host(Host("a", "127.0.0.1:1", "eu"))
    store.upsert_host(Host("b", "127.0.0.1:2", "eu"))
    store.upsert_project(Project("p", "a", "eu"))
    move = store.create_move("p", "a", "b")
    store.update_move_status(move.id, MoveStatus.RUNNING)
    return move.id


class ThreeSteps(JobRunner):
    """A move's record with steps one, two, three; ``hooks[step]`` runs as the step's work."""

    kind = "move"

    def __init__(self, store, move_id: str, lease: JobLease | None, hooks: dict[str, Any]) -> None:
        super().__init__(move_id, observer=None, before_step=None, operation_timeout=None, lease=lease)
        self.store = store
        self.hooks = hooks
        self.ran: list[str] = []
        self.failed: list[BaseException] = []
        for step in ("one", "two", "three"):
            setattr(self, f"_step_{step}", lambda step=step: self._work(step))

    def _work(self, step: str) -> None:
        self.ran.append(step)
        hook = self.hooks.get(step)
        if hook is not None:
            hook()

    def run(self) -> None:
        with self._leased():
            self._attempt(1, "start", "one", False, {})

    def _append(self, kind: str, message: str, data: dict[str, Any] | None) -> MovelogEntry:
        return self.store.append_movelog(self.job_id, kind, message, data)

    def _read_log(self, after_seq: int = 0) -> list[MovelogEntry]:
        return self.store.movelog(self.job_id, after_seq=after_seq)

    def _record_step(self, step: str) -> None:
        self.store.update_move_step(self.job_id, step)

    def _steps(self) -> tuple[str, ...]:
        return ("one", "two", "three")

    def _current_step(self) -> str:
        return self.store.get_move(self.job_id).step

    def _fail(self, exc: BaseException) -> None:
        self.failed.append(exc)
        self.store.update_move_status(self.job_id, MoveStatus.FAILED, error=str(exc))

    def _needs_owner(self) -> bool:
        return self.store.get_move(self.job_id).status in (MoveStatus.PENDING, MoveStatus.RUNNING)

    def _finished(self) -> bool:
        return not self.store.get_move(self.job_id).active


SETTINGS = LeaseSettings(seconds=600)


def test_an_owner_whose_lease_was_taken_over_stops_before_its_next_step_and_undoes_nothing(store) -> None:
    move = a_move(store)
    lease = JobLease(store, JobKind.MOVE, move, "hub-old", SETTINGS)

    def taken_over() -> None:  # another process, holding the move lock after this one lost it
        store.claim_lease(JobKind.MOVE, move, "hub-new", 600, take_over=True)

    runner = ThreeSteps(store, move, lease, {"one": taken_over})
    with pytest.raises(LeaseLost, match="hub-new claimed it"):
        runner.run()
    assert runner.ran == ["one"] and runner.failed == []
    recorded = store.get_move(move)
    assert (recorded.status, recorded.step) == (MoveStatus.RUNNING, "one")  # left as it was for the new owner
    assert store.get_lease(JobKind.MOVE, move).owner == "hub-new"  # the old owner's release changed nothing


def test_a_failure_after_the_lease_was_lost_is_not_undone_by_the_old_owner(store) -> None:
    move = a_move(store)
    lease = JobLease(store, JobKind.MOVE, move, "hub-old", SETTINGS)

    def taken_over_then_failing() -> None:
        store.claim_lease(JobKind.MOVE, move, "hub-new", 600, take_over=True)
        raise JobError("the agent operation was cancelled (by the new owner)")

    runner = ThreeSteps(store, move, lease, {"two": taken_over_then_failing})
    with pytest.raises(LeaseLost):
        runner.run()
    assert runner.failed == [] and store.get_move(move).status == MoveStatus.RUNNING


def test_a_failure_while_owning_is_the_jobs_and_releases_the_lease(store) -> None:
    move = a_move(store)
    lease = JobLease(store, JobKind.MOVE, move, "hub-1", SETTINGS)

    def failing() -> None:
        raise JobError("boom")

    runner = ThreeSteps(store, move, lease, {"two": failing})
    with pytest.raises(JobError, match="boom"):
        runner.run()
    assert len(runner.failed) == 1 and store.get_move(move).status == MoveStatus.FAILED
    released = store.get_lease(JobKind.MOVE, move)
    assert released.owner == "hub-1" and released.expires_at is None  # nobody takes a failed move over
    assert store.claim_lapsed(JobKind.MOVE, "hub-2", 600) == []


def test_a_run_stopped_midway_hands_the_lease_over(store) -> None:
    move = a_move(store)
    lease = JobLease(store, JobKind.MOVE, move, "hub-1", SETTINGS)
    runner = ThreeSteps(store, move, lease, {})
    with runner._leased():
        pass  # e.g. the process was told to stop before any step: the move is still running
    [claimed] = store.claim_lapsed(JobKind.MOVE, "hub-2", 600)
    assert claimed.owner == "hub-2" and claimed.epoch == 2


def test_the_heartbeat_keeps_a_short_lease_held_through_a_long_step(store) -> None:
    move = a_move(store)
    lease = JobLease(store, JobKind.MOVE, move, "hub-1", LeaseSettings(seconds=0.6, heartbeat=0.1))
    renewed_twice = []

    def long_step() -> None:
        first = store.get_lease(JobKind.MOVE, move).expires_at
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 2 and time.monotonic() < deadline:  # an event, not a timing: renewals observed
            now = store.get_lease(JobKind.MOVE, move).expires_at
            if now > first:
                seen, first = seen + 1, now
            time.sleep(0.02)
        renewed_twice.append(seen >= 2)

    runner = ThreeSteps(store, move, lease, {"two": long_step})
    runner.run()
    assert renewed_twice == [True] and runner.ran == ["one", "two", "three"]


def test_lease_settings_defaults_and_refusals() -> None:
    default = LeaseSettings()
    assert (default.seconds, default.heartbeat_seconds, default.scan_seconds) == (15.0, 5.0, 1.0)
    short = LeaseSettings(seconds=1.5)
    assert (short.heartbeat_seconds, short.scan_seconds) == (0.5, 0.5)
    for bad in ({"seconds": 0}, {"seconds": 3, "heartbeat": 3}, {"seconds": 3, "scan": -1}):
        with pytest.raises(ValueError):
            LeaseSettings(**bad)


def test_buckets_hub_work_takes_the_lease_options(monkeypatch) -> None:
    from hub_client.hub_cli import lease_settings_from
    from hub_client.hub_service_cli import build_parser

    monkeypatch.setenv("BUCKETS_LEASE_SECONDS", "9")
    args = build_parser().parse_args(["work", "--store", "x.sqlite", "--scan-seconds", "0.5"])
    assert lease_settings_from(args) == LeaseSettings(seconds=9.0, heartbeat=None, scan=0.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["work", "--lease-seconds", "0"])
