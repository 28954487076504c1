"""The scale rows of `make bench`: what finding changed projects costs at 1,000 and 10,000 projects.

For each backend (btrfs on a loop device of its own, and the directory backend in the scratch
dir) and each project count N of ``ScaleSettings.projects``, N small projects are made directly
on disk before an agent starts (untimed for the figures, but timed as their own row: on btrfs
two subvolumes each, made by ioctl, no process; in each home a 200-byte file and a ``src/``
directory with a 300-byte file, in each persist location a 100-byte file). Then one agent
(restic, log level as the bench's agent, ``reconcile_interval`` = ``ScaleSettings.interval``)
runs on them, and the bench reads the agent's own ``freshness.reconciled`` log events, one per
reconcile cycle: its wall seconds and the agent process's CPU seconds over it (``time.process_time``
in the agent: every thread of the agent, other work of the agent meanwhile included, so an
upper bound).

* first cycle: the one after the start, which records every project (btrfs: every generation;
  directory: a full scan of every tree, adding the inotify watches);
* reconcile cycle, nothing changed: ``ScaleSettings.idle_cycles`` cycles in a row with no write
  (target on btrfs at 10,000 projects: ≤ 2 s);
* reconcile cycle, 1% changed: right after a cycle ended, one file in 1% of the projects is
  written (no fsync), and the next cycle must report exactly that many changed; the row is that
  cycle (``ScaleSettings.change_runs`` times);
* GetHostStatus latency: ``ScaleSettings.status_calls`` calls from the bench process, median;
  ListProjects the same (fewer calls);
* agent RSS after those cycles (psutil on the agent process; target ≤ 150 MiB at 10,000).

The scheduler rows (:func:`run_schedule`, per backend, real agent with ``[schedule]`` on, real
rustic, one local repository per project made by the agent's first backup) run at
``ScaleSettings.schedule_projects`` projects (0: the smallest count of ``projects``, i.e. of
``--scale-projects``), stated in each row's label: every project must have been backed up once
before (else all are "never backed up"), and that set-up costs one engine run per project; it
is its own row (the scheduler at the largest concurrency backing up N never-backed-up projects,
repository init included).

* backups per second at concurrency 1, 2 and 4: the agent restarted with ``[schedule]
  concurrency`` c (``max_concurrent_operations`` one more: the scheduler leaves one slot to
  requests), then 1% of the projects (at least ``schedule_min_changed``, so the concurrency can
  show; the label gives the count) get one file written; the figure is that count over the span
  from the first of their scheduled backups' starts to the last one's end (the settle delay of
  ``schedule_rpo`` / 10 before them is not in it). The peak number of them running at once is
  kept beside it.
* worst unprotected age under a steady write load: the agent with ``load_rpo`` and
  ``load_concurrency``; a writer makes (and fsyncs) one new file under ``load/`` of a random
  project's home ``load_writes_per_second`` times a second for ``load_seconds``, while
  GetHostStatus is sampled every ``load_sample_interval``; then the writes stop and the
  scheduler drains. Two figures, beside the RPO (the target): the largest
  ``max_unprotected_age_seconds`` sampled, and the ground truth (:func:`worst_unprotected_age`):
  the load's files of every snapshot the scheduled backups wrote are read back from the
  repositories (ListFiles), and per write the age runs from just before it began to the end of
  the first backup whose snapshot holds its file; the largest over all writes (a write no
  snapshot holds fails the row).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import re
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import grpc
import psutil

from agent.backends import btrfs_ioctl
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.harness import AgentProcess, new_id

# Targets of issue 19.
TARGET_IDLE_CYCLE_BTRFS_10K = 2.0
TARGET_RSS_MIB_10K = 150.0


@dataclass(frozen=True)
class ScaleSettings:
    projects: tuple[int, ...] = (1000, 10000)
    backends: tuple[str, ...] = ("btrfs", "directory")
    idle_cycles: int = 3
    change_runs: int = 3
    changed_fraction: float = 0.01
    status_calls: int = 10
    list_calls: int = 3
    interval: float = 0.5
    # The scheduler rows (see the module docstring); 0 projects: the smallest of ``projects``.
    schedule: bool = True
    schedule_projects: int = 0
    schedule_concurrencies: tuple[int, ...] = (1, 2, 4)
    schedule_min_changed: int = 8
    schedule_rpo: float = 10.0
    load_rpo: float = 30.0
    load_concurrency: int = 2
    load_seconds: float = 120.0
    load_writes_per_second: float = 1.0
    load_sample_interval: float = 0.5

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def schedule_count(self) -> int:
        return self.schedule_projects or min(self.projects)


@dataclass
class ScaleResult:
    backend: str
    projects: int
    setup_seconds: float
    first_cycle: tuple[float, float]
    idle: list[tuple[float, float]]
    changed: list[tuple[float, float]]
    changed_expected: int
    host_status_ms: list[float]
    list_projects_ms: list[float]
    rss_mib: float
    watch_note: str = ""


def loop_size_mb(projects: int) -> int:
    """MiB of the loop device for ``projects`` btrfs projects: two subvolumes each, their small files
    inline in metadata (DUP), qgroups; measured about 100 KiB a project, doubled."""
    return max(1024, projects * 200 // 1024 + 512)


def make_projects(agent: AgentProcess, backend: str, count: int) -> list[str]:
    """``count`` small projects directly on disk (no agent running); returns their ids."""
    ids = [new_id() for _ in range(count)]
    for root in (agent.projects_root, agent.persist_root):
        root.mkdir(parents=True, exist_ok=True)
    parents = {root: os.open(root, os.O_RDONLY | os.O_DIRECTORY) for root in (agent.projects_root,
                                                                           agent.persist_root)}
    try:
        for project_id in ids:
            home, persist = agent.home(project_id), agent.persist(project_id)
            for path in (home, persist):
                if backend == "btrfs":
                    btrfs_ioctl.create_subvolume(parents[path.parent], path.name)
                else:
                    path.mkdir()
            (home / "README.md").write_bytes(b"r" * 200)
            (home / "src").mkdir()
            (home / "src" / "main.py").write_bytes(b"m" * 300)
            (persist / "state.db").write_bytes(b"s" * 100)
    finally:
        for fd in parents.values():
            os.close(fd)
    return ids


def _cycles(agent: AgentProcess) -> list[dict]:
    return [e for e in agent.log_events() if e.get("event") == "freshness.reconciled"]


def _await_cycles(agent: AgentProcess, after: int, count: int = 1, timeout: float = 1800.0) -> list[dict]:
    """The cycle events after the first ``after`` once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        cycles = _cycles(agent)
        if len(cycles) >= after + count:
            return cycles[after:after + count]
        if agent.process is not None and agent.process.poll() is not None:
            raise RuntimeError(f"the agent exited: {agent.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no reconcile cycle within {timeout} s")
        time.sleep(0.02)


