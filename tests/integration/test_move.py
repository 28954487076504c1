"""Moving a project between two real agents that share a repository, with the hub's store on
SQLite and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import ONLINE_STEPS, SENTINEL_PATH, MoveError, MoveRefused
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Cleanup, Host, MoveStatus, Project, open_store
from tests.harness import REPO_ROOT, create_project, manifest, new_id
from tests.hubs import make_hub, register

SENTINEL_NAME = SENTINEL_PATH.split("/", 1)[1]


def place_project(hub: Hub, agent, *, files: int, size: int = 512) -> str:
    """A project created on ``agent`` (host-a) and registered in the hub's store there."""
    project_id = create_project(agent, files=files, size=size)
    hub.add_project(project_id, "host-a", "eu")
    return project_id


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)


def test_move_of_a_few_thousand_files(hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    project_id = place_project(hub, a, files=3000)
    seen_on_source: dict[str, dict] = {}

    def before_step(step: str) -> None:
        if step == "freeze":  # after the bulk backup: an edit only the catch-up backup can carry
            (a.home(project_id) / "edited-before-freeze.txt").write_text("late edit\n")
            seen_on_source["persist_before_freeze"] = manifest(a.persist(project_id))
        if step == "restore":  # the source is frozen: this is what the target must end up with
            seen_on_source["home"] = manifest(a.home(project_id))
            seen_on_source["persist"] = manifest(a.persist(project_id))

    entries = []
    move = hub.move(project_id, "host-b", observer=entries.append, before_step=before_step)

    assert move.status == MoveStatus.SUCCEEDED
    assert manifest(b.home(project_id)) == seen_on_source["home"]
    assert len(seen_on_source["home"]) > 3000
    # The sentinel proved the catch-up snapshot on the target and was removed at finalize: the
    # persist location is the source's as it was before the freeze, its mtime included.
    assert manifest(b.persist(project_id)) == seen_on_source["persist_before_freeze"]
    assert not (b.persist(project_id) / SENTINEL_NAME).exists()
    assert (b.home(project_id) / "edited-before-freeze.txt").read_text() == "late edit\n"
    assert [e.message for e in entries if e.kind == "step"] == list(ONLINE_STEPS)
    assert any(e.kind == "verify" and "sentinel found" in e.message for e in entries)
    assert any(e.kind == "progress" and e.data["host"] == "host-b" for e in entries)
    # Placement, then the source's copy removed; the target's copy is in service (not frozen).
    assert hub.store.get_project(project_id).host_id == "host-b"
    assert not a.home(project_id).exists() and not a.persist(project_id).exists()
    assert hub.store.get_move(move.id).cleanup == Cleanup.DONE
    assert not status(b, project_id).frozen
    # The movelog is the record afterwards too.
    assert [(e.seq, e.kind) for e in hub.store.movelog(move.id)] == [(e.seq, e.kind) for e in entries]
    assert entries[-1].kind == "cleanup"


def test_an_edit_made_just_before_the_freeze_reaches_the_target(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    project_id = place_project(sqlite_hub, a, files=50)

    def before_step(step: str) -> None:
        if step == "freeze":
            (a.home(project_id) / "d0").mkdir(exist_ok=True)
            (a.home(project_id) / "d0" / "f0.bin").write_bytes(b"rewritten after the bulk backup")
            (a.home(project_id) / "new.txt").write_text("new after the bulk backup\n")

    move = sqlite_hub.move(project_id, "host-b", before_step=before_step)
    assert move.status == MoveStatus.SUCCEEDED
    assert (b.home(project_id) / "d0" / "f0.bin").read_bytes() == b"rewritten after the bulk backup"
    assert (b.home(project_id) / "new.txt").read_text() == "new after the bulk backup\n"


def test_source_down_refused_without_force_then_moved_from_the_last_backup(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=200)
    operation = a.backup(project_id)
    assert a.wait(operation.id).state == pb.SUCCEEDED
    backed_up = manifest(a.home(project_id))
    project = hub.refresh_project(project_id)
    assert project.last_backup is not None
    # Edits after the backup that the hub knows of (e.g. from MarkEdited), then the host dies.
    (a.home(project_id) / "after-backup.txt").write_text("only on host-a\n")
    hub.store.upsert_project(Project(project_id, "host-a", "eu", project.repository, project.last_backup,
                                     project.last_backup + timedelta(minutes=41, seconds=30)))
    a.kill()

    with pytest.raises(MoveRefused, match="up to 42 minutes of changes would be lost") as refused:
        hub.move(project_id, "host-b")
    assert refused.value.loss_minutes == 42
    failed = hub.store.active_move(project_id)
    assert (failed.status, failed.step) == (MoveStatus.FAILED, "preflight")
    assert "42 minutes" in failed.error
    assert not status(b, project_id).present
    assert hub.store.get_project(project_id).host_id == "host-a"

    entries = []
    move = hub.move(project_id, "host-b", force=True, observer=entries.append)
    assert move.id == failed.id and move.status == MoveStatus.SUCCEEDED
    assert manifest(b.home(project_id)) == backed_up
    warnings = [e for e in hub.store.movelog(move.id) if e.kind == "warning" and e.data.get("loss_minutes")]
    assert warnings and warnings[-1].data["loss_minutes"] == 42 and "42 minutes" in warnings[-1].message
    assert hub.store.get_project(project_id).host_id == "host-b"
    # The source could not be cleaned; it is when it is back.
    assert hub.store.get_move(move.id).cleanup == Cleanup.PENDING
    a.start()
    register(hub, "host-a", a)
    assert hub.run_cleanups() == []
    assert not a.home(project_id).exists()
    assert hub.store.get_move(move.id).cleanup == Cleanup.DONE


def test_target_stopped_mid_restore_keeps_the_source_then_retry_completes(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=600, size=4096)

    def stop_target_when_restore_starts(entry) -> None:
        if entry.kind == "operation" and entry.data.get("step") == "restore":
            b.kill()

    with pytest.raises(MoveError, match="restore"):
        hub.move(project_id, "host-b", observer=stop_target_when_restore_starts)
    move = hub.store.active_move(project_id)
    assert (move.status, move.step) == (MoveStatus.FAILED, "restore")
    assert move.error and "host-b" in move.error
    assert hub.store.get_project(project_id).host_id == "host-a"
    assert not status(a, project_id).frozen
    (a.home(project_id) / "written-after-the-failure.txt").write_text("the source is writable\n")

    b.start()
    register(hub, "host-b", b)
    assert not status(b, project_id).present  # the interrupted restore left nothing in place
    retried = hub.retry(move.id)
    assert retried.status == MoveStatus.SUCCEEDED and retried.attempts == 2
    assert (b.home(project_id) / "written-after-the-failure.txt").read_text() == "the source is writable\n"
    assert hub.store.get_project(project_id).host_id == "host-b"


def test_target_without_the_sentinel_fails_verification_and_keeps_placement(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=100)

    def lose_the_sentinel(step: str) -> None:
        if step == "verify":  # the target said it restored, but the data is not all there
            (b.persist(project_id) / SENTINEL_NAME).unlink()

    with pytest.raises(MoveError, match="verification failed"):
        hub.move(project_id, "host-b", before_step=lose_the_sentinel)
    move = hub.store.active_move(project_id)
    assert (move.status, move.step) == (MoveStatus.FAILED, "verify")
    assert "DATA_LOSS" in move.error
    assert hub.store.get_project(project_id).host_id == "host-a"
    assert not status(a, project_id).frozen
    assert not status(b, project_id).present  # the unverified copy was removed
    assert a.home(project_id).is_dir()


def test_refusals_change_nothing(sqlite_hub: Hub, two_hosts) -> None:
    a, b = two_hosts
    hub = sqlite_hub
    project_id = place_project(hub, a, files=10)
    hub.store.upsert_host(Host("host-us", "127.0.0.1:9", "us", "running"))
    hub.store.upsert_host(Host("host-gone", "127.0.0.1:9", "eu", "running"))

    def refused(target: str, pattern: str, **kwargs) -> None:
        with pytest.raises(MoveRefused, match=pattern):
            hub.move(project_id, target, **kwargs)
        hub.cancel(hub.store.active_move(project_id).id)
        assert hub.store.get_project(project_id).host_id == "host-a"
        assert not status(a, project_id).frozen

    refused("host-us", "cross-region")
    refused("host-gone", "was not seen")
    refused("host-gone", "was not seen", force=True)  # force accepts a loss of edits, not a silent target
    refused("host-gone", "does not answer", force_target=True)
    hub.store.upsert_host(Host("host-b", f"127.0.0.1:{b.port}", "eu", "draining"))
    refused("host-b", "host-b is draining")
    register(hub, "host-b", b)
    foreign = b.stub.EnsureProject(pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id,
                                                           mode=pb.EnsureProjectRequest.NONE), timeout=30)
    assert b.wait(foreign.id).state == pb.SUCCEEDED
    refused("host-b", "already holds a copy")
    assert b.home(project_id).is_dir()  # not ours to remove
    assert [m.status for m in hub.store.list_moves(project_id=project_id)] == [MoveStatus.CANCELLED] * 6


# ---------------------------------------------------------------- hub processes


def hub_process(store_url: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hub_client", "--store", store_url, "--retries", "3", *argv],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'hub.sqlite'}"
    return request.getfixturevalue("pg_server").create_database("hub")


def test_hub_killed_between_steps_then_resume_completes(store_url: str, two_hosts) -> None:
    a, b = two_hosts
    store = open_store(store_url)
    try:
        with make_hub(store, two_hosts) as hub:
            project_id = place_project(hub, a, files=400)
            before = manifest(a.home(project_id))
            process = hub_process(store_url, "move", project_id, "--to", "host-b")
            try:
                move = wait_for_step(store, project_id, "final_backup", process)
                os.killpg(process.pid, signal.SIGKILL)
            finally:
                process.kill()
                process.communicate(timeout=30)
            stopped = store.get_move(move.id)
            assert stopped.status == MoveStatus.RUNNING  # nobody is running it any more
            assert store.get_project(project_id).host_id == "host-a"

            resumed = hub.resume(move.id)
            assert resumed.status == MoveStatus.SUCCEEDED
            assert manifest(b.home(project_id)) == before
            assert store.get_project(project_id).host_id == "host-b"
            log = store.movelog(move.id)
            attempts = [e for e in log if e.kind == "attempt"]
            assert len(attempts) == 2 and attempts[-1].data["how"] == "resume"
            if stopped.step == "final_backup":  # the resumed step joined the operation it had started
                final_ops = {e.data["operation_id"] for e in log
                             if e.kind == "operation" and e.data["step"] == "final_backup"}
                assert len(final_ops) == 1
    finally:
        store.close()


def wait_for_step(store, project_id: str, step: str, process: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        move = store.active_move(project_id)
        if move is not None and any(e.kind == "step" and e.message == step for e in store.movelog(move.id)):
            return move
        if process.poll() is not None:
            raise AssertionError(f"the hub exited early ({process.returncode}): {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"step {step} was not reached")


def test_two_hub_processes_on_postgres_move_the_same_project_once(pg_server, two_hosts) -> None:
    a, b = two_hosts
    url = pg_server.create_database("hub")
    store = open_store(url)
    try:
        with make_hub(store, two_hosts) as hub:
            project_id = place_project(hub, a, files=300)
        processes = [hub_process(url, "move", project_id, "--to", "host-b") for _ in range(2)]
        results = [process.communicate(timeout=180) for process in processes]
        codes = sorted(process.returncode for process in processes)
        assert codes == [0, 3], results
        loser = next(err for (out, err), p in zip(results, processes) if p.returncode == 3)
        assert "move in progress" in loser and project_id in loser
        moves = store.list_moves(project_id=project_id)
        assert [m.status for m in moves] == [MoveStatus.SUCCEEDED]
        assert moves[0].id in loser  # the conflict names the move that runs
        # One process ran it: one owner ever claimed its lease.
        assert len({e.data["owner"] for e in store.movelog(moves[0].id) if e.kind == "lease"}) == 1
        assert store.get_project(project_id).host_id == "host-b"
    finally:
        store.close()
