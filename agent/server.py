"""The agent daemon: a grpc.aio server with health and reflection, and a graceful stop on SIGTERM.

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

from agent import executor
from agent.config import AgentConfig
from agent.service import AgentService
from agent.servicer import AgentServicer
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc

log = structlog.get_logger("agent.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Agent"].full_name


def _write_port_file(path: str, port: int) -> None:
    # Written then renamed, so a reader never sees a half-written number.
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, target)


async def serve(config: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; returns the process exit code."""
    service = AgentService(config)
    await service.start()

    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    servicer = AgentServicer(service)
    pb_grpc.add_AgentServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(config.server.listen)
    if port == 0:
        log.error("server.bind_failed", listen=config.server.listen)
        return 1
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = config.server.listen.rsplit(":", 1)[0]
    if config.server.port_file:
        _write_port_file(config.server.port_file, port)
    log.info("server.listening", address=f"{host}:{port}", port=port, host_id=config.host_id, pid=os.getpid())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

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
    service.close()
    log.info("server.stopped")
    return 0