def _sample(event: dict) -> tuple[float, float]:
    return float(event["seconds"]), float(event["cpu_seconds"])


def _timed_ms(call: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run_one(scratch: Path, backend: str, count: int, settings: ScaleSettings, *, log: Callable[[str], None],
            log_level: str) -> ScaleResult:
    """One agent on ``count`` projects of ``backend`` in ``scratch`` (btrfs: a loop device of its own)."""
    filesystem = None
    agent = None
    try:
        if backend == "btrfs":
            from tests.btrfsfs import LoopBtrfs

            filesystem = LoopBtrfs(scratch / f"btrfs-{count}", size_mb=loop_size_mb(count))
            filesystem.start()
            base = filesystem.mountpoint / "agent"
        else:
            base = scratch / f"directory-{count}"
        agent = AgentProcess(base=base, backend=backend, limits=f"reconcile_interval = {settings.interval}")
        text = agent.config_path.read_text()
        agent.config_path.write_text(text.replace('level = "debug"', f'level = "{log_level}"'))
        log(f"scale: making {count} {backend} projects")
        started = time.monotonic()
        ids = make_projects(agent, backend, count)
        os.sync()
        setup_seconds = time.monotonic() - started
        log(f"scale: {count} {backend} projects made in {setup_seconds:.1f} s; starting the agent")
        agent.start()
        first = _await_cycles(agent, 0)[0]
        if first["projects"] != count or first["failed"]:
            raise RuntimeError(f"the first cycle saw {first}")
        idle = _await_cycles(agent, 1, settings.idle_cycles)
        if any(e["changed"] for e in idle):
            raise RuntimeError(f"cycles with nothing written reported changes: {idle}")
        expected = max(1, int(count * settings.changed_fraction))
        changed = []
        for run in range(settings.change_runs):
            seen = len(_cycles(agent))
            _await_cycles(agent, seen)  # a cycle just ended: write while the agent sleeps
            seen += 1
            for project_id in ids[run * expected:(run + 1) * expected]:
                (agent.home(project_id) / f"change-{run}.txt").write_bytes(b"c" * 100)
            event = _await_cycles(agent, seen)[0]
            if event["changed"] != expected:
                # Some writes landed in the cycle before (it started meanwhile): look at the next one.
                later = _await_cycles(agent, seen + 1)[0]
                if event["changed"] + later["changed"] != expected:
                    raise RuntimeError(f"{expected} projects written, cycles reported {event} and {later}")
                log(f"scale: the writes of run {run} straddled two cycles; not sampled")
                continue
            changed.append(_sample(event))
        host_ms = _timed_ms(lambda: agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=60),
                            settings.status_calls)
        list_ms = _timed_ms(lambda: agent.stub.ListProjects(pb.ListProjectsRequest(), timeout=600),
                            settings.list_calls)
        rss = psutil.Process(agent.process.pid).memory_info().rss / (1024 * 1024)
        capabilities = agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=30)
        note = "; ".join(text for text in capabilities.limitations if "could not be watched" in text
                         or "inotify is not available" in text)
        return ScaleResult(backend=backend, projects=count, setup_seconds=setup_seconds, first_cycle=_sample(first),
                           idle=[_sample(e) for e in idle], changed=changed, changed_expected=expected,
                           host_status_ms=host_ms, list_projects_ms=list_ms, rss_mib=rss, watch_note=note)
    finally:
        if agent is not None:
            agent.stop()
        if filesystem is not None:
            filesystem.stop()


