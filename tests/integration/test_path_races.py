"""No root path races (issue 16), through real agents and real restic, on the directory backend
and on btrfs (a loop device):

- the directory-swap race: while a subpath Restore or a CopyFiles runs, a racer thread keeps
  swapping the directories on the target's way (the staging's parent among them) for a
  symlink to an outside directory and back, at random moments; after every round nothing is
  written outside the project, no staging is left (in the home, nor in the agent's own
  staging), and the operation either succeeded with the data in the project or failed with a
  clear code, never INTERNAL. A CopyFiles round also swaps the source's parent for a link to
  an outside tree with a secret in it: the secret never lands in the project. Rounds:
  ``BUCKETS_RACE_ROUNDS`` (default 50).
- a home or persist location that is a symlink (the project directory replaced by a link to an
  outside directory) is refused with FAILED_PRECONDITION by every RPC that writes, and
  DeleteProject removes the link, never what it points to.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from agent import fsops
from tests.conftest import requires_restic
from tests.harness import manifest, new_id
from tests.integration.test_copy_support import code_of, copy_files, ensure

pytestmark = requires_restic

ROUNDS = int(os.environ.get("BUCKETS_RACE_ROUNDS", "50"))
SECRET = "secret.txt"


def data_tree(root: Path) -> None:
    """``root``: 20 small files in two levels and a 256 KiB one, so an engine run takes a moment."""
    for index in range(20):
        path = root / f"d{index % 3}" / f"f{index}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {index}\n" * (index + 1))
    (root / "big.bin").write_bytes(os.urandom(256 * 1024))


def everything_under(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (no symlink followed): path → (type, size, content digest for files)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_mode & 0o170000, info.st_size if not path.is_dir() else 0)
    return found


class Racer:
    """Swaps each of ``paths`` (directories) for a symlink to ``outside`` and back, at random
    moments, until stopped: one atomic exchange each way (renameat2 RENAME_EXCHANGE with a link
    made beside it), so the path is never missing (the agent would create a missing parent, and
    the swap back could not happen). The layout is whole again when :meth:`__exit__` returns."""

    def __init__(self, paths: list[Path], outside: Path, seed: int, *, start_within: float) -> None:
        self.paths = paths
        self.start_within = start_within
        self.outside = outside
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Racer":
        for path in self.paths:
            os.symlink(self.outside, self._link(path))
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        for path in self.paths:
            os.unlink(self._link(path))

    @staticmethod
    def _link(path: Path) -> Path:
        return path.with_name(path.name + ".link")

    def _run(self) -> None:
        # The first swap lands anywhere in the operation: before staging, while the engine
        # writes, at the placement.
        self.stopping.wait(self.random.uniform(0, self.start_within))
        while not self.stopping.is_set():
            path = self.random.choice(self.paths)
            fsops.exchange(path, self._link(path))  # now the path is the link
            self.swaps += 1
            try:
                time.sleep(self.random.uniform(0, 0.003))
            finally:
                fsops.exchange(path, self._link(path))  # and the directory again
            time.sleep(self.random.uniform(0, 0.010))


def race_setup(agent, outside_base: Path) -> dict:
    """A target project (``a/b`` exist, the outside directory empty) and a source project with
    ``src/data``; the target backed up. Returns what the rounds need."""
    target, source = str(uuid.uuid4()), str(uuid.uuid4())
    for project in (target, source):
        ensure(agent, project)
    home = agent.home(target)
    (home / "a" / "b").mkdir(parents=True)
    data_tree(home / "data")
    (agent.home(source) / "src").mkdir()
    data_tree(agent.home(source) / "src" / "data")
    backup = agent.wait(agent.backup(target).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    outside_base.mkdir()
    outside = outside_base / "outside"
    outside.mkdir()
    # A tree that looks like the copy's source, with a secret in it: what a read through a
    # swapped link would copy into the project.
    decoy = outside_base / "decoy"
    (decoy / "data").mkdir(parents=True)
    (decoy / "data" / SECRET).write_text("root's secret")
    return {"target": target, "source": source, "snapshot": backup.summary.snapshot_id, "outside": outside,
            "decoy": decoy, "expected_restore": manifest(home / "data"),
            "expected_copy": manifest(agent.home(source) / "src" / "data")}


def check_round(agent, setup: dict, outcome, placed: Path, watched: dict[Path, dict], expected: dict) -> str:
    """The checks after one round; returns the outcome's name for the tally."""
    home = agent.home(setup["target"])
    assert list(setup["outside"].iterdir()) == [], "something was written outside the project"
    for root, before in watched.items():
        assert everything_under(root) == before, f"something changed outside the project, under {root}"
    assert not list(home.rglob(".buckets-*")), "staging left in the home"
    assert not list(agent.home(setup["source"]).rglob(".buckets-*"))
    assert not list(home.rglob("*.link"))
    if isinstance(outcome, grpc.StatusCode):  # refused by the RPC itself
        assert outcome not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), outcome
        return outcome.name
    assert outcome.state in (pb.SUCCEEDED, pb.FAILED), outcome
    if outcome.state == pb.FAILED:
        assert outcome.error.code not in ("INTERNAL", "UNKNOWN", ""), outcome.error
        assert not placed.exists()
        return outcome.error.code
    assert manifest(placed) == expected, "the placed data differs from the source"
    assert SECRET not in {p.name for p in placed.rglob("*")}
    return "SUCCEEDED"


