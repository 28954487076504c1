"""The frozen-window rows of `make bench`: how long a move keeps a project frozen, old flow vs new
flow, for projects of several sizes with 1% of their bytes changed between the bulk backup and
the freeze; and the new flow's whole move time against the raw engine's backup + restore.

Two agents of their own ("frozen-a" → "frozen-b", directory backend, the production engine
rustic, one local repository root and password shared as hosts of one region share a bucket),
a hub on a SQLite store in the scratch dir. For each size one tree of incompressible files is
generated once (untimed); every run copies it into a NEW project on the source (untimed) and
moves that project:

* **old flow**: ``MoveSettings.precopy_rounds = 0``: bulk backup, freeze, catch-up backup, the
  target restores the catch-up snapshot whole, verify, placement;
* **new flow**: the hub's default settings: bulk backup, pre-copy of it on the target while the
  project runs (more rounds while it changes), freeze, catch-up backup, the target brings the
  pre-copy to the catch-up snapshot (only what differs), verify, placement.

Right before the freeze step's work (the runner's ``before_step`` hook) 1% of the tree's bytes
are rewritten with new random bytes (whole files, same sizes); the hook's own time is taken out
of the move's time, of the frozen window and of the freeze step (the hook runs after that step's
movelog entry: 40 fsync-ed MB at 4 GB). The frozen window is the movelog's freeze step entry to
its "complete" entry (placement), less the hook; the bytes caught up after the freeze are what
the movelog reports.

* raw side of the total-time rows: the same engine's ``backup`` (``--init``) of the same tree
  into a new repository + ``restore`` into an empty directory, timed like the other raw rows.

Targets (issue 18): frozen(1 GB) ≤ 1.5 s; frozen(largest) / frozen(smallest) ≤ 1.5 (the window
does not grow with the project); whole move time ≤ 1.2 × raw (backup + restore).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from agent.fsops import syncfs
from hub_client.client import ClientConfig
from hub_client.hub import Hub
from hub_client.move import MoveSettings
from hub_client.store import MoveStatus, open_store
from tests.harness import AgentProcess, new_id

try:  # bench/ is sys.path[0] when bench.py runs as a script (make bench)
    from move_row import create_empty_project, delete_project, frozen_window, step_seconds
except ImportError:  # imported from the repository root (the unit tests)
    from bench.move_row import create_empty_project, delete_project, frozen_window, step_seconds

if TYPE_CHECKING:
    from bench.bench import Bench, Figure

REGION = "frozen"
SIZES_MB = (100, 1000, 4000)
QUICK_SIZES_MB = (20, 50, 100)
CHANGED_FRACTION = 0.01
TARGET_FROZEN_SECONDS = 1.5  # at 1 GB
TARGET_FROZEN_GROWTH = 1.5  # frozen(largest) / frozen(smallest)
TARGET_TOTAL_RATIO = 1.2
ONE_GB_MB = 1000


def files_for(size_mb: int) -> int:
    """Files of about 1 MB each (at least 50): a project of many files, as homes are."""
    return max(50, size_mb)


def file_sizes(root: Path) -> dict[Path, int]:
    """The size of every regular file below ``root``: what the 1% rewrite is chosen from."""
    return {path: path.stat().st_size for path in root.rglob("*") if path.is_file()}


def files_to_change(sizes: dict[Path, int], fraction: float) -> list[Path]:
    """The fewest files, taken in path order, whose sizes add up to at least ``fraction`` of all
    bytes: what the bench rewrites between the bulk backup and the freeze."""
    wanted = math.ceil(sum(sizes.values()) * fraction)
    chosen, total = [], 0
    for path in sorted(sizes):
        if total >= wanted:
            break
        chosen.append(path)
        total += sizes[path]
    return chosen


FROZEN_STEPS = ("freeze", "final_backup", "restore", "verify", "finalize")
PRE_FREEZE_STEPS = ("preflight", "backup", "precopy")


def frozen_steps(entries) -> dict[str, float]:
    """The seconds of each step inside the frozen window (:func:`step_seconds`)."""
    return {step: seconds for step, seconds in step_seconds(entries).items() if step in FROZEN_STEPS}


def caught_up_bytes(entries) -> float:
    """The bytes the movelog says the catch-up fetched after the freeze (its restore step's
    ``bytes_fetched``); NaN when it does not say, or says files but no bytes."""
    for entry in reversed(entries):
        data = entry.data or {}
        if "bytes_fetched" in data and data.get("step", "restore") == "restore":
            if not data["bytes_fetched"] and data.get("files_fetched"):
                return float("nan")  # files came, their bytes were not counted (rustic prints none)
            return float(data["bytes_fetched"])
    return float("nan")


def measure_frozen(
    bench: "Bench", *, figure_type: type["Figure"], generate: Callable[..., None], log_level: str,
    sizes_mb: tuple[int, ...], runs: int,
) -> list["Figure"]:
    rustic = next((engine for engine in bench.engines if engine.driver == "rustic"), None)
    if rustic is None:
        bench.log("  skipped (the frozen-window rows run on rustic, which is not among the measured engines)")
        return []
    if "precopy_rounds" not in {f.name for f in dataclasses.fields(MoveSettings)}:
        bench.log("  skipped (this hub has no pre-copy flow to compare: MoveSettings.precopy_rounds)")
        return []
    bench = dataclasses.replace(bench, engine=rustic, runs=runs, warmup=0)
    scratch = bench.scratch
    password_file = scratch / "frozen-repo.password"
    password_file.write_text(bench.password + "\n")
    password_file.chmod(0o600)
    extra = rustic.agent_config_lines() + (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{scratch / "frozen-repos"}"\n'
             f'password_file = "{password_file}"\n')
    agents = [AgentProcess(base=scratch / f"frozen-{name}", extra=extra, host_id=f"frozen-{name}",
                           engine="rustic") for name in ("a", "b")]
    for agent in agents:
        agent.config_path.write_text(agent.config_path.read_text().replace('level = "debug"', f'level = "{log_level}"'))
    store = open_store(f"sqlite://{scratch / 'frozen-hub.sqlite'}")
    figures: list[Figure] = []
    windows: dict[int, Figure] = {}
    catch_ups: dict[int, Figure] = {}
    try:
        for agent in agents:
            agent.start()
        source, target = agents
        with Hub(store, client_config=lambda address: ClientConfig(target=address, deadline=120.0)) as hub:
            for agent in agents:
                hub.add_host(agent.config_path.parent.name, f"127.0.0.1:{agent.port}", REGION)
                hub.probe_host(agent.config_path.parent.name)
            new_settings, old_settings = hub.settings, dataclasses.replace(hub.settings, precopy_rounds=0)
            for size_mb in sizes_mb:
                window = figure_type(
                    f"Move frozen window, {_size(size_mb)}, 1% changed", engine=rustic.id,
                    target=TARGET_FROZEN_SECONDS if size_mb == ONE_GB_MB else None,
                    note="agent column: new flow (pre-copy, then catch-up); raw column: old flow (whole restore "
                    "after the freeze); seconds from the freeze step's start to placement (movelog)"
                    + ("; target: new flow ≤ 1.5 s" if size_mb == ONE_GB_MB else ""))
                window.target_is_absolute = size_mb == ONE_GB_MB
                total = figure_type(
                    f"Move total time, {_size(size_mb)}, 1% changed", engine=rustic.id, target=TARGET_TOTAL_RATIO,
                    note="agent: the new flow's hub move (its 1% rewrite taken out); raw: rustic backup --init of "
                    "the same tree into a new repository + restore into an empty directory (raw with sync: and a "
                    "syncfs of it after, as the move's pre-copy is on disk before the freeze)")
                catch_up = figure_type(
                    f"Move catch-up, {_size(size_mb)}, 1% changed", engine=rustic.id, target=None,
                    note="agent: the new flow's final_backup + restore steps (frozen); raw: rustic backup of the same "
                    "1% rewrite with the first backup as parent + restore of it over the restored tree (--delete), "
                    "the key read beforehand (no KDF, as the agent's)")
                for figure in (window, total):
                    figure.extra.update({"old_flow_move_seconds": [], "new_flow_caught_up_mb": [],
                                         "old_flow_caught_up_mb": [], "changed_mb": []})
                window.extra.update({f"new_flow_{step}_seconds": [] for step in FROZEN_STEPS})
                total.extra.update({f"new_flow_{step}_seconds": [] for step in PRE_FREEZE_STEPS})
                total.extra["raw_with_sync_seconds"] = []
                template = scratch / f"frozen-tree-{size_mb}"
                bench.log(f"frozen rows: generating {size_mb} MB in {files_for(size_mb)} files")
                generate(template, total_bytes=size_mb * 1_000_000, files=files_for(size_mb))
                try:
                    for run in range(runs):
                        bench.log(f"frozen rows {_size(size_mb)}: run {run + 1}/{runs}")
                        for flow, settings in (("new", new_settings), ("old", old_settings)):
                            hub.settings = settings
                            seconds, frozen, caught_up, changed, steps = _move_once(bench, hub, store, source,
                                                                                     target, template)
                            bench.log(f"  {flow} flow: move {seconds:8.3f} s, frozen {frozen:.3f} s, caught up "
                                      f"{caught_up / 1e6:.1f} MB of {changed / 1e6:.1f} MB changed")
                            if flow == "new":
                                window.agent.append(frozen)
                                total.agent.append(seconds)
                                window.extra["new_flow_caught_up_mb"].append(caught_up / 1e6)
                                window.extra["changed_mb"].append(changed / 1e6)
                                for step, seconds_of_step in steps.items():
                                    figure = window if step in FROZEN_STEPS else total
                                    if f"new_flow_{step}_seconds" in figure.extra:
                                        figure.extra[f"new_flow_{step}_seconds"].append(seconds_of_step)
                            else:
                                window.raw.append(frozen)
                                total.extra["old_flow_move_seconds"].append(seconds)
                                window.extra["old_flow_caught_up_mb"].append(caught_up / 1e6)
                        raw_total, raw_sync, raw_catch_up = _raw_once(bench, source, template)
                        total.raw.append(raw_total)
                        total.extra["raw_with_sync_seconds"].append(raw_total + raw_sync)
                        catch_up.raw.append(raw_catch_up)
                        if window.extra["new_flow_final_backup_seconds"] and window.extra["new_flow_restore_seconds"]:
                            catch_up.agent.append(window.extra["new_flow_final_backup_seconds"][-1]
                                                  + window.extra["new_flow_restore_seconds"][-1])
                finally:
                    shutil.rmtree(template, ignore_errors=True)
                windows[size_mb] = window
                catch_ups[size_mb] = catch_up
                figures += [window, total, catch_up]
        if len(windows) >= 2:
            smallest, largest = min(windows), max(windows)
            growth = figure_type(
                f"Move frozen window growth, {_size(largest)} / {_size(smallest)} (new flow)", engine=rustic.id,
                target=TARGET_FROZEN_GROWTH, unit="×",
                note="the new flow's frozen-window median at the largest size over the smallest: the window must "
                "not grow with the project")
            growth.target_is_absolute = True
            if windows[smallest].agent and windows[largest].agent:
                small = statistics.median(windows[smallest].agent)
                large = statistics.median(windows[largest].agent)
                if small > 0 and not math.isnan(large):
                    growth.agent.append(large / small)
            figures.append(growth)
            floor = figure_type(
                f"Move frozen window growth floor, raw catch-up {_size(largest)} / window {_size(smallest)}",
                engine=rustic.id, target=TARGET_FROZEN_GROWTH, unit="×",
                note="the raw engine's catch-up (backup + restore over the tree) alone at the largest size over the "
                "new flow's whole window at the smallest: above the growth target, no window that backs the project "
                "up and restores it after the freeze (the issue's flow) meets it on this machine")
            floor.target_is_absolute = True
            if windows[smallest].agent and catch_ups[largest].raw:
                small = statistics.median(windows[smallest].agent)
                if small > 0:
                    floor.agent.append(statistics.median(catch_ups[largest].raw) / small)
            figures.append(floor)
    finally:
        for agent in agents:
            agent.stop()
        store.close()
        shutil.rmtree(scratch / "frozen-repos", ignore_errors=True)
    return figures


def _move_once(bench: "Bench", hub: Hub, store, source: AgentProcess, target: AgentProcess,
               template: Path) -> tuple[float, float, float, int, dict[str, float]]:
    """Copy the tree into a new project on the source, move it with 1% rewritten right before the
    freeze; returns (move seconds without the rewrite, frozen seconds without the rewrite, bytes
    caught up, bytes changed, seconds of each step, the freeze step's without the rewrite). The moved project is deleted afterwards (repository included), untimed."""
    project_id = new_id()
    create_empty_project(source, project_id)
    shutil.copytree(template, source.home(project_id), dirs_exist_ok=True)
    hub.add_project(project_id, "frozen-a", REGION)
    home = source.home(project_id)
    sizes = file_sizes(home)
    changed = files_to_change(sizes, CHANGED_FRACTION)
    spent = [0.0]

    def rewrite_before_freeze(step: str) -> None:
        if step != "freeze":
            return
        began = time.perf_counter()
        rewrite(changed, sizes)
        spent[0] += time.perf_counter() - began

    bench.settle()
    began = time.perf_counter()
    move = hub.move(project_id, "frozen-b", clean_now=False, before_step=rewrite_before_freeze)
    seconds = time.perf_counter() - began - spent[0]
    if move.status != MoveStatus.SUCCEEDED:
        raise RuntimeError(f"move {move.id} ended {move.status}: {move.error}")
    entries = store.movelog(move.id)
    if hub.run_cleanups():
        raise RuntimeError(f"the source copy of {project_id} was not removed")
    delete_project(target, project_id)
    # The rewrite runs inside the freeze step (after its movelog entry, before the Freeze call):
    # it is the project's own writing before the freeze, not part of the window.
    steps = step_seconds(entries)
    if "freeze" in steps:
        steps["freeze"] -= spent[0]
    return (seconds, frozen_window(entries) - spent[0], caught_up_bytes(entries), sum(sizes[p] for p in changed),
            steps)


def rewrite(paths: list[Path], sizes: dict[Path, int]) -> None:
    """New random bytes over each of ``paths`` (its size kept), written to disk: the bench's 1%."""
    for path in paths:
        with open(path, "r+b") as handle:
            handle.write(os.urandom(sizes[path]))
            handle.flush()
            os.fsync(handle.fileno())


def _raw_once(bench: "Bench", source: AgentProcess, template: Path) -> tuple[float, float, float]:
    """rustic backup --init of the tree (as a project of the source agent, the paths the agent
    reads) into a new repository + restore of that snapshot into an empty directory: their
    seconds, the total rows' raw side; and the seconds of a syncfs of the restored tree's
    filesystem right after (a move's pre-copy is on disk before the freeze: an extra figure,
    not in the ratio). Then the raw catch-up, with rustic's key read beforehand
    (untimed; the agent keeps its key too): 1% of the tree rewritten as a move's is (untimed), a
    backup of the change with the first as parent, and a restore of that snapshot over the
    restored tree (``--delete``: only what differs is fetched): their seconds, the engines' least
    part of a frozen window that backs the project up after the freeze. Returns the three
    (total, sync, catch-up) in seconds."""
    project_id = new_id()
    create_empty_project(source, project_id)
    shutil.copytree(template, source.home(project_id), dirs_exist_ok=True)
    raw = dataclasses.replace(bench, agent=source, project_id=project_id)
    repository = raw.fresh_dir("frozen-raw-repo-")
    restored = raw.fresh_restore_dir()
    try:
        backup_seconds, _, snapshot_id = raw.raw_backup(repository)
        restore_seconds = raw.raw_restore(repository, snapshot_id, restored)
        began = time.perf_counter()
        syncfs(restored)
        sync_seconds = time.perf_counter() - began
        key = raw.raw_master_key(repository)
        sizes = file_sizes(source.home(project_id))
        rewrite(files_to_change(sizes, CHANGED_FRACTION), sizes)
        catch_up_backup, _, summary = raw.raw_backup_summary(repository, init=False, master_key=key)
        catch_up_restore = raw.raw_restore(repository, summary["snapshot_id"], restored, over=True, master_key=key)
        bench.log(f"  raw backup + restore {backup_seconds + restore_seconds:8.3f} s; raw catch-up: backup "
                  f"{catch_up_backup:.3f} s + restore over the tree {catch_up_restore:.3f} s")
        return backup_seconds + restore_seconds, sync_seconds, catch_up_backup + catch_up_restore
    finally:
        shutil.rmtree(restored.parent, ignore_errors=True)
        shutil.rmtree(repository.parent, ignore_errors=True)
        delete_project(source, project_id)


def _size(size_mb: int) -> str:
    return f"{size_mb / 1000:g} GB" if size_mb >= 1000 else f"{size_mb} MB"