# ------------------------------------------------------------------ the scheduler rows

OK_STATES = (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS, pb.UP_TO_DATE)
# The load's files, one per write, in this directory of the home.
LOAD_DIR = "load"


@dataclass(frozen=True)
class Write:
    """One write of the load: its project, the name of the file it made (under ``load/`` of the
    home), the time just before it began and when its fsync returned."""

    project_id: str
    name: str
    began: float
    acknowledged: float


@dataclass(frozen=True)
class Backed:
    """One scheduled backup that wrote a snapshot: its project, when its operation ended, and the
    names of the load's files in that snapshot (read back from the repository)."""

    project_id: str
    finished: float
    files: frozenset[str]


@dataclass
class ThroughputRun:
    concurrency: int
    changed: int
    seconds: float  # first start to last end of the changed projects' scheduled backups
    peak: int  # the most of them running at once

    @property
    def rate(self) -> float:
        return self.changed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LoadRun:
    rpo: float
    concurrency: int
    seconds: float
    writes: int
    writes_per_second: float
    sampled_max_age: float
    sampled_over_rpo: int  # the most projects over the RPO in one sample
    samples: int
    truth_worst_age: float
    unprotected_at_end: int  # writes no backup had taken when the run's drain ended


@dataclass
class ScheduleResult:
    backend: str
    projects: int
    setup_seconds: float
    setup_concurrency: int
    throughput: list[ThroughputRun]
    load: LoadRun | None
    engine: str


def worst_unprotected_age(writes: list[Write], backups: list[Backed], end: float) -> tuple[float, int]:
    """The ground truth of the load run: (the longest time a write stayed unprotected, the writes
    still unprotected at ``end``). A write is protected at the end of the first backup of its
    project whose snapshot holds its file (as read back from the repository: no claim of the
    agent's is taken on trust); its age runs from just before it began. A write no snapshot
    holds counts ``end`` - its start."""
    by_project: dict[str, list[Backed]] = {}
    for backup in backups:
        by_project.setdefault(backup.project_id, []).append(backup)
    worst, open_ = 0.0, 0
    for write in writes:
        protected = min((b.finished for b in by_project.get(write.project_id, ()) if write.name in b.files),
                        default=None)
        if protected is None:
            open_ += 1
            protected = end
        worst = max(worst, protected - write.began)
    return worst, open_


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most of the (start, end) spans open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = running = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def _seconds(timestamp) -> float:
    return timestamp.ToNanoseconds() / 1e9


