"""The agent's backup scheduler through real agent processes and the real rustic: changed
projects are backed up on their own within the RPO, unchanged ones cost no engine run; the
schedule survives a SIGKILL; a failing repository backs off and is reported while the others go
on; a hub Backup during a scheduled one waits for it and then delivers the write made before
its call; a Restore, a Delete or a Verify during a scheduled one cancels it and goes ahead."""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import time

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import cheap_repository
from tests.conftest import requires_restic
from tests.harness import TERMINAL_STATES, adopting_orphans, catch_engine, create_project, manifest, new_id, wait_reaped
from tests.tools import require_tool

pytestmark = [requires_restic]

RPO = 60.0


@pytest.fixture(scope="module")
def rustic_binary() -> str:
    return require_tool("rustic")


def schedule_agent(agent_factory, rustic_binary, *, rpo: float = RPO, concurrency: int = 3, max_running: int = 4,
                   name: str = "agent", backend: str = "directory", base=None):
    extra = f'rustic_binary = "{rustic_binary}"\n[schedule]\nrpo = {rpo}\nconcurrency = {concurrency}\n'
    return agent_factory(name, extra=extra, engine="rustic", backend=backend, base=base,
                         limits=f"max_concurrent_operations = {max_running}\n")


def operations(agent) -> list[pb.Operation]:
    response = agent.stub.ListOperations(pb.ListOperationsRequest(page_size=1000), timeout=10)
    return list(response.operations)


def scheduled(agent, project_id: str | None = None) -> list[pb.Operation]:
    """The scheduler's backups (request ids "scheduled-..."), oldest first."""
    found = [op for op in operations(agent) if op.kind == pb.OPERATION_KIND_BACKUP
             and op.request_id.startswith("scheduled-") and (project_id is None or op.project_id == project_id)]
    return sorted(found, key=lambda op: op.created_at.ToNanoseconds())


def caught_scheduled_backup(agent, project_id: str | None = None):
    """(the caught engine, the scheduled operation it runs): the next rustic backup stopped once it
    has moved 64 KiB (``engine.resume()`` lets it go on)."""
    engine = catch_engine(agent, "backup", moved_first=64 * 1024, names=("rustic",))
    return engine, next(op for op in scheduled(agent, project_id) if op.state == pb.RUNNING)


def wait_until(predicate, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def write_acknowledged(path, data: bytes) -> float:
    """Write and fsync ``data``; returns the time just before the write began (the change's
    earliest moment: the RPO is measured from it)."""
    began = time.time()
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return began


def read_in_snapshot(agent, project_id: str, snapshot_id: str, path: str) -> bytes | None:
    try:
        response = agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id,
                                                          path=path), timeout=60)
    except Exception:  # not in that snapshot
        return None
    return response.content


def engine_runs_naming(agent, project_id: str, since: int) -> int:
    """Engine processes the agent started (its process.start log events after the first ``since``)
    whose command line names the project (a backup's --host project-<id>, its tags)."""
    return sum(1 for argv in agent.started_argvs()[since:] if any(project_id in a for a in argv))


def cycles_logged(agent) -> int:
    return sum(1 for e in agent.log_events() if e.get("event") == "schedule.cycle")


def all_backed_up(agent, projects) -> bool:
    done = {op.project_id for op in scheduled(agent) if op.state == pb.SUCCEEDED}
    return set(projects) <= done


def settled(agent, projects) -> None:
    """Wait until the scheduler has nothing left to do: every project backed up, none dirty,
    nothing running, and no new operation over two more full cycles (a project written while the
    test made it may be backed up twice: its first capture can predate its last file)."""
    while True:
        wait_until(lambda: all_backed_up(agent, projects), what="every project backed up")
        before = {op.id for op in operations(agent)}
        seen = cycles_logged(agent)
        wait_until(lambda: cycles_logged(agent) >= seen + 2, what="two more scheduler cycles")
        status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
        if status.dirty == 0 and {op.id for op in operations(agent)} == before \
                and all(op.state in TERMINAL_STATES for op in operations(agent)):
            return


