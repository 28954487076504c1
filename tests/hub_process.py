"""A real ``buckets-hub serve`` process for the tests: its config file, its port, its stub."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hub_client.proto.buckets.v1 import hub_pb2_grpc
from tests.harness import REPO_ROOT


@dataclass
class HubProcess:
    """``base`` holds the config, the SQLite store (unless ``store`` names one) and the log;
    ``extra`` is appended to the config file (e.g. ``[agents]`` tables)."""

    base: Path
    store: str = ""
    freshness_interval: float = 0.0
    freshness_bound: float = 300.0
    keepalive_interval: float = 10.0
    lease_seconds: float = 15.0
    extra: str = ""
    # For a hub with [server.tls] / [auth] (in ``extra``): the channel's credentials (TLS composed
    # with a bearer token), so ``stub`` and the health check work.
    credentials: grpc.ChannelCredentials | None = None
    process: subprocess.Popen | None = None
    port: int = 0
    channel: grpc.Channel | None = None
    stub: hub_pb2_grpc.HubStub | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "hub.log"
        self.config_path = self.base / "hub.toml"
        self.port_file = self.base / "hub.port"
        store = self.store or str(self.base / "hub.sqlite")
        self.config_path.write_text(
            f'store = "{store}"\nfreshness_interval = {self.freshness_interval}\n'
            f"freshness_bound = {self.freshness_bound}\nkeepalive_interval = {self.keepalive_interval}\n"
            f"lease_seconds = {self.lease_seconds}\n"
            f'[server]\nlisten = "127.0.0.1:0"\nport_file = "{self.port_file}"\ngrace_period = 5\n'
            f"{self.extra}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "HubProcess":
        self.port_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hub_client.service.cli", "--config", str(self.config_path), "serve"],
                cwd=REPO_ROOT, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        self.channel = (grpc.insecure_channel(self.address) if self.credentials is None
                        else grpc.secure_channel(self.address, self.credentials))
        self.stub = hub_pb2_grpc.HubStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