def scheduled_backups(agent: AgentProcess, since: float) -> list[pb.Operation]:
    """The scheduler's operations created at or after ``since`` (ListOperations, newest first, paged)."""
    found, token = [], ""
    while True:
        response = agent.stub.ListOperations(pb.ListOperationsRequest(page_size=1000, page_token=token), timeout=60)
        for op in response.operations:
            if _seconds(op.created_at) < since:
                return found
            if op.kind == pb.OPERATION_KIND_BACKUP and op.request_id.startswith("scheduled-"):
                found.append(op)
        token = response.next_page_token
        if not token:
            return found


def _set_schedule(agent: AgentProcess, *, rpo: float, concurrency: int) -> None:
    text = agent.config_path.read_text()
    text = re.sub(r"(?m)^rpo = .*$", f"rpo = {rpo}", text)
    text = re.sub(r"(?m)^concurrency = .*$", f"concurrency = {concurrency}", text)
    text = re.sub(r"(?m)^max_concurrent_operations = .*$", f"max_concurrent_operations = {concurrency + 1}", text)
    agent.config_path.write_text(text)


def _restart(agent: AgentProcess, *, rpo: float, concurrency: int) -> None:
    agent.stop()
    _set_schedule(agent, rpo=rpo, concurrency=concurrency)
    agent.start()


def _await_settled(agent: AgentProcess, timeout: float) -> pb.HostStatus:
    """GetHostStatus once nothing is dirty, never backed up, running or queued."""
    deadline = time.monotonic() + timeout
    while True:
        status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=60)
        if not (status.dirty or status.never_backed_up or status.running_operations or status.queued_operations):
            return status
        if agent.process is not None and agent.process.poll() is not None:
            raise RuntimeError(f"the agent exited: {agent.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler did not settle within {timeout:.0f} s: {status}")
        time.sleep(0.2)


def _write(path: Path, data: bytes) -> tuple[float, float]:
    began = time.time()
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return began, time.time()


def _throughput(agent: AgentProcess, projects: list[str], concurrency: int, timeout: float) -> ThroughputRun:
    """Write one file in each of ``projects`` and time the first scheduled backup of each after it
    (a later one, e.g. of a change the first one's look left, is not counted)."""
    written = time.time()
    for project_id in projects:
        _write(agent.home(project_id) / f"changed-{concurrency}.txt", os.urandom(64))
    wanted = set(projects)
    deadline = time.monotonic() + timeout
    while True:
        first: dict[str, pb.Operation] = {}
        for op in reversed(scheduled_backups(agent, written)):  # oldest first
            if op.project_id in wanted and op.state != pb.CANCELLED:
                first.setdefault(op.project_id, op)
        failed = [op for op in first.values() if op.state == pb.FAILED]
        if failed:
            raise RuntimeError(f"a scheduled backup of {failed[0].project_id} failed: {failed[0].error.message}")
        done = {p: op for p, op in first.items() if op.state in OK_STATES}
        if set(done) == wanted:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(wanted - set(done))} of {len(wanted)} changed projects not backed up "
                               f"within {timeout:.0f} s")
        time.sleep(0.2)
    unchanged = [op for op in done.values() if op.state == pb.UP_TO_DATE]
    if unchanged:
        raise RuntimeError(f"{len(unchanged)} written projects were backed up as unchanged (UP_TO_DATE)")
    spans = [(_seconds(op.started_at), _seconds(op.finished_at)) for op in done.values()]
    return ThroughputRun(concurrency=concurrency, changed=len(projects),
                         seconds=max(end for _, end in spans) - min(start for start, _ in spans),
                         peak=peak_overlap(spans))


def load_files(agent: AgentProcess, project_id: str, snapshot_id: str) -> frozenset[str]:
    """The names of the files under the home's ``load/`` in the snapshot (none when it has no such
    directory), listed through the agent from the repository."""
    names, token = set(), ""
    while True:
        try:
            response = agent.stub.ListFiles(pb.ListFilesRequest(
                project_id=project_id, snapshot_id=snapshot_id, path=f"project/{LOAD_DIR}", depth=1,
                page_size=1000, page_token=token), timeout=120)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and not token:
                return frozenset()
            raise
        names.update(entry.path.rsplit("/", 1)[-1] for entry in response.entries)
        token = response.next_page_token
        if not token:
            return frozenset(names)