def one_round(agent, setup: dict, kind: str, round_: int):
    """Run one operation under racers; returns (its outcome: the operation, or the RPC's refusal
    code; the path it places; the swaps the racers made)."""
    home = agent.home(setup["target"])
    # The target's parents on the way; on btrfs a/b also holds the staging directory.
    within = 0.6 if kind == "restore" else 0.15
    racers = [Racer([home / "a", home / "a" / "b"], setup["outside"], seed=round_, start_within=within)]
    if kind == "copy":  # and the source's parent, for a link to a tree with a secret in it
        racers.append(Racer([agent.home(setup["source"]) / "src"], setup["decoy"], seed=-round_ - 1,
                            start_within=within))
    # Every other round the racing starts before the request (so the RPC's own checks meet it
    # too), the others once the operation was accepted.
    early = round_ % 2 == 0
    target_path = f"a/b/{kind}-{round_}"
    try:
        if early:
            for racer in racers:
                racer.__enter__()
        try:
            if kind == "restore":
                started = agent.restore(setup["target"], setup["snapshot"], subpath="data", target_path=target_path)
            else:
                started = copy_files(agent, setup["source"], "src/data", setup["target"], target_path)
            if not early:
                for racer in racers:
                    racer.__enter__()
            outcome = agent.wait(started.id)
        except grpc.RpcError as exc:
            outcome = exc.code()
    finally:
        for racer in racers:
            if racer.thread.is_alive():
                racer.__exit__()
    return outcome, home / target_path, sum(racer.swaps for racer in racers)


LANES = 2  # rounds run two at a time (the agent's default concurrency), each on its own projects


