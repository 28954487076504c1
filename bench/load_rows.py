"""The load rows of `make bench`: drain throughput, progress fan-out, unary RPC rate, agent RSS and CPU.

Unlike the other rows these have no raw-restic side: each figure is one number about the agent
(projects per second, calls per second, milliseconds, MiB, % of one core), the median of
``LoadSettings.runs`` runs with min and max. Two agents of their own run for these rows
(directory backend, restic, the embedded per-project local repositories, log level as the
bench's agent), with their base dirs in the bench's scratch dir:

* the *load agent* ("bench-load", ``max_concurrent_operations = 4``) holds the drain's projects:
  ``LoadSettings.projects`` small projects (``files_per_project`` files of about 512 bytes in
  nested directories, a symlink, one 1.6 KB file in persist). Of these, one in
  ``fresh_every`` (20 of 200) is NEW in every drain run (made untimed just before it, never
  backed up, so its backup includes ``restic init``; deleted untimed after the run) and the
  others are made once and backed up once by an untimed set-up drain, and before every drain
  run each of them gets one more file (a touch) and a ``MarkEdited``, so it is dirty. Every
  drain thus has the same work: every project needs a backup, and the bench checks that each
  one was backed up (state SUCCEEDED, not UP_TO_DATE).
* the *fan-out agent* ("bench-fanout", ``upload_limit_kib`` set, i.e. restic ``--limit-upload``)
  backs up one project of ``fanout_mb`` MB of incompressible bytes into a new local repository per
  run, so its upload takes ``fanout_mb`` / limit seconds and restic's status lines (about one a
  second) become many progress events. (The limit is on the fan-out agent only, so the drain's backups
  are not throttled.)

What is timed, per run:

* Drain, concurrency C: from sending ``Drain(concurrency=C)`` (per-project repositories) until
  ``StreamProgress`` delivers its terminal event, through ``hub_client.AgentClient``; the figure
  is projects / seconds. The concurrency settings alternate within a round (1, 2, 4, 1, 2, 4, ...).
* Watcher fan-out: ``watchers`` threads, each with its own gRPC channel (its own connection),
  are connected before the ``Backup`` RPC; right after it returns each opens
  ``StreamProgress(from_seq=0)`` and reads to the end. Every watcher must receive every event
  (seq 1..last_seq of the operation, in order, with the terminal one); this is reported, not
  raised: a watcher that missed one makes the row FAILED. The latency is from the ``time``
  the agent stamped on the terminal event to the moment the last watcher received it
  (the same machine, the same clock).
* GetProjectStatus rate: ``threads`` client threads (one ``AgentClient`` each) call
  ``GetProjectStatus`` in a loop for ``rpc_seconds``, cycling through the drain's projects;
  the figure is completed calls / elapsed seconds.
* Agent RSS and CPU (psutil on the agent process itself, not on restic or other children,
  sampled every 0.1 s): idle after a restart of the load agent (RSS right after it answers
  health SERVING, RSS ``idle_seconds`` later, mean CPU over that window), and the peak RSS and
  mean CPU (CPU seconds / wall seconds, % of one core) during each drain with concurrency 4,
  during each fan-out, and during each GetProjectStatus run with the most threads.

The client side (watchers, RPC threads) runs in the bench's own Python process on the same
machine: its CPU is shared with the agent, and the watchers' receipt times include the GIL.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
import psutil

from hub_client.client import AgentClient, ClientConfig
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc
from tests.harness import AgentProcess, create_project, new_id

MIB = 2**20
SAMPLE_INTERVAL = 0.1
STREAM_TIMEOUT = 3600.0
Log = Callable[[str], None]


@dataclass(frozen=True)
class LoadSettings:
    """The scale of the load rows (defaults: the full bench; ``quick()``: ``--quick``)."""

    projects: int = 200
    files_per_project: int = 5
    # One project in this many is new (never backed up) in each drain run; the rest are dirty.
    fresh_every: int = 10
    concurrencies: tuple[int, ...] = (1, 2, 4)
    runs: int = 3
    watchers: int = 100
    # The fan-out's backup: restic reports progress about once a second, so the events come from
    # its duration, about fanout_mb MB / upload_limit_kib KiB/s (+ init): ~30 s, ~30 events.
    fanout_mb: int = 30
    upload_limit_kib: int = 1024
    rpc_threads: tuple[int, ...] = (1, 8)
    rpc_seconds: float = 3.0
    idle_seconds: float = 5.0

    @classmethod
    def quick(cls, projects: int = 40) -> LoadSettings:
        return cls(projects=projects, fanout_mb=10, rpc_seconds=2.0)

    @property
    def fresh_per_run(self) -> int:
        """Projects new in each drain run (at least one when there are two or more projects)."""
        if self.projects < 2:
            return 0
        return max(1, self.projects // self.fresh_every)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["fresh_per_run"] = self.fresh_per_run
        data["dirty_per_run"] = self.projects - self.fresh_per_run
        return data


# --------------------------------------------------------------------------- sampling


@dataclass
class Usage:
    """The agent process over a window: ``peak_rss`` (bytes, sampled), ``cpu_percent`` (CPU seconds
    of the process itself / wall seconds × 100, i.e. % of one core), ``seconds`` of wall time."""

    peak_rss: int
    cpu_percent: float
    seconds: float
    first_rss: int
    last_rss: int


class ResourceSampler:
    """Samples the RSS of process ``pid`` every ``interval`` s in a thread between :meth:`start` and
    :meth:`stop` (which returns a :class:`Usage`); CPU from the process's own user + system time.
    Use as a context manager; ``usage`` is set on exit."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[int] = []
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self.usage: Usage | None = None

    def _cpu(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def _sample(self) -> None:
        try:
            self._samples.append(self._process.memory_info().rss)
        except psutil.Error:
            pass

    def start(self) -> ResourceSampler:
        self._wall0 = time.perf_counter()
        self._cpu0 = self._cpu()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._wall0
        cpu = self._cpu() - self._cpu0
        self.usage = Usage(
            peak_rss=max(self._samples), cpu_percent=100.0 * cpu / wall if wall > 0 else 0.0, seconds=wall,
            first_rss=self._samples[0], last_rss=self._samples[-1],
        )
        return self.usage

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- agents and projects


def start_load_agent(
    base: Path, *, host_id: str = "bench-load", log_level: str = "info", upload_limit_kib: int = 0,
    max_concurrent: int = 4, start: bool = True,
) -> AgentProcess:
    """An agent for the load rows (directory backend, restic, per-project local repositories),
    started unless ``start`` is False."""
    limits = f"max_concurrent_operations = {max_concurrent}\nmax_queued_operations = 1000\n"
    if upload_limit_kib:
        limits += f"upload_limit_kib = {upload_limit_kib}\n"
    agent = AgentProcess(base=base, limits=limits, host_id=host_id)
    text = agent.config_path.read_text()
    agent.config_path.write_text(text.replace('level = "debug"', f'level = "{log_level}"'))
    return agent.start() if start else agent


def client_for(agent: AgentProcess) -> AgentClient:
    return AgentClient(ClientConfig(target=f"127.0.0.1:{agent.port}", deadline=120.0))


def make_projects(agent: AgentProcess, count: int, *, files: int) -> list[str]:
    """``count`` new projects (EnsureProject NONE, then ``files`` small files and a persist file)."""
    return [create_project(agent, files=files, size=512) for _ in range(count)]


def make_dirty(agent: AgentProcess, client: AgentClient, project_ids: list[str]) -> None:
    """Touch a file in each project (its content and mtime change) and report it with MarkEdited."""
    for project_id in project_ids:
        (agent.home(project_id) / "touched.txt").write_text(f"{time.time_ns()} {new_id()}\n")
        client.mark_edited(project_id)


def delete_projects(client: AgentClient, project_ids: list[str]) -> None:
    """DeleteProject with its repository, one at a time; raises unless each one succeeded."""
    for project_id in project_ids:
        final = client.delete_project(project_id, delete_repository=True).wait(timeout=600)
        if final.state != pb.SUCCEEDED:
            raise RuntimeError(f"DeleteProject {project_id} ended {pb.OperationState.Name(final.state)}: "
                               f"{final.error.message}")


# --------------------------------------------------------------------------- drain


@dataclass
class DrainRun:
    concurrency: int
    seconds: float
    projects: int
    usage: Usage | None = None

    @property
    def rate(self) -> float:
        """Projects backed up per second."""
        return self.projects / self.seconds if self.seconds > 0 else 0.0


def drain_run(
    client: AgentClient, *, concurrency: int, expected: set[str], pid: int | None = None
) -> DrainRun:
    """One timed Drain: from the RPC until its terminal progress event. Raises unless it ended
    SUCCEEDED with exactly ``expected`` projects, each backed up (SUCCEEDED, not UP_TO_DATE).
    ``pid``: sample that process (the agent) during the drain."""
    sampler = ResourceSampler(pid).start() if pid is not None else None
    began = time.perf_counter()
    handle = client.drain(concurrency=concurrency)
    ended = None
    for event in handle.progress():
        if event.terminal:
            ended = time.perf_counter()
    usage = sampler.stop() if sampler is not None else None
    if ended is None:
        raise RuntimeError(f"the progress of drain {handle.id} ended without a terminal event")
    final = handle.refresh()
    states = {o.project_id: o.state for o in final.summary.projects}
    if final.state != pb.SUCCEEDED or set(states) != expected:
        raise RuntimeError(
            f"drain {handle.id} ended {pb.OperationState.Name(final.state)} with {len(states)} projects, "
            f"expected SUCCEEDED with {len(expected)}: {final.error.code} {final.error.message}"
        )
    not_backed_up = {p: pb.OperationState.Name(s) for p, s in states.items() if s != pb.SUCCEEDED}
    if not_backed_up:
        raise RuntimeError(f"drain {handle.id}: {len(not_backed_up)} projects were not backed up: "
                           f"{dict(list(not_backed_up.items())[:5])}")
    return DrainRun(concurrency=concurrency, seconds=ended - began, projects=len(states), usage=usage)


# --------------------------------------------------------------------------- watcher fan-out


@dataclass
class Watcher:
    seqs: list[int] = field(default_factory=list)
    terminal_received: float | None = None  # time.time() when the terminal event arrived
    error: str = ""


@dataclass
class FanoutRun:
    """One fan-out: what each watcher received, against the operation's ``emitted`` events."""

    watchers: list[Watcher]
    emitted: int  # the operation's last_seq: events 1..emitted
    terminal_time: float  # the terminal event's time as the agent stamped it (epoch seconds)
    state: str
    usage: Usage | None = None

    @property
    def counts(self) -> list[int]:
        return [len(w.seqs) for w in self.watchers]

    @property
    def incomplete(self) -> list[tuple[int, Watcher]]:
        """(index, watcher) of every watcher that did not get exactly events 1..emitted in order."""
        wanted = list(range(1, self.emitted + 1))
        return [(i, w) for i, w in enumerate(self.watchers)
                if w.error or w.seqs != wanted or w.terminal_received is None]

    @property
    def last_latency(self) -> float | None:
        """Seconds from the terminal event's time to the last watcher receiving it."""
        received = [w.terminal_received for w in self.watchers if w.terminal_received is not None]
        return max(received) - self.terminal_time if received else None

    @property
    def median_latency(self) -> float | None:
        received = [w.terminal_received for w in self.watchers if w.terminal_received is not None]
        return statistics.median(received) - self.terminal_time if received else None

    def describe(self) -> str:
        counts = self.counts
        text = (f"{len(self.watchers)} watchers got min {min(counts)} / max {max(counts)} events of "
                f"{self.emitted} emitted ({self.state})")
        missing = self.incomplete
        if missing:
            index, watcher = missing[0]
            why = watcher.error or f"{len(watcher.seqs)} of {self.emitted} events"
            text += f"; {len(missing)} incomplete, e.g. watcher {index}: {why}"
        return text


def fanout_run(
    agent: AgentProcess, client: AgentClient, project_id: str, *, watchers: int,
    repository: pb.RepositorySpec | None = None, pid: int | None = None, timeout: float = STREAM_TIMEOUT,
) -> FanoutRun:
    """A forced Backup of ``project_id`` (into ``repository``, or the project's own) watched by
    ``watchers`` concurrent StreamProgress calls, each on its own channel. Never raises on a
    watcher's failure (it is recorded); raises when the backup itself cannot be started."""
    target = f"127.0.0.1:{agent.port}"
    channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(watchers)]
    results = [Watcher() for _ in range(watchers)]
    go = threading.Event()
    operation_id: list[str] = []
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=30)

        def watch(index: int) -> None:
            watcher = results[index]
            go.wait()
            if not operation_id:
                watcher.error = "no operation"
                return
            stub = pb_grpc.AgentStub(channels[index])
            try:
                stream = stub.StreamProgress(
                    pb.StreamProgressRequest(operation_id=operation_id[0], from_seq=0), timeout=timeout)
                for update in stream:
                    if update.WhichOneof("update") != "event":
                        continue
                    watcher.seqs.append(update.event.seq)
                    if update.event.terminal:
                        watcher.terminal_received = time.time()
            except grpc.RpcError as exc:
                watcher.error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:  # noqa: BLE001 - reported in the figure, never raised
                watcher.error = repr(exc)

        threads = [threading.Thread(target=watch, args=(i,), name=f"bench-watcher-{i}", daemon=True)
                   for i in range(watchers)]
        for thread in threads:
            thread.start()
        sampler = ResourceSampler(pid).start() if pid is not None else None
        try:
            try:
                fields = {"force": True}
                if repository is not None:
                    fields["repository"] = repository
                handle = client.backup(project_id, **fields)
                operation_id.append(handle.id)
            finally:
                go.set()
            final = handle.wait(timeout=timeout)
        finally:
            usage = sampler.stop() if sampler is not None else None
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for index, thread in enumerate(threads):
            if thread.is_alive():
                results[index].error = results[index].error or "still streaming 60 s after the operation ended"
        terminal = [e for e in client.progress(handle.id, from_seq=max(1, final.last_seq)) if e.terminal]
        terminal_time = terminal[0].time.ToNanoseconds() / 1e9 if terminal else float("nan")
        return FanoutRun(watchers=results, emitted=final.last_seq, terminal_time=terminal_time,
                         state=pb.OperationState.Name(final.state), usage=usage)
    finally:
        for channel in channels:
            channel.close()


