"""Leases on moves and copies, on both store backends: claim, take-over of lapsed leases,
renew as fencing, release. A lease of 0 seconds lapses at once, so nothing here sleeps."""

from __future__ import annotations

import threading
import uuid

import pytest

from hub_client.store import (
    Conflict, CopyStatus, JobKind, LeaseHeld, LeaseLost, MoveStatus, NotFound, Store, migrations,
)
from tests.integration.test_store import new_id, seed

LONG = 600.0  # seconds: a lease that does not lapse during a test


def a_move(store: Store) -> str:
    _, target, project = seed(store)
    return store.create_move(project.id, project.host_id, target.id).id


def a_version_6_move(store) -> str:
    """A pending move written with only the columns schema version 6 has (create_move writes
    later ones)."""
    _, target, project = seed(store)
    move_id = str(uuid.uuid4())
    now = store._time_in(store.store_time())
    with store._transaction() as conn:
        store._exec(conn, "INSERT INTO moves (id, project_id, source_host, target_host, step, status, force, "
                    "attempts, created_at, updated_at) VALUES (?, ?, ?, ?, 'created', ?, ?, 0, ?, ?)",
                    (move_id, project.id, project.host_id, target.id, MoveStatus.PENDING, False, now, now))
    return move_id


def a_copy(store: Store) -> str:
    source, target, project = seed(store)
    return store.create_copy(project.id, "a", project.id, "b", Conflict.FAIL, source_host=source.id,
                             target_host=source.id).id


@pytest.mark.parametrize("kind", [JobKind.MOVE, JobKind.COPY])
def test_a_claim_excludes_others_until_it_lapses(store: Store, kind: str) -> None:
    job = a_move(store) if kind == JobKind.MOVE else a_copy(store)
    assert store.get_lease(kind, job) is None
    first = store.claim_lease(kind, job, "hub-1", LONG)
    assert (first.owner, first.epoch, first.kind, first.job_id) == ("hub-1", 1, kind, job)
    assert first.held_at(store.store_time())
    assert store.get_lease(kind, job) == first
    with pytest.raises(LeaseHeld, match=f"{kind} {job} is owned by hub process hub-1") as held:
        store.claim_lease(kind, job, "hub-2", LONG)
    assert (held.value.owner, held.value.job_id) == ("hub-1", job)
    assert store.claim_lapsed(kind, "hub-2", LONG) == []  # held: nothing lapsed

    # The owner's renew extends it; it stays the same claim.
    renewed = store.renew_lease(first, LONG)
    assert (renewed.epoch, renewed.owner) == (1, "hub-1") and renewed.expires_at >= first.expires_at


def test_a_renew_after_a_takeover_fails_and_names_the_new_owner(store: Store) -> None:
    """Must show (4): the owner whose lease lapsed and was taken over cannot renew it (nor
    release it): it learns it lost the move and must stop."""
    move = a_move(store)
    store.update_move_status(move, MoveStatus.RUNNING)
    old = store.claim_lease(JobKind.MOVE, move, "hub-old", 0)  # lapses at once: as if it stopped renewing
    [taken] = store.claim_lapsed(JobKind.MOVE, "hub-new", LONG)
    assert (taken.job_id, taken.owner, taken.epoch) == (move, "hub-new", old.epoch + 1)
    assert taken.claimed_at >= old.claimed_at
    with pytest.raises(LeaseLost, match="hub-new claimed it"):
        store.renew_lease(old, LONG)
    assert store.release_lease(old) is False
    assert store.get_lease(JobKind.MOVE, move) == taken  # the failed renew and release changed nothing
    assert store.renew_lease(taken, LONG).owner == "hub-new"


def test_a_lapsed_lease_not_yet_claimed_is_still_its_owners(store: Store) -> None:
    move = a_move(store)
    lease = store.claim_lease(JobKind.MOVE, move, "hub-1", 0)
    assert not lease.held_at(store.store_time())
    assert store.renew_lease(lease, LONG).held_at(store.store_time())
    assert store.claim_lapsed(JobKind.MOVE, "hub-2", LONG) == []


def test_only_pending_or_running_jobs_with_lapsed_leases_are_taken_over(store: Store) -> None:
    running, failed, released, handed, fresh = (a_move(store) for _ in range(5))
    for move in (running, failed, released, handed):
        store.update_move_status(move, MoveStatus.RUNNING)
    leases = {move: store.claim_lease(JobKind.MOVE, move, "hub-1", 0) for move in (running, failed, released)}
    leases[handed] = store.claim_lease(JobKind.MOVE, handed, "hub-1", LONG)
    store.update_move_status(failed, MoveStatus.FAILED, error="boom")
    assert store.release_lease(leases[released]) is True  # finished with: nobody takes it over
    assert store.release_lease(leases[handed], hand_over=True) is True  # still needs an owner: lapsed now
    claimed = store.claim_lapsed(JobKind.MOVE, "hub-2", LONG)
    assert sorted(lease.job_id for lease in claimed) == sorted([running, handed])
    assert store.get_lease(JobKind.MOVE, fresh) is None  # never claimed: not taken over by a scan
    # A released lease is free for an explicit claim.
    assert store.claim_lease(JobKind.MOVE, released, "hub-3", LONG).epoch == 2


