"""Starting the agent as a new operator does: configs that parse but do not fit the host are found
by `check-config` and refused by `serve` (exit 2, no traceback); `serve` reads the config that
$BUCKETS_AGENT_CONFIG names and logs which file it runs on; `make demo` runs while the default
port is taken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, config_text, new_id

AGENT = [sys.executable, "-m", "agent"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env=env)


def write_config(tmp_path: Path, extra_top: str = "", engine_extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    text = config_text(tmp_path / "base", port_file=tmp_path / "agent.port", extra=engine_extra)
    path.write_text(extra_top + text)
    return path


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_missing_engine_binary_is_a_config_error_naming_the_key(tmp_path, command):
    config = write_config(tmp_path, engine_extra=f'restic_binary = "{tmp_path}/no-such-restic"')
    args = [command, str(config)] if command == "check-config" else [command, "--config", str(config)]
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "engine.restic_binary" in result.stderr and "no-such-restic" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "agent.port").exists()  # serve never came up


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_projects_root_that_cannot_be_created_is_a_config_error(tmp_path, command):
    config = write_config(tmp_path, engine_extra='[paths]\nprojects_root = "/proc/buckets-no-such/projects"')
    args = [command, str(config)] if command == "check-config" else [command, "--config", str(config)]
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "paths.projects_root" in result.stderr and "/proc/buckets-no-such/projects" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not Path("/proc/buckets-no-such").exists()


def test_check_config_creates_nothing_and_passes_a_config_that_fits(tmp_path):
    config = write_config(tmp_path)
    result = run("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["host_id"] == "test-host"
    # The probe directories it made to judge the missing roots are gone, and so are the roots.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"]


def test_check_config_syntax_only_skips_the_host(tmp_path):
    config = write_config(tmp_path, engine_extra=f'restic_binary = "{tmp_path}/no-such-restic"')
    assert run("check-config", "--syntax-only", str(config)).returncode == 0


def test_serve_reads_the_config_named_by_the_environment_and_logs_its_path(tmp_path):
    config = write_config(tmp_path)
    env = dict(os.environ, BUCKETS_AGENT_CONFIG=str(config))
    env.pop("BUCKETS_HOME", None)
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*AGENT, "serve"], env=env, stdout=log, stderr=log, cwd=REPO_ROOT)
    try:
        port_file = tmp_path / "agent.port"
        deadline = time.monotonic() + 30
        while not port_file.exists():  # only that config names this port file
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    loaded = [e for e in events if e.get("event") == "config.loaded"]
    assert loaded and loaded[0]["path"] == str(config), events[:5]
    assert (tmp_path / "base" / "state").is_dir()


def test_make_demo_runs_while_the_default_port_is_taken(tmp_path):
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 50051))
        holder.listen()
    except OSError:
        pass  # taken by someone else already: the same situation
    try:
        env = dict(os.environ, TMPDIR=str(tmp_path))
        result = subprocess.run([sys.executable, "scripts/demo.py", "--files", "100"], capture_output=True,
                                text=True, timeout=240, cwd=REPO_ROOT, env=env)
    finally:
        holder.close()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo: OK" in result.stdout
    assert "trees identical   project/ True, persist/ True" in result.stdout
