"""hub_client.agent_cli.exit_when_interrupt_hangs: Ctrl-C ends a CLI whose main thread cannot
act on it (stuck in C code), with exit code 130 and a line saying so."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.harness import REPO_ROOT

STUCK = """
import signal, sys, time
from hub_client import agent_cli
agent_cli.INTERRUPT_GRACE = 0.5
agent_cli.exit_when_interrupt_hangs()
# The main thread never gets back to act on SIGINT: its handler itself is stuck.
signal.signal(signal.SIGINT, lambda *_: time.sleep(3600))
print("ready", flush=True)
time.sleep(3600)
"""


def test_a_stuck_cli_exits_130_after_the_grace_and_says_it_was_interrupted() -> None:
    child = subprocess.Popen([sys.executable, "-c", STUCK], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=30)
        assert code == 130
        assert time.monotonic() - sent >= 0.5
        assert "buckets: interrupted" in child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_without_sigint_nothing_happens() -> None:
    child = subprocess.Popen([sys.executable, "-c", STUCK], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGWINCH)  # ignored by default, never a reason to exit
        time.sleep(1.0)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
