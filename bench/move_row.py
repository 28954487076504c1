"""The move row of `make bench`: a hub move between two agents vs raw restic backup + restore.

Two more agents run for this row ("bench-a", "bench-b", directory backend, one local repository
root and password shared, as hosts of one region share a bucket), with the hub's store in a
SQLite file in the scratch dir. Every run moves a NEW project (its own, new repository) holding a
copy of the bench's generated tree from bench-a to bench-b, so no run profits from an earlier one.

* agent side: ``Hub.move`` from its call until it returns: preflight, bulk backup (repository
  init included), freeze with the sentinel, the catch-up backup, EnsureProject REQUIRED of that
  snapshot on the target, the sentinel check, and placement. The removal of the source copy is
  scheduled at that point and runs untimed right after (``Hub.run_cleanups``).
* raw side: ``restic init`` + ``restic backup`` of the same tree into a new repository, then
  ``restic restore`` of that snapshot into an empty directory.

Copying the tree into the new project, and deleting the moved project afterwards, are untimed.

Every agent move is raced by a writer holding one fd open in the source home (a line + fsync
every 20 ms, each acknowledged line recorded in a ledger outside the project,
``tests/writers.py``): two more rows report the acknowledged lines missing on the target (must be
0; the row FAILS otherwise) and the frozen window, from the freeze step's start to placement
(the movelog's "complete" entry).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hub_client.client import ClientConfig
from hub_client.hub import Hub
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MoveStatus, open_store
from tests.harness import AgentProcess, new_id
from tests.writers import Writer, missing

if TYPE_CHECKING:
    from bench.bench import Bench, Figure

TARGET_MOVE_RATIO = 1.2
REGION = "bench"


def _repository_config(scratch: Path, password: str) -> str:
    password_file = scratch / "move-repo.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{scratch / "move-repos"}"\n'
            f'password_file = "{password_file}"\n')


def measure_move(
    bench: "Bench", *, figure_type: type["Figure"], alternating: Callable, log_level: str
) -> list["Figure"]:
    figure = figure_type(
        "Move (2 agents, local repo)", target=TARGET_MOVE_RATIO,
        note="agent: hub move (bulk backup with init, freeze + sentinel, catch-up backup, restore of that "
        "snapshot on the target, sentinel check, placement; the source copy's removal untimed); "
        "raw: restic init + backup + restore into an empty directory; a new repository per run",
    )
    figure.extra["final_backup_seconds"] = []
    lost = figure_type("Move with an fd-holding writer: acknowledged writes lost", target=None, unit="lines",
                       note="lines a writer saw fsynced in the source home but missing on the target; must be 0")
    window = figure_type("Move: frozen window (freeze step start to placement)", target=None,
                         note="from the movelog: the freeze step's start to the 'complete' entry; with a writer")
    extra = _repository_config(bench.scratch, bench.password)
    agents = [AgentProcess(base=bench.scratch / f"move-{name}", extra=extra, host_id=f"bench-{name}")
              for name in ("a", "b")]
    store = open_store(f"sqlite://{bench.scratch / 'move-hub.sqlite'}")
    source_home = bench.agent.home(bench.project_id)
    source_persist = bench.agent.persist(bench.project_id)
    try:
        for agent in agents:
            text = agent.config_path.read_text()
            agent.config_path.write_text(text.replace('level = "debug"', f'level = "{log_level}"'))
            agent.start()
        with Hub(store, client_config=lambda address: ClientConfig(target=address, deadline=60.0)) as hub:
            for agent in agents:
                hub.add_host(agent.config_path.parent.name, f"127.0.0.1:{agent.port}", REGION)
                hub.probe_host(agent.config_path.parent.name)
            source, target = agents

            def agent_round(measured: bool) -> None:
                project_id = new_id()
                create_empty_project(source, project_id)
                shutil.copytree(source_home, source.home(project_id), symlinks=True, dirs_exist_ok=True)
                shutil.copytree(source_persist, source.persist(project_id), symlinks=True, dirs_exist_ok=True)
                hub.add_project(project_id, "move-a", REGION)
                bench.settle()
                writer = Writer("held", source.home(project_id) / "writer.log",
                                bench.scratch / f"ledger-{project_id}").start()
                try:
                    writer.wait_acknowledged(5)
                    began = time.perf_counter()
                    move = hub.move(project_id, "move-b", clean_now=False)
                    seconds = time.perf_counter() - began
                finally:
                    writer.stop()
                lines_lost = len(missing(writer, target.home(project_id) / "writer.log"))
                frozen_seconds = frozen_window(store.movelog(move.id))
                bench.log(f"  writer: {len(writer.acknowledged())} lines acknowledged, {lines_lost} lost; "
                          f"frozen window {frozen_seconds:.3f} s")
                if measured:
                    lost.agent.append(float(lines_lost))
                    window.agent.append(frozen_seconds)
                    if lines_lost:
                        lost.failed = f"{lines_lost} acknowledged line(s) lost"
                if hub.run_cleanups():  # untimed: the move is complete once the target has the project
                    raise RuntimeError(f"the source copy of {project_id} was not removed")
                if move.status != MoveStatus.SUCCEEDED:
                    raise RuntimeError(f"move {move.id} ended {move.status}: {move.error}")
                final = step_seconds(store.movelog(move.id)).get("final_backup", float("nan"))
                bench.log(f"  agent move    {seconds:8.3f} s  (catch-up backup {final:.3f} s)")
                _check_moved(bench, target, project_id)
                if measured:
                    figure.agent.append(seconds)
                    figure.extra["final_backup_seconds"].append(final)
                delete_project(target, project_id)

            def raw_round(measured: bool) -> None:
                repository = bench.fresh_dir("raw-move-repo-")
                backup_seconds, _, snapshot_id = bench.raw_backup(repository)
                restored = bench.fresh_restore_dir()
                restore_seconds = bench.raw_restore(repository, snapshot_id, restored)
                bench.log(f"  raw backup + restore {backup_seconds + restore_seconds:8.3f} s")
                bench.check_tree("raw restore", *(restored / p for p in bench.raw_paths))
                if measured:
                    figure.raw.append(backup_seconds + restore_seconds)
                shutil.rmtree(restored.parent)
                shutil.rmtree(repository.parent)

            alternating(bench, bench.runs, agent_round, raw_round)
    finally:
        for agent in agents:
            agent.stop()
        store.close()
    return [figure, lost, window]


def create_empty_project(agent: AgentProcess, project_id: str) -> None:
    """EnsureProject NONE: the project's empty home and persist location on ``agent``."""
    operation = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.NONE),
        timeout=60)
    final = agent.wait(operation.id)
    if final.state != pb.SUCCEEDED:
        raise RuntimeError(f"EnsureProject ended {pb.OperationState.Name(final.state)}: {final.error.message}")


