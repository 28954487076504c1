"""Moves with a pre-copy (issue 18) between real agents on real engines: the target restores the
bulk snapshot while the project runs, and after the freeze fetches only the difference.

Ground truth throughout: the frozen source tree's full manifest (content hashes included) against
the target's, MinIO's own count of the bytes it sent, the target agent's operation list, and the
files under the target's roots (a pre-copy's staging)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import ONLINE_STEPS, SENTINEL_PATH, MoveError, MoveSettings, RepositoryOpener
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MoveStatus, open_store
from tests.harness import REPO_ROOT, create_project, manifest
from tests.hubs import client_config, host_pair, register

MiB = 1 << 20
UNFINISHED = (pb.PENDING, pb.RUNNING, pb.CANCELLING)


# ---------------------------------------------------------------- helpers


def engine_hosts(agent_factory, tmp_path: Path, engine, repository: str | None = None):
    """Agents host-a and host-b on ``engine`` sharing one repository (a local one by default)."""
    password = tmp_path / "repo.password"
    password.write_text("precopy-test-password\n")
    password.chmod(0o600)
    repository = repository or (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{tmp_path / "repos"}"\n'
                                f'password_file = "{password}"\n')
    extra = engine.engine_lines() + repository.replace("{password}", str(password))
    return host_pair(lambda name, **kw: agent_factory(name, engine=engine.driver, **kw), extra)


@contextlib.contextmanager
def store_and_hub(url: str, agents, **settings):
    """A store at ``url`` and a hub on it (:func:`hub_on`); the store is closed at the end,
    whatever the test did."""
    store = open_store(url)
    try:
        with hub_on(store, agents, **settings) as hub:
            yield store, hub
    finally:
        store.close()


def hub_on(store, agents, **settings) -> Hub:
    hub = Hub(store, client_config=client_config, settings=MoveSettings(**settings))
    for agent, name in zip(agents, ("host-a", "host-b")):
        register(hub, name, agent)
    return hub


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)


def operations(agent, project_id: str) -> list[pb.Operation]:
    return list(agent.stub.ListOperations(pb.ListOperationsRequest(project_id=project_id), timeout=10).operations)


def frozen_trees(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def less_sentinel(trees: tuple[dict, dict]) -> tuple[dict, dict]:
    """The frozen source's trees as the target holds them after the move: without the move's
    sentinel, which finalize removes (its write and its removal keep persist's mtime)."""
    name = SENTINEL_PATH.split("/", 1)[1]
    return trees[0], {path: row for path, row in trees[1].items() if path != name}


def differences(got: tuple[dict, dict], want: tuple[dict, dict]) -> dict[str, tuple]:
    """The entries (``home:path`` / ``persist:path``) whose manifest rows differ: (got, wanted)."""
    out = {}
    for name, mine, theirs in (("home", got[0], want[0]), ("persist", got[1], want[1])):
        for path in sorted(set(mine) | set(theirs)):
            if mine.get(path) != theirs.get(path):
                out[f"{name}:{path}"] = (mine.get(path), theirs.get(path))
    return out


def resume_to_the_frozen_trees(hub, move_id: str, source, target, project_id: str):
    """Resume the move; it must succeed with the target holding exactly the source's trees as
    they were frozen (read when the catch-up restore starts). Returns the move."""
    seen = {}

    def before_step(name: str) -> None:
        if name == "restore":
            seen["frozen"] = frozen_trees(source, project_id)

    resumed = hub.resume(move_id, before_step=before_step)
    assert resumed.status == MoveStatus.SUCCEEDED
    assert differences(frozen_trees(target, project_id), less_sentinel(seen["frozen"])) == {}
    return resumed


def staged_files(agent, project_id: str) -> list[Path]:
    """Every non-directory under the agent's project and persist roots outside the project's
    placed home and persist location: what a pre-copy (or any staging) keeps there."""
    placed = (agent.home(project_id), agent.persist(project_id))
    found = []
    for root in (agent.projects_root, agent.persist_root):
        for path in root.rglob("*"):
            if not path.is_dir() or path.is_symlink():
                if not any(path.is_relative_to(p) for p in placed):
                    found.append(path)
    return found


def settled(agents) -> bool:
    deadline = time.monotonic() + 30
    while any(o.state in UNFINISHED for agent in agents
              for o in agent.stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def restore_entry(hub: Hub, move_id: str):
    return [e for e in hub.store.movelog(move_id) if e.kind == "restore"][-1]


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------- (a) 1 GB, 10 MB changed, on MinIO


def test_a_1gb_project_fetches_only_the_difference_after_the_freeze(agent_factory, tmp_path: Path,
                                                                     own_s3_server) -> None:
    from tests.engines import ENGINES

    rustic = next(e for e in ENGINES if e.driver == "rustic")
    repository = own_s3_server.agent_repository_config(Path("{password}"))
    a, b = engine_hosts(agent_factory, tmp_path, rustic, repository)
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b)) as (store, hub):
        project_id = create_project(a, files=20, size=4096)
        hub.add_project(project_id, "host-a", "eu")
        home = a.home(project_id)
        for index in range(250):  # 250 × 4 MiB of distinct content: ~1.05 GB
            write_file(home / f"bulk/{index // 50}/f{index:03}.bin", os.urandom(4 * MiB))
        changed = 10 * MiB
        seen: dict[str, object] = {}

        def before_step(step: str) -> None:
            if step == "freeze":  # after the pre-copy: 10 MiB of new content, and a deletion
                write_file(home / "late/new-1.bin", os.urandom(4 * MiB))
                write_file(home / "late/new-2.bin", os.urandom(4 * MiB))
                write_file(home / "bulk/0/f000.bin", os.urandom(2 * MiB))  # rewritten, smaller
                (home / "bulk/0/f001.bin").unlink()
                seen["staged"] = len(staged_files(b, project_id))
                seen["sent_at_freeze"] = own_s3_server.s3_bytes_sent()

        def observer(entry) -> None:
            if entry.kind == "complete":  # placement changed in this very transaction
                seen["sent_at_placement"] = own_s3_server.s3_bytes_sent()

        # The source copy stays (frozen, never thawed) until the cleanup: its manifest is taken
        # after placement, so hashing 1 GB is not inside the frozen window the move measures.
        move = hub.move(project_id, "host-b", before_step=before_step, observer=observer, clean_now=False)
        assert move.status == MoveStatus.SUCCEEDED
        assert status(a, project_id).frozen
        seen["frozen"] = frozen_trees(a, project_id)
        assert seen["staged"] > 0  # the pre-copy was there before the freeze
        home_b, persist_b = frozen_trees(b, project_id)
        assert differences((home_b, persist_b), less_sentinel(seen["frozen"])) == {}
        fetched_after_freeze = seen["sent_at_placement"] - seen["sent_at_freeze"]
        restored = restore_entry(hub, move.id)
        print(f"MinIO sent {fetched_after_freeze} bytes between the freeze and placement; the movelog says "
              f"{restored.data['bytes_fetched']} fetched ({restored.data['restore_mode']}); frozen "
              f"{move.frozen_seconds:.2f} s")
        assert restored.data["restore_mode"] == "incremental"
        assert fetched_after_freeze <= 2 * changed  # everything any client read, counted by MinIO
        # The movelog: 3 files changed (2 new, 1 rewritten) plus the sentinel; the bytes where the
        # agent reports them (rustic's restore prints file counts only: then unknown, never 0).
        assert 0 < restored.data["files_fetched"] <= 2 * 4
        if restored.data["bytes_known"]:
            assert 0 < restored.data["bytes_fetched"] <= 2 * changed
            assert move.caught_up_bytes == restored.data["bytes_fetched"]
        else:
            assert move.caught_up_bytes is None and "unreported" in restored.message
        frozen = [e for e in store.movelog(move.id) if e.kind == "frozen"]
        assert len(frozen) == 1 and frozen[0].data["caught_up_bytes"] == move.caught_up_bytes
        steps = [(e.message, e.time) for e in store.movelog(move.id) if e.kind == "step"]
        print("after the freeze:", ", ".join(f"{name} {(when - move.frozen_at).total_seconds():.2f}s"
                                             for name, when in steps if when >= move.frozen_at))
        assert move.frozen_seconds is not None and move.frozen_seconds > 0
        assert staged_files(b, project_id) == []  # the pre-copy was used up, nothing left staged