# --------------------------------------------------------------------------- unary RPC rate


@dataclass
class RateRun:
    threads: int
    calls: int
    seconds: float
    errors: list[str]  # the first few
    error_count: int = 0
    usage: Usage | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def unary_rate(
    target: str, project_ids: list[str], *, threads: int, seconds: float, pid: int | None = None
) -> RateRun:
    """GetProjectStatus calls per second from ``threads`` threads (an AgentClient each), each
    looping for ``seconds`` over ``project_ids`` (thread i starting at the i-th). Errors are
    counted, not raised (the first few are kept)."""
    clients = [AgentClient(ClientConfig(target=target, deadline=30.0)) for _ in range(threads)]
    counts = [0] * threads
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    began = [0.0]

    def loop(index: int) -> None:
        client = clients[index]
        try:
            client.project_status(project_ids[index % len(project_ids)])  # connect (not counted)
        finally:
            barrier.wait()
        deadline = began[0] + seconds
        position = index
        while time.perf_counter() < deadline:
            try:
                client.project_status(project_ids[position % len(project_ids)])
                counts[index] += 1
            except Exception as exc:  # noqa: BLE001 - reported in the figure
                with lock:
                    errors.append(repr(exc))
            position += 1

    workers = [threading.Thread(target=loop, args=(i,), name=f"bench-rpc-{i}", daemon=True)
               for i in range(threads)]
    sampler = ResourceSampler(pid) if pid is not None else None
    try:
        for worker in workers:
            worker.start()
        if sampler is not None:
            sampler.start()
        began[0] = time.perf_counter()
        barrier.wait(timeout=60)
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began[0]
        usage = sampler.stop() if sampler is not None else None
    finally:
        for client in clients:
            client.close()
    return RateRun(threads=threads, calls=sum(counts), seconds=elapsed, errors=errors[:3],
                   error_count=len(errors), usage=usage)


