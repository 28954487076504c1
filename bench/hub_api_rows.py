"""The hub API rows of `make bench`: unary calls of a real ``buckets-hub serve`` process whose
SQLite store holds 10,000 projects.

The store is seeded before the hub starts (10,000 projects placed on one registered host whose
agent is not running: the service's freshness poll is off, and no call here reaches an agent).
Then, from threads of this process (a channel each):

* GetProject rate: ``threads`` threads call GetProject in a loop for ``seconds``, cycling
  through the projects (calls completed per second);
* GetProject latency: one thread, ``calls`` sequential calls: p50 and p99 (nearest rank);
* ListProjects latency: one thread, pages of 100 through the whole store: p50 and p99.

Run alone: ``python bench/hub_api_rows.py [--projects N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from hub_client.proto.buckets.v1 import hub_pb2 as hpb  # noqa: E402
from hub_client.proto.buckets.v1 import hub_pb2_grpc  # noqa: E402
from hub_client.store import Host, Project, open_store  # noqa: E402
from tests.hub_process import HubProcess  # noqa: E402


@dataclass(frozen=True)
class HubApiSettings:
    projects: int = 10_000
    threads: tuple[int, ...] = (1, 4)
    seconds: float = 5.0
    calls: int = 2000
    runs: int = 3


@dataclass
class HubApiResults:
    settings: HubApiSettings
    rates: dict[int, list[float]] = field(default_factory=dict)
    get_latencies: list[list[float]] = field(default_factory=list)
    list_latencies: list[list[float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def nearest_rank(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, int(-(-fraction * len(ordered) // 1)) - 1))]


def seed(store_path: Path, projects: int) -> list[str]:
    store = open_store(str(store_path))
    try:
        store.upsert_host(Host("bench-host", "127.0.0.1:9", "bench", "running", None))
        ids = sorted(str(uuid.uuid4()) for _ in range(projects))
        for project_id in ids:
            store.upsert_project(Project(project_id, "bench-host", "bench"))
        return ids
    finally:
        store.close()


def rate(address: str, ids: list[str], threads: int, seconds: float, errors: list[str]) -> float:
    channels = [grpc.insecure_channel(address) for _ in range(threads)]
    stubs = [hub_pb2_grpc.HubStub(channel) for channel in channels]
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    began = [0.0]

    def loop(index: int) -> None:
        stub = stubs[index]
        stub.GetProject(hpb.GetProjectRequest(project_id=ids[index]), timeout=30)  # connect (not counted)
        barrier.wait()
        position = index
        while time.perf_counter() < began[0] + seconds:
            try:
                stub.GetProject(hpb.GetProjectRequest(project_id=ids[position % len(ids)]), timeout=30)
                counts[index] += 1
            except grpc.RpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
            position += threads

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    try:
        for worker in workers:
            worker.start()
        began[0] = time.perf_counter()
        barrier.wait(timeout=60)
        for worker in workers:
            worker.join()
        return sum(counts) / (time.perf_counter() - began[0])
    finally:
        for channel in channels:
            channel.close()


def latencies(address: str, ids: list[str], calls: int) -> tuple[list[float], list[float]]:
    with grpc.insecure_channel(address) as channel:
        stub = hub_pb2_grpc.HubStub(channel)
        stub.GetProject(hpb.GetProjectRequest(project_id=ids[0]), timeout=30)
        gets = []
        for index in range(calls):
            started = time.perf_counter()
            stub.GetProject(hpb.GetProjectRequest(project_id=ids[(index * 7919) % len(ids)]), timeout=30)
            gets.append(time.perf_counter() - started)
        pages, token = [], ""
        while True:
            started = time.perf_counter()
            page = stub.ListProjects(hpb.HubListProjectsRequest(page_size=100, page_token=token), timeout=30)
            pages.append(time.perf_counter() - started)
            token = page.next_page_token
            if not token:
                break
        return gets, pages


def measure(scratch: Path, settings: HubApiSettings, log=print) -> HubApiResults:
    base = scratch / "hub-api"
    base.mkdir(parents=True, exist_ok=True)
    log(f"  seeding {settings.projects} projects")
    ids = seed(base / "hub.sqlite", settings.projects)
    hub = HubProcess(base, freshness_interval=0)
    results = HubApiResults(settings)
    hub.start()
    try:
        for run in range(settings.runs):
            for threads in settings.threads:
                value = rate(hub.address, ids, threads, settings.seconds, results.errors)
                results.rates.setdefault(threads, []).append(value)
                log(f"  run {run + 1}: GetProject × {threads} threads: {value:.0f} calls/s")
            gets, pages = latencies(hub.address, ids, settings.calls)
            results.get_latencies.append(gets)
            results.list_latencies.append(pages)
            log(f"  run {run + 1}: GetProject p50 {nearest_rank(gets, .5) * 1000:.2f} ms, "
                f"p99 {nearest_rank(gets, .99) * 1000:.2f} ms; ListProjects(100) p50 "
                f"{nearest_rank(pages, .5) * 1000:.2f} ms, p99 {nearest_rank(pages, .99) * 1000:.2f} ms")
    finally:
        hub.stop()
    return results


def figures(results: HubApiResults, figure_type: type) -> list:
    settings = results.settings
    rows = []
    note = (f"a buckets-hub process, SQLite store with {settings.projects} projects; calls from threads of "
            "this process, a channel each")
    for threads, samples in sorted(results.rates.items()):
        rows.append(figure_type(f"Hub API GetProject, {threads} client thread{'s' if threads != 1 else ''}",
                                agent=samples, target=None, unit="calls/s", note=note if threads == 1 else ""))
    for name, runs in (("GetProject", results.get_latencies), ("ListProjects page of 100", results.list_latencies)):
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            rows.append(figure_type(f"Hub API {name} latency {label}",
                                    agent=[nearest_rank(samples, fraction) for samples in runs], target=None,
                                    unit="s"))
    if results.errors:
        rows[0].failed = f"{len(results.errors)} calls failed, e.g. {results.errors[0]}"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        results = measure(Path(scratch), HubApiSettings(projects=args.projects, seconds=args.seconds, runs=args.runs))
    for threads, samples in sorted(results.rates.items()):
        print(f"GetProject {threads} threads: {statistics.median(samples):.0f} calls/s")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
