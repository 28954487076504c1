"""``buckets-hub serve``: the Hub service process — grpc.aio with health and reflection, the
moves' and copies' runner, the freshness poller, and a graceful stop on SIGTERM.

Shutdown: health NOT_SERVING → no new calls, in-flight ones get the grace period → the runner
takes no new job and the running ones get the rest of the grace period. A move still running
then is left as recorded (RUNNING at its step): it is resumed from there, by ResumeMove or by
the hub process that takes it over; the process exits without waiting for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent import tls
from agent.notify import Notifier
from agent.config import ConfigError
from hub_client.hub import Hub
from hub_client.lease import LeaseSettings
from hub_client.repository_copy import load_buckets
from hub_client.service import auth
from hub_client.service.config import HubConfig, client_config
from hub_client.service.domain import HubService
from hub_client.service.freshness import FreshnessPoller
from hub_client.service.runner import Runner
from hub_client.service.servicer import SERVICE_NAME, HubServicer, add_to_server
from hub_client.store import Store, open_store
from hub_client.worker import HubWorker

log = structlog.get_logger("hub.server")

CALL_THREADS = 64


def _write_port_file(path: str, port: int) -> None:
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, target)


def agent_settings(config: HubConfig, store: Store):
    """The Hub's ``client_config``: an agent address → its ClientConfig from ``[agents]``, by the
    host (and its region) registered at that address."""

    def for_address(address: str):
        host = next((h for h in store.list_hosts() if h.address == address), None)
        dial = config.agents.dial(host.id if host else None, host.region if host else None)
        return client_config(dial, address)

    return for_address


def build_hub(config: HubConfig, store: Store) -> Hub:
    buckets = load_buckets(config.buckets) if config.buckets else {}
    return Hub(store, client_config=agent_settings(config, store), settings=config.move_settings(buckets),
               leases=LeaseSettings(seconds=config.lease_seconds))


async def serve(config: HubConfig) -> int:
    """Run the hub service until SIGTERM or SIGINT, then end the process (exit 0); returns 1
    when the port cannot be bound."""
    credentials = tls.server_credentials(config.server.tls)
    # The servicer runs the library's blocking calls in threads; drains, clones and deletions
    # hold one for their whole length, so the default pool (CPUs + 4) would starve quick calls.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=CALL_THREADS,
                                                                        thread_name_prefix="hub-call"))
    if not config.store:
        raise ConfigError(["store: required for buckets-hub serve (a SQLite path or a PostgreSQL URI)"])
    if "://" not in config.store:
        Path(config.store).parent.mkdir(parents=True, exist_ok=True)
    store = open_store(config.store)
    hub = build_hub(config, store)
    runner = Runner(hub, config.workers)
    service = HubService(hub, runner, freshness_bound=config.freshness_valid_for)
    poller = FreshnessPoller(hub, config.freshness_interval)
    # Moves and copies whose hub process died (this one before a restart, or another on the same
    # store) are taken over once their lease lapses, and resumed from their recorded step.
    worker, worker_stop = HubWorker(hub, max_jobs=config.workers), threading.Event()
    worker_thread = threading.Thread(target=worker.serve, args=(worker_stop,), name="hub-worker", daemon=True)

    server = grpc.aio.server(interceptors=auth.interceptors(config.auth), options=[
        ("grpc.keepalive_time_ms", 30_000), ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_receive_message_length", 8 * 1024 * 1024), ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ])
    servicer = HubServicer(service, keepalive_interval=config.keepalive_interval)
    add_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    port = tls.add_port(server, config.server.listen, credentials)
    if port == 0:
        log.error("server.bind_failed", listen=config.server.listen)
        return 1
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    poller.start()
    worker_thread.start()
    log.info("server.security", transport=tls.transport_name(config.server.tls), tokens=len(config.auth.tokens or ()))
    insecure = tls.insecure_listener_warning(config.server.listen, config.server.tls)
    if insecure:
        log.warning("server.insecure_listener", listen=config.server.listen, reason=insecure)
    if config.server.port_file:
        _write_port_file(config.server.port_file, port)
    host = config.server.listen.rsplit(":", 1)[0]
    log.info("server.listening", address=f"{host}:{port}", port=port, store=store.dialect, pid=os.getpid())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier.from_environ()  # systemd Type=notify: READY once the port answers
    notifier.ready(f"serving on {host}:{port}")
    notifier.start_watchdog()
    await stop.wait()
    notifier.stopping(f"stopping: finishing calls and jobs (grace {config.server.grace_period:g}s)")
    notifier.stop_watchdog()

    grace = config.server.grace_period
    deadline = time.monotonic() + grace
    log.info("server.stopping", grace=grace)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    poller.stop()
    worker_stop.set()  # no more take-overs; the jobs it runs are left recorded like the runner's
    stopping = asyncio.create_task(server.stop(grace))
    if await servicer.wait_idle(grace) and not stopping.done():
        await server.stop(0)
    await stopping
    runner.shutdown(wait=False)
    while runner.active() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    left = runner.active()
    if left:
        # The library's steps cannot be interrupted from outside; each is recorded before it
        # runs and joins its agent operation when resumed, so leaving now loses nothing.
        log.warning("server.jobs_left_running", jobs=left)
    else:
        hub.close()
        store.close()
    log.info("server.stopped")
    # Not a normal return: asyncio.run and the interpreter's exit would wait for every thread
    # still in a blocking library call (a drain the agent goes on with, a job left running).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