def _load(agent: AgentProcess, projects: list[str], settings: ScaleSettings, log: Callable[[str], None]) -> LoadRun:
    """The steady random write load against the RPO (see the module docstring)."""
    writes: list[Write] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        chooser = random.Random()
        period = 1.0 / settings.load_writes_per_second
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                project_id = chooser.choice(projects)
                name = f"w{len(writes):06d}.txt"
                began = time.time()
                (agent.home(project_id) / LOAD_DIR).mkdir(exist_ok=True)
                _, acknowledged = _write(agent.home(project_id) / LOAD_DIR / name, os.urandom(64))
                writes.append(Write(project_id, name, began, acknowledged))
                next_at += period
                stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failure.append(exc)

    started = time.time()
    thread = threading.Thread(target=writer, name="load-writer", daemon=True)
    thread.start()
    ages, over = [], []
    try:
        end_at = time.monotonic() + settings.load_seconds
        while time.monotonic() < end_at and not failure:
            status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(over_rpo_limit=1), timeout=60)
            ages.append(status.max_unprotected_age_seconds)
            over.append(status.over_rpo_count)
            time.sleep(settings.load_sample_interval)
    finally:
        stop.set()
        thread.join()
    if failure:
        raise RuntimeError(f"the load's writer failed: {failure[0]!r}")
    seconds = time.time() - started
    log(f"scale: load of {len(writes)} writes in {seconds:.0f} s done; waiting for the scheduler to drain")
    # The ages of the last writes end with their backups: sampled until the scheduler settled.
    deadline = time.monotonic() + 3 * settings.load_rpo + 60
    while True:
        status = agent.stub.GetHostStatus(pb.GetHostStatusRequest(over_rpo_limit=1), timeout=60)
        ages.append(status.max_unprotected_age_seconds)
        over.append(status.over_rpo_count)
        if not (status.dirty or status.running_operations or status.queued_operations) \
                or time.monotonic() > deadline:
            break
        time.sleep(settings.load_sample_interval)
    end = time.time()
    # Only backups that wrote a snapshot: an UP_TO_DATE one names an earlier snapshot, whose own
    # backup ended before it.
    written = {write.project_id for write in writes}
    made = [op for op in scheduled_backups(agent, started)
            if op.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS) and op.project_id in written]
    log(f"scale: reading the load's files in {len(made)} snapshots back from their repositories")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        listed = list(pool.map(lambda op: load_files(agent, op.project_id, op.summary.snapshot_id), made))
    backed = [Backed(op.project_id, _seconds(op.finished_at), files) for op, files in zip(made, listed)]
    worst, unprotected = worst_unprotected_age(writes, backed, end)
    return LoadRun(rpo=settings.load_rpo, concurrency=settings.load_concurrency, seconds=seconds, writes=len(writes),
                   writes_per_second=settings.load_writes_per_second, sampled_max_age=max(ages, default=0.0),
                   sampled_over_rpo=max(over, default=0), samples=len(ages), truth_worst_age=worst,
                   unprotected_at_end=unprotected)


