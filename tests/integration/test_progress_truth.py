"""Progress that tells the truth, from a real agent: a first backup says it initialises the
repository, events keep coming while a (throttled) upload runs, a phase's percent never goes back
and a message-only event does not reset its figures, and the terminal event carries the final
figures (not zeros)."""

from __future__ import annotations

import contextlib
import threading
import time

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import create_project

pytestmark = requires_restic
FIGURES = ("percent", "bytes_done", "bytes_total", "files_done", "files_total")


@contextlib.contextmanager
def throttled_engine(agent, subcommand: str, *, run: float = 0.005, pause: float = 0.195):
    """While the block runs, the agent's engine child running ``subcommand`` gets ``run`` seconds
    of every ``run + pause`` (SIGSTOP/SIGCONT): its work lasts seconds on any machine, so the
    reports it sends meanwhile can be counted. 2.5% of the time: restic 0.14 hashes 24 MB in
    about 0.1 s of CPU, so at 10% a quiet machine saw it done within two of its 0.5 s reports."""
    stop = threading.Event()

    def engines() -> list[psutil.Process]:
        found = []
        for child in psutil.Process(agent.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one that just ended
                if child.name() in ("rustic", "restic") and subcommand in child.cmdline():
                    found.append(child)
        return found

    def throttle() -> None:
        while not stop.is_set():
            held = engines()
            try:
                for engine in held:
                    with contextlib.suppress(psutil.Error):
                        engine.suspend()
                time.sleep(pause if held else 0.005)
            finally:  # never left stopped
                for engine in held:
                    with contextlib.suppress(psutil.Error):
                        engine.resume()
            time.sleep(run)

    thread = threading.Thread(target=throttle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def assert_truthful(events: list[pb.ProgressEvent], final: pb.Operation) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].terminal and not any(e.terminal for e in events[:-1])
    by_phase: dict[str, pb.ProgressEvent] = {}
    for event in events[:-1]:
        before = by_phase.get(event.phase)
        if before is not None:
            assert event.percent >= before.percent, (before, event)
            if not (event.bytes_total or event.files_total):  # a message-only event keeps the figures
                assert (event.percent, event.bytes_done) == (before.percent, before.bytes_done), (before, event)
        by_phase[event.phase] = event
        assert 0.0 <= event.percent <= 100.0
        assert event.files_done <= event.files_total or not event.files_total, event
    end = events[-1]
    assert end.percent == 100.0
    assert end.bytes_done == end.bytes_total == final.summary.bytes_processed > 0
    assert end.files_done == end.files_total == final.summary.files_processed > 0


@pytest.mark.parametrize("engine", ["rustic", "restic"])
def test_a_first_backup_and_a_restore_report_truthful_progress(agent_factory, engine):
    agent = agent_factory(engine=engine, make_repositories=False)
    project_id = create_project(agent, files=24, size=1_000_000, repository=False)
    with throttled_engine(agent, "backup"):
        operation = agent.backup(project_id)
        final = agent.wait(operation.id)
    assert final.state == pb.SUCCEEDED, final.error
    events = [u.event for u in agent.events(operation.id) if u.HasField("event")]
    phases = [e.phase for e in events]
    assert "init" in phases and "upload" in phases and phases.index("init") < phases.index("upload"), phases
    uploads = {e.bytes_done for e in events if e.phase == "upload"}
    assert len(uploads) >= 3, [(e.phase, e.bytes_done) for e in events]
    assert_truthful(events, final)

    (agent.home(project_id) / "d0" / "extra.txt").parent.mkdir(exist_ok=True)
    (agent.home(project_id) / "d0" / "extra.txt").write_text("after the backup")
    restore = agent.restore(project_id, final.summary.snapshot_id)
    restored = agent.wait(restore.id)
    assert restored.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS), restored.error
    events = [u.event for u in agent.events(restore.id) if u.HasField("event")]
    assert_truthful(events, restored)
    # A second backup of the same repository has nothing to initialise.
    again = agent.backup(project_id, force=True)
    assert agent.wait(again.id).state == pb.SUCCEEDED
    assert "init" not in [u.event.phase for u in agent.events(again.id) if u.HasField("event")]