def run_rounds(agent, tmp_path: Path, kind: str) -> dict[str, int]:
    setups = [race_setup(agent, tmp_path / f"lane-{lane}") for lane in range(LANES)]
    # Outside the projects, besides the outside directories (checked empty): the decoy trees
    # and the persist locations (siblings of the homes the agent could be steered into).
    watched_roots = [setup["decoy"] for setup in setups] + [agent.persist_root]
    watched = {root: everything_under(root) for root in watched_roots}
    tally: dict[str, int] = {}
    swaps = 0
    for wave in range(0, ROUNDS, LANES):
        lanes = list(zip(setups, range(wave, min(wave + LANES, ROUNDS))))
        results: list = [None] * len(lanes)

        def lane(index: int) -> None:
            setup, round_ = lanes[index]
            results[index] = one_round(agent, setup, kind, round_)

        threads = [threading.Thread(target=lane, args=(index,)) for index in range(len(lanes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(result is not None for result in results), "a lane failed"
        own = agent.projects_root / ".staging"
        assert not (own.is_dir() and list(own.iterdir())), "staging left in the agent's staging directory"
        for (setup, _round), (outcome, placed, made) in zip(lanes, results):
            name = check_round(agent, setup, outcome, placed, watched, setup[f"expected_{kind}"])
            tally[name] = tally.get(name, 0) + 1
            swaps += made
    assert swaps > ROUNDS, "the racer hardly ran"
    assert tally.get("SUCCEEDED", 0) > 0, f"no round succeeded: {tally}"
    return tally


@pytest.fixture(params=["directory", "btrfs"])
def race_agent(request, agent_factory, tmp_path):
    if request.param == "directory":
        return agent_factory("agent")
    btrfs_fs = request.getfixturevalue("btrfs_fs")
    base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
    return agent_factory(base.name, backend="btrfs", base=base)


@pytest.mark.parametrize("kind", ["restore", "copy"])
def test_directory_swap_race_never_writes_outside_the_project(race_agent, tmp_path, kind):
    tally = run_rounds(race_agent, tmp_path, kind)
    print(f"{race_agent.backend} {kind}: {tally}")
    assert sum(tally.values()) == ROUNDS


# ---------------------------------------------------------------- a symlinked home or persist


def linked(agent, project_id: str, which: str, outside: Path) -> Path:
    """Replace the project's home or persist location by a symlink to ``outside``; returns where
    the real one went (outside the agent's roots, so nothing of the agent finds it)."""
    place = agent.home(project_id) if which == "home" else agent.persist(project_id)
    kept = outside.parent / f"real-{which}"
    if agent.backend == "btrfs":
        subprocess.run(["btrfs", "subvolume", "snapshot", str(place), str(kept)], check=True, capture_output=True)
        subprocess.run(["btrfs", "subvolume", "delete", str(place)], check=True, capture_output=True)
    else:
        shutil.move(place, kept)
    place.symlink_to(outside)
    return kept


@pytest.mark.parametrize("which", ["home", "persist"])
def test_a_symlinked_home_or_persist_is_refused_by_every_rpc_that_writes(race_agent, tmp_path, which):
    agent = race_agent
    project, other = str(uuid.uuid4()), str(uuid.uuid4())
    for each in (project, other):
        ensure(agent, each)
    (agent.home(project) / "docs").mkdir()
    (agent.home(project) / "docs" / "a.txt").write_text("a")
    (agent.home(other) / "docs").mkdir()
    (agent.home(other) / "docs" / "b.txt").write_text("b")
    backup = agent.wait(agent.backup(project).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot = backup.summary.snapshot_id
    # On btrfs the outside directory is a subvolume: a Freeze that followed the link would make it read-only.
    outside = (agent.base.parent if agent.backend == "btrfs" else tmp_path) / f"outside-{uuid.uuid4().hex[:6]}"
    if agent.backend == "btrfs":
        subprocess.run(["btrfs", "subvolume", "create", str(outside)], check=True, capture_output=True)
    else:
        outside.mkdir()
    (outside / "docs").mkdir()
    (outside / "docs" / "precious.txt").write_text("not the project's")
    before = everything_under(outside)
    linked(agent, project, which, outside)

    refused = {
        "Restore whole": lambda: agent.restore(project, snapshot),
        "Restore subpath": lambda: agent.restore(project, snapshot, subpath="docs", target_path="docs2"),
        "CopyFiles into it": lambda: copy_files(agent, other, "docs", project, "docs3"),
        "CopyFiles from it": lambda: copy_files(agent, project, "docs", other, "docs4"),
        "Freeze": lambda: agent.stub.Freeze(pb.FreezeRequest(project_id=project), timeout=30),
        "Freeze with sentinel": lambda: agent.stub.Freeze(
            pb.FreezeRequest(project_id=project, sentinel_path=f"{which if which == 'persist' else 'project'}/.s",
                             sentinel_content="x"), timeout=30),
        "EnsureProject": lambda: agent.stub.EnsureProject(
            pb.EnsureProjectRequest(request_id=new_id(), project_id=project, mode=pb.EnsureProjectRequest.AUTO),
            timeout=30),
        "Backup": lambda: agent.backup(project),
    }
    for name, call in refused.items():
        assert code_of(call) == grpc.StatusCode.FAILED_PRECONDITION, name
        assert everything_under(outside) == before, name
    if agent.backend == "btrfs":
        shown = subprocess.run(["btrfs", "property", "get", str(outside), "ro"], capture_output=True, text=True)
        assert "ro=false" in shown.stdout

    # DeleteProject removes the link, never what it points to.
    deleted = agent.wait(agent.stub.DeleteProject(
        pb.DeleteProjectRequest(request_id=new_id(), project_id=project), timeout=30).id)
    assert deleted.state == pb.SUCCEEDED, deleted.error
    assert not os.path.lexists(agent.home(project)) and not os.path.lexists(agent.persist(project))
    assert everything_under(outside) == before
    assert (outside / "docs" / "precious.txt").read_text() == "not the project's"
    assert (agent.home(other) / "docs" / "b.txt").read_text() == "b"


# ---------------------------------------------------------------- staging ends with its operation


SLOW = "upload_limit_kib = 1024\ndownload_limit_kib = 512"


def staging_in(agent, home: Path) -> list[Path]:
    own = agent.projects_root / ".staging"
    return list(home.rglob(".buckets-*")) + (list(own.iterdir()) if own.is_dir() else [])


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


@pytest.mark.parametrize("backend", ["directory", "btrfs"])
def test_staging_is_gone_when_a_cancelled_or_killed_restore_ends(request, agent_factory, tmp_path, backend):
    if backend == "btrfs":
        base = request.getfixturevalue("btrfs_fs").mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
        agent = agent_factory(base.name, backend="btrfs", base=base, limits=SLOW)
    else:
        agent = agent_factory("agent", limits=SLOW)
    project = str(uuid.uuid4())
    ensure(agent, project)
    home = agent.home(project)
    (home / "a" / "b").mkdir(parents=True)
    (home / "data").mkdir()
    for index in range(8):
        (home / "data" / f"blob-{index}.bin").write_bytes(os.urandom(256 * 1024))
    backup = agent.wait(agent.backup(project).id, timeout=120)
    assert backup.state == pb.SUCCEEDED, backup.error

    # Cancelled while the engine writes into staging: the staging is gone when the operation ends.
    running = agent.restore(project, backup.summary.snapshot_id, subpath="data", target_path="a/b/restored")
    wait_for(lambda: staging_in(agent, home))
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=running.id), timeout=10)
    ended = agent.wait(running.id)
    assert ended.state == pb.CANCELLED, ended
    assert staging_in(agent, home) == []
    assert not (home / "a" / "b" / "restored").exists()

    # Killed mid-restore: recovery at the next start removes it.
    running = agent.restore(project, backup.summary.snapshot_id, subpath="data", target_path="a/b/restored")
    wait_for(lambda: staging_in(agent, home))
    agent.kill()
    agent.start()
    assert agent.wait(running.id).state == pb.INTERRUPTED
    assert staging_in(agent, home) == []
    assert not (home / "a" / "b" / "restored").exists()
