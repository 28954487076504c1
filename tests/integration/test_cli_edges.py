"""Edges of both command lines a new operator hits first: output piped into `head`, and an agent
address without a usable port."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from hub_client.hub import Hub
from hub_client.store import open_store
from tests.harness import REPO_ROOT

BUCKETS = [sys.executable, "-m", "hub_client"]
BUCKETS_AGENT = [sys.executable, "-m", "agent"]


def test_output_cut_by_head_ends_without_a_traceback(tmp_path):
    store_path = tmp_path / "hub.sqlite"
    with open_store(str(store_path)) as store, Hub(store) as hub:
        hub.add_host("host-a", "127.0.0.1:50051", "eu")
        for _ in range(2000):  # ~500 KB of JSON lines: far more than a pipe holds
            hub.add_project(str(uuid.uuid4()), "host-a", "eu")
    env = dict(os.environ, BUCKETS_STORE=str(store_path))
    reader = subprocess.Popen(["head", "-n", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run([*BUCKETS, "projects", "--json"], stdout=reader.stdin, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO_ROOT, timeout=120)
    reader.stdin.close()
    first = reader.stdout.read()
    reader.wait(timeout=30)
    assert first.startswith(b"{"), first[:200]
    assert "Traceback" not in writer.stderr and "BrokenPipe" not in writer.stderr, writer.stderr[-2000:]
    assert writer.returncode == 141, writer.stderr


def test_output_read_to_the_end_still_exits_0(tmp_path):
    store_path = tmp_path / "hub.sqlite"
    with open_store(str(store_path)) as store, Hub(store) as hub:
        hub.add_host("host-a", "127.0.0.1:50051", "eu")
    result = subprocess.run([*BUCKETS, "hosts", "--json"], capture_output=True, text=True, cwd=REPO_ROOT,
                            env=dict(os.environ, BUCKETS_STORE=str(store_path)), timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cli", [BUCKETS, BUCKETS_AGENT], ids=["buckets", "buckets-agent"])
@pytest.mark.parametrize("address, says", [
    ("127.0.0.1", "has no port"),
    ("127.0.0.1:0", "port must be 1..65535"),
    ("127.0.0.1:99999", "port must be 1..65535"),
    ("::1:50051", "[addr]:port"),
])
def test_an_agent_address_without_a_usable_port_is_a_usage_error(cli, address, says):
    for argv in ([*cli, "--agent", address, "status"], [*cli, "status", "--agent", address]):
        result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert says in result.stderr and "usage:" in result.stderr, result.stderr
