"""The agent daemon: a grpc.aio server with health and reflection, and a graceful stop on SIGTERM.

Under systemd (agent/notify.py): READY=1 once serving, WATCHDOG=1 pings while
the loop runs, STOPPING=1 first thing at shutdown.

Shutdown order: health NOT_SERVING → stop accepting and give in-flight RPCs
the grace period → stop running operations (engine processes are stopped,
operations recorded INTERRUPTED, staging removed) → exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent import auth, executor, metrics, tls
from agent.config import AgentConfig
from agent.notify import Notifier
from agent.service import AgentService
from agent.servicer import AgentServicer, add_to_server
from hub_client.proto.buckets.v1 import agent_pb2 as pb

log = structlog.get_logger("agent.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Agent"].full_name


def _write_port_file(path: str, port: int) -> None:
    # Written then renamed, so a reader never sees a half-written number.
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, target)


def _start_metrics(config: AgentConfig, service: AgentService) -> metrics.MetricsEndpoint | None:
    """Serve the agent's metrics when ``[metrics] listen`` is set; raises OSError when it cannot bind."""
    if not config.metrics.listen:
        return None
    endpoint = metrics.serve(service.metrics.registry, config.metrics.listen)
    host = config.metrics.listen.rsplit(":", 1)[0]
    if config.metrics.port_file:
        _write_port_file(config.metrics.port_file, endpoint.port)
    log.info("metrics.listening", address=f"{host}:{endpoint.port}", port=endpoint.port)
    return endpoint


async def serve(config: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; returns the process exit code.

    Raises ConfigError when a TLS file became unreadable since the config was checked.
    """
    # Read before anything starts: a listener that cannot be protected must not come up.
    credentials = tls.server_credentials(config.server.tls)
    service = AgentService(config)
    await service.start()
    # Before the gRPC port is published: whoever finds the agent finds its metrics answering.
    try:
        metrics_endpoint = _start_metrics(config, service)
    except OSError as exc:
        log.error("metrics.bind_failed", listen=config.metrics.listen, error=str(exc))
        return 1

    server = grpc.aio.server(
        interceptors=auth.interceptors(config.auth),
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    servicer = AgentServicer(service)
    add_to_server(servicer, server)  # malformed request bytes: INVALID_ARGUMENT, not UNKNOWN
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    port = tls.add_port(server, config.server.listen, credentials)
    if port == 0:
        log.error("server.bind_failed", listen=config.server.listen)
        return 1
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = config.server.listen.rsplit(":", 1)[0]
    # Logged before the port file is written, so whoever waits for that file finds these too.
    log.info("server.security", transport=tls.transport_name(config.server.tls),
             tokens=len(config.auth.tokens or ()))
    insecure = tls.insecure_listener_warning(config.server.listen, config.server.tls)
    if insecure:
        log.warning("server.insecure_listener", listen=config.server.listen, reason=insecure)
    if config.server.port_file:
        _write_port_file(config.server.port_file, port)
    log.info("server.listening", address=f"{host}:{port}", port=port, host_id=config.host_id, pid=os.getpid())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # READY only now: the journal is recovered, the port answers and a SIGTERM is handled
    # gracefully, so whatever systemd starts after the agent finds it serving.
    notifier = Notifier.from_environ()
    notifier.ready(f"serving on {host}:{port} as {config.host_id}")
    notifier.start_watchdog()
    await stop.wait()
    notifier.stopping(f"stopping: finishing operations and calls (grace {config.server.grace_period:g}s)")
    notifier.stop_watchdog()

    grace = config.server.grace_period
    log.info("server.stopping", grace=grace)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # Operations are stopped first: a stream watching one then sees its terminal
    # event and ends by itself within the grace period.
    await service.stop(grace)
    await executor.terminate_all(config.limits.kill_grace)
    # server.stop(grace) also waits out the grace period for idle connections whose client
    # does not answer the GOAWAY at once (a quiet hub process): end it as soon as no call of
    # ours is in flight any more.
    stopping = asyncio.create_task(server.stop(grace))
    if await servicer.wait_idle(grace) and not stopping.done():
        await server.stop(0)
    await stopping
    if metrics_endpoint is not None:
        metrics_endpoint.close()
    service.close()
    log.info("server.stopped")
    return 0