# --------------------------------------------------------------------------- idle


@dataclass
class IdleRun:
    start_rss: int  # right after the agent answered health SERVING
    end_rss: int  # ``seconds`` later
    usage: Usage


def idle_run(agent: AgentProcess, *, seconds: float) -> IdleRun:
    """(Re)start ``agent`` and sample its process, doing nothing, for ``seconds``."""
    agent.stop()
    agent.start()
    assert agent.process is not None
    sampler = ResourceSampler(agent.process.pid).start()
    time.sleep(seconds)
    usage = sampler.stop()
    return IdleRun(start_rss=usage.first_rss, end_rss=usage.last_rss, usage=usage)


# --------------------------------------------------------------------------- figures


@dataclass
class LoadResults:
    """Every run of the load rows, as measured."""

    settings: LoadSettings
    drains: list[DrainRun] = field(default_factory=list)
    fanouts: list[FanoutRun] = field(default_factory=list)
    rates: list[RateRun] = field(default_factory=list)
    idles: list[IdleRun] = field(default_factory=list)
    setup_seconds: float = 0.0


def figures(results: LoadResults, figure_type: type) -> list:
    """The table rows of the load results (``figure_type``: bench.Figure; agent samples only,
    no raw side, no target)."""
    settings = results.settings
    rows = []

    def row(name: str, samples: list[float], unit: str, note: str = "", **extra) -> object:
        figure = figure_type(name, agent=list(samples), target=None, note=note, unit=unit)
        for key, values in extra.items():
            figure.extra[key] = list(values)
        rows.append(figure)
        return figure

    def mib(values) -> list[float]:
        return [v / MIB for v in values]

    fresh = settings.fresh_per_run
    for concurrency in sorted({d.concurrency for d in results.drains}):
        runs = [d for d in results.drains if d.concurrency == concurrency]
        row(f"Drain, {runs[0].projects} projects, concurrency {concurrency}", [d.rate for d in runs],
            "projects/s",
            note=(f"Drain RPC until its terminal event, per-project local repositories; per run "
                  f"{runs[0].projects - fresh} dirty (backed up before, one file touched + MarkEdited) and "
                  f"{fresh} never backed up (new, restic init included); every one checked backed up")
            if concurrency == min(d.concurrency for d in results.drains) else "",
            drain_seconds=[d.seconds for d in runs])

    if results.fanouts:
        fanouts = results.fanouts
        watchers = len(fanouts[0].watchers)
        failures = [(i, f) for i, f in enumerate(fanouts, 1) if f.incomplete or f.state != "SUCCEEDED"]
        events = row(
            f"Watcher fan-out, {watchers} watchers: events per watcher", [min(f.counts) for f in fanouts],
            "events",
            note="; ".join(f"run {i}: {f.describe()}" for i, f in enumerate(fanouts, 1)),
            max_events_per_watcher=[max(f.counts) for f in fanouts],
            events_emitted=[f.emitted for f in fanouts],
        )
        if failures:
            index, fanout = failures[0]
            events.failed = f"run {index}: {fanout.describe()}"
        else:
            low, high = min(f.emitted for f in fanouts), max(f.emitted for f in fanouts)
            emitted = f"{low}" if low == high else f"{low}–{high}"
            events.cell = f"all {watchers} got all {emitted} events"
        latencies = [f.last_latency for f in fanouts if f.last_latency is not None]
        row(f"Watcher fan-out, {watchers} watchers: terminal event → last watcher", latencies, "s",
            note=(f"a forced Backup of {settings.fanout_mb} MB into a new local repository, restic "
                  f"--limit-upload {settings.upload_limit_kib} KiB/s; from the terminal event's time on the "
                  f"agent to the last of the watchers (threads of this process, a channel each) receiving it"),
            median_watcher_seconds=[f.median_latency for f in fanouts if f.median_latency is not None])

    for threads in sorted({r.threads for r in results.rates}):
        runs = [r for r in results.rates if r.threads == threads]
        figure = row(f"GetProjectStatus, {threads} client thread{'s' if threads != 1 else ''}",
                     [r.rate for r in runs], "calls/s",
                     note=(f"calls completed in {settings.rpc_seconds:g} s from N threads of this process (an "
                           f"AgentClient each), cycling through the drain's projects")
                     if threads == min(r.threads for r in results.rates) else "")
        failed = sum(r.error_count for r in runs)
        if failed:
            figure.failed = f"{failed} calls failed, e.g. {next(e for r in runs for e in r.errors)}"

    if results.idles:
        idles = results.idles
        row("Agent RSS, idle: just started", mib(i.start_rss for i in idles), "MiB",
            note=f"psutil on the load agent's own process (restarted per run, {settings.projects} projects "
                 "on the host): RSS when health answers SERVING")
        row(f"Agent RSS, idle: {settings.idle_seconds:g} s after start", mib(i.end_rss for i in idles), "MiB")
        row(f"Agent CPU, idle: first {settings.idle_seconds:g} s", [i.usage.cpu_percent for i in idles], "%",
            note="mean CPU of the agent process (user + system seconds / wall seconds, % of one core)")

    def usage_rows(label: str, usages: list[Usage], note: str = "") -> None:
        if not usages:
            return
        row(f"Agent peak RSS, {label}", mib(u.peak_rss for u in usages), "MiB", note=note)
        row(f"Agent CPU, {label}", [u.cpu_percent for u in usages], "%")

    top = max(settings.concurrencies)
    usage_rows(f"drain concurrency {top}",
               [d.usage for d in results.drains if d.concurrency == top and d.usage is not None],
               note="sampled every 0.1 s on the agent process only (restic runs in child processes)")
    usage_rows(f"{len(results.fanouts[0].watchers) if results.fanouts else 0} watchers",
               [f.usage for f in results.fanouts if f.usage is not None])
    most = max((r.threads for r in results.rates), default=0)
    usage_rows(f"GetProjectStatus × {most} threads",
               [r.usage for r in results.rates if r.threads == most and r.usage is not None])
    return rows