def test_written_projects_are_backed_up_within_the_rpo_and_unwritten_ones_start_no_engine(
        agent_factory, rustic_binary):
    agent = schedule_agent(agent_factory, rustic_binary)
    projects = [create_project(agent, files=2, size=256) for _ in range(30)]
    # The first backups: every project was never backed up, so the scheduler takes them all.
    settled(agent, projects)
    baseline_ops = {op.id for op in operations(agent)}
    baseline_runs = len(agent.started_argvs())

    written = random.Random().sample(projects, 10)
    writes = {}
    for project_id in written:
        content = os.urandom(64).hex().encode()
        began = write_acknowledged(agent.home(project_id) / "rpo-write.txt", content)
        writes[project_id] = (began, content)

    def snapshot_with_write(project_id: str) -> pb.Operation | None:
        began, content = writes[project_id]
        for op in scheduled(agent, project_id):
            if op.id in baseline_ops or op.state != pb.SUCCEEDED:
                continue
            if read_in_snapshot(agent, project_id, op.summary.snapshot_id, "project/rpo-write.txt") == content:
                return op
        return None

    delivered = {}
    for project_id in written:
        delivered[project_id] = wait_until(lambda: snapshot_with_write(project_id), timeout=2 * RPO,
                                           what=f"a scheduled snapshot of {project_id} holding its write")
    # Two more looks at every project after the last of them: an unwritten project wrongly seen
    # changed would have been due at once.
    seen = cycles_logged(agent)
    wait_until(lambda: cycles_logged(agent) >= seen + 2, what="two more scheduler cycles")

    for project_id, op in delivered.items():
        began, _ = writes[project_id]
        assert op.finished_at.ToNanoseconds() / 1e9 - began < RPO, project_id
        assert engine_runs_naming(agent, project_id, baseline_runs) >= 1
    unwritten = set(projects) - set(written)
    new_ops = [op for op in operations(agent) if op.id not in baseline_ops]
    assert {op.project_id for op in new_ops} <= set(written)
    assert {p: engine_runs_naming(agent, p, baseline_runs) for p in unwritten} == {p: 0 for p in unwritten}
    # Never two backups of one project at once, and nothing is left running.
    assert not [op for op in operations(agent) if op.state not in TERMINAL_STATES]


def schedule_rows(agent) -> list[tuple]:
    with sqlite3.connect(f"file:{agent.state_dir / 'agent.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT project_id, failures, next_attempt, last_attempt FROM schedule_state").fetchall()


def test_a_sigkill_mid_backup_leaves_no_state_behind_and_the_schedule_goes_on(agent_factory, rustic_binary, tmp_path):
    base = tmp_path / "killed"
    agent = schedule_agent(agent_factory, rustic_binary, base=base, concurrency=1, max_running=2)
    big = create_project(agent, files=40, size=64 * 1024)
    small = create_project(agent, files=2)
    engine, caught = caught_scheduled_backup(agent)
    with adopting_orphans():
        agent.kill()
        # Its own process group, not reached by the agent's kill; it may be gone already (it dies
        # with the agent: PDEATHSIG).
        with contextlib.suppress(psutil.NoSuchProcess):
            engine.kill()
        wait_reaped([engine])

    agent.start()
    assert agent.stub.GetOperation(pb.GetOperationRequest(operation_id=caught.id), timeout=10).state == pb.INTERRUPTED
    wait_until(lambda: all_backed_up(agent, [big, small]), what="both projects backed up after the restart")
    # A change after the restart is picked up as well.
    began = write_acknowledged(agent.home(big) / "after-restart.txt", b"after the restart")
    op = wait_until(lambda: next((o for o in scheduled(agent, big) if o.state == pb.SUCCEEDED
                                  and o.created_at.ToNanoseconds() / 1e9 > began), None),
                    timeout=2 * RPO, what="a backup of the change made after the restart")
    assert read_in_snapshot(agent, big, op.summary.snapshot_id, "project/after-restart.txt") == b"after the restart"
    assert not [o for o in operations(agent) if o.state not in TERMINAL_STATES]
    assert agent.staging_left() == []
    rows = schedule_rows(agent)
    assert sorted(r[0] for r in rows) == sorted([big, small]) and all(r[1] == 0 for r in rows)
    # Every scheduled backup of a project ran alone (they never overlap in time).
    for project_id in (big, small):
        spans = [(o.started_at.ToNanoseconds(), o.finished_at.ToNanoseconds()) for o in scheduled(agent, project_id)
                 if o.started_at.ToNanoseconds()]
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), project_id


