"""Tests of agent.executor with real child processes (no shell involved)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog.testing

from agent import errors
from agent.executor import (
    ExecutableNotFound,
    ProcessResult,
    ProcessStalled,
    ProcessTimeout,
    mask,
    run_process,
    running_pids,
    terminate_all,
)

PY = sys.executable
PATH_ENV = {"PATH": "/usr/bin:/bin"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie no longer runs)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _exe(pid: int) -> str:
    """The program ``pid`` runs now ("" when it is gone)."""
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(autouse=True)
def _no_leftover_children():
    assert running_pids() == []
    yield
    assert running_pids() == []


# --- mask -------------------------------------------------------------------


def test_mask_replaces_every_secret_and_ignores_empty_ones():
    masked = mask("user pw=hunter2 key=abc hunter2", ["hunter2", "", "abc"])
    assert masked == "user pw=*** key=*** ***"
    assert mask("nothing here", []) == "nothing here"
    assert mask("", ["x"]) == ""


def test_mask_prefers_the_longest_secret():
    assert mask("token=abcdef", ["abc", "abcdef"]) == "token=***"
    assert mask("a.b a*b", ["a.b"]) == "*** a*b"  # secrets are literals, not patterns


# --- exit codes, stdout, env, cwd -------------------------------------------


def test_exit_codes_are_returned_not_raised():
    async def main():
        ok = await run_process(["true"], env=PATH_ENV)
        bad = await run_process(["false"], env=PATH_ENV)
        three = await run_process([PY, "-c", "import sys; sys.exit(3)"], env={})
        return ok, bad, three

    ok, bad, three = asyncio.run(main())
    assert isinstance(ok, ProcessResult)
    assert (ok.returncode, bad.returncode, three.returncode) == (0, 1, 3)
    assert ok.argv == ("true",)
    assert ok.stdout == "" and ok.stderr_tail == ""
    assert ok.duration >= 0


def test_capture_stdout_and_stdin_is_devnull():
    code = "import sys; data = sys.stdin.read(); print('stdin=%r' % data); print('second')"
    result = asyncio.run(run_process([PY, "-c", code], env={}, capture_stdout=True))
    assert result.stdout == "stdin=''\nsecond\n"


def test_stdout_not_captured_unless_asked():
    result = asyncio.run(run_process([PY, "-c", "print('x' * 100000)"], env={}))
    assert result.returncode == 0 and result.stdout == ""


def test_stdout_lines_stream_while_the_child_runs():
    code = (
        "import time\n"
        "print('one', flush=True)\n"
        "print('two', flush=True)\n"
        "time.sleep(0.5)\n"
        "print('three')\n"
        "print('no newline at end', end='')\n"
    )
    seen: list[tuple[str, bool]] = []
    pids: list[int] = []

    def on_line(line: str) -> None:
        seen.append((line, _alive(pids[0]) and pids[0] in running_pids()))

    result = asyncio.run(
        run_process([PY, "-c", code], env={}, on_stdout_line=on_line, on_start=pids.append)
    )
    assert result.returncode == 0
    assert [line for line, _ in seen] == ["one", "two", "three", "no newline at end"]
    assert seen[0][1] and seen[1][1], "the first lines must arrive while the child still runs"


def test_very_long_stdout_line():
    size = 3 * 1024 * 1024
    code = f"import sys; sys.stdout.write('a' * {size} + '\\r\\nend\\n')"
    lines: list[str] = []
    result = asyncio.run(
        run_process([PY, "-c", code], env={}, on_stdout_line=lines.append, capture_stdout=True)
    )
    assert result.returncode == 0
    assert [len(line) for line in lines] == [size, 3]
    assert lines[1] == "end"
    assert len(result.stdout) == size + 6


def test_env_is_exactly_what_was_passed(monkeypatch):
    monkeypatch.setenv("BUCKETS_EXECUTOR_LEAK", "must-not-reach-the-child")
    env_bin = shutil.which("env") or "/usr/bin/env"
    env = {"FOO": "bar", "EMPTY": "", "WITH SPACE": "a b=c"}
    result = asyncio.run(run_process([env_bin], env=env, capture_stdout=True))
    assert result.returncode == 0
    assert dict(line.split("=", 1) for line in result.stdout.splitlines()) == env

    empty = asyncio.run(run_process([env_bin], env={}, capture_stdout=True))
    assert empty.stdout == ""


def test_cwd_is_honoured(tmp_path):
    result = asyncio.run(
        run_process(
            [PY, "-c", "import os; print(os.getcwd())"], env={}, cwd=tmp_path, capture_stdout=True
        )
    )
    assert result.stdout.strip() == str(tmp_path)


def test_missing_cwd_is_not_found(tmp_path):
    with pytest.raises(errors.NotFound):
        asyncio.run(run_process(["true"], env=PATH_ENV, cwd=tmp_path / "missing"))


# --- start failures ---------------------------------------------------------


def test_missing_or_non_executable_program(tmp_path):
    not_executable = tmp_path / "prog"
    not_executable.write_text("#!/bin/true\n")
    not_executable.chmod(0o644)
    for argv in (["/nonexistent/dir/restic"], ["no-such-program-buckets"], [str(not_executable)]):
        with pytest.raises(ExecutableNotFound) as info:
            asyncio.run(run_process(argv, env=PATH_ENV))
        assert isinstance(info.value, errors.Unimplemented)
        assert running_pids() == []


# --- timeout, cancellation, stopping ----------------------------------------

GRANDCHILD = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen(['sleep', '30'])\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(30)\n"
)


def test_timeout_kills_the_whole_process_group():
    lines: list[str] = []
    pids: list[int] = []

    async def main():
        await run_process(
            [PY, "-c", GRANDCHILD],
            env=PATH_ENV,
            timeout=1.0,
            kill_grace=3.0,
            on_stdout_line=lines.append,
            on_start=pids.append,
        )

    started = time.monotonic()
    with pytest.raises(ProcessTimeout) as info:
        asyncio.run(main())
    grandchild = int(lines[0])
    try:
        assert time.monotonic() - started < 3.0, "SIGTERM should have sufficed"
        assert isinstance(info.value, errors.DeadlineExceeded)
        assert "timed out" in str(info.value) and os.path.basename(PY) in str(info.value)
        assert info.value.timeout == 1.0
        assert not _alive(pids[0])
        assert _wait_gone(grandchild), "the grandchild survived the timeout"
    finally:
        _kill_quietly(grandchild)


def test_cancellation_stops_the_child_and_reraises():
    lines: list[str] = []
    pids: list[int] = []

    async def main():
        task = asyncio.create_task(
            run_process(
                [PY, "-c", GRANDCHILD],
                env=PATH_ENV,
                on_stdout_line=lines.append,
                on_start=pids.append,
            )
        )
        while not lines:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert running_pids() == []
        assert not _alive(pids[0])

    asyncio.run(asyncio.wait_for(main(), 10))
    grandchild = int(lines[0])
    try:
        assert _wait_gone(grandchild)
    finally:
        _kill_quietly(grandchild)


def test_child_ignoring_sigterm_is_killed_after_grace():
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    lines: list[str] = []

    async def main():
        await run_process(
            [PY, "-c", code], env={}, timeout=1.0, kill_grace=0.5, on_stdout_line=lines.append
        )

    started = time.monotonic()
    with structlog.testing.capture_logs() as logs, pytest.raises(ProcessTimeout):
        asyncio.run(main())
    elapsed = time.monotonic() - started
    assert lines == ["ready"]
    assert elapsed >= 1.4
    events = [entry["event"] for entry in logs]
    assert events == ["process.start", "process.stop", "process.kill", "process.exit"]
    assert logs[-1]["returncode"] == -signal.SIGKILL


def test_terminate_all_stops_every_child():
    async def main():
        tasks = [asyncio.create_task(run_process(["sleep", "30"], env=PATH_ENV)) for _ in range(2)]
        while len(running_pids()) < 2:
            await asyncio.sleep(0.01)
        pids = running_pids()
        await terminate_all(grace=2.0)
        assert running_pids() == []
        results = await asyncio.gather(*tasks)
        return pids, results

    pids, results = asyncio.run(asyncio.wait_for(main(), 10))
    assert [r.returncode for r in results] == [-signal.SIGTERM] * 2
    assert not any(_alive(pid) for pid in pids)


def test_stdout_limit_stops_the_child():
    code = "import sys, time; sys.stdout.write('x' * 100000); sys.stdout.flush(); time.sleep(30)"
    started = time.monotonic()
    with pytest.raises(errors.ResourceExhausted):
        asyncio.run(
            run_process([PY, "-c", code], env={}, capture_stdout=True, max_stdout_bytes=1000)
        )
    assert time.monotonic() - started < 5


def test_failing_callback_stops_the_child_and_propagates():
    code = "import time; print('boom', flush=True); time.sleep(30)"

    def on_line(line: str) -> None:
        raise RuntimeError(f"callback failed on {line}")

    with pytest.raises(RuntimeError, match="callback failed on boom"):
        asyncio.run(run_process([PY, "-c", code], env={}, on_stdout_line=on_line))


# --- stderr tail and secrets -------------------------------------------------


def test_stderr_tail_is_bounded_and_keeps_the_end():
    code = (
        "import sys\n"
        "for i in range(1024):\n"
        "    sys.stderr.write('e' * 1023 + '\\n')\n"
        "    sys.stdout.write('o' * 1023 + '\\n')\n"
        "sys.stderr.write('THE-END')\n"
    )
    result = asyncio.run(
        run_process([PY, "-c", code], env={}, capture_stdout=True, stderr_tail_bytes=1000)
    )
    assert result.returncode == 0
    assert len(result.stdout) == 1024 * 1024
    assert 0 < len(result.stderr_tail) <= 1000
    assert result.stderr_tail.endswith("e\nTHE-END")


def test_secrets_are_masked_in_result_errors_and_logs(tmp_path):
    secret = "s3cr3t-pa55w0rd"
    code = f"import sys; sys.stderr.write('fatal: wrong password {secret}\\n'); sys.exit(12)"
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(
            run_process([PY, "-c", code, f"--password={secret}"], env={}, secrets=[secret, ""])
        )
    assert result.returncode == 12
    assert secret not in " ".join(result.argv)
    assert result.argv[-1] == "--password=***"
    assert result.stderr_tail == "fatal: wrong password ***\n"
    assert [entry["event"] for entry in logs] == ["process.start", "process.exit"]
    assert logs[-1]["stderr_tail"] == "fatal: wrong password ***\n"
    assert secret not in repr(logs)

    code = f"import sys, time; sys.stderr.write('{secret}'); sys.stderr.flush(); time.sleep(30)"
    with structlog.testing.capture_logs() as logs, pytest.raises(ProcessTimeout) as info:
        asyncio.run(
            run_process(
                [PY, "-c", code],
                env={"PASSWORD": secret},
                secrets=[secret],
                timeout=0.5,
            )
        )
    assert secret not in repr(logs)
    assert secret not in str(info.value) and secret not in info.value.detail
    assert secret not in " ".join(info.value.argv)


def test_secret_cut_by_the_stderr_tail_does_not_leak():
    secret = "s3cr3t-pa55w0rd"
    code = f"import sys; sys.stderr.write('x' * 5000 + '{secret}' + 'y' * 95)"
    result = asyncio.run(
        run_process([PY, "-c", code], env={}, secrets=[secret], stderr_tail_bytes=100)
    )
    assert len(result.stderr_tail) <= 100
    assert result.stderr_tail.endswith("y" * 95)
    fragments = {secret[i : i + 4] for i in range(len(secret) - 3)}
    assert not any(f in result.stderr_tail for f in fragments)


# --- the child dies with its parent -------------------------------------------

PARENT = """
import asyncio, os, sys
from agent.executor import run_process