# ---------------------------------------------------------------- (b) every kind of change, every engine


def test_changes_between_bulk_and_freeze_reach_the_target(agent_factory, tmp_path: Path, engine_under_test) -> None:
    a, b = engine_hosts(agent_factory, tmp_path, engine_under_test)
    # Any difference makes another round: an edit during the first pre-copy gets a second one.
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b), precopy_stop_bytes=0) as (store, hub):
        project_id = create_project(a, files=40, size=2048)
        hub.add_project(project_id, "host-a", "eu")
        home = a.home(project_id)
        write_file(home / "keep/deleted.txt", b"deleted between bulk and freeze\n")
        write_file(home / "keep/renamed.txt", b"renamed between bulk and freeze\n")
        write_file(home / "keep/chmoded.sh", b"#!/bin/sh\necho chmod\n")
        write_file(home / "keep/to-symlink.txt", b"becomes a symlink\n")
        write_file(home / "keep/same-size.txt", b"AAAAAAAAAAAAAAAA\n")
        write_file(home / "gone/inner.txt", b"a directory removed whole\n")
        seen: dict[str, object] = {}

        def before_step(step: str) -> None:
            if step == "freeze":
                (home / "keep/deleted.txt").unlink()
                (home / "keep/renamed.txt").rename(home / "keep/renamed-now.txt")
                (home / "keep/chmoded.sh").chmod(0o755)
                (home / "keep/to-symlink.txt").unlink()
                (home / "keep/to-symlink.txt").symlink_to("renamed-now.txt")
                same = home / "keep/same-size.txt"
                kept = same.stat()
                same.write_bytes(b"BBBBBBBBBBBBBBBB\n")  # same size, same mtime, other content
                os.utime(same, ns=(kept.st_atime_ns, kept.st_mtime_ns))
                (home / "gone/inner.txt").unlink()
                (home / "gone").rmdir()
                seen["staged"] = len(staged_files(b, project_id))
            if step == "restore":
                seen["frozen"] = frozen_trees(a, project_id)

        def edit_during_the_precopy(entry) -> None:
            if entry.kind == "precopy" and entry.data.get("round") == 1:
                write_file(home / "during/precopy.bin", os.urandom(256 * 1024))

        move = hub.move(project_id, "host-b", before_step=before_step, observer=edit_during_the_precopy)
        assert move.status == MoveStatus.SUCCEEDED
        rounds = {e.data["round"]: e.data for e in store.movelog(move.id)
                  if e.kind == "precopy" and "restore_mode" in e.data}
        assert rounds[1]["restore_mode"] == "whole" and rounds[2]["restore_mode"] == "incremental", rounds
        assert rounds[2]["difference"] > 0 and set(rounds) <= {1, 2, 3}
        home_b = b.home(project_id)
        assert differences(frozen_trees(b, project_id), less_sentinel(seen["frozen"])) == {}
        assert not (home_b / "keep/deleted.txt").exists() and not (home_b / "gone").exists()
        assert (home_b / "keep/renamed-now.txt").read_bytes() == b"renamed between bulk and freeze\n"
        assert not (home_b / "keep/renamed.txt").exists()
        assert stat.S_IMODE((home_b / "keep/chmoded.sh").stat().st_mode) == 0o755
        assert os.readlink(home_b / "keep/to-symlink.txt") == "renamed-now.txt"
        assert (home_b / "keep/same-size.txt").read_bytes() == b"BBBBBBBBBBBBBBBB\n"
        # Every engine catches up over the pre-copy (restic 0.14 through `restic diff`): the staged
        # copy was there before the freeze, and was used up.
        mode = restore_entry(hub, move.id).data["restore_mode"]
        assert seen["staged"] > 0 and mode == "incremental", (engine_under_test.id, mode)
        assert staged_files(b, project_id) == []


