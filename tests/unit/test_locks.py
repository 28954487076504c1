"""agent/locks.py: which repositories a dead agent's operations may have locked, and the notes
their unlock leaves on the operations' records (the unlock itself runs restic for real in
tests/integration/test_stale_locks.py)."""

from __future__ import annotations

import asyncio

from agent import errors, locks
from agent.model import OperationKind, OperationRecord, OperationState
from agent.repository import Repository

P1 = "11111111-1111-1111-1111-111111111111"
P2 = "22222222-2222-2222-2222-222222222222"


def record(op_id: str, kind: OperationKind, state: OperationState, project_id: str = P1, **params) -> OperationRecord:
    return OperationRecord(id=op_id, request_id=op_id, kind=kind, project_id=project_id, fingerprint="",
                           params=params, state=state, created_at=0.0)


def test_repositories_used_by_started_engine_operations() -> None:
    records = [
        record("b1", OperationKind.BACKUP, OperationState.RUNNING, repository="/r/project-1"),
        record("b2", OperationKind.BACKUP, OperationState.PENDING, repository="/r/project-1"),  # never ran
        record("v1", OperationKind.VERIFY, OperationState.CANCELLING, repository="/r/project-1", mode="repository"),
        record("v2", OperationKind.VERIFY, OperationState.RUNNING, mode="sentinel"),  # reads no repository
        record("r1", OperationKind.RESTORE, OperationState.RUNNING, project_id=P2, repository="/r/project-1",
               source_project_id=P1),  # a copy between hosts: read from P1's repository
        record("d1", OperationKind.DRAIN, OperationState.RUNNING, repository="per-project"),  # runs no engine
        record("x1", OperationKind.DELETE, OperationState.RUNNING, repository=""),  # keeps the repository
        record("e1", OperationKind.ENSURE, OperationState.RUNNING, project_id=P2, repository="s3:http://h/b/p2"),
    ]
    assert locks.repositories_used(records) == [
        locks.UsedRepository("/r/project-1", P1, ("b1", "v1", "r1")),
        locks.UsedRepository("s3:http://h/b/p2", P2, ("e1",)),
    ]


def repo(display: str) -> Repository:
    return Repository(kind="local", location=display, display=display, password="pw")


def test_remove_stale_locks_notes_each_outcome_and_never_raises() -> None:
    used = [locks.UsedRepository("/ok", P1, ("a", "b")), locks.UsedRepository("/missing", P1, ("c",)),
            locks.UsedRepository("/wrong", P1, ("d",)), locks.UsedRepository("s3:spec", P2, ("e",)),
            locks.UsedRepository("/crash", P1, ("f",))]
    unlocked = []

    def open_repository(display: str, project_id: str) -> Repository:
        if display == "s3:spec":
            raise errors.FailedPrecondition("the request named it with its own credentials")
        return repo(display)

    async def unlock(repository: Repository) -> bool:
        if repository.display == "/missing":
            raise errors.NotFound("repository does not exist")
        if repository.display == "/wrong":
            raise errors.FailedPrecondition("wrong repository password")
        if repository.display == "/crash":
            raise RuntimeError("a bug")
        unlocked.append(repository.display)
        return True

    notes = asyncio.run(locks.remove_stale_locks(used, open_repository=open_repository, unlock=unlock))
    assert unlocked == ["/ok"]
    assert notes["a"] == notes["b"] == "stale locks removed from repository /ok"
    assert notes["c"] == "repository /missing does not exist: no lock to remove"
    assert notes["d"].startswith("stale locks may remain in repository /wrong (wrong repository password)")
    assert "own credentials" in notes["e"] and "`restic unlock`" in notes["e"]
    assert "f" not in notes  # logged; the start goes on


def test_remove_stale_locks_gives_up_at_its_deadline_and_says_so() -> None:
    async def hang(repository: Repository) -> bool:
        await asyncio.sleep(60)
        return True

    async def quiet(repository: Repository) -> bool:
        return False  # an engine without locks (rustic): nothing to note

    used = [locks.UsedRepository("/slow", P1, ("a",))]
    notes = asyncio.run(locks.remove_stale_locks(used, open_repository=lambda d, p: repo(d), unlock=hang,
                                                 deadline=0.1))
    assert notes == {"a": "stale locks may remain in repository /slow (no answer within 0.1 s); "
                          "`restic unlock` on it removes them"}
    assert asyncio.run(locks.remove_stale_locks(used, open_repository=lambda d, p: repo(d), unlock=quiet)) == {}


def test_notes_name_a_repository_by_the_label_they_are_given() -> None:
    async def unlock(repository: Repository) -> bool:
        return True

    used = [locks.UsedRepository("/var/lib/buckets/repos/project-x", P1, ("a",))]
    notes = asyncio.run(locks.remove_stale_locks(
        used, open_repository=lambda d, p: repo(d), unlock=unlock,
        label=lambda display, project_id: f"the configured repository of project {project_id}"))
    assert notes == {"a": f"stale locks removed from the configured repository of project {P1}"}