def test_a_failing_repository_backs_off_and_is_reported_while_the_others_are_backed_up(
        agent_factory, rustic_binary):
    rpo = 40.0  # backoff: 1 s, 2 s, 4 s, ... capped at 10 s (policy.backoff_seconds)
    agent = schedule_agent(agent_factory, rustic_binary, rpo=rpo, concurrency=2)
    # A real failure: the project's repository exists, under another password.
    broken = new_id()
    cheap_repository.init_local(agent.repository(broken), "not-the-agents-password")
    operation = agent.stub.EnsureProject(pb.EnsureProjectRequest(
        request_id=new_id(), project_id=broken, mode=pb.EnsureProjectRequest.NONE), timeout=30)
    assert agent.wait(operation.id).state == pb.SUCCEEDED
    (agent.home(broken) / "data.txt").write_text("never backed up")
    healthy = [create_project(agent, files=2) for _ in range(2)]

    failed = wait_until(lambda: len(f := [o for o in scheduled(agent, broken) if o.state == pb.FAILED]) >= 4 and f,
                        what="four failed scheduled backups of the broken project")
    starts = [o.created_at.ToNanoseconds() / 1e9 for o in failed[:4]]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[2] > gaps[0] + 1.0 and max(gaps) < rpo, gaps  # the waits grow (1 s, 2 s, 4 s), below the RPO
    assert failed[0].error.code == "FAILED_PRECONDITION", failed[0].error  # a wrong repository password
    reports = [e for e in agent.log_events() if e.get("event") == "schedule.backup_failed"
               and e.get("project_id") == broken]
    assert [e["failures"] for e in reports[:3]] == [1, 2, 3]
    # No attempt came before the time its previous failure set.
    planned = {e["operation_id"]: e["next_attempt"] for e in reports}
    assert all(later.created_at.ToNanoseconds() / 1e9 >= planned[earlier.id] - 0.01
               for earlier, later in zip(failed, failed[1:4]))
    row = next(r for r in schedule_rows(agent) if r[0] == broken)
    assert row[1] >= 3 and row[2] > row[3]
    # The others are backed up, and backed up again after a change, meanwhile.
    wait_until(lambda: all_backed_up(agent, healthy), what="the healthy projects backed up")
    began = write_acknowledged(agent.home(healthy[0]) / "later.txt", b"later")
    op = wait_until(lambda: next((o for o in scheduled(agent, healthy[0]) if o.state == pb.SUCCEEDED
                                  and o.created_at.ToNanoseconds() / 1e9 > began), None),
                    what="the healthy project's change backed up")
    assert read_in_snapshot(agent, healthy[0], op.summary.snapshot_id, "project/later.txt") == b"later"

    # The backoff survives a restart: the failures go on counting from where they were.
    agent.stop()
    counted = max(e["failures"] for e in agent.log_events() if e.get("event") == "schedule.backup_failed"
                  and e.get("project_id") == broken)
    agent.start()
    wait_until(lambda: any(e.get("event") == "schedule.backup_failed" and e.get("project_id") == broken
                           and e["failures"] == counted + 1 for e in agent.log_events()),
               what="the next failure counted on after the restart")


