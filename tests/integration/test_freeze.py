"""Freeze that holds, on real agents, btrfs on a loop device and the directory backend: after
Freeze answers, no process can change the project's data (writers stopped, not only new opens
refused), every write a writer saw acknowledged is in the tree; REFUSE names the writers and
leaves the project writable; a restart keeps the freeze; MarkEdited is refused; DeleteProject
never makes the frozen project writable; a project cgroup is frozen and thawed."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.harness import create_project, manifest, new_id
from tests.writers import Writer, missing, start_writers


@pytest.fixture(params=["btrfs", "directory"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_agent(agent_factory, backend, request):
    """Start an agent of the parametrised backend (btrfs: on the session's loop device)."""

    def start(extra: str = ""):
        if backend == "btrfs":
            btrfs_fs = request.getfixturevalue("btrfs_fs")
            base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
            return agent_factory(base.name, backend="btrfs", base=base, extra=extra)
        return agent_factory(f"agent-{uuid.uuid4().hex[:8]}", extra=extra)

    return start


@pytest.fixture
def running():
    """Writers started by a test; killed at its end whatever happened."""
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


def freeze(agent, project_id: str, **fields) -> pb.FreezeResponse:
    return agent.stub.Freeze(pb.FreezeRequest(project_id=project_id, **fields), timeout=120)


def frozen(agent, project_id: str) -> bool:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30).frozen


def write_elsewhere(path: Path) -> subprocess.CompletedProcess:
    """A fresh process opening ``path`` for writing (not one Freeze saw)."""
    return subprocess.run(["sh", "-c", f"echo data >> '{path}'"], capture_output=True, text=True)


def wait_ended(writer: Writer, timeout: float = 10.0) -> None:
    # The agent waited for it to exit; here only the child's reaping by this test is awaited.
    deadline = time.monotonic() + timeout
    while writer.alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_freeze_stops_a_writer_holding_an_fd_and_keeps_every_acknowledged_write(make_agent, running, tmp_path):
    agent = make_agent()
    project_id = create_project(agent, files=5)
    home, persist = agent.home(project_id), agent.persist(project_id)
    running += start_writers(home, tmp_path / "ledgers", kinds=("held",))
    running.append(Writer("held", persist / "state.log", tmp_path / "ledgers" / "persist.ledger").start())
    for writer in running:
        writer.wait_acknowledged(20)

    answer = freeze(agent, project_id)

    stopped = {s.pid: s for s in answer.stopped}
    assert {w.pid for w in running} <= set(stopped), answer
    for writer in running:
        assert stopped[writer.pid].action in ("terminated", "killed")
        assert str(writer.target) in stopped[writer.pid].paths
        wait_ended(writer)
        assert not writer.alive()
    contents = {w.target: w.target.read_bytes() for w in running}
    for writer in running:
        assert missing(writer, writer.target) == [], writer.kind
        assert len(writer.acknowledged()) >= 20
    # Nothing can write now: new opens fail for any process, root included.
    for path in (home / "held.log", home / "new.txt", persist / "new.txt"):
        result = write_elsewhere(path)
        assert result.returncode != 0 and "Read-only file system" in result.stderr, result
    assert {w.target: w.target.read_bytes() for w in running} == contents
    assert frozen(agent, project_id)