# --------------------------------------------------------------------------- the whole set


def generate_fanout_tree(root: Path, *, total_bytes: int, files: int = 40) -> None:
    """``files`` files of incompressible bytes, ``total_bytes`` in all."""
    root.mkdir(parents=True, exist_ok=True)
    size = total_bytes // files
    for index in range(files):
        extra = total_bytes - size * files if index == files - 1 else 0
        (root / f"blob{index:03d}.bin").write_bytes(os.urandom(size + extra))


def run_load(
    scratch: Path, settings: LoadSettings, *, log: Log, log_level: str = "info",
    password: str | None = None,
) -> LoadResults:
    """Every load row at ``settings``' scale, with two agents of its own under ``scratch``."""
    results = LoadResults(settings=settings)
    password = password or "bench-load-" + new_id()
    load_agent = fanout_agent = None
    try:
        load_agent = start_load_agent(scratch / "load-agent", log_level=log_level)
        client = client_for(load_agent)
        try:
            began = time.perf_counter()
            base_count = settings.projects - settings.fresh_per_run
            log(f"  set-up: {base_count} projects of {settings.files_per_project} files, one untimed drain "
                "backs them up")
            base = make_projects(load_agent, base_count, files=settings.files_per_project)
            if base:
                setup = drain_run(client, concurrency=max(settings.concurrencies), expected=set(base))
                log(f"  set-up drain: {setup.seconds:.1f} s")
            results.setup_seconds = time.perf_counter() - began

            for index in range(settings.runs):
                log(f"  idle run {index + 1}/{settings.runs}: restart the agent, {settings.idle_seconds:g} s")
                client.close()
                idle = idle_run(load_agent, seconds=settings.idle_seconds)
                client = client_for(load_agent)
                results.idles.append(idle)
                log(f"    RSS {idle.start_rss / MIB:.1f} → {idle.end_rss / MIB:.1f} MiB, "
                    f"CPU {idle.usage.cpu_percent:.1f} %")

            top = max(settings.concurrencies)
            for index in range(settings.runs):
                for concurrency in settings.concurrencies:
                    make_dirty(load_agent, client, base)
                    fresh = make_projects(load_agent, settings.fresh_per_run, files=settings.files_per_project)
                    os.sync()
                    assert load_agent.process is not None
                    run = drain_run(client, concurrency=concurrency, expected=set(base) | set(fresh),
                                    pid=load_agent.process.pid if concurrency == top else None)
                    results.drains.append(run)
                    log(f"  drain run {index + 1}/{settings.runs}, concurrency {concurrency}: {run.projects} "
                        f"projects in {run.seconds:.2f} s = {run.rate:.2f} projects/s")
                    delete_projects(client, fresh)

            if base:
                for index in range(settings.runs):
                    for threads in settings.rpc_threads:
                        assert load_agent.process is not None
                        rate = unary_rate(f"127.0.0.1:{load_agent.port}", base, threads=threads,
                                          seconds=settings.rpc_seconds,
                                          pid=load_agent.process.pid if threads == max(settings.rpc_threads) else None)
                        results.rates.append(rate)
                        failed = f", {rate.error_count} FAILED: {rate.errors}" if rate.error_count else ""
                        log(f"  GetProjectStatus run {index + 1}/{settings.runs}, {threads} threads: "
                            f"{rate.rate:.0f} calls/s{failed}")
        finally:
            client.close()
        load_agent.stop()

        fanout_agent = start_load_agent(scratch / "fanout-agent", host_id="bench-fanout", log_level=log_level,
                                        upload_limit_kib=settings.upload_limit_kib)
        client = client_for(fanout_agent)
        try:
            project_id = make_projects(fanout_agent, 1, files=1)[0]
            generate_fanout_tree(fanout_agent.home(project_id) / "data", total_bytes=settings.fanout_mb * 1_000_000)
            for index in range(settings.runs):
                repository = Path(tempfile.mkdtemp(prefix="fanout-repo-", dir=scratch)) / "d"
                spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(repository)), password=password)
                os.sync()
                assert fanout_agent.process is not None
                fanout = fanout_run(fanout_agent, client, project_id, watchers=settings.watchers,
                                    repository=spec, pid=fanout_agent.process.pid)
                results.fanouts.append(fanout)
                latency = fanout.last_latency
                log(f"  fan-out run {index + 1}/{settings.runs}: {fanout.describe()}; terminal → last watcher "
                    f"{'-' if latency is None else f'{latency * 1000:.1f} ms'}")
        finally:
            client.close()
    finally:
        for agent in (load_agent, fanout_agent):
            if agent is not None:
                agent.stop()
    return results


def measure_load(bench, *, figure_type: type, settings: LoadSettings) -> list:
    """The load rows for `make bench` (``bench``: bench.Bench, for its scratch dir, log and log level)."""
    scratch = Path(tempfile.mkdtemp(prefix="load-", dir=bench.scratch))
    results = run_load(scratch, settings, log=bench.log, log_level=bench.agent_log_level, password=bench.password)
    return figures(results, figure_type)
