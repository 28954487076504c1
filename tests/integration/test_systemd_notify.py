"""The systemd integration: a real agent speaks sd_notify to a socket the test owns, and the unit file
in systemd/ is accepted by systemd-analyze and agrees with the agent it starts."""

from __future__ import annotations

import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from agent.cli import build_parser as cli_parser
from agent.config import LimitsConfig, ServerConfig
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, AgentProcess

UNIT = REPO_ROOT / "systemd" / "buckets-agent.service"
DROP_IN = REPO_ROOT / "systemd" / "buckets-agent.service.d" / "example-credentials.conf"


# ------------------------------------------------------------ sd_notify from a real agent


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def probe(port_file: Path) -> str:
    """What a client sees at this moment: the engine from GetCapabilities, or what went wrong."""
    try:
        port = int(port_file.read_text())
    except (FileNotFoundError, ValueError) as exc:
        return f"no port file: {exc!r}"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            # No wait_for_ready: a port that does not answer yet fails at once (UNAVAILABLE).
            return pb_grpc.AgentStub(channel).GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5).engine
        except grpc.RpcError as exc:
            return f"GetCapabilities failed: {exc.code().name}"


class NotifySocket:
    """systemd's side: a datagram socket in ``directory``; each datagram is queued with, for READY=1,
    a probe of the agent taken the moment it arrived."""

    def __init__(self, directory: Path, port_file: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.port_file = port_file
        self.received: queue.Queue[tuple[bytes, str | None]] = queue.Queue()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if self._done.is_set():
                    return  # the queue is empty and no more is coming
                continue
            seen = probe(self.port_file) if fields(data).get("READY") == "1" else None
            self.received.put((data, seen))

    def next(self, timeout: float = 10.0) -> tuple[bytes, str | None]:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no notification within {timeout} s") from None

    def rest(self) -> list[bytes]:
        """Every datagram left, once the sender is gone."""
        self._done.set()
        self._thread.join(timeout=10)
        left = []
        while not self.received.empty():
            left.append(self.received.get()[0])
        return left

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)
        self.sock.close()


@requires_restic
def test_agent_notifies_ready_watchdog_and_stopping(tmp_path):
    agent = AgentProcess(base=tmp_path / "agent")
    notify = NotifySocket(tmp_path, agent.port_file)
    # WATCHDOG_PID unset: the watchdog is the agent's own (systemd sets it to the main pid).
    agent.env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000", "WATCHDOG_PID": None}
    try:
        agent.start()

        ready, seen_at_ready = notify.next()
        assert fields(ready) == {"READY": "1", "STATUS": f"serving on 127.0.0.1:{agent.port} as test-host"}
        # The port already answered real calls when READY=1 arrived.
        assert seen_at_ready == "restic"

        for _ in range(2):  # every 0.2 s: half of WATCHDOG_USEC
            assert notify.next()[0] == b"WATCHDOG=1"

        agent.signal(signal.SIGTERM)
        while (datagram := notify.next()[0]) == b"WATCHDOG=1":
            pass  # a ping already on its way when the signal came
        assert fields(datagram)["STOPPING"] == "1"
        assert agent.wait_exit(timeout=30) == 0
        assert notify.rest() == []  # the watchdog stopped with the shutdown; nothing after STOPPING=1

        events = [e.get("event") for e in agent.log_events()]
        # READY=1 came after the journal recovery (service.start()) and the listener ...
        assert events.index("agent.recovered") < events.index("server.listening") < events.index("systemd.ready")
        # ... and STOPPING=1 before any step of the shutdown.
        assert events.index("systemd.stopping") < events.index("server.stopping")
    finally:
        agent.stop()
        agent.kill()
        notify.close()


# ------------------------------------------------------------ the unit file


def unit_settings(*paths: Path) -> dict[str, list[str]]:
    """``Section.Key`` → every value assigned, in order, over ``paths`` (a unit, then its drop-ins);
    an empty assignment clears the list, as systemd does."""
    settings: dict[str, list[str]] = {}
    for path in paths:
        section = ""
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            values = settings.setdefault(f"{section}.{key}", [])
            if value:
                values.append(value)
            else:
                values.clear()
    return settings