def test_refuse_names_the_writers_and_leaves_the_project_writable(make_agent, running, tmp_path):
    agent = make_agent()
    project_id = create_project(agent, files=3)
    home = agent.home(project_id)
    running += start_writers(home, tmp_path / "ledgers", kinds=("held",))
    writer = running[0]
    writer.wait_acknowledged(5)

    with pytest.raises(grpc.RpcError) as info:
        freeze(agent, project_id, writers=pb.WRITERS_REFUSE, sentinel_path="persist/.m", sentinel_content="x")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The agent names each writer by its command line, cut at 80 characters (however long the
    # checkout's path makes it).
    command = " ".join(Path(f"/proc/{writer.pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0"))
    assert f"pid {writer.pid}" in info.value.details() and f"({command[:80]})" in info.value.details()

    assert writer.alive() and not frozen(agent, project_id)
    count = len(writer.acknowledged())
    writer.wait_acknowledged(count + 5)  # still writing, and acknowledged
    assert writer.alive() and missing(writer, writer.target) == []
    assert write_elsewhere(home / "new.txt").returncode == 0
    assert not (agent.persist(project_id) / ".m").exists()  # refused before anything was written


def test_a_writable_shared_mapping_is_found_and_stopped(make_agent, running, tmp_path):
    agent = make_agent()
    project_id = create_project(agent, files=3)
    # Slow, so it is found asleep: on btrfs a page first dirtied after the freeze gets SIGBUS
    # (the kernel stops it), but pages already dirty are written back through the mapping.
    writer = Writer("mmap", agent.home(project_id) / "mapped.db", tmp_path / "mmap.ledger", interval=1.0).start()
    running.append(writer)
    writer.wait_acknowledged(2)

    answer = freeze(agent, project_id)

    assert writer.pid in {s.pid for s in answer.stopped}
    wait_ended(writer)
    assert not writer.alive()
    assert missing(writer, writer.target) == []


def test_the_directory_backend_stops_processes_working_inside_the_tree(agent_factory, running, tmp_path):
    agent = agent_factory("dir-agent")
    project_id = create_project(agent, files=3)
    home = agent.home(project_id)
    # No file open for writing, but through its working directory a process reaches the writable
    # mount below the read-only bind (openat relative to it).
    sitter = subprocess.Popen(["sh", "-c", "echo ready; exec sleep 600"], cwd=home, stdout=subprocess.PIPE)
    try:
        assert sitter.stdout.readline() == b"ready\n"
        answer = freeze(agent, project_id)
        assert sitter.pid in {s.pid for s in answer.stopped}
        assert sitter.wait(timeout=10) != 0
    finally:
        sitter.kill()
        sitter.wait()


def test_a_frozen_project_stays_frozen_across_a_restart_and_thaw_undoes_it(make_agent, tmp_path):
    agent = make_agent()
    project_id = create_project(agent, files=3)
    home = agent.home(project_id)
    freeze(agent, project_id)
    agent.stop()
    assert write_elsewhere(home / "while-down.txt").returncode != 0  # the freeze is not in the agent
    agent.start()
    assert frozen(agent, project_id)
    assert write_elsewhere(home / "new.txt").returncode != 0

    with pytest.raises(grpc.RpcError) as info:
        agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=project_id), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    for _ in range(2):
        assert not agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=30).frozen
    assert not frozen(agent, project_id)
    assert write_elsewhere(home / "new.txt").returncode == 0
    assert write_elsewhere(agent.persist(project_id) / "new.txt").returncode == 0
    agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=project_id), timeout=10)


def test_deleting_a_frozen_project_never_makes_it_writable(make_agent, backend, running, tmp_path):
    agent = make_agent()
    project_id = create_project(agent, files=200)
    home = agent.home(project_id)
    if backend == "btrfs":  # a nested subvolume: its entry needs a writable parent to be removed
        subprocess.run(["btrfs", "subvolume", "create", str(home / "nested")], check=True, capture_output=True)
        (home / "nested" / "inside.txt").write_text("nested\n")
    freeze(agent, project_id)
    # Keeps trying to write into the frozen project while it is deleted.
    running += start_writers(home, tmp_path / "ledgers", kinds=("persistent",))
    running.append(Writer("persistent", agent.persist(project_id) / "p.log", tmp_path / "ledgers" / "p.ledger",
                          interval=0.001).start())
    time.sleep(0.2)

    operation = agent.stub.DeleteProject(pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id),
                                         timeout=30)
    assert agent.wait(operation.id).state == pb.SUCCEEDED
    time.sleep(0.2)

    assert all(w.acknowledged() == [] for w in running), [w.acknowledged()[:3] for w in running]
    assert not home.exists() and not agent.persist(project_id).exists()
    if backend == "directory":
        mounted = Path("/proc/self/mountinfo").read_text()
        assert str(home) not in mounted and str(agent.persist(project_id)) not in mounted


