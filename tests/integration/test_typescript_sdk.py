"""The TypeScript SDK's own tests (clients/typescript/test, Node's test runner) against a real
agent that they start: npm ci once (scripts/typescript_sdk.sh, cached by the lock file's hash),
build (the types generated from every protos/buckets/v1/*.proto, tsc), node --test over every
compiled test/*.test.ts (agent.test, security.test, hub.test: a real hub service too). Fails with
Node's output when a Node test fails; skips, saying why, only when node or npm is missing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_restic
from tests.harness import unmount_below

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "clients" / "typescript"


def run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=SDK, capture_output=True, text=True, timeout=timeout, **kwargs)


def stop_agents(pids: Path) -> None:
    """SIGKILL the process group of every agent and hub the Node tests started (each leads its
    own) that still runs: a line is "<pid> <config path>", and a pid counts only while its command
    line still names that config (not a later process that got the same pid); then remove its
    temporary base, a frozen project's read-only binds detached first."""
    if not pids.exists():
        return
    for line in pids.read_text().splitlines():
        pid, _, config = line.partition(" ")
        try:
            if config and config in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.killpg(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # stopped already
        if config and Path(config).parent.name.startswith("buckets-ts-"):
            unmount_below(Path(config).parent)
            shutil.rmtree(Path(config).parent, ignore_errors=True)  # its temporary base


@requires_restic
@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node or npm is not installed: the TypeScript SDK's tests cannot run")
def test_typescript_sdk_against_a_real_agent(tmp_path):
    install = run([str(REPO / "scripts" / "typescript_sdk.sh")], timeout=600)
    assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    build = run(["npm", "run", "--silent", "build"], timeout=300)
    assert build.returncode == 0, f"the SDK does not build:\n{build.stdout}\n{build.stderr}"
    tests = sorted(str(p.relative_to(SDK)) for p in (SDK / "dist" / "test").glob("*.test.js"))
    assert tests, "no compiled Node test"
    pids = tmp_path / "agent-pids"
    try:
        node = run(["node", "--test", "--test-concurrency=1", *tests], timeout=300,
                   env={**os.environ, "BUCKETS_PYTHON": sys.executable, "BUCKETS_TS_PIDS_FILE": str(pids)})
    finally:
        stop_agents(pids)  # those a killed (timed out) Node run could not stop itself
    output = f"{node.stdout}\n{node.stderr}"
    assert node.returncode == 0, f"Node tests failed:\n{output}"
    passed = re.search(r"^# pass (\d+)$", node.stdout, re.M)
    failed = re.search(r"^# fail (\d+)$", node.stdout, re.M)
    assert passed and failed and int(passed.group(1)) >= 5 and int(failed.group(1)) == 0, output
