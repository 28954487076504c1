"""The pure parts of a move's pre-copy (agent/precopies.py): key checks, what a request can make
of a recorded pre-copy, expiry; the journal's precopies table; recovery of a placement whose
swap had started."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent import errors, jobs, precopies
from agent.backends.directory import DirectoryBackend
from agent.engine.base import RESTORE_OVER, SNAPSHOT_DIFF
from agent.journal import SCHEMA_VERSION, Journal
from agent.model import OperationKind, OperationRecord, OperationState

P1 = "11111111-1111-1111-1111-111111111111"
S1 = "a" * 64
S2 = "b" * 64
OVER = frozenset({RESTORE_OVER, SNAPSHOT_DIFF})  # what rustic and restic >= 0.17 have
NONE = frozenset()


@pytest.mark.parametrize("key", ["a", "move-1", "M.v_2:3", "x" * 64, "..", "0"])
def test_good_keys(key: str) -> None:
    assert precopies.check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 65, "a/b", "/", "a b", "ä", "a\x00", "a\n", "*"])
def test_bad_keys_are_invalid_argument(key: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="precopy_key"):
        precopies.check_key(key, field="precopy_key")


def test_staging_name_is_one_path_component() -> None:
    assert precopies.staging_id(P1, "..") == f"precopy-{P1}-.."
    assert "/" not in precopies.staging_id(P1, "a:b.c")


def record(state: str, snapshot_id: str = S1, base: str | None = None, key: str = "k", repository: str = "/r",
           updated_at: float = 100.0) -> precopies.Record:
    return precopies.Record(project_id=P1, key=key, staging=precopies.staging_id(P1, key), repository=repository,
                            snapshot_id=snapshot_id, base_snapshot_id=base, state=state, created_at=1.0,
                            updated_at=updated_at)


def plan(rec, snapshot_id=S2, features=OVER, whole=True, key="k", repository="/r") -> precopies.Plan:
    return precopies.plan(rec, key=key, repository=repository, snapshot_id=snapshot_id, features=features,
                          staging_whole=whole)


def test_plan() -> None:
    complete = record(precopies.COMPLETE)
    assert plan(None).action == "whole"
    assert plan(complete, snapshot_id=S1).action == "up-to-date"
    assert plan(complete, snapshot_id=S1, features=NONE).action == "up-to-date"
    assert plan(complete) == precopies.Plan("bring", S1, plan(complete).reason)
    assert plan(complete, features=NONE).action == "whole"  # restic < 0.17 until the diff way
    assert plan(complete, key="other").action == "whole"
    assert plan(complete, repository="/elsewhere").action == "whole"
    assert plan(complete, whole=False).action == "whole"
    # Unfinished: continued towards the same snapshot only.
    restoring = record(precopies.RESTORING, snapshot_id=S2)
    assert plan(restoring).action == "bring" and plan(restoring).base_snapshot_id is None
    assert plan(restoring, features=NONE).action == "whole"
    assert plan(record(precopies.RESTORING, snapshot_id=S1)).action == "whole"
    catching = record(precopies.CATCHING_UP, snapshot_id=S2, base=S1)
    assert plan(catching) == precopies.Plan("bring", S1, plan(catching).reason)
    assert plan(catching, snapshot_id="c" * 64).action == "whole"
    # A prefix names the same snapshot.
    assert plan(complete, snapshot_id=S1[:8]).action == "up-to-date"


def test_expired() -> None:
    old, new = record(precopies.COMPLETE, updated_at=10.0), record(precopies.COMPLETE, key="n", updated_at=95.0)
    assert precopies.expired([old, new], now=100.0, max_age=60.0) == [old]


def test_journal_precopies_table(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.put_precopy(P1, key="k", staging="precopy-x", repository="/r", snapshot_id=S1,
                        state=precopies.RESTORING, now=5.0)
    journal.set_precopy_state(P1, state=precopies.CATCHING_UP, snapshot_id=S2, base_snapshot_id=S1, now=6.0)
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite")
    got = precopies.current(reopened, P1)
    assert got == precopies.Record(project_id=P1, key="k", staging="precopy-x", repository="/r", snapshot_id=S2,
                                   base_snapshot_id=S1, state=precopies.CATCHING_UP, created_at=5.0,
                                   updated_at=6.0)
    reopened.remove_precopy(P1, "precopy-other")  # another staging's record: not this one
    assert precopies.every(reopened) == [got]
    reopened.remove_precopy(P1, "precopy-x")
    assert precopies.current(reopened, P1) is None


def test_version_2_journal_gains_the_precopies_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE precopies; UPDATE meta SET value='2' WHERE key='schema_version';")
    db.commit()
    db.close()
    journal = Journal(path)
    version = journal._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    assert journal.precopies() == []


def test_recovery_of_a_placement_whose_swap_had_started(tmp_path: Path) -> None:
    """The agent died after EnsureProject's swap of a pre-copy started: recovery completes the
    swap, writes the receipt of the snapshot it placed and uses the pre-copy up."""
    backend = DirectoryBackend(projects_root=tmp_path / "projects", persist_root=tmp_path / "persist",
                               state_dir=tmp_path / "state")
    journal = Journal(tmp_path / "state" / "j.sqlite")
    name = precopies.staging_id(P1, "k")
    staging = asyncio.run(backend.prepare_staging(P1, name))
    (staging.project / "file.txt").write_text("pre-copied\n")
    journal.put_precopy(P1, key="k", staging=name, repository="/r", snapshot_id=S1, state=precopies.COMPLETE,
                        now=1.0)
    plan_ = backend.swap_plan(P1, staging)
    op = OperationRecord(id="op-1", request_id="r-1", kind=OperationKind.ENSURE, project_id=P1, fingerprint="f",
                         params={}, state=OperationState.RUNNING, created_at=1.0,
                         recovery={"swap": plan_, "keep": [], "restored": S1, "precopy": name})
    note = jobs.recover(op, backend, journal)
    assert "completed" in note
    assert (backend.home(P1) / "file.txt").read_text() == "pre-copied\n"
    assert journal.last_restore(P1)["snapshot_id"] == S1
    assert precopies.current(journal, P1) is None
    # Run again (a second crash during recovery): nothing changes.
    assert jobs.recover(op, backend, journal)
    assert (backend.home(P1) / "file.txt").read_text() == "pre-copied\n"