def test_a_staged_copy_changed_after_its_precopy_outside_the_catch_up_fails_verification(
        agent_factory, tmp_path: Path) -> None:
    """The frozen window checks the whole target against the catch-up snapshot, not only what the
    catch-up touched: entries of the pre-copied staging that the catch-up does not name, changed
    on the target after the pre-copy was checked (one file's size with its mtime put back,
    another's mode, an extra file in a directory whose mtime is put back), are found by the
    verify step, and the move keeps the source."""
    from tests.engines import ENGINES

    a, b = engine_hosts(agent_factory, tmp_path, next(e for e in ENGINES if e.driver == "rustic"))
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b)) as (store, hub):
        project_id = create_project(a, files=40, size=2048)
        write_file(a.home(project_id) / "changed/at-freeze.txt", b"before the freeze\n")
        write_file(a.home(project_id) / "untouched/sized.txt", b"staged as pre-copied\n")
        write_file(a.home(project_id) / "untouched/moded.txt", b"mode\n")
        hub.add_project(project_id, "host-a", "eu")
        home_before: dict = {}
        tampered: list[Path] = []

        def before_step(step: str) -> None:
            if step == "freeze":  # a real catch-up: one file elsewhere changes
                write_file(a.home(project_id) / "changed/at-freeze.txt", b"after the bulk backup\n")
                home_before.update(manifest(a.home(project_id)))
            if step == "restore":  # the catch-up backup is taken; the target has not caught up yet
                staged = {p.relative_to(p.parents[1]).as_posix(): p for p in staged_files(b, project_id)
                          if p.parent.name == "untouched"}
                sized, moded = staged["untouched/sized.txt"], staged["untouched/moded.txt"]
                kept = os.lstat(sized)
                with sized.open("ab") as out:
                    out.write(b"written on the target's staging\n")
                os.utime(sized, ns=(kept.st_atime_ns, kept.st_mtime_ns))
                moded.chmod(0o600 if stat.S_IMODE(moded.stat().st_mode) != 0o600 else 0o640)
                directory = os.lstat(sized.parent)
                (sized.parent / "extra.txt").write_bytes(b"not in any snapshot\n")
                os.utime(sized.parent, ns=(directory.st_atime_ns, directory.st_mtime_ns))
                tampered.append(sized)

        with pytest.raises(MoveError, match="verification failed"):
            hub.move(project_id, "host-b", before_step=before_step)
        assert tampered, "the pre-copy's staging was not there to change"
        move = store.active_move(project_id)
        assert (move.status, move.step) == (MoveStatus.FAILED, "verify")
        assert restore_entry(hub, move.id).data["restore_mode"] == "incremental"
        for named in ("project/untouched/extra.txt: extra", "project/untouched/sized.txt: size",
                      "project/untouched/moded.txt: mode"):
            assert named in move.error, move.error
        assert "in 3 place(s)" in move.error, move.error
        assert store.get_project(project_id).host_id == "host-a"
        assert manifest(a.home(project_id)) == home_before
        assert not status(a, project_id).frozen
        assert not status(b, project_id).present and staged_files(b, project_id) == []