def _cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2" and os.access(fields[1], os.W_OK):
            return Path(fields[1])
    return None


def test_a_project_cgroup_is_frozen_and_thawed(agent_factory, running, tmp_path):
    root = _cgroup2_root()
    if root is None or os.geteuid() != 0:
        pytest.skip("needs a writable cgroup2 hierarchy (root)")
    parent = root / f"buckets-test-{uuid.uuid4().hex[:8]}"
    agent = agent_factory("cg-agent", extra=f'[freeze]\ncgroup = "{parent}/project-{{project_id}}"\n')
    project_id = create_project(agent, files=3)
    cgroup = parent / f"project-{project_id}"
    cgroup.mkdir(parents=True)
    try:
        writer = Writer("held", agent.home(project_id) / "cg.log", tmp_path / "cg.ledger").start()
        running.append(writer)
        (cgroup / "cgroup.procs").write_text(str(writer.pid))
        writer.wait_acknowledged(5)

        answer = freeze(agent, project_id)

        assert answer.cgroup == str(cgroup)
        assert [(s.pid, s.action) for s in answer.stopped] == [(writer.pid, "cgroup-frozen")]
        assert "frozen 1" in (cgroup / "cgroup.events").read_text()
        count = len(writer.acknowledged())
        time.sleep(0.3)
        assert len(writer.acknowledged()) == count and writer.alive()  # frozen, not killed
        assert missing(writer, writer.target) == []

        agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=30)
        assert "frozen 0" in (cgroup / "cgroup.events").read_text()
        writer.wait_acknowledged(count + 3)
    finally:
        for writer in running:
            writer.stop()
        for directory in (cgroup, parent):
            deadline = time.monotonic() + 10
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def test_every_file_changing_rpc_is_refused_on_a_frozen_project_and_backup_works(make_agent):
    agent = make_agent()
    project_id = create_project(agent, files=5)
    source_id = create_project(agent, files=5)
    (agent.home(project_id) / "sub").mkdir()
    (agent.home(project_id) / "sub" / "file.txt").write_text("in the backup\n")
    (agent.home(source_id) / "tocopy.txt").write_text("copy me\n")
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot_id = backup.summary.snapshot_id
    freeze(agent, project_id)
    before = manifest(agent.home(project_id)), manifest(agent.persist(project_id))

    for fields in ({}, {"subpath": "project/sub", "target_path": "restored"}):
        refused = agent.wait(agent.restore(project_id, snapshot_id, **fields).id)
        assert (refused.state, refused.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), fields
    copy = agent.stub.CopyFiles(pb.CopyFilesRequest(
        request_id=new_id(), source_project_id=source_id, source_path="tocopy.txt", target_project_id=project_id,
        target_path="copied"), timeout=30)
    refused = agent.wait(copy.id)
    assert (refused.state, refused.error.code) == (pb.FAILED, "FAILED_PRECONDITION")
    with pytest.raises(grpc.RpcError) as info:
        agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=project_id), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The move's catch-up backup reads the frozen project.
    catch_up = agent.wait(agent.backup(project_id, force=True).id)
    assert catch_up.state == pb.SUCCEEDED, catch_up.error
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before


def test_a_btrfs_delete_killed_while_the_home_was_hidden_is_finished_by_the_next_delete(
    agent_factory, btrfs_fs, tmp_path
):
    base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(base.name, backend="btrfs", base=base)
    project_id = create_project(agent, files=5)
    home = agent.home(project_id)
    subprocess.run(["btrfs", "subvolume", "create", str(home / "nested")], check=True, capture_output=True)
    # What a deletion SIGKILLed inside its hidden phase leaves: an empty read-only directory
    # mounted over the home, the home itself writable.
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["mount", "--bind", str(empty), str(home)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(home)], check=True)

    operation = agent.stub.DeleteProject(pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id),
                                         timeout=30)
    final = agent.wait(operation.id)
    assert final.state == pb.SUCCEEDED, final.error
    assert not home.exists() and str(home) not in Path("/proc/self/mountinfo").read_text()
