"""The fault suite, hub side: agents SIGKILLed during moves and copies, the hub process killed
between move steps, and a target host cut off mid-move. Each test injects
``fault_table.iterations()`` faults of its kind on one pair of agents (a killed agent is
restarted and registered again), checks that nothing was lost and that the retry or resume
completed, and records each fault in the fault table."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub_client.copying import CopyError
from hub_client.hub import Hub
from hub_client.move import ONLINE_STEPS, SENTINEL_PATH, MoveError
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Cleanup, CopyStatus, MoveStatus, open_store
from tests import fault_table
from tests.conftest import requires_restic
from tests.faults import CuttableProxy
from tests.harness import REPO_ROOT, create_project, manifest, write_tree
from tests.hubs import client_config, register

pytestmark = [pytest.mark.faults, requires_restic]

SENTINEL_NAME = SENTINEL_PATH.split("/", 1)[1]
NAMES = ("host-a", "host-b")
UNFINISHED = (pb.PENDING, pb.RUNNING, pb.CANCELLING)
# Where each side of a move is at work: the source backs up and freezes, the target restores and
# verifies (and answers preflight). ``None`` as the operation: kill before the step's work starts.
SOURCE_STEPS = ("backup", "freeze", "final_backup")
TARGET_STEPS = ("preflight", "precopy", "restore", "verify")
OPERATION_STEPS = ("backup", "precopy", "final_backup", "restore", "verify")


# ---------------------------------------------------------------- helpers


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)


def unfinished_operations(agent) -> list[pb.Operation]:
    operations = agent.stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations
    return [o for o in operations if o.state in UNFINISHED]


def copy_snapshots(agent, project_id: str) -> list[pb.Snapshot]:
    listed = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots
    return [s for s in listed if "purpose=copy" in s.tags]


def trees(agent, project_id: str) -> tuple[dict, dict]:
    """The project's home and its persist files (without the move sentinel and the persist
    directory's own entry, which the sentinel's write touches)."""
    persist = {path: entry for path, entry in manifest(agent.persist(project_id)).items()
               if path not in (".", SENTINEL_NAME)}
    return manifest(agent.home(project_id)), persist


def restart(hub: Hub, agent, name: str) -> None:
    if agent.process is None or agent.process.poll() is not None:
        agent.start()
    register(hub, name, agent)


def no_work_left(agents) -> bool:
    """Nothing stays RUNNING on an agent after it was restarted: its operations settle."""
    deadline = time.monotonic() + 30
    while True:
        if not any(unfinished_operations(agent) for agent in agents):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


class Killer:
    """Kills (``action``) at a chosen step of a move or copy: before the step's work starts
    (``before_step``) or once the step's agent operation has started on ``host`` (``observer``)."""

    def __init__(self, step: str, during: bool, host: str, action) -> None:
        self.step, self.during, self.host, self.action = step, during, host, action
        self.fired = False

    def before_step(self, step: str) -> None:
        if not self.during and step == self.step and not self.fired:
            self.fired = True
            self.action()

    def observer(self, entry) -> None:
        if (self.during and not self.fired and entry.kind == "operation" and entry.data.get("step") == self.step
                and entry.data.get("host") == self.host):
            self.fired = True
            self.action()

    @property
    def hooks(self) -> dict:
        return {"before_step": self.before_step, "observer": self.observer}


def logged(hub: Hub, move_id: str, text: str) -> bool:
    return any(text in entry.message for entry in hub.store.movelog(move_id))


@pytest.fixture
def fault_hub(tmp_path: Path, two_hosts):
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        with Hub(store, client_config=client_config) as hub:
            for agent, name in zip(two_hosts, NAMES):
                register(hub, name, agent)
            yield hub
    finally:
        store.close()


def small_project(hub: Hub, agent, name: str) -> str:
    project_id = create_project(agent, files=12, size=256)
    hub.add_project(project_id, name, "eu")
    return project_id


def check_move_complete(hub: Hub, move_id: str, project_id: str, target, frozen: tuple[dict, dict],
                        target_name: str) -> bool:
    """Whether the target holds exactly the tree the source had when frozen, without the move's
    sentinel (removed at finalize, after the verify proved it there)."""
    home, persist = trees(target, project_id)
    sentinel = target.persist(project_id) / SENTINEL_NAME
    return (home == frozen[0] and persist == frozen[1] and not os.path.lexists(sentinel)
            and hub.store.get_project(project_id).host_id == target_name)