# ---------------------------------------------------------------- (c) kills: target agent, hub


@pytest.fixture
def restic_hosts(agent_factory, tmp_path: Path):
    from tests.engines import ENGINES

    return engine_hosts(agent_factory, tmp_path, next(e for e in ENGINES if e.driver == "restic" and e.tool))


@pytest.mark.parametrize("step", ["precopy", "restore"])
def test_target_agent_killed_during_precopy_or_catch_up_then_resume_completes(
        restic_hosts, tmp_path: Path, step: str) -> None:
    a, b = restic_hosts
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b)) as (store, hub):
        project_id = create_project(a, files=300, size=16384)
        hub.add_project(project_id, "host-a", "eu")
        killed = []

        def kill_target(entry) -> None:
            if (not killed and entry.kind == "operation" and entry.data.get("step") == step
                    and entry.data.get("host") == "host-b"):
                killed.append(entry.data["operation_id"])
                b.kill()

        with pytest.raises(MoveError):
            hub.move(project_id, "host-b", observer=kill_target)
        assert killed
        move = store.active_move(project_id)
        assert move.status == MoveStatus.FAILED and move.step == step
        assert store.get_project(project_id).host_id == "host-a"
        assert not status(a, project_id).frozen  # nothing frozen is left frozen
        assert move.frozen_at is None
        b.start()
        register(hub, "host-b", b)
        resume_to_the_frozen_trees(hub, move.id, a, b, project_id)
        assert not status(b, project_id).frozen and not a.home(project_id).exists()
        assert staged_files(b, project_id) == []
        assert settled((a, b))