def run_schedule(scratch: Path, backend: str, settings: ScaleSettings, *, rustic: str, engine_id: str,
                 log: Callable[[str], None], log_level: str) -> ScheduleResult:
    """The scheduler rows on ``backend`` in ``scratch`` (btrfs: a loop device of its own)."""
    count = settings.schedule_count
    filesystem = None
    agent = None
    try:
        if backend == "btrfs":
            from tests.btrfsfs import LoopBtrfs

            filesystem = LoopBtrfs(scratch / "btrfs-schedule", size_mb=loop_size_mb(count))
            filesystem.start()
            base = filesystem.mountpoint / "agent"
        else:
            base = scratch / "directory-schedule"
        widest = max(settings.schedule_concurrencies)
        agent = AgentProcess(
            base=base, backend=backend, engine="rustic",
            extra=f'rustic_binary = "{rustic}"\n[schedule]\nrpo = {settings.schedule_rpo}\nconcurrency = {widest}\n',
            limits=f"reconcile_interval = {settings.interval}\nmax_concurrent_operations = {widest + 1}\n")
        text = agent.config_path.read_text()
        agent.config_path.write_text(text.replace('level = "debug"', f'level = "{log_level}"'))
        ids = make_projects(agent, backend, count)
        os.sync()
        log(f"scale: scheduler on {count} {backend} projects: first backup of each (concurrency {widest})")
        started = time.monotonic()
        agent.start()
        _await_settled(agent, timeout=600 + 10 * count)
        setup_seconds = time.monotonic() - started
        log(f"scale: every project backed up once in {setup_seconds:.1f} s")
        changed = min(count, max(settings.schedule_min_changed, round(count * settings.changed_fraction)))
        runs = []
        for index, concurrency in enumerate(settings.schedule_concurrencies):
            _restart(agent, rpo=settings.schedule_rpo, concurrency=concurrency)
            _await_settled(agent, timeout=120)
            chosen = [ids[(index * changed + i) % count] for i in range(changed)]
            runs.append(_throughput(agent, chosen, concurrency, timeout=300 + 30 * changed))
            log(f"scale: concurrency {concurrency}: {changed} projects in {runs[-1].seconds:.2f} s "
                f"= {runs[-1].rate:.2f}/s (peak {runs[-1].peak} at once)")
        load = None
        if settings.load_seconds > 0:
            _restart(agent, rpo=settings.load_rpo, concurrency=settings.load_concurrency)
            _await_settled(agent, timeout=120)
            load = _load(agent, ids, settings, log)
            log(f"scale: load: sampled max age {load.sampled_max_age:.1f} s, ground truth "
                f"{load.truth_worst_age:.1f} s, RPO {load.rpo:g} s")
        return ScheduleResult(backend=backend, projects=count, setup_seconds=setup_seconds, setup_concurrency=widest,
                              throughput=runs, load=load, engine=engine_id)
    finally:
        if agent is not None:
            agent.stop()
        if filesystem is not None:
            filesystem.stop()


def figures(results: list[ScaleResult], figure_type: type, schedules: list[ScheduleResult] | None = None,
            schedule_skipped: str = "") -> list:
    """The table rows: each ScaleResult's, then each ScheduleResult's (``schedule_skipped``: why
    the scheduler rows did not run, shown in their place)."""
    rows = []
    for r in results:
        label = f"scale {r.backend} {r.projects} projects"
        rows.append(figure_type(f"{label}: set-up ({'2 subvolumes each by ioctl' if r.backend == 'btrfs' else 'mkdir'}"
                                f", files; untimed elsewhere)", agent=[r.setup_seconds], target=None))
        rows.append(figure_type(f"{label}: first reconcile cycle (records every project)",
                                agent=[r.first_cycle[0]], target=None, extra={"cpu_seconds": [r.first_cycle[1]]}))
        idle_target = TARGET_IDLE_CYCLE_BTRFS_10K if r.backend == "btrfs" and r.projects >= 10000 else None
        rows.append(figure_type(f"{label}: reconcile cycle, nothing changed (wall s)", agent=[s for s, _ in r.idle],
                                target=idle_target, target_is_absolute=idle_target is not None,
                                note=r.watch_note))
        rows.append(figure_type(f"{label}: reconcile cycle, nothing changed (agent CPU s)",
                                agent=[c for _, c in r.idle], target=None))
        rows.append(figure_type(f"{label}: reconcile cycle, {r.changed_expected} changed (wall s)",
                                agent=[s for s, _ in r.changed], target=None,
                                extra={"cpu_seconds": [c for _, c in r.changed]},
                                failed="" if r.changed else "no cycle caught all the writes"))
        rows.append(figure_type(f"{label}: GetHostStatus latency", agent=r.host_status_ms, target=None, unit="ms"))
        rows.append(figure_type(f"{label}: ListProjects latency", agent=r.list_projects_ms, target=None, unit="ms"))
        rss_target = TARGET_RSS_MIB_10K if r.projects >= 10000 else None
        rows.append(figure_type(f"{label}: agent RSS", agent=[r.rss_mib], target=rss_target,
                                target_is_absolute=rss_target is not None, unit="MiB"))
    if schedule_skipped:
        rows.append(figure_type("scale: scheduled backups per second; worst unprotected age under a write load",
                                target=None, cell=f"not measured: {schedule_skipped}"))
    for r in schedules or ():
        rows += schedule_figures(r, figure_type)
    return rows