def test_a_hub_backup_during_a_scheduled_one_waits_for_it_and_holds_the_write_before_its_call(
        agent_factory, rustic_binary):
    agent = schedule_agent(agent_factory, rustic_binary, concurrency=1, max_running=2)
    project_id = create_project(agent, files=40, size=64 * 1024)
    engine, running = caught_scheduled_backup(agent, project_id)
    try:
        write_acknowledged(agent.home(project_id) / "before-the-call.txt", b"acknowledged before the call")
        hub = agent.stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=project_id, purpose="move"),
                                timeout=30)
        again = agent.stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=project_id, purpose="move"),
                                  timeout=30)
    finally:
        engine.resume()
    assert hub.id != running.id and hub.state == pb.PENDING
    assert again.id == hub.id and again.joined  # a second identical request joins the hub's
    final = agent.wait(hub.id)
    first = agent.wait(running.id)
    assert first.state == pb.SUCCEEDED and final.state == pb.SUCCEEDED
    assert final.started_at.ToNanoseconds() >= first.finished_at.ToNanoseconds()  # one after the other
    # The hub's snapshot holds the write. (Whether the scheduled one does is up to the engine's walk
    # of the live tree on this backend; on btrfs it read a frozen snapshot: the test below.)
    assert read_in_snapshot(agent, project_id, final.summary.snapshot_id, "project/before-the-call.txt") \
        == b"acknowledged before the call"


def test_a_freeze_cancels_a_running_scheduled_backup_so_the_final_backup_does_not_wait_for_it(
        agent_factory, rustic_binary):
    agent = schedule_agent(agent_factory, rustic_binary, concurrency=1, max_running=2)
    project_id = create_project(agent, files=40, size=64 * 1024)
    engine, running = caught_scheduled_backup(agent, project_id)
    write_acknowledged(agent.home(project_id) / "before-the-freeze.txt", b"acknowledged before the freeze")
    freeze(agent, project_id)
    # Stopped mid-read, the engine is never resumed: the cancel must end it (SIGKILL after its grace).
    cancelled = agent.wait(running.id, timeout=30)
    assert cancelled.state == pb.CANCELLED
    assert not engine.is_running() or engine.status() == "zombie"
    hub = agent.stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=project_id, purpose="move"), timeout=30)
    final = agent.wait(hub.id)
    assert final.state == pb.SUCCEEDED, final.error
    assert read_in_snapshot(agent, project_id, final.summary.snapshot_id, "project/before-the-freeze.txt") \
        == b"acknowledged before the freeze"
    agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=30)


def backup_runs(agent, project_id: str) -> int:
    return sum(1 for argv in agent.started_argvs() if "backup" in argv and any(project_id in a for a in argv))