def test_take_over_replaces_a_live_lease_and_fences_its_owner(store: Store) -> None:
    copy = a_copy(store)
    store.update_copy_status(copy, CopyStatus.RUNNING)
    old = store.claim_lease(JobKind.COPY, copy, "hub-1", LONG)
    new = store.claim_lease(JobKind.COPY, copy, "hub-2", LONG, take_over=True)
    assert new.epoch == old.epoch + 1
    with pytest.raises(LeaseLost):
        store.renew_lease(old, LONG)


def test_leases_of_unknown_jobs(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_lease(JobKind.MOVE, new_id())
    with pytest.raises(NotFound):
        store.claim_lease(JobKind.COPY, new_id(), "hub-1", LONG)


def test_concurrent_scans_claim_each_lapsed_job_once(store_target) -> None:
    """Several hub processes scanning at once (each its own connection): every lapsed job goes
    to exactly one of them (PostgreSQL: SKIP LOCKED; SQLite: one writer at a time)."""
    setup = store_target.open()
    try:
        moves = [a_move(setup) for _ in range(24)]
        for move in moves:
            setup.update_move_status(move, MoveStatus.RUNNING)
            setup.claim_lease(JobKind.MOVE, move, "hub-dead", 0)
    finally:
        setup.close()
    claims: dict[str, list[str]] = {}
    start = threading.Barrier(3)

    def scan(owner: str) -> None:
        store = store_target.open()
        try:
            start.wait()
            mine = claims.setdefault(owner, [])
            while True:
                got = store.claim_lapsed(JobKind.MOVE, owner, LONG, limit=2)
                if not got:
                    return
                mine += [lease.job_id for lease in got]
        finally:
            store.close()

    threads = [threading.Thread(target=scan, args=(f"hub-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [job for owned in claims.values() for job in owned]
    assert sorted(taken) == sorted(moves)  # every job once, none twice
    check = store_target.open()
    try:
        for owner, owned in claims.items():
            assert all(check.get_lease(JobKind.MOVE, job).owner == owner for job in owned)
    finally:
        check.close()


def test_running_jobs_from_before_leases_are_taken_over(store_target) -> None:
    """Migration 7 gives a job that was running under an older hub a lease that lapsed long ago."""
    store = store_target.open(migrate=False)
    try:
        from hub_client.store.sql import SqlStore

        assert isinstance(store, SqlStore)
        with store._migration_transaction() as conn:
            store._exec(conn, migrations.BOOTSTRAP[store.dialect])
            for migration in migrations.MIGRATIONS[store.dialect][:6]:
                for statement in migration.statements:
                    store._exec(conn, statement)
                store._exec(conn, "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                            (migration.version, migration.description, store._time_in(store.store_time())))
        running, pending = a_version_6_move(store), a_version_6_move(store)
        with store._transaction() as conn:
            store._exec(conn, "UPDATE moves SET status = ? WHERE id = ?", (MoveStatus.RUNNING, running))
        assert store.migrate() == migrations.latest(store.dialect) - 6
        [lease] = store.claim_lapsed(JobKind.MOVE, "hub-new", LONG)
        assert lease.job_id == running and lease.epoch == 1
        assert store.get_lease(JobKind.MOVE, pending) is None
    finally:
        store.close()


def test_moves_forced_before_the_split_keep_both_overrides(store_target) -> None:
    """Migration 8: a move recorded with force before force_target existed keeps both meanings its
    force had (a loss of edits, a draining or silent target); one without force gets neither."""
    store = store_target.open(migrate=False)
    try:
        with store._migration_transaction() as conn:
            store._exec(conn, migrations.BOOTSTRAP[store.dialect])
            for migration in migrations.MIGRATIONS[store.dialect][:7]:
                for statement in migration.statements:
                    store._exec(conn, statement)
                store._exec(conn, "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                            (migration.version, migration.description, store._time_in(store.store_time())))
        forced, plain = a_version_6_move(store), a_version_6_move(store)
        with store._transaction() as conn:
            store._exec(conn, "UPDATE moves SET force = ? WHERE id = ?", (True, forced))
        assert store.migrate() == migrations.latest(store.dialect) - 7
        assert (store.get_move(forced).force, store.get_move(forced).force_target) == (True, True)
        assert (store.get_move(plain).force, store.get_move(plain).force_target) == (False, False)
        fresh = store.create_move(*_placed_elsewhere(store), force=True)
        assert (fresh.force, fresh.force_target) == (True, False)
    finally:
        store.close()


def _placed_elsewhere(store) -> tuple[str, str, str]:
    _, target, project = seed(store)
    return project.id, project.host_id, target.id
