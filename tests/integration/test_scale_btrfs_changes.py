"""btrfs change detection at a flat cost: generations read by ioctl after one syncfs per
filesystem, and no ``btrfs`` process in a reconcile cycle (counted by a wrapper binary)."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import time
import uuid

from agent.backends import btrfs_cli as bc
from agent.backends.btrfs import BtrfsBackend
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.harness import new_id


def test_a_write_changes_the_generation_read_after_the_cycles_sync(btrfs_fs):
    base = btrfs_fs.mountpoint / f"gen-{uuid.uuid4().hex[:8]}"
    backend = BtrfsBackend(projects_root=base / "projects", persist_root=base / "persist", state_dir=base / "state")
    written, quiet = new_id(), new_id()
    for project_id in (written, quiet):
        asyncio.run(backend.create(project_id, quota_bytes=None))
    before = asyncio.run(backend.generations([written, quiet]))
    assert asyncio.run(backend.generations([written, quiet])) == before  # nothing written: nothing moves
    # No fsync: the write sits in the running transaction until the cycle's syncfs commits it.
    (backend.home(written) / "f.txt").write_text("acknowledged before the cycle")
    after = asyncio.run(backend.generations([written, quiet]))
    assert after[written].project > before[written].project
    assert after[written].persist == before[written].persist and after[quiet] == before[quiet]
    # The same number `btrfs subvolume show` gives (what the agent read before the ioctl).
    shown = subprocess.run(bc.subvolume_show_args("btrfs", str(backend.home(written))), capture_output=True,
                           text=True, check=True).stdout
    assert bc.parse_subvolume_show(shown).generation == after[written].project
    assert asyncio.run(backend.generation(written)) == after[written]


def _wrapper(tmp_path):
    calls = tmp_path / "btrfs-calls.log"
    calls.touch()
    wrapper = tmp_path / "btrfs"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nexec /usr/bin/btrfs "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, calls


def _cycles(agent) -> list[dict]:
    return [e for e in agent.log_events() if e.get("event") == "freshness.reconciled"]


def _await(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_reconcile_cycles_start_no_btrfs_process_and_see_a_write(agent_factory, btrfs_fs, tmp_path):
    wrapper, calls = _wrapper(tmp_path)
    base = btrfs_fs.mountpoint / f"scale-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(base.name, backend="btrfs", base=base, limits="reconcile_interval = 0.2",
                          extra=f'[btrfs]\nbinary = "{wrapper}"')
    projects = [new_id() for _ in range(3)]
    for project_id in projects:
        ensure = agent.stub.EnsureProject(pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id),
                                          timeout=30)
        assert agent.wait(ensure.id).state == pb.SUCCEEDED
    assert calls.read_text(), "the wrapper is the binary the agent runs"
    # Steady: two cycles in a row that found nothing new (the first ones record the generations).
    _await(lambda: [e["changed"] for e in _cycles(agent)][-2:] == [0, 0], "the cycles never settled")
    started, cycles = calls.read_text(), len(_cycles(agent))
    steady = cycles

    (agent.home(projects[0]) / "data.txt").write_text("written")  # no fsync
    _await(lambda: any(e["changed"] == 1 for e in _cycles(agent)[cycles:]), "the reconciler never saw the write")
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    listed = agent.stub.ListProjects(pb.ListProjectsRequest(), timeout=10)
    assert host.projects == 3 and {p.project_id for p in listed.projects} == set(projects)
    assert not any(p.frozen for p in listed.projects)
    cycles = len(_cycles(agent))
    _await(lambda: len(_cycles(agent)) >= cycles + 2, "no reconcile cycle ran")
    assert calls.read_text() == started, "a btrfs process ran during reconcile cycles or status calls"
    assert all(e["failed"] == 0 and e["projects"] == 3 for e in _cycles(agent)[steady:]), _cycles(agent)[steady:]