def test_on_btrfs_a_hub_backup_during_a_scheduled_one_costs_no_engine_run_unless_the_project_changed(
        agent_factory, rustic_binary, btrfs_fs):
    base = btrfs_fs.mountpoint / f"agent-{new_id()[:8]}"
    agent = schedule_agent(agent_factory, rustic_binary, rpo=20.0, concurrency=1, max_running=2, backend="btrfs",
                           name=base.name, base=base)
    project_id = create_project(agent, files=2)
    # 1: one write, then nothing after the scheduled capture: the hub's Backup waits and is
    # UP_TO_DATE with the scheduled snapshot, without an engine run of its own.
    for attempt in range(3):
        settled(agent, [project_id])  # earlier backups (one may have caught a tree half-made) are over
        write_acknowledged(agent.home(project_id) / f"bulk-{attempt}.bin", os.urandom(40 * 64 * 1024))
        written = time.time_ns()
        engine, running = caught_scheduled_backup(agent, project_id)
        runs = backup_runs(agent, project_id)
        if running.started_at.ToNanoseconds() > written:
            break
        engine.resume()  # it started during the write: not the case this round is about
    else:
        raise AssertionError("no scheduled backup started after the write")
    try:
        hub = agent.stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=project_id, purpose="move"),
                                timeout=30)
    finally:
        engine.resume()
    first, final = agent.wait(running.id), agent.wait(hub.id)
    assert first.state == pb.SUCCEEDED and final.state == pb.UP_TO_DATE
    assert final.summary.snapshot_id == first.summary.snapshot_id
    assert backup_runs(agent, project_id) == runs

    # 2: a write acknowledged after the scheduled capture and before the hub's call: the hub's
    # Backup runs the engine and its snapshot holds the write.
    # New data to read, so the next scheduled backup can be caught moving it.
    write_acknowledged(agent.home(project_id) / "next-round.bin", os.urandom(40 * 64 * 1024))
    engine, running = caught_scheduled_backup(agent, project_id)
    runs = backup_runs(agent, project_id)
    try:
        write_acknowledged(agent.home(project_id) / "before-the-call.txt", b"acknowledged before the call")
        hub = agent.stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=project_id, purpose="move"),
                                timeout=30)
    finally:
        engine.resume()
    first, final = agent.wait(running.id), agent.wait(hub.id)
    assert first.state == pb.SUCCEEDED and final.state == pb.SUCCEEDED
    assert read_in_snapshot(agent, project_id, final.summary.snapshot_id, "project/before-the-call.txt") \
        == b"acknowledged before the call"
    assert read_in_snapshot(agent, project_id, first.summary.snapshot_id, "project/before-the-call.txt") is None
    assert backup_runs(agent, project_id) == runs + 1  # the hub's own


def forgets(agent, project_id: str) -> list[pb.Operation]:
    return [op for op in operations(agent) if op.kind == pb.OPERATION_KIND_FORGET and op.project_id == project_id]


def snapshot_ids(agent, project_id: str) -> list[str]:
    response = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=60)
    return [s.id for s in response.snapshots]


def test_retention_follows_the_scheduled_backups(agent_factory, rustic_binary):
    extra = (f'rustic_binary = "{rustic_binary}"\n[schedule]\nrpo = 20\n'
             "[retention]\ninterval = 1\nkeep_last = 1\n")
    agent = agent_factory("retained", extra=extra, engine="rustic")
    project_id = create_project(agent, files=2)
    wait_until(lambda: all_backed_up(agent, [project_id]), what="the first scheduled backup")
    time.sleep(1.0)  # past the retention interval of the first round
    write_acknowledged(agent.home(project_id) / "second.txt", b"second round")
    second = wait_until(lambda: next((o for o in scheduled(agent, project_id)[1:] if o.state == pb.SUCCEEDED), None),
                        what="the second scheduled backup")
    wait_until(lambda: any(f.state == pb.SUCCEEDED and f.created_at.ToNanoseconds() > second.finished_at.ToNanoseconds()
                           for f in forgets(agent, project_id)), what="retention after the second backup")
    kept = snapshot_ids(agent, project_id)
    assert [s[:8] for s in kept] == [second.summary.snapshot_id[:8]]


def test_a_project_never_backed_up_is_not_a_retention_failure(agent_factory):
    agent = agent_factory("retention", extra="[retention]\ninterval = 0.5\nkeep_last = 1\n")
    backed_up = create_project(agent, files=2)
    assert agent.wait(agent.backup(backed_up).id).state == pb.SUCCEEDED
    never = create_project(agent, files=2)
    wait_until(lambda: len([f for f in forgets(agent, backed_up) if f.state == pb.SUCCEEDED]) >= 2,
               what="two retention rounds")
    assert forgets(agent, never) == []


def freeze(agent, project_id: str) -> None:
    agent.stub.Freeze(pb.FreezeRequest(project_id=project_id), timeout=120)


