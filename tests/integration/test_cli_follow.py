"""The CLI following an operation when things go wrong around it: the agent SIGKILLed (say at once
that the connection is lost and the operation may go on), the agent stopped with SIGTERM (the
operation's INTERRUPTED decides the exit code, 1 as documented), Ctrl-C (its message on a line of
its own, not glued to the progress bar). A real agent with restic; the engine is held mid-backup
with SIGSTOP so each happens while the operation runs."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.harness import REPO_ROOT, catch_engine, create_project

CLI = [sys.executable, "-m", "hub_client"]
MOVED_FIRST = 256 * 1024


class Terminal:
    """A CLI process on a pseudo-terminal (stdout and stderr both), read as it writes."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO_ROOT,
                                        start_new_session=True)
        os.close(slave)
        self.output = ""

    def read_until(self, text: str, timeout: float = 60.0) -> bool:
        """Read until ``text`` has been written (True) or the process ended / ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the other side closed: the process ended
                    return text in self.output
                self.output += chunk.decode(errors="replace")
        return text in self.output

    def finish(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout)
        self.read_until("\0", timeout=0.5)  # whatever is left
        os.close(self.master)
        return code

    def line_with(self, text: str) -> str:
        """The terminal line where ``text`` shows, as drawn: after the last carriage return before it."""
        line = next(line for line in self.output.split("\n") if text in line)
        return line.rstrip("\r")


@pytest.fixture
def caught_backup(agent_factory):
    """(agent, project id, the CLI on a terminal following its backup, the engine held mid-run)."""
    agent = agent_factory()
    project_id = create_project(agent, files=60, size=64 * 1024)
    address = f"127.0.0.1:{agent.port}"
    terminal = Terminal([*CLI, "--agent", address, "backup", project_id])
    engine = None
    try:
        engine = catch_engine(agent, "backup", moved_first=MOVED_FIRST)
        assert terminal.read_until("backup"), terminal.output  # the bar is on the screen
        yield agent, project_id, terminal, engine
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
        if engine is not None:
            try:
                engine.kill()
            except psutil.NoSuchProcess:
                pass


def test_agent_killed_the_cli_says_at_once_that_the_connection_is_lost(caught_backup):
    agent, _, terminal, _ = caught_backup
    agent.kill()
    # Said while the CLI still waits for the agent to come back, not after it gave up.
    assert terminal.read_until("may still be running there"), terminal.output
    assert terminal.process.poll() is None
    line = terminal.line_with("lost the connection to the agent")
    assert line.startswith("buckets: lost the connection"), repr(line)
    terminal.process.send_signal(signal.SIGINT)
    assert terminal.finish() == 130
    assert terminal.line_with("interrupted").startswith("buckets: interrupted"), terminal.output


def test_agent_stopped_the_interrupted_operation_exits_1(caught_backup):
    agent, _, terminal, engine = caught_backup
    engine.resume()
    agent.signal(signal.SIGTERM)
    code = terminal.finish(timeout=120)
    assert "INTERRUPTED" in terminal.output or "CANCELLED" in terminal.output, terminal.output
    assert code == 1, terminal.output
    assert "is it running?" not in terminal.output, terminal.output


def test_ctrl_c_prints_its_message_on_a_line_of_its_own(caught_backup):
    agent, project_id, terminal, engine = caught_backup
    terminal.process.send_signal(signal.SIGINT)
    assert terminal.finish() == 130
    line = terminal.line_with("interrupted")
    assert line.startswith("buckets: interrupted"), repr(terminal.output[-600:])
    # The operation goes on without the CLI: released, it ends on its own.
    engine.resume()
    operations = agent.stub.ListOperations(pb.ListOperationsRequest(project_id=project_id), timeout=30).operations
    backups = [operation for operation in operations if operation.kind == pb.OPERATION_KIND_BACKUP]
    assert len(backups) == 1 and agent.wait(backups[0].id).state == pb.SUCCEEDED