def retry_lossless(hub: Hub, move_id: str, source, target, project_id: str, target_name: str,
                   before: tuple[dict, dict], where: str) -> tuple[bool, bool, bool]:
    """Retry the failed move, noting the source's trees when the restore starts (frozen by then).
    Returns (recovered, complete, frozen_as_before): the retry succeeded; the target holds what the
    source held frozen, less the sentinel, and is the placement; and that frozen tree is ``before``."""
    seen: dict[str, tuple] = {}

    def snapshot_frozen_source(name: str) -> None:
        if name == "restore":
            seen["frozen"] = trees(source, project_id)

    recovered = False
    try:
        recovered = hub.retry(move_id, before_step=snapshot_frozen_source).status == MoveStatus.SUCCEEDED
    except MoveError as exc:
        print(f"{where}: retry failed: {exc}")
    complete = recovered and check_move_complete(hub, move_id, project_id, target, seen["frozen"], target_name)
    return recovered, complete, recovered and seen["frozen"] == before


# ---------------------------------------------------------------- 1. an agent killed mid-move


def test_agent_killed_during_a_move(fault_hub: Hub, two_hosts) -> None:
    kind = "SIGKILL agent during a move"
    hub, agents = fault_hub, dict(zip(NAMES, two_hosts))
    rng = random.Random(9_001)
    project_id = small_project(hub, agents["host-a"], "host-a")
    for iteration in range(fault_table.iterations()):
        source_name, target_name = NAMES[iteration % 2], NAMES[1 - iteration % 2]
        source, target = agents[source_name], agents[target_name]
        victim_name = (source_name, target_name)[(iteration // 2) % 2]
        victim = agents[victim_name]
        step = rng.choice(SOURCE_STEPS if victim is source else TARGET_STEPS)
        during = step in OPERATION_STEPS and rng.random() < 0.5
        before = trees(source, project_id)
        killer = Killer(step, during, victim_name, victim.kill)
        where = f"iteration {iteration}: {victim_name} killed {'during' if during else 'before'} {step}"

        with pytest.raises(MoveError):
            hub.move(project_id, target_name, **killer.hooks)
        assert killer.fired, where
        move = hub.store.active_move(project_id)
        restart(hub, victim, victim_name)

        # The failure: placement kept, the source's tree as it was, nothing left running.
        failed = move.status == MoveStatus.FAILED
        placed = hub.store.get_project(project_id).host_id == source_name
        kept = trees(source, project_id) == before
        settled = no_work_left(two_hosts)
        frozen = status(source, project_id).frozen
        # A source killed with the freeze done cannot be thawed by the failing hub: the movelog
        # says so, and the retry thaws it. Likewise a target copy it could not remove.
        thawed = not frozen or logged(hub, move.id, "could not thaw")
        target_clean = not status(target, project_id).present or logged(hub, move.id, "could not remove the copy")

        recovered, complete, as_before = retry_lossless(hub, move.id, source, target, project_id, target_name,
                                                        before, where)
        lossless = kept and placed and (not recovered or (complete and as_before))
        fault_table.record(kind, data_lost=not lossless, recovered=recovered)
        assert (failed, placed, kept, settled, thawed, target_clean) == (True,) * 6, where
        assert recovered and complete and lossless, where
        assert not status(target, project_id).frozen, where
        assert not source.home(project_id).exists(), where  # the source copy was cleaned


# ---------------------------------------------------------------- 2. an agent killed mid-copy


COPY_FAULTS = [("host-a", "preflight", False), ("host-a", "backup", False), ("host-a", "backup", True),
               ("host-a", "forget", False), ("host-a", "forget", True), ("host-b", "preflight", False),
               ("host-b", "restore", False), ("host-b", "restore", True)]


def test_agent_killed_during_a_copy(fault_hub: Hub, two_hosts) -> None:
    run_copy_faults(fault_hub, two_hosts, COPY_FAULTS, fault_table.iterations())


def run_copy_faults(hub: Hub, two_hosts, choices: list, count: int, *, record: bool = True) -> None:
    kind = "SIGKILL agent during a copy"
    agents = dict(zip(NAMES, two_hosts))
    a, b = two_hosts
    rng = random.Random(9_002)
    source_project = small_project(hub, a, "host-a")
    write_tree(a.home(source_project) / "data", files=20, size=512, seed=11)
    expected = manifest(a.home(source_project) / "data")
    target_project = small_project(hub, b, "host-b")
    for iteration in range(count):
        victim_name, step, during = choices[iteration % len(choices)] if iteration < len(choices) \
            else rng.choice(choices)
        victim = agents[victim_name]
        target_path = f"incoming/{iteration}"
        placed_at = b.home(target_project) / "incoming" / str(iteration)
        killer = Killer(step, during, victim_name, victim.kill)
        where = f"iteration {iteration}: {victim_name} killed {'during' if during else 'before'} {step}"

        with pytest.raises(CopyError):
            hub.copy(source_project, "data", target_project, target_path, **killer.hooks)
        assert killer.fired, where
        copy = next(c for c in hub.store.list_copies() if c.target_path == target_path)
        failed = copy.status == CopyStatus.FAILED
        # Never partial: absent, or (a failure at forget) the whole tree.
        whole = not placed_at.exists() or manifest(placed_at) == expected
        # The source was up at the failure: the temporary snapshot was forgotten then.
        forgotten = victim_name == "host-a" or (copy_snapshots(a, source_project) == [] and copy.snapshot_id is None)
        restart(hub, victim, victim_name)
        settled = no_work_left(two_hosts)

        recovered = False
        for attempt in range(3):
            # A restic killed with its agent can leave its repository lock for a moment: the
            # forget then ends UNAVAILABLE (retryable, by the design), and another resume goes on.
            try:
                recovered = hub.resume_copy(copy.id).status == CopyStatus.SUCCEEDED
                break
            except CopyError as exc:
                print(f"{where}: resume {attempt + 1} failed: {exc}")
                if exc.code != "UNAVAILABLE":
                    break
                time.sleep(1)
        equal = placed_at.is_dir() and manifest(placed_at) == expected
        leftovers = copy_snapshots(a, source_project)
        if record:  # the known-bug case stays out of the table until the agent is fixed
            fault_table.record(kind, data_lost=not (whole and (equal or not recovered)), recovered=recovered)
        assert (failed, whole, forgotten, settled) == (True,) * 4, where
        assert recovered and equal, where
        assert leftovers == [], (where, [s.tags for s in leftovers])
        assert manifest(a.home(source_project) / "data") == expected, where


# ---------------------------------------------------------------- 3. the hub killed between steps


def test_hub_killed_between_move_steps(tmp_path: Path, two_hosts) -> None:
    kind = "hub killed between move steps"
    agents = dict(zip(NAMES, two_hosts))
    url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    rng = random.Random(9_003)
    store = open_store(url)
    try:
        with Hub(store, client_config=client_config) as hub:
            for agent, name in zip(two_hosts, NAMES):
                register(hub, name, agent)
            project_id = small_project(hub, agents["host-a"], "host-a")
            injected = moves = 0
            while injected < fault_table.iterations():
                assert moves < 3 * fault_table.iterations(), "the hub kept finishing before it was killed"
                source_name, target_name = NAMES[moves % 2], NAMES[1 - moves % 2]
                source, target = agents[source_name], agents[target_name]
                moves += 1
                # The quick steps (freeze, verify, finalize) may be over before the kill lands: the
                # kill then hits a later step, or (rarely) a hub that has finished; that move
                # counts as no fault and the next one goes back.
                step = rng.choice(ONLINE_STEPS[:-1])
                before = trees(source, project_id)
                process = subprocess.Popen(
                    [sys.executable, "-m", "hub_client", "--store", url, "--retries", "3", "move", project_id,
                     "--to", target_name],
                    cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    start_new_session=True)
                try:
                    move_id = wait_for_step(store, project_id, step, process)
                    os.killpg(process.pid, signal.SIGKILL)
                finally:
                    process.kill()
                    process.communicate(timeout=30)
                stopped = store.get_move(move_id)
                if stopped.status == MoveStatus.SUCCEEDED and stopped.cleanup == Cleanup.DONE:
                    continue  # the hub had finished: no fault injected
                injected += 1
                where = f"fault {injected}: hub killed at {stopped.step} (waited for {step})"
                placed_before = store.get_project(project_id).host_id
                # Killed after completing, the hub may have asked the source agent to remove its copy (which
                # goes on without the hub): the data is then the target's, which `complete` checks.
                kept = stopped.status == MoveStatus.SUCCEEDED or trees(source, project_id) == before
                recovered = False
                try:
                    if stopped.status == MoveStatus.SUCCEEDED:  # killed after completing, in the cleanup
                        recovered = hub.run_cleanups() == []
                    else:
                        recovered = hub.resume(move_id).status == MoveStatus.SUCCEEDED
                except MoveError as exc:
                    print(f"{where}: resume failed: {exc}")
                complete = recovered and check_move_complete(hub, move_id, project_id, target, before, target_name)
                fault_table.record(kind, data_lost=not (kept and (complete or not recovered)), recovered=recovered)
                assert stopped.status in (MoveStatus.RUNNING, MoveStatus.SUCCEEDED), where
                assert placed_before == (target_name if stopped.status == MoveStatus.SUCCEEDED else source_name), where
                assert kept and recovered and complete, where
                assert not status(target, project_id).frozen and not source.home(project_id).exists(), where
                assert no_work_left(two_hosts), where
    finally:
        store.close()


def wait_for_step(store, project_id: str, step: str, process: subprocess.Popen, timeout: float = 120.0) -> str:
    """The move's id once ``step`` (or a later one) is recorded, or the hub has exited."""
    deadline = time.monotonic() + timeout
    move_id = None
    while time.monotonic() < deadline:
        if move_id is None:
            active = store.active_move(project_id)
            move_id = active.id if active is not None else None
        if move_id is not None:
            steps = [e.message for e in store.movelog(move_id) if e.kind == "step"]
            if any(ONLINE_STEPS.index(s) >= ONLINE_STEPS.index(step) for s in steps if s in ONLINE_STEPS):
                return move_id
        if process.poll() is not None:
            if move_id is not None and process.returncode == 0:
                return move_id
            raise AssertionError(f"the hub exited before step {step} ({process.returncode}): {process.communicate()}")
        time.sleep(0.005)
    raise AssertionError(f"step {step} was not reached")


# ---------------------------------------------------------------- 4. the target cut off mid-move


def test_target_unreachable_during_a_move(fault_hub: Hub, two_hosts) -> None:
    kind = "target unreachable during a move"
    hub, agents = fault_hub, dict(zip(NAMES, two_hosts))
    rng = random.Random(9_004)
    proxies = {name: CuttableProxy(("127.0.0.1", agent.port)) for name, agent in agents.items()}
    try:
        for name, proxy in proxies.items():
            hub.add_host(name, f"127.0.0.1:{proxy.port}", "eu")
            hub.probe_host(name)
        project_id = small_project(hub, agents["host-a"], "host-a")
        for iteration in range(fault_table.iterations()):
            source_name, target_name = NAMES[iteration % 2], NAMES[1 - iteration % 2]
            source, target = agents[source_name], agents[target_name]
            step = rng.choice(ONLINE_STEPS[:-1])  # a cut at finalize (no agent call) changes nothing
            during = step in TARGET_STEPS and step in OPERATION_STEPS and rng.random() < 0.5
            before = trees(source, project_id)
            killer = Killer(step, during, target_name, proxies[target_name].cut)
            where = f"iteration {iteration}: {target_name} cut off {'during' if during else 'before'} {step}"

            with pytest.raises(MoveError):
                hub.move(project_id, target_name, **killer.hooks)
            assert killer.fired, where
            move = hub.store.active_move(project_id)
            failed = move.status == MoveStatus.FAILED
            placed = hub.store.get_project(project_id).host_id == source_name
            kept = trees(source, project_id) == before
            thawed = not status(source, project_id).frozen
            proxies[target_name].mend()
            hub.probe_host(target_name)

            recovered, complete, as_before = retry_lossless(hub, move.id, source, target, project_id,
                                                            target_name, before, where)
            lossless = kept and placed and (not recovered or (complete and as_before))
            fault_table.record(kind, data_lost=not lossless, recovered=recovered)
            assert (failed, placed, kept, thawed) == (True,) * 4, where
            assert recovered and complete and lossless, where
            assert not source.home(project_id).exists(), where
            assert no_work_left(two_hosts), where
    finally:
        for proxy in proxies.values():
            proxy.close()