def test_a_frozen_project_is_skipped_not_failed_and_backed_up_once_thawed(agent_factory, rustic_binary):
    agent = schedule_agent(agent_factory, rustic_binary, rpo=60.0, concurrency=2)
    held, other = create_project(agent, files=2), create_project(agent, files=2)
    wait_until(lambda: all_backed_up(agent, [held, other]), what="the first scheduled backups")
    # Both changed well before they are due again (rpo/10 after their last backup); one frozen.
    for project_id in (held, other):
        write_acknowledged(agent.home(project_id) / "while-frozen.txt", b"written before the freeze")
    freeze(agent, held)
    frozen_at = time.time_ns()
    wait_until(lambda: any(o.state == pb.SUCCEEDED and o.created_at.ToNanoseconds() > frozen_at
                           for o in scheduled(agent, other)), what="the other project's change backed up")
    skipped = lambda: sum(1 for e in agent.log_events()  # noqa: E731
                          if e.get("event") == "schedule.frozen_skipped" and e.get("project_id") == held)
    wait_until(lambda: skipped() >= 2, what="the frozen project skipped twice")
    assert [o for o in scheduled(agent, held) if o.created_at.ToNanoseconds() > frozen_at] == []
    assert all(row[1] == 0 for row in schedule_rows(agent))  # skipped is not failed
    agent.stub.Thaw(pb.ThawRequest(project_id=held), timeout=30)
    wait_until(lambda: any(o.state == pb.SUCCEEDED and read_in_snapshot(
        agent, held, o.summary.snapshot_id, "project/while-frozen.txt") == b"written before the freeze"
        for o in scheduled(agent, held)), what="the thawed project's write in a scheduled snapshot")


def test_no_scheduled_backup_starts_inside_a_quiet_window(agent_factory, rustic_binary):
    now = time.localtime()
    start, end = (now.tm_hour * 60 + now.tm_min - 1) % 1440, (now.tm_hour * 60 + now.tm_min + 10) % 1440
    window = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"  # may wrap past midnight
    extra = f'rustic_binary = "{rustic_binary}"\n[schedule]\nrpo = 20\nquiet_windows = ["{window}"]\n'
    agent = agent_factory("quiet", extra=extra, engine="rustic")
    project_id = create_project(agent, files=2)  # never backed up: due at once but for the window
    quiet = lambda: sum(1 for e in agent.log_events() if e.get("event") == "schedule.quiet")  # noqa: E731
    seen = quiet()
    wait_until(lambda: quiet() >= seen + 3, what="three quiet cycles")
    assert scheduled(agent, project_id) == []


def last_scheduled_snapshot(agent, project_id: str) -> str:
    return [op for op in scheduled(agent, project_id) if op.state == pb.SUCCEEDED][-1].summary.snapshot_id


def cancelled_for(agent, running: pb.Operation, engine, request: pb.Operation) -> None:
    """The caught scheduled backup ended CANCELLED for ``request``, its engine gone."""
    cancelled = agent.wait(running.id, timeout=60)
    assert cancelled.state == pb.CANCELLED and request.id in cancelled.error.message, cancelled.error
    assert not engine.is_running() or engine.status() == "zombie"


