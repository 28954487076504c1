"""A fresh `pip install` of the repository in a new venv gives working `buckets` and
`buckets-agent` commands: the distribution (named `buckets-backup`, not the unrelated PyPI
`buckets`) carries every module and generated file they need, outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, config_text

# What a clone holds that an install must not lean on (or that is only build output).
NOT_IN_A_CLONE = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__", "node_modules",
                                        ".pytest_cache", "buckets-data")


def run(argv: list[str], cwd: Path, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin`` of a new venv with the repository pip-installed into it (dependencies from the
    index or pip's cache: what an operator's install does)."""
    base = tmp_path_factory.mktemp("pip-install")
    source = base / "clone"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_IN_A_CLONE, symlinks=True)
    venv = base / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    pip = run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(source)],
              cwd=base, timeout=900)
    if pip.returncode != 0 and "Could not find a version" in pip.stderr + pip.stdout:
        pytest.skip(f"no package index reachable for the dependencies: {pip.stderr[-500:]}")
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    shutil.rmtree(source)  # nothing may come from the source tree after the install
    return venv / "bin"


def test_the_distribution_has_its_own_name(installed, tmp_path):
    shown = run([str(installed / "pip"), "show", "buckets-backup"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Name: buckets-backup" in shown.stdout
    assert run([str(installed / "pip"), "show", "buckets"], cwd=tmp_path).returncode != 0
    # The commands run the installed modules (the source copy is gone), with their generated code.
    where = run([str(installed / "python"), "-c", "import agent, hub_client.proto.buckets.v1.agent_pb2 as m; "
                 "print(agent.__file__); print(m.__file__)"], cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed.parent)) for line in where.stdout.split()), where.stdout


def test_installed_commands_serve_and_call_an_agent(installed, tmp_path):
    for command in ("buckets", "buckets-agent"):
        helped = run([str(installed / command), "--help"], cwd=tmp_path)
        assert helped.returncode == 0 and "Exit codes" in helped.stdout, helped.stderr
    port_file = tmp_path / "agent.port"
    config = tmp_path / "agent.toml"
    config.write_text(config_text(tmp_path / "base", port_file=port_file))
    checked = run([str(installed / "buckets-agent"), "check-config", str(config)], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["host_id"] == "test-host"

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "BUCKETS_AGENT_CONFIG")}
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen([str(installed / "buckets-agent"), "serve", "--config", str(config)],
                                 cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip().isdigit()):
            assert agent.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        status = run([str(installed / "buckets"), "--agent", address, "status", "--json"], cwd=tmp_path, env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout.splitlines()[0])["host_id"] == "test-host"
        local = run([str(installed / "buckets-agent"), "--config", str(config), "status", "--json"], cwd=tmp_path,
                    env=env)
        assert local.returncode == 0, local.stderr
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log_path.read_text()[-3000:]