def schedule_figures(r: ScheduleResult, figure_type: type) -> list:
    label = f"scale {r.backend} scheduler, {r.projects} projects"
    rows = [figure_type(f"{label}: set-up, first scheduled backup of each (concurrency {r.setup_concurrency}, "
                        f"repository init included)", agent=[r.setup_seconds], target=None, engine=r.engine,
                        note=f"{r.projects / r.setup_seconds:.2f} projects/s" if r.setup_seconds else "")]
    for run in r.throughput:
        rows.append(figure_type(f"{label}, {run.changed} changed: backups per second, concurrency {run.concurrency}",
                                agent=[run.rate], target=None, unit="projects/s", engine=r.engine,
                                note=f"{run.changed} backups in {run.seconds:.2f} s, at most {run.peak} at once",
                                extra={"seconds": [run.seconds]}))
    load = r.load
    if load is not None:
        what = (f"{label}: worst unprotected age, {load.writes_per_second:g} writes/s for {load.seconds:.0f} s, "
                f"concurrency {load.concurrency}, RPO {load.rpo:g} s")
        rows.append(figure_type(f"{what} (GetHostStatus max, {load.samples} samples)", agent=[load.sampled_max_age],
                                target=load.rpo, target_is_absolute=True, engine=r.engine,
                                note=f"at most {load.sampled_over_rpo} projects over the RPO in one sample"))
        rows.append(figure_type(f"{what} (ground truth: {load.writes} writes vs the snapshots holding them)",
                                agent=[load.truth_worst_age], target=load.rpo, target_is_absolute=True,
                                engine=r.engine,
                                failed=(f"{load.unprotected_at_end} writes not backed up after the drain"
                                        if load.unprotected_at_end else "")))
    return rows


def measure_scale(bench, *, figure_type: type, settings: ScaleSettings) -> list:
    """The scale rows for `make bench` (``bench``: bench.Bench, for its scratch dir, log, log level
    and whether btrfs rows can run)."""
    results = []
    for backend in settings.backends:
        if backend == "btrfs" and bench.btrfs_skipped:
            bench.log(f"  scale rows on btrfs skipped: {bench.btrfs_skipped}")
            continue
        for count in settings.projects:
            scratch = bench.fresh_dir(f"scale-{backend}-{count}-")
            scratch.mkdir(parents=True)
            results.append(run_one(scratch, backend, count, settings, log=bench.log, log_level=bench.agent_log_level))
            r = results[-1]
            bench.log(f"  {backend} {count}: idle cycle {statistics.median(s for s, _ in r.idle):.3f} s, "
                      f"RSS {r.rss_mib:.0f} MiB, GetHostStatus {statistics.median(r.host_status_ms):.1f} ms")
    schedules, skipped = measure_schedule(bench, settings)
    return figures(results, figure_type, schedules, skipped)


def measure_schedule(bench, settings: ScaleSettings) -> tuple[list[ScheduleResult], str]:
    """The scheduler rows of each backend, or why they did not run."""
    if not settings.schedule:
        return [], "--no-scale-schedule"
    from tests.engines import ENGINES
    from tests.tools import tool

    rustic = tool("rustic")
    if rustic is None:
        return [], "the pinned rustic is not built (scripts/tools.sh)"
    engine_id = next(e.id for e in ENGINES if e.driver == "rustic")
    schedules = []
    for backend in settings.backends:
        if backend == "btrfs" and bench.btrfs_skipped:
            bench.log(f"  scheduler rows on btrfs skipped: {bench.btrfs_skipped}")
            continue
        scratch = bench.fresh_dir(f"schedule-{backend}-")
        scratch.mkdir(parents=True)
        schedules.append(run_schedule(scratch, backend, settings, rustic=rustic, engine_id=engine_id, log=bench.log,
                                      log_level=bench.agent_log_level))
    return schedules, ""