def delete_project(agent: AgentProcess, project_id: str) -> None:
    """DeleteProject on ``agent``, its repository too (untimed clean-up between runs)."""
    operation = agent.stub.DeleteProject(
        pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id, delete_repository=True), timeout=60)
    agent.wait(operation.id, timeout=600)


def frozen_window(entries) -> float:
    """From a movelog: the freeze step's entry to the 'complete' entry (placement); NaN when the
    move did not get that far."""
    freeze = next((e for e in entries if e.kind == "step" and e.message == "freeze"), None)
    complete = next((e for e in entries if e.kind == "complete"), None)
    if freeze is None or complete is None:
        return float("nan")
    return (complete.time - freeze.time).total_seconds()


def step_seconds(entries) -> dict[str, float]:
    """From a movelog: the seconds of each step (a step's entry to the next step's, the last to
    the "complete" entry); steps the move did not run are missing."""
    marks = [(e.message, e.time) for e in entries if e.kind == "step"]
    complete = next((e.time for e in entries if e.kind == "complete"), None)
    seconds = {}
    for index, (step, began) in enumerate(marks):
        ended = marks[index + 1][1] if index + 1 < len(marks) else complete
        if ended is not None:
            seconds[step] = (ended - began).total_seconds()
    return seconds


def _check_moved(bench: "Bench", target: AgentProcess, project_id: str) -> None:
    """The target holds the generated tree (and the writer's log), plus the move's sentinel in persist/."""
    sentinel = target.persist(project_id) / ".buckets-move-sentinel"
    if not sentinel.is_file():
        raise RuntimeError(f"no move sentinel on the target: {sentinel}")
    files = [Path(d) / n for root in (target.home(project_id), target.persist(project_id))
             for d, _, names in os.walk(root) for n in names]
    regular = [f for f in files if not f.is_symlink() and f.name != "writer.log"]
    found = (sum(f.stat().st_size for f in regular) - sentinel.stat().st_size, len(regular) - 1)
    if found != (bench.tree_bytes, bench.tree_files):
        raise RuntimeError(f"moved project: {found[1]} files / {found[0]} bytes, "
                           f"expected {bench.tree_files} / {bench.tree_bytes}")
