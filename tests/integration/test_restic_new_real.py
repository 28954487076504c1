"""A real agent on the pinned restic 0.18.1: its restore uses restic >= 0.17's ``restore --json``
(chosen by the probed version). Progress events come from restic's own status lines; a restore
stopped by SIGTERM or cancelled is never SUCCEEDED and nothing of it is swapped in.

restic 0.14 keeps the measured progress; that path is covered by the restore tests that pin it."""

from __future__ import annotations

import os
import signal
import stat
import time

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.harness import manifest, write_tree
from tests.tools import require_tool


@pytest.fixture(scope="module")
def restic_binary() -> str:
    """The pinned restic 0.18.1; the module skips, saying so, only when it is not built."""
    return require_tool("restic")


def restic_agent(agent_factory, restic_binary, limits: str = ""):
    return agent_factory("restic-new", extra=f'restic_binary = "{restic_binary}"\n', engine="restic", limits=limits)


def backed_up(agent, project_id, megabytes: int):
    """A project with ``megabytes`` of 1 MiB files and a few small ones, backed up; then changed on
    disk. Returns (snapshot id, bytes and entries the snapshot holds, manifests of the tree now)."""
    home, persist = agent.home(project_id), agent.persist(project_id)
    write_tree(home, files=12, depth=2)
    (home / "big").mkdir()
    for index in range(megabytes):
        (home / "big" / f"big-{index}.bin").write_bytes(os.urandom(1024 * 1024))
    write_tree(persist, files=2, depth=0)
    total = entries = 0
    for root in (home, persist):
        for directory, dirs, files in os.walk(root):
            entries += len(dirs) + len(files)
            infos = [os.lstat(os.path.join(directory, name)) for name in files]
            total += sum(info.st_size for info in infos if stat.S_ISREG(info.st_mode))
    entries += 2  # the snapshot's project/ and persist/ themselves
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    for path in sorted(home.rglob("*.bin"))[::2]:
        path.unlink()
    return backup.summary.snapshot_id, total, entries, (manifest(home), manifest(persist))


def test_restore_progress_comes_from_restics_status_lines(agent_factory, restic_binary, project_id):
    # restic reads whole packs (16 MiB) before it writes their files: 24 MiB are two packs, at
    # 8 MiB/s the first one is written about two seconds before the second, and restic prints
    # two status lines a second.
    agent = restic_agent(agent_factory, restic_binary, limits="download_limit_kib = 8192")
    caps = agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=30)
    assert caps.engine == "restic" and caps.engine_version == "0.18.1"
    assert {"restore-json-progress", "restore-over"} <= set(caps.features)
    snapshot_id, total, entries, _ = backed_up(agent, project_id, megabytes=24)
    operation = agent.restore(project_id, snapshot_id, force=True)
    events = [u.event for u in agent.events(operation.id) if u.WhichOneof("update") == "event"]
    final = agent.wait(operation.id)
    assert final.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS), final.error
    during = [e for e in events if e.phase == "restore" and 0 < e.bytes_done < e.bytes_total]
    assert during, "\n".join(str((e.phase, e.percent, e.bytes_done, e.bytes_total, e.files_done, e.files_total)) for e in events)
    # restic's own figures: its total_files counts directories too (the measured path counts
    # files only), its total_bytes the snapshot's file bytes.
    assert {(e.bytes_total, e.files_total) for e in during} == {(total, entries)}
    done = [e.bytes_done for e in during]
    assert done == sorted(done)


# Bytes the caught restic must have written first: past start-up, far from done with 24 MiB.
WRITTEN_FIRST = 4 * 1024 * 1024
# restic writes a pack's files once it has read the pack (16 MiB): at 8 MiB/s the second pack
# takes a second to come, a window in which the first pack's files are written and it is caught.
SLOW = "download_limit_kib = 8192"


def catch_restic_restore(agent, timeout: float = 60.0) -> psutil.Process:
    """The agent's restic restore child, frozen (SIGSTOP) once it has written :data:`WRITTEN_FIRST`
    bytes, so that a signal reaches a run that has not finished, whatever the machine's speed."""
    agent_proc = psutil.Process(agent.process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in agent_proc.children(recursive=True):
            try:
                if child.name() != "restic" or "restore" not in child.cmdline():
                    continue
                if child.io_counters().write_chars >= WRITTEN_FIRST:
                    child.suspend()
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.002)
    raise AssertionError("no restic restore was seen writing")


def test_sigterm_to_restic_restore_fails_and_leaves_the_project_alone(agent_factory, restic_binary, project_id):
    agent = restic_agent(agent_factory, restic_binary, limits=SLOW)
    snapshot_id, _, _, before = backed_up(agent, project_id, megabytes=24)
    operation = agent.restore(project_id, snapshot_id, force=True)
    child = catch_restic_restore(agent)
    assert "--json" in child.cmdline()
    child.send_signal(signal.SIGTERM)
    child.resume()
    final = agent.wait(operation.id)
    assert final.state in (pb.FAILED, pb.CANCELLED), final
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before
    assert agent.staging_after_cleanup() == []


def test_cancelled_restic_restore_is_cancelled_and_leaves_the_project_alone(agent_factory, restic_binary,
                                                                             project_id):
    agent = restic_agent(agent_factory, restic_binary, limits=SLOW)
    snapshot_id, _, _, before = backed_up(agent, project_id, megabytes=24)
    operation = agent.restore(project_id, snapshot_id, force=True)
    child = catch_restic_restore(agent)
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    child.resume()  # the agent's stop signal is pending; it arrives now
    final = agent.wait(operation.id)
    assert final.state == pb.CANCELLED, final
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before
    assert agent.staging_after_cleanup() == []
