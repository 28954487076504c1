"""hub_client.move.RepositoryOpener: the target lists the new repository until a listing shows
a backup; "no repository yet" (an empty listing, as the agent answers it, or NOT_FOUND) is
retried at growing intervals for a bounded time; any other error or stop() ends it. The real
agent's answers are checked in tests/integration/test_move_precopy.py."""

from __future__ import annotations

import time

import grpc

from hub_client.client import AgentError
from hub_client.move import RepositoryOpener

SNAPSHOT = ["a snapshot"]


class Target:
    """An agent client whose listings answer from ``answers`` (an exception is raised); when they
    run out, an empty listing (no repository yet) for ever."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[float] = []

    def snapshots(self, project_id: str):
        self.calls.append(time.monotonic())
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return answer


def ended(opener: RepositoryOpener, timeout: float = 5.0) -> bool:
    opener._thread.join(timeout)
    return not opener._thread.is_alive()


def fast(monkeypatch, *, open_for: float = 5.0) -> None:
    monkeypatch.setattr(RepositoryOpener, "OPEN_INTERVAL", 0.01)
    monkeypatch.setattr(RepositoryOpener, "OPEN_FOR", open_for)


def test_empty_listings_and_not_found_are_retried_until_a_listing_shows_a_backup(monkeypatch) -> None:
    fast(monkeypatch)
    missing = AgentError(grpc.StatusCode.NOT_FOUND, "no repository")
    target = Target([], missing, [], [], SNAPSHOT, [])
    assert ended(RepositoryOpener(target, "p")) and len(target.calls) == 5


def test_the_intervals_grow_and_the_listings_end_at_the_time_limit(monkeypatch) -> None:
    fast(monkeypatch, open_for=0.6)
    target = Target()  # no backup for ever
    opener = RepositoryOpener(target, "p")
    assert ended(opener)
    gaps = [later - earlier for earlier, later in zip(target.calls, target.calls[1:])]
    assert len(target.calls) >= 4 and gaps[-1] > 2 * gaps[0]
    # Not one every OPEN_INTERVAL: 0.6 s of 10 ms intervals would be 60 listings.
    assert len(target.calls) < 15


def test_another_error_ends_it_and_stop_ends_it(monkeypatch) -> None:
    fast(monkeypatch)
    target = Target(AgentError(grpc.StatusCode.PERMISSION_DENIED, "wrong password"), [])
    assert ended(RepositoryOpener(target, "p")) and len(target.calls) == 1

    never = Target()
    opener = RepositoryOpener(never, "p")
    time.sleep(0.05)
    opener.stop()
    assert ended(opener)
    calls = len(never.calls)
    time.sleep(0.05)
    assert len(never.calls) == calls
