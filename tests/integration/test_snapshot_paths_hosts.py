"""Snapshots record host-independent paths, and the API names paths and repositories one way
(issue 21, "One way to name things").

- A project whose trees and repository move to a host whose agent has another state dir keeps
  its parent there: the engine's own grouping (host name and recorded paths) finds the snapshot
  the first host made, and reads only what changed. Ground truth is the engine's stock CLI: the
  snapshot's ``parent`` and ``paths`` as the repository holds them.
- ListSnapshots shows ``/project`` and ``/persist`` for every engine.
- Operation messages and error texts name the configured repository as the API does, never by
  this host's path, and name no state dir.
- The backup view root is shared by every engine run on the host: two agents backing up two
  projects at the very same moment each get exactly their own project's files.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from agent.backends.views import FIXED_ROOT
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import stock_cli
from tests.engines import ENGINES, EngineUnderTest
from tests.harness import AgentProcess, new_id, write_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fixed backup view root needs root")

FILES = 24


def _config(engine: EngineUnderTest, state_dir: Path, shared: Path) -> str:
    """An agent's [engine] lines, its own state dir, and the trees and repositories of ``shared``
    (the disks that move with the projects)."""
    return engine.engine_lines() + f"""
[paths]
state_dir = "{state_dir}"
projects_root = "{shared / 'projects'}"
persist_root = "{shared / 'persist'}"

[repository.local]
root = "{shared / 'repos'}"
password_file = "{shared / 'repository.password'}"
"""


def _stock_snapshots(engine: EngineUnderTest, repository: Path, password_file: Path, scratch: Path) -> dict[str, dict]:
    """Every snapshot of ``repository`` as the engine's own CLI prints it, by full id."""
    args = ("snapshots", "--json", "-g", "") if engine.driver == "rustic" else ("snapshots", "--json")
    result = stock_cli.run(engine, repository, password_file, *args, scratch=scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout or "[]")
    listed = [s for item in listed for s in (item["snapshots"] if "group_key" in item else [item])]
    return {s["id"]: s for s in listed}


def _unmodified(engine_summary: dict | None, summary: pb.OperationSummary) -> int:
    """Files the engine took unchanged from the parent: from the snapshot's own summary where
    the engine keeps one (rustic, restic >= 0.17), else from the backup's summary."""
    if engine_summary and "files_unmodified" in engine_summary:
        return int(engine_summary["files_unmodified"])
    return summary.files_processed - summary.files_new - summary.files_changed


def test_a_project_keeps_its_parent_on_a_host_with_another_state_dir(agent_factory, engine_under_test, tmp_path):
    _moves_with_its_parent(agent_factory, engine_under_test, tmp_path, tmp_path / "shared", backend="directory")


def test_a_btrfs_project_keeps_its_parent_on_a_host_with_another_state_dir(agent_factory, btrfs_fs, tmp_path):
    """The btrfs backend's view (read-only snapshots mounted on the fixed root), on the oldest engine."""
    shared = btrfs_fs.mountpoint / f"shared-{new_id()[:8]}"
    _moves_with_its_parent(agent_factory, ENGINES[2], tmp_path, shared, backend="btrfs")