def hub_process(store_url: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hub_client", "--store", store_url, "--retries", "3", *argv],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(store, project_id: str, done, process: subprocess.Popen, timeout: float = 120.0):
    """The active move once ``done(movelog)`` holds; AssertionError when the hub exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        move = store.active_move(project_id)
        if move is not None and done(store.movelog(move.id)):
            return move
        if process.poll() is not None:
            raise AssertionError(f"the hub exited early ({process.returncode}): {process.communicate()}")
        time.sleep(0.005)
    raise AssertionError("the hub did not get there in time")


def kill_hub(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.communicate(timeout=30)


def test_hub_killed_between_precopy_and_catch_up_resumes_without_redoing_the_precopy(
        restic_hosts, tmp_path: Path) -> None:
    a, b = restic_hosts
    url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    with store_and_hub(url, (a, b)) as (store, hub):
        project_id = create_project(a, files=300, size=16384)
        hub.add_project(project_id, "host-a", "eu")
        process = hub_process(url, "move", project_id, "--to", "host-b")
        try:
            move = wait_for(store, project_id,
                            lambda log: any(e.kind == "step" and e.message == "freeze" for e in log), process)
        finally:
            kill_hub(process)
        stopped = store.get_move(move.id)
        assert stopped.status == MoveStatus.RUNNING
        assert ONLINE_STEPS.index(stopped.step) >= ONLINE_STEPS.index("freeze")
        resumed = resume_to_the_frozen_trees(hub, move.id, a, b, project_id)
        assert not status(b, project_id).frozen and not a.home(project_id).exists()
        # Ground truth on the target: the bulk snapshot was restored whole once, the catch-up
        # went over that pre-copy.
        ops = operations(b, project_id)
        precopies = [o for o in ops if o.kind == pb.OPERATION_KIND_PRECOPY]
        whole = [o for o in precopies if o.summary.restore_mode == "whole"]
        ensures = [o for o in ops if o.kind == pb.OPERATION_KIND_ENSURE and o.state in (pb.SUCCEEDED,
                                                                                      pb.SUCCEEDED_WITH_WARNINGS)]
        assert len(whole) == 1, [(o.request_id, o.summary.restore_mode) for o in precopies]
        assert [o.summary.restore_mode for o in ensures] == ["incremental"]
        assert resumed.frozen_seconds is not None
        if stopped.frozen_at is not None:  # the window's start survived the hub's death
            assert resumed.frozen_at == stopped.frozen_at
        # The operator sees the window: `buckets moves` and the metrics, read from the store.
        listed = subprocess.run([sys.executable, "-m", "hub_client", "--store", url, "--json", "moves"],
                                cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        row = json.loads(listed.splitlines()[0])
        assert row["id"] == move.id and row["frozen_seconds"] == resumed.frozen_seconds
        assert row["caught_up_bytes"] == resumed.caught_up_bytes
        text = subprocess.run([sys.executable, "-m", "hub_client", "--store", url, "metrics"],
                              cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        assert "buckets_move_frozen_seconds_count 1.0" in text and 'buckets_moves{status="succeeded"} 1.0' in text
        assert staged_files(b, project_id) == []
        assert settled((a, b))


# ---------------------------------------------------------------- (d) failure and cancel leave no staging


def test_a_project_unchanged_since_the_bulk_backup_gets_no_second_round_and_still_arrives_whole(
    restic_hosts, tmp_path: Path,
) -> None:
    """No write during the pre-copy: the source says so (its status scans the trees), so no second
    round's backup and PreCopy; a file written right before the freeze still reaches the target
    through the catch-up (the skip decides nothing about what the move carries). The test that
    writes during round 1 (test_changes_between_bulk_and_freeze_reach_the_target) gets a round 2."""
    a, b = restic_hosts
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b)) as (store, hub):
        project_id = create_project(a, files=30, size=2048)
        hub.add_project(project_id, "host-a", "eu")
        home = a.home(project_id)
        seen = {}

        def write_before_freeze(step: str) -> None:
            if step == "freeze":
                write_file(home / "late/right-before-the-freeze.bin", os.urandom(64 * 1024))
                seen["frozen"] = frozen_trees(a, project_id)

        move = hub.move(project_id, "host-b", before_step=write_before_freeze, clean_now=False)
        assert move.status == MoveStatus.SUCCEEDED
        entries = store.movelog(move.id)
        rounds = [e.data["round"] for e in entries if e.kind == "precopy" and "restore_mode" in e.data]
        assert rounds == [1], [(e.kind, e.message) for e in entries]
        assert any(e.kind == "precopy" and "reports no change since snapshot" in e.message for e in entries)
        backups = [op for op in operations(a, project_id) if op.kind == pb.OPERATION_KIND_BACKUP]
        assert len(backups) == 2, [(op.id, op.state, op.summary.snapshot_id) for op in backups]  # the bulk backup and the catch-up after the freeze
        assert differences(frozen_trees(b, project_id), less_sentinel(seen["frozen"])) == {}


def _event_time(event: dict) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))


def key_reads(agent) -> list[tuple[datetime, datetime | None, int | None]]:
    """The agent's ``cat masterkey`` runs (rustic: the password's KDF): (start, end, returncode)."""
    started, runs = {}, {}
    for event in agent.log_events():
        if event.get("event") == "process.start" and "masterkey" in event.get("argv", []):
            started[event["pid"]] = _event_time(event)
            runs[event["pid"]] = (started[event["pid"]], None, None)
        elif event.get("event") == "process.exit" and event.get("pid") in started:
            runs[event["pid"]] = (started[event["pid"]], _event_time(event), event.get("returncode"))
    return list(runs.values())


def test_the_target_reads_a_new_repositorys_key_while_the_bulk_backup_makes_it(agent_factory, tmp_path: Path,
                                                                               monkeypatch) -> None:
    """A project with no repository yet: the bulk backup makes it (its init, a real KDF), and the
    target derives the repository's key while that backup still runs (the hub's RepositoryOpener
    lists the repository until it exists; the agent answers a missing one with an empty listing),
    so that no run on the target derives it after the backup: the pre-copy and the catch-up read
    with the kept key."""
    from tests.engines import ENGINES

    # Listings from 50 ms on (the hub's are from 250 ms): the repository is found soon after its
    # init on a loaded machine too, where the backup below lasts a second or more after it.
    monkeypatch.setattr(RepositoryOpener, "OPEN_INTERVAL", 0.05)
    a, b = engine_hosts(agent_factory, tmp_path, next(e for e in ENGINES if e.driver == "rustic"))
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b)) as (store, hub):
        # Enough data that the backup outlasts its init by a second or more.
        project_id = create_project(a, files=120, size=MiB, repository=False)
        hub.add_project(project_id, "host-a", "eu")
        move = hub.move(project_id, "host-b", clean_now=False)
        assert move.status == MoveStatus.SUCCEEDED, move.error
        bulk_backup_ended = min(_event_time(e) for e in a.log_events()
                                if e.get("event") == "operation.finished" and e.get("kind") == "backup")
        reads = key_reads(b)
        assert any(end is not None and end < bulk_backup_ended and code == 0 for _, end, code in reads), \
            (bulk_backup_ended, reads)
        assert [read for read in reads if read[0] > bulk_backup_ended] == []


def test_failure_after_the_precopy_and_cancel_leave_no_staging(restic_hosts, tmp_path: Path) -> None:
    a, b = restic_hosts
    with store_and_hub(f"sqlite://{tmp_path / 'hub.sqlite'}", (a, b)) as (store, hub):
        project_id = create_project(a, files=60, size=4096)
        hub.add_project(project_id, "host-a", "eu")
        seen = {}

        def source_dies_at_freeze(step: str) -> None:
            if step == "freeze":
                seen["staged"] = staged_files(b, project_id)
                seen["before"] = frozen_trees(a, project_id)
                a.kill()

        with pytest.raises(MoveError):
            hub.move(project_id, "host-b", before_step=source_dies_at_freeze)
        move = store.active_move(project_id)
        assert move.status == MoveStatus.FAILED
        assert staged_files(b, project_id) == []  # the failure removed the pre-copy
        assert not status(b, project_id).present
        a.start()
        register(hub, "host-a", a)
        cancelled = hub.cancel(move.id)
        assert cancelled.status == MoveStatus.CANCELLED
        assert not status(a, project_id).frozen and frozen_trees(a, project_id) == seen["before"]
        assert staged_files(b, project_id) == [] and settled((a, b))
        assert seen["staged"], "the pre-copy left no files under the target's roots: the check found nothing"


@pytest.mark.parametrize("then", ["resume", "cancel"])
def test_hub_killed_mid_precopy_then_resume_rejoins_or_cancel_removes_it(restic_hosts, tmp_path: Path,
                                                                          then: str) -> None:
    a, b = restic_hosts
    url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    with store_and_hub(url, (a, b)) as (store, hub):
        project_id = create_project(a, files=400, size=32768)
        hub.add_project(project_id, "host-a", "eu")
        process = hub_process(url, "move", project_id, "--to", "host-b")
        try:
            move = wait_for(store, project_id, lambda log: any(
                e.kind == "operation" and e.data.get("step") == "precopy" and e.data.get("host") == "host-b"
                for e in log), process)
        finally:
            kill_hub(process)
        assert store.get_move(move.id).step == "precopy"
        # The pre-copy had started on the target: the cancel has something to remove.
        assert any(o.kind == pb.OPERATION_KIND_PRECOPY for o in operations(b, project_id))
        if then == "resume":  # the resumed hub joins the PreCopy it had started: one whole restore
            resume_to_the_frozen_trees(hub, move.id, a, b, project_id)
            precopies = [o for o in operations(b, project_id) if o.kind == pb.OPERATION_KIND_PRECOPY]
            assert [o.summary.restore_mode for o in precopies].count("whole") == 1, \
                [(o.request_id, o.state, o.summary.restore_mode) for o in precopies]
            assert staged_files(b, project_id) == [] and settled((a, b))
            return
        cancelled = hub.cancel(move.id)
        assert cancelled.status == MoveStatus.CANCELLED
        assert settled((a, b))
        assert staged_files(b, project_id) == [] and not status(b, project_id).present
        assert not status(a, project_id).frozen and store.get_project(project_id).host_id == "host-a"