def seconds(value: str) -> float:
    """A systemd time span of the forms this unit uses: ``45s``, ``5min``, ``30``."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|)", value).groups()
    return float(number) * (60 if unit == "min" else 1)


def test_unit_runs_the_agent_as_a_watched_notify_service():
    unit = unit_settings(UNIT)
    single = {key: values[-1] for key, values in unit.items()}
    assert single["Service.Type"] == "notify"
    assert single["Service.NotifyAccess"] == "main"
    assert single["Service.WatchdogSec"] == "30"
    assert single["Service.Restart"] == "on-failure"
    assert single["Service.KillMode"] == "mixed"

    # A graceful stop (operations: grace, engines: kill_grace, RPCs: grace again) must end before
    # systemd's SIGKILL.
    grace, kill_grace = ServerConfig().grace_period, LimitsConfig().kill_grace
    assert seconds(single["Service.TimeoutStopSec"]) > 2 * grace + kill_grace

    # ExecStart is the console script with arguments the CLI accepts, in both the unit and the drop-in.
    for settings in (unit, unit_settings(UNIT, DROP_IN)):
        program, *arguments = settings["Service.ExecStart"][-1].split()
        assert program.endswith("/bin/buckets-agent")
        parsed = cli_parser().parse_args(arguments)
        assert parsed.command == "serve" and parsed.config is not None


def test_unit_hardening_leaves_what_btrfs_and_restores_need():
    unit = {key: " ".join(values) for key, values in unit_settings(UNIT).items()}
    for key, value in {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
    }.items():
        assert unit[f"Service.{key}"] == value
    capabilities = set(unit["Service.CapabilityBoundingSet"].split())
    assert capabilities == {
        "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_CHOWN", "CAP_FSETID",
    }
    text = UNIT.read_text()
    for capability in capabilities:  # each one says why it is there
        assert re.search(rf"^#\s+{capability}\s+\S", text, re.MULTILINE), capability
    # The projects and persist roots (README) and the state dir stay writable under ProtectSystem=strict.
    assert set(unit["Service.ReadWritePaths"].split()) == {"/projects", "/persist"}
    assert unit["Service.StateDirectory"] == "buckets"
    assert unit["Service.RuntimeDirectory"] == "buckets"  # the backup view root /run/buckets/view
    assert "@mount" in unit["Service.SystemCallFilter"].split()  # bindexec.py bind-mounts the snapshot view
    assert unit["Service.RestrictNamespaces"] == "mnt"
    assert unit["Service.LoadCredential"].startswith("repository.password:/")


def test_unit_and_drop_in_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # verify checks that ExecStart's program exists; the unit names the production path, so the copy
    # checked here runs this checkout's installed console script instead. Nothing else is changed.
    script = Path(sys.executable).parent / "buckets-agent"
    if not script.exists():
        pytest.skip(f"the buckets-agent console script is not installed at {script} (pip install -e .)")
    production = "/opt/buckets/venv/bin/buckets-agent"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(production, str(script)))
    drop_in_dir = tmp_path / f"{UNIT.name}.d"
    drop_in_dir.mkdir()
    (drop_in_dir / DROP_IN.name).write_text(DROP_IN.read_text().replace(production, str(script)))
    assert production in UNIT.read_text() and production in DROP_IN.read_text()

    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    print(f"systemd-analyze verify {unit} → exit {result.returncode}, output: {output or '(none)'}")
    # verify exits 0 even for unknown keys and values it ignores: only silence means accepted.
    assert result.returncode == 0 and output == "", output

    # The drop-in was read: a bad key in it is reported.
    (drop_in_dir / "zz-bad.conf").write_text("[Service]\nWatchdogSecs=5\n")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "WatchdogSecs" in result.stdout + result.stderr