def _moves_with_its_parent(agent_factory, engine: EngineUnderTest, tmp_path: Path, shared: Path, *,
                           backend: str) -> None:
    """Back up a project on agent A; agent B, with another state dir, gets the same trees and
    repository, changes one file and backs up: checks (a) to (c) of the module's docstring."""
    project_id = new_id()
    state_a, state_b = tmp_path / "a" / "state", tmp_path / "b" / "state"

    a = agent_factory("a", engine=engine.driver, backend=backend, extra=_config(engine, state_a, shared))
    repository = Path(a.make_repository(project_id))
    assert repository == shared / "repos" / f"project-{project_id}"
    created = a.stub.EnsureProject(pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id,
                                                            mode=pb.EnsureProjectRequest.NONE), timeout=30)
    assert a.wait(created.id).state == pb.SUCCEEDED
    home, persist = shared / "projects" / f"project-{project_id}", shared / "persist" / f"project-{project_id}"
    assert home.is_dir()
    write_tree(home, files=FILES, size=256)
    persist.mkdir(parents=True, exist_ok=True)
    (persist / "app.db").write_bytes(b"state\n" * 50)
    first = a.wait(a.backup(project_id).id)
    assert first.state == pb.SUCCEEDED, first.error
    a.stop()

    # The same disks on another host, whose agent keeps its state elsewhere.
    b = agent_factory("b", engine=engine.driver, backend=backend, extra=_config(engine, state_b, shared))
    changed = next(home.rglob("f3.bin"))
    changed.write_bytes(changed.read_bytes() + b"changed on b")
    second = b.wait(b.backup(project_id).id)
    assert second.state == pb.SUCCEEDED, second.error

    stock = _stock_snapshots(engine, repository, shared / "repository.password", tmp_path / "stock")
    s1, s2 = stock[first.summary.snapshot_id], stock[second.summary.snapshot_id]
    assert s2.get("parent") == s1["id"], (s1, s2)
    total = second.summary.files_processed
    assert total >= FILES + 1 and _unmodified(s2.get("summary"), second.summary) >= total - 1, (
        second.summary, s2.get("summary"))
    assert s1["paths"] == s2["paths"]
    for path in s1["paths"]:
        assert not any(str(root) in path for root in (tmp_path, shared, state_a, state_b)), s1["paths"]

    # (b) ListSnapshots: the API's one form, whatever the engine recorded.
    listed = b.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots
    assert [list(s.paths) for s in listed] == [["/project", "/persist"]] * 2

    # (c) Messages and errors name the configured repository as the API does.
    hidden = (str(tmp_path), str(shared), str(state_b), str(repository))
    missing = "0" * 64
    failed = b.wait(b.restore(project_id, missing).id)
    assert failed.state == pb.FAILED and failed.error.code == "NOT_FOUND", failed
    if "not found in" in failed.error.message:  # restic's listing answers, rustic's lookup fails itself
        assert f"not found in the configured repository of project {project_id}" in failed.error.message
    checked = b.wait(b.verify(project_id).id)
    assert checked.state == pb.SUCCEEDED, checked.error
    messages = [u.event.message for op in (second, failed, checked) for u in b.events(op.id) if u.HasField("event")]
    assert f"checking the configured repository of project {project_id}" in messages
    for text in (failed.error.message, *messages):
        assert not any(h in text for h in hidden), text


def _barrier_engine(real: str, directory: Path, parties: int) -> Path:
    """A wrapper of ``real`` whose ``backup`` runs wait (in the engine's mount namespace, its
    trees mounted) until ``parties`` backups have arrived, recording whether they all did."""
    script = directory / "engine-at-the-barrier"
    script.write_text(f"""#!/bin/sh
case " $* " in
  *" backup "*)
    touch "{directory}/arrived.$$"
    i=0
    while [ "$(ls "{directory}" | grep -c '^arrived\\.')" -lt {parties} ] && [ $i -lt 600 ]; do
      sleep 0.05; i=$((i+1))
    done
    if [ $i -lt 600 ]; then touch "{directory}/together.$$"; fi
    ;;
esac
exec "{real}" "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_two_agents_back_up_through_the_one_view_root_at_the_same_moment(agent_factory, tmp_path):
    engine = ENGINES[1]  # the pinned restic: the engine that records the view root
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wrapper = _barrier_engine(engine.binary(), barrier, parties=2)
    agents: list[AgentProcess] = []
    projects: list[str] = []
    for name in ("one", "two"):
        agent = agent_factory(name, engine="restic", extra=f'restic_binary = "{wrapper}"\n')
        project_id = new_id()
        created = agent.stub.EnsureProject(pb.EnsureProjectRequest(
            request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.NONE), timeout=30)
        assert agent.wait(created.id).state == pb.SUCCEEDED
        (agent.home(project_id) / f"only-in-{name}").write_text(name)
        agent.persist(project_id).mkdir(parents=True, exist_ok=True)
        (agent.persist(project_id) / f"state-of-{name}").write_text(name)
        agents.append(agent)
        projects.append(project_id)

    done: list[pb.Operation | None] = [None, None]

    def back_up(index: int) -> None:
        agent = agents[index]
        done[index] = agent.wait(agent.backup(projects[index]).id)

    threads = [threading.Thread(target=back_up, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(op is not None and op.state == pb.SUCCEEDED for op in done), done
    assert len(list(barrier.glob("together.*"))) == 2, "the two backups did not run at the same moment"
    assert list((FIXED_ROOT / "project").iterdir()) == [] and list((FIXED_ROOT / "persist").iterdir()) == []

    for agent, project_id, name, op in zip(agents, projects, ("one", "two"), done):
        listed = stock_cli.run(engine, agent.repository(project_id), agent.state_dir / "repository.password",
                               "ls", "--json", op.summary.snapshot_id, scratch=agent.base / "stock")
        assert listed.returncode == 0, listed.stderr
        paths = {json.loads(line)["path"] for line in listed.stdout.splitlines()[1:] if line.strip()}
        assert paths == {"/project", f"/project/only-in-{name}", "/persist", f"/persist/state-of-{name}"}, paths