def test_a_restore_and_a_delete_during_a_running_scheduled_backup_cancel_it_and_go_ahead(
        agent_factory, rustic_binary):
    # rpo 20: a change is due 2 s after it, the schedule looks each second.
    agent = schedule_agent(agent_factory, rustic_binary, rpo=20.0, concurrency=1, max_running=2)
    project_id = create_project(agent, files=40, size=64 * 1024)
    settled(agent, [project_id])
    snapshot = last_scheduled_snapshot(agent, project_id)
    backed_up = manifest(agent.home(project_id))

    # Restore: the scheduled backup of an unsaved change is caught running.
    unsaved = os.urandom(40 * 64 * 1024)
    write_acknowledged(agent.home(project_id) / "unsaved.bin", unsaved)
    engine, running = caught_scheduled_backup(agent, project_id)
    restore = agent.restore(project_id, snapshot)  # was ABORTED: a scheduled backup ran
    assert restore.state == pb.PENDING
    cancelled_for(agent, running, engine, restore)
    done = agent.wait(restore.id)
    # Warned: the unsaved change was backed up first, as the pre-restore snapshot it names.
    assert done.state == pb.SUCCEEDED_WITH_WARNINGS, done.error
    assert manifest(agent.home(project_id)) == backed_up
    pre_restore = re.search(r"pre-restore snapshot ([0-9a-f]+)", " ".join(done.summary.warnings)).group(1)
    assert read_in_snapshot(agent, project_id, pre_restore, "project/unsaved.bin") == unsaved
    # No lock or half state left by the cancelled run: a backup of the same repository succeeds.
    write_acknowledged(agent.home(project_id) / "after.txt", b"after the restore")
    after = agent.wait(agent.backup(project_id).id)
    assert after.state == pb.SUCCEEDED, after.error
    assert read_in_snapshot(agent, project_id, after.summary.snapshot_id, "project/after.txt") == b"after the restore"
    settled(agent, [project_id])
    kept = manifest(agent.home(project_id))

    # Delete: another scheduled backup caught running.
    write_acknowledged(agent.home(project_id) / "doomed.bin", os.urandom(40 * 64 * 1024))
    engine, running = caught_scheduled_backup(agent, project_id)
    delete = agent.stub.DeleteProject(pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id),
                                      timeout=30)
    cancelled_for(agent, running, engine, delete)
    done = agent.wait(delete.id)
    assert done.state == pb.SUCCEEDED, done.error
    assert not agent.home(project_id).exists() and not agent.persist(project_id).exists()
    # The repository is whole and unlocked: the project comes back from its newest backup.
    ensure = agent.stub.EnsureProject(pb.EnsureProjectRequest(
        request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.REQUIRED), timeout=30)
    assert agent.wait(ensure.id).state == pb.SUCCEEDED
    assert manifest(agent.home(project_id)) == kept
    # Cancelled for a request is not a failure of the project: no backoff.
    assert all(row[1] == 0 for row in schedule_rows(agent))


def test_a_verify_during_a_running_scheduled_backup_cancels_it_and_the_change_is_backed_up_later(agent_factory):
    # On restic (Debian's 0.14): its check takes the repository's exclusive lock after the cancelled
    # backup's restic was killed. (A killed restic's lock on this host is stale, which restic
    # itself ignores: this does not tell whether the agent's unlock after it ran.)
    agent = agent_factory("restic-schedule", extra="[schedule]\nrpo = 20\nconcurrency = 1\n",
                          limits="max_concurrent_operations = 2\n")
    project_id = create_project(agent, files=40, size=64 * 1024)
    settled(agent, [project_id])
    unsaved = os.urandom(40 * 64 * 1024)
    write_acknowledged(agent.home(project_id) / "unsaved.bin", unsaved)
    engine = catch_engine(agent, "backup", moved_first=64 * 1024, names=("restic",))
    running = next(op for op in scheduled(agent, project_id) if op.state == pb.RUNNING)
    verify = agent.verify(project_id)  # was ABORTED: a scheduled backup ran
    cancelled_for(agent, running, engine, verify)
    done = agent.wait(verify.id)
    assert done.state == pb.SUCCEEDED, done.error
    # The change stayed unprotected, and the schedule backs it up on its own.
    later = wait_until(lambda: next((op for op in scheduled(agent, project_id) if op.state == pb.SUCCEEDED
                                     and op.created_at.ToNanoseconds() > running.created_at.ToNanoseconds()), None),
                       what="a scheduled backup after the cancelled one")
    assert read_in_snapshot(agent, project_id, later.summary.snapshot_id, "project/unsaved.bin") == unsaved
    assert all(row[1] == 0 for row in schedule_rows(agent))
