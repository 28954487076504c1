"""hub_client.move.RepositoryOpener: the target lists the new repository until one listing
answers; "no repository yet" is retried, any other answer or stop() ends it."""

from __future__ import annotations

import threading
import time

import grpc

from hub_client.client import AgentError
from hub_client.move import RepositoryOpener


class Target:
    """An agent client whose listings answer from ``answers`` (an exception is raised)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.done = threading.Event()

    def snapshots(self, project_id: str):
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else AgentError(grpc.StatusCode.NOT_FOUND, "no repository")
        if not self.answers:
            self.done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer


def ended(opener: RepositoryOpener, timeout: float = 5.0) -> bool:
    opener._thread.join(timeout)
    return not opener._thread.is_alive()


def test_no_repository_yet_is_retried_until_a_listing_answers(monkeypatch) -> None:
    monkeypatch.setattr(RepositoryOpener, "OPEN_INTERVAL", 0.01)
    missing = AgentError(grpc.StatusCode.NOT_FOUND, "no repository")
    target = Target(missing, missing, [])
    opener = RepositoryOpener(target, "p")
    assert ended(opener) and target.calls == 3


def test_another_error_ends_it_and_stop_ends_it(monkeypatch) -> None:
    monkeypatch.setattr(RepositoryOpener, "OPEN_INTERVAL", 0.01)
    target = Target(AgentError(grpc.StatusCode.PERMISSION_DENIED, "wrong password"), [])
    assert ended(RepositoryOpener(target, "p")) and target.calls == 1

    never = Target()  # no repository for ever
    opener = RepositoryOpener(never, "p")
    time.sleep(0.05)
    opener.stop()
    assert ended(opener)
    calls = never.calls
    time.sleep(0.05)
    assert never.calls == calls