pidfile = sys.argv[1]

def on_start(pid):
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(pid))
    os.rename(pidfile + ".tmp", pidfile)

asyncio.run(run_process(["sleep", "60"], env={"PATH": "/usr/bin:/bin"}, on_start=on_start))
"""


def test_child_dies_when_the_agent_is_sigkilled(tmp_path):
    pidfile = tmp_path / "child.pid"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    parent = subprocess.Popen([PY, "-c", PARENT, str(pidfile)], env=env, cwd=REPO_ROOT)
    child_pid = None
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists():
            assert parent.poll() is None, "the parent process died early"
            assert time.monotonic() < deadline, "the parent never started its child"
            time.sleep(0.02)
        child_pid = int(pidfile.read_text())
        assert _alive(child_pid)
        # setpriv sets the death signal and then execs the program: until the exec, a parent killed
        # now would leave setpriv without it (a window of microseconds, noted in the executor).
        while _exe(child_pid) != os.path.realpath(shutil.which("sleep")):
            assert time.monotonic() < deadline, f"the child never exec'd sleep ({_exe(child_pid)})"
            time.sleep(0.01)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert _wait_gone(child_pid), "the engine outlived the SIGKILLed agent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child_pid is not None:
            _kill_quietly(child_pid)


# ------------------------------------------------------------------ stall watch

# Prints a status line twice a second and does nothing else, as restic does
# while it retries an unreachable repository.
STATUS_ONLY = "import time\nwhile True:\n    print('{\"status\": 1}', flush=True)\n    time.sleep(0.5)\n"


@pytest.mark.parametrize("script", ["import time; time.sleep(60)", STATUS_ONLY], ids=["silent", "status-lines"])
def test_a_child_without_io_is_stopped_as_stalled(script):
    pids: list[int] = []
    lines: list[str] = []

    async def main():
        await run_process([PY, "-c", script], env=PATH_ENV, timeout=60, stall_timeout=1.5, kill_grace=2,
                          on_start=pids.append, on_stdout_line=lines.append)

    with pytest.raises(ProcessStalled) as info:
        asyncio.run(main())
    assert isinstance(info.value, errors.Unavailable)
    assert "no progress" in str(info.value) and "1.5 seconds" in str(info.value)
    assert not _alive(pids[0])
    if script == STATUS_ONLY:
        assert len(lines) >= 2, "status lines must not count as progress"


def test_a_child_doing_io_is_not_stalled(tmp_path):
    # 128 KiB of file writes every 0.2 s for about 5 s: steady progress, well past the stall timeout.
    script = (
        "import os, sys, time\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    for _ in range(25):\n"
        "        f.write(os.urandom(128 * 1024)); f.flush(); time.sleep(0.2)\n"
    )

    async def main():
        return await run_process([PY, "-c", script, str(tmp_path / "out")], env=PATH_ENV, timeout=60,
                                 stall_timeout=2.0)

    result = asyncio.run(main())
    assert result.returncode == 0
    assert (tmp_path / "out").stat().st_size == 25 * 128 * 1024


def test_stdout_enough_stops_the_child_and_returns_the_head_as_bytes():
    pids: list[int] = []
    # Endless binary output, as `restic dump` of a large file would give.
    script = "import sys\nwhile True:\n    sys.stdout.buffer.write(bytes(range(256)) * 64)\n"

    async def main():
        return await run_process([PY, "-c", script], env=PATH_ENV, timeout=60, capture_stdout=True,
                                 stdout_enough=100_000, raw_stdout=True, on_start=pids.append, kill_grace=2)

    result = asyncio.run(main())
    assert result.stdout_cut and result.stdout == ""
    assert result.stdout_raw == (bytes(range(256)) * 400)[:100_000]
    assert not _alive(pids[0])


def test_raw_stdout_keeps_bytes_that_are_not_utf8():
    async def main():
        return await run_process([PY, "-c", "import sys; sys.stdout.buffer.write(b'\\xff\\x00ok')"],
                                 env=PATH_ENV, timeout=60, capture_stdout=True, raw_stdout=True)

    result = asyncio.run(main())
    assert (result.returncode, result.stdout_raw, result.stdout_cut) == (0, b"\xff\x00ok", False)


def test_child_argv_sets_the_death_signal_through_setpriv_and_nothing_runs_before_exec():
    from agent.executor import child_argv

    assert child_argv(["/usr/bin/restic", "backup"], setpriv="/usr/bin/setpriv") == [
        "/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/usr/bin/restic", "backup"]
    assert child_argv(["/usr/bin/restic", "backup"], setpriv=None) == ["/usr/bin/restic", "backup"]
    # No preexec_fn anywhere: Python code in a forked child of the threaded agent can deadlock.
    source = (REPO_ROOT / "agent" / "executor.py").read_text()
    assert "preexec_fn=" not in source


def test_niceness_lowers_the_child_priority_from_its_start():
    from agent.executor import child_argv

    assert child_argv(["/usr/bin/restic", "stats"], setpriv="/usr/bin/setpriv", niceness=10, nice="/usr/bin/nice") == [
        "/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/usr/bin/nice", "-n", "10", "--", "/usr/bin/restic", "stats"]
    assert child_argv(["/usr/bin/restic"], setpriv=None, niceness=0, nice="/usr/bin/nice") == ["/usr/bin/restic"]

    async def main():
        # Every thread of the child: one started at once by a program still has the lowered priority.
        script = ("import os, threading; t = threading.Thread(target=lambda: print(os.getpriority(os.PRIO_PROCESS, "
                  "0))); t.start(); t.join(); print(os.getpriority(os.PRIO_PROCESS, 0))")
        return await run_process([sys.executable, "-c", script], env=dict(os.environ), capture_stdout=True,
                                 niceness=7)

    result = asyncio.run(main())
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert result.stdout.split() == [str(min(own + 7, 19))] * 2
