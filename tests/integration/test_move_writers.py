"""Moves raced by writers in the source home (issue 16, "a freeze that holds"): three writer
processes — one re-opening its log for every line, one holding one fd open and writing every
~20 ms, one that keeps trying after errors — append lines, fsync, and record each acknowledged
line in a ledger outside the project. After the move, every acknowledged line is in the target
home; on btrfs (loop device) and on the directory backend, with the hub on SQLite and on
PostgreSQL; also with the source agent SIGKILLed while Freeze is stopping a writer."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import MoveError
from hub_client.store import MoveStatus
from tests.conftest import requires_restic
from tests.harness import create_project
from tests.hubs import make_hub, register
from tests.writers import Writer, missing, start_writers

pytestmark = [requires_restic]


@pytest.fixture(params=["btrfs", "directory"])
def backend(request) -> str:
    return request.param


def agent_pair(agent_factory, backend: str, request, tmp_path: Path, freeze: str = ""):
    """host-a and host-b of one backend sharing one local repository (as hosts of a region share
    a bucket); btrfs agents live on the session's loop device."""
    password_file = tmp_path / "repo.password"
    password_file.write_text("move-writers-password\n")
    password_file.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{tmp_path / "shared-repos"}"\n'
             f'password_file = "{password_file}"\n{freeze}')
    agents = []
    for name in ("host-a", "host-b"):
        if backend == "btrfs":
            base = request.getfixturevalue("btrfs_fs").mountpoint / f"{name}-{uuid.uuid4().hex[:8]}"
            agents.append(agent_factory(base.name, backend="btrfs", base=base, extra=extra, host_id=name))
        else:
            agents.append(agent_factory(name, extra=extra, host_id=name))
    return tuple(agents)


@pytest.fixture
def writers_running():
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


def assert_every_acknowledged_line_arrived(writers: list[Writer], target_home: Path) -> None:
    for writer in writers:
        assert writer.acknowledged(), f"writer {writer.kind} never wrote: the race did not happen"
        lost = missing(writer, target_home / writer.target.name)
        assert lost == [], f"writer {writer.kind}: {len(lost)} acknowledged line(s) lost, e.g. {lost[:3]}"


def test_a_move_raced_by_three_writers_loses_no_acknowledged_write(
    store, agent_factory, backend, request, tmp_path, writers_running
) -> None:
    a, b = agent_pair(agent_factory, backend, request, tmp_path)
    with make_hub(store, (a, b)) as hub:
        project_id = create_project(a, files=40)
        hub.add_project(project_id, "host-a", "eu")
        writers_running += start_writers(a.home(project_id), tmp_path / "ledgers")
        for writer in writers_running:
            writer.wait_acknowledged(10)
        held = next(w for w in writers_running if w.kind == "held")

        entries = []
        move = hub.move(project_id, "host-b", observer=entries.append)

        assert move.status == MoveStatus.SUCCEEDED
        assert hub.store.get_project(project_id).host_id == "host-b"
        assert_every_acknowledged_line_arrived(writers_running, b.home(project_id))
        assert not held.alive(), "the writer holding an fd open must have been stopped by the freeze"
        # Freeze reported what it stopped: the fd-holding writer, with its pid, command and path.
        freeze_entry = next(e for e in entries if e.kind == "freeze")
        stopped = {s["pid"]: s for s in freeze_entry.data["stopped"]}
        assert held.pid in stopped, freeze_entry
        assert "writers.py held" in stopped[held.pid]["command"]
        assert stopped[held.pid]["action"] in ("terminated", "killed")
        assert str(held.target) in stopped[held.pid]["paths"]
        assert f"{held.pid} (" in freeze_entry.message
        assert not a.home(project_id).exists()  # the source copy was cleaned, never thawed first


def test_source_agent_killed_while_freeze_stops_a_writer_then_resumed_loses_nothing(
    agent_factory, backend, request, tmp_path, writers_running
) -> None:
    from hub_client.store import open_store

    # A long grace and a writer that ignores SIGTERM: Freeze is certainly inside its stopping
    # when the agent is killed (the tree already read-only, the writer still writing through its fd).
    a, b = agent_pair(agent_factory, backend, request, tmp_path, freeze="[freeze]\ngrace = 3\n")
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        with make_hub(store, (a, b)) as hub:
            project_id = create_project(a, files=40)
            hub.add_project(project_id, "host-a", "eu")
            writers_running += start_writers(a.home(project_id), tmp_path / "ledgers")
            stubborn = Writer("held", a.home(project_id) / "stubborn.log", tmp_path / "ledgers" / "stubborn.ledger",
                              ignore_term=True).start()
            writers_running.append(stubborn)
            for writer in writers_running:
                writer.wait_acknowledged(10)
            killed = threading.Event()

            def kill_when_stopping() -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if any(e.get("event") == "freeze.stopping_writers" for e in a.log_events()):
                        a.kill()
                        killed.set()
                        return
                    time.sleep(0.01)

            def before_step(step: str) -> None:
                if step == "freeze" and not killed.is_set():
                    threading.Thread(target=kill_when_stopping, daemon=True).start()

            with pytest.raises(MoveError):
                hub.move(project_id, "host-b", before_step=before_step)
            assert killed.is_set(), "the agent was not killed inside Freeze"
            move = hub.store.active_move(project_id)
            assert hub.store.get_project(project_id).host_id == "host-a"
            assert stubborn.alive()  # the kill came before its SIGKILL

            a.start()
            register(hub, "host-a", a)
            retried = hub.retry(move.id)

            assert retried.status == MoveStatus.SUCCEEDED
            assert hub.store.get_project(project_id).host_id == "host-b"
            assert not stubborn.alive()
            assert_every_acknowledged_line_arrived(writers_running, b.home(project_id))
    finally:
        store.close()
