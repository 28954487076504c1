"""The one module of the agent that runs child processes.

Every engine binary (restic, rustic) and every other helper program is started
through :func:`run_process`: argv only (never a shell), a complete explicit
environment, its own process group, an optional timeout, cancellation that
stops the whole process group (SIGTERM, a grace period, SIGKILL), a bounded
stderr tail, and secrets masked in everything it returns or logs.

A module-level registry tracks the children that are running, so the agent
can stop them all at shutdown (:func:`terminate_all`) and tests can assert
that no engine process was started (:func:`running_pids`).

All functions must be used from the agent's one long-lived event loop thread:
the kernel ties a child's death signal (PR_SET_PDEATHSIG, set in the child by
setpriv, see :func:`child_argv`) to the thread that forked it. setpriv sets it
before it execs the program, so an agent killed in the microseconds between
the fork and setpriv's prctl leaves that one child without it (setpriv does not
re-check its parent).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent import errors

__all__ = [
    "ExecutableNotFound",
    "ProcessResult",
    "ProcessStalled",
    "ProcessTimeout",
    "STALL_MIN_BYTES",
    "classify_failed",
    "mask",
    "run_process",
    "running_pids",
    "terminate_all",
]

_MASK = "***"
_READ_CHUNK = 256 * 1024
# How long to keep reading the pipes once the program itself is gone. Only a
# process that left the process group (and so escaped our SIGKILL sweep) can
# hold them open longer; we stop waiting for it rather than hang.
_PIPE_DRAIN_SECONDS = 5.0
# The child asks the kernel for SIGKILL when the agent dies through setpriv(1) (util-linux),
# which sets PR_SET_PDEATHSIG and then execs the program: see :func:`child_argv`.
_SETPRIV = shutil.which("setpriv")
# Lowers a helper's CPU priority from its first instruction on: Linux priorities are per thread,
# so setpriority() on a started child would miss the threads a Go program starts at once.
_NICE = shutil.which("nice")
# The priority of work only shown to people (a restore's expected size for its progress): on
# a busy host it yields the CPU to the restore it describes.
DISPLAY_ONLY_NICENESS = 10


def child_argv(argv: Sequence[str], setpriv: str | None = _SETPRIV, *, niceness: int = 0,
               nice: str | None = _NICE) -> list[str]:
    """The argv actually executed for ``argv``: prefixed with ``setpriv --pdeathsig KILL --``
    when setpriv is there, so the program dies with the agent, and with ``nice -n N --`` for a
    ``niceness`` above 0 (when nice is there).

    No Python code runs in the child between fork and exec (no ``preexec_fn``): the agent has
    gRPC and other threads, and a child of a threaded process that runs Python (or calls
    malloc) before exec can deadlock on a lock another thread held at fork time; the agent's
    event loop then waits for that child's exec forever. Without a preexec_fn, Python also
    starts the child with vfork, and the parent never runs fork handlers.
    """
    if niceness > 0 and nice is not None:
        argv = [nice, "-n", str(niceness), "--", *argv]
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@dataclass(frozen=True)
class ProcessResult:
    """The outcome of one child process that ran to its own exit.

    ``argv`` is already masked; ``returncode`` is negative (``-signal``) when
    the child died from a signal, e.g. after :func:`terminate_all`;
    ``stdout`` is the full decoded stdout when it was captured, else "";
    ``stderr_tail`` is the masked, decoded last part of stderr; ``duration``
    is wall-clock seconds from start until the child was reaped.
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr_tail: str
    duration: float
    # True when the child was stopped because ``stdout_enough`` bytes had arrived.
    stdout_cut: bool = False
    # The captured stdout as bytes, instead of ``stdout``, when run with ``raw_stdout``.
    stdout_raw: bytes = b""
    # The stderr tail before masking, only for :func:`classify_failed`: a caller's secret that
    # happens to be a common word (a password " " or "password") must not hide the words that
    # decide what a failure means. Never logged, never shown.
    stderr_unmasked: str = field(default="", repr=False)


def classify_failed(
    result: ProcessResult, classify: Callable[..., errors.BucketsError], *, action: str
) -> errors.BucketsError:
    """``classify(returncode, stderr, action=action)`` judged on the unmasked stderr tail, with the
    masked tail as the error's ``detail`` (what callers, logs and records see)."""
    error = classify(result.returncode, result.stderr_unmasked or result.stderr_tail, action=action)
    error.detail = result.stderr_tail.strip()
    return error


async def run_engine(
    argv: Sequence[str], *, classify: Callable[..., errors.BucketsError], action: str,
    on_failure: Callable[[errors.BucketsError], None] | None = None, ok_codes: tuple[int, ...] = (0,),
    **options: Any,
) -> ProcessResult:
    """:func:`run_process` for an engine command (``options`` are its keywords). An exit code
    outside ``ok_codes`` raises the error ``classify`` names (:func:`classify_failed`), unless
    the engine was stopped because it had sent enough (``stdout_enough``). Every failure, that
    one or a timeout, stall or start failure from run_process, goes to ``on_failure`` (the
    agent's metrics) before it is raised."""
    try:
        result = await run_process(argv, **options)
    except errors.BucketsError as exc:
        if on_failure is not None:
            on_failure(exc)
        raise
    if result.returncode not in ok_codes and not result.stdout_cut:
        error = classify_failed(result, classify, action=action)
        if on_failure is not None:
            on_failure(error)
        raise error
    return result


class ExecutableNotFound(errors.Unimplemented):
    """The program (argv[0]) does not exist or cannot be executed."""


class ProcessTimeout(errors.DeadlineExceeded):
    """A child ran past its timeout and was stopped.

    ``detail`` and ``stderr_tail`` hold the masked stderr tail, ``argv`` the
    masked argv, ``timeout`` the limit in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        argv: tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.argv = argv
        self.stderr_tail = detail
        self.timeout = timeout


class ProcessStalled(errors.Unavailable):
    """A child did (almost) no I/O for ``stall_timeout`` seconds and was stopped.

    Engines retry an unreachable repository for many minutes without a word;
    this is how such a run ends early. ``detail`` holds the masked stderr tail.
    """


def mask(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of every non-empty secret replaced by ``***``.

    Takes the text and an iterable of secret strings (empty ones are
    ignored). Replacement is a single left-to-right pass preferring the
    longest secret at each position, so a secret that contains another is
    masked whole. Raises nothing.
    """
    pattern = _secret_pattern(secrets)
    if pattern is None or not text:
        return text
    return pattern.sub(_MASK, text)


def _secret_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """Return a regex matching any non-empty secret, longest first, or None if there are none."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not ordered:
        return None
    return re.compile("|".join(re.escape(s) for s in ordered))


# --------------------------------------------------------------------------
# Registry of running children


class _Child:
    """One running child: its process, its reaper task and its stop sequence."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Any, stop_signal: signal.Signals) -> None:
        self.proc = proc
        self.stop_signal = stop_signal
        self.pid = proc.pid
        # start_new_session=True makes the child the leader of its own group.
        self.pgid = proc.pid
        self._log = log
        self._stop_task: asyncio.Task[None] | None = None
        self.exited_at: float | None = None
        self.wait_task: asyncio.Task[int] = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> int:
        returncode = await self.proc.wait()
        self.exited_at = time.monotonic()
        _RUNNING.pop(self.pid, None)
        # Once the program has exited, anything left in its group is an orphan
        # that still holds our pipes and may still be writing to a repository.
        self._signal_group(signal.SIGKILL)
        return returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float, reason: str) -> asyncio.Task[None]:
        """Start (once) the stop sequence and return its task; later calls share it."""
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._stop(grace, reason))
        return self._stop_task

    async def _stop(self, grace: float, reason: str) -> None:
        if self.wait_task.done():
            return
        self._log.warning("process.stop", pid=self.pid, reason=reason, grace=grace)
        self._signal_group(self.stop_signal)
        done, _ = await asyncio.wait({self.wait_task}, timeout=max(grace, 0.0))
        if not done:
            self._log.warning("process.kill", pid=self.pid, reason=reason)
            self._signal_group(signal.SIGKILL)
            await asyncio.shield(self.wait_task)


_RUNNING: dict[int, _Child] = {}


def running_pids() -> list[int]:
    """Return the pids of the children of :func:`run_process` that have not been reaped yet."""
    return sorted(_RUNNING)


async def terminate_all(grace: float) -> None:
    """Stop every running child: SIGTERM to each process group, ``grace`` seconds, then SIGKILL.

    Takes the grace period in seconds. Returns once every child has been
    reaped; the :func:`run_process` calls that own them return their results
    (with a negative return code). Must run on the loop that started the
    children. Raises nothing of its own; the stops continue even if this
    coroutine is cancelled.
    """
    stops = [child.stop(grace, "shutdown") for child in list(_RUNNING.values())]
    if stops:
        await asyncio.gather(*(asyncio.shield(t) for t in stops))


# --------------------------------------------------------------------------
# Child setup


# --------------------------------------------------------------------------
# Pipe readers


class _StderrTail:
    """Keeps the last bytes of stderr in bounded memory."""

    def __init__(self, limit: int, secrets: tuple[str, ...]) -> None:
        self._limit = max(limit, 0)
        # Extra bytes so that a secret straddling the cut is still seen whole
        # and masked, instead of leaking all but its first byte.
        self._margin = max((len(s.encode()) for s in secrets), default=0)
        self._keep = self._limit + self._margin if self._limit else 0
        self._buf = bytearray()
        self._dropped = False
        self._secrets = secrets

    def add(self, chunk: bytes) -> None:
        if not self._keep:
            return
        self._buf += chunk
        # Trim only past twice the size, so trimming stays amortised O(1).
        if len(self._buf) > 2 * self._keep:
            del self._buf[: len(self._buf) - self._keep]
            self._dropped = True

    def unmasked(self) -> str:
        """The last ``limit`` characters of stderr as they came (see ProcessResult.stderr_unmasked)."""
        if not self._keep:
            return ""
        return self._buf.decode("utf-8", errors="replace")[-self._limit :]

    def text(self) -> str:
        if not self._keep:
            return ""
        buf = self._buf
        dropped = self._dropped
        if len(buf) > self._keep:
            buf = buf[len(buf) - self._keep :]
            dropped = True
        text = buf.decode("utf-8", errors="replace")
        pattern = _secret_pattern(self._secrets)
        if pattern is None:
            return text[-self._limit :]
        if dropped:
            # The first margin-1 characters may hold the end of a secret whose
            # start was cut off, which no pattern can recognise: drop them,
            # except for a whole secret straddling the cut (masked below).
            cut = self._margin - 1
            for match in pattern.finditer(text, 0, self._margin * 2):
                if match.start() < cut < match.end():
                    cut = match.start()
                    break
            text = text[cut:]
        return pattern.sub(_MASK, text)[-self._limit :]


class _Piped:
    """Bytes read from the child's pipes so far (the stall watch discounts them)."""

    bytes = 0


async def _read_stderr(stream: asyncio.StreamReader, tail: _StderrTail, piped: _Piped) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        piped.bytes += len(chunk)
        tail.add(chunk)


async def _read_stdout(
    stream: asyncio.StreamReader,
    *,
    on_line: Callable[[str], None] | None,
    captured: bytearray | None,
    max_bytes: int,
    program: str,
    piped: _Piped,
    enough: int | None = None,
    got_enough: asyncio.Event | None = None,
) -> None:
    # Chunks rather than readline(): a line may be far longer than any
    # StreamReader limit (e.g. a big JSON document on one line).
    pending = bytearray()
    total = 0
    while chunk := await stream.read(_READ_CHUNK):
        piped.bytes += len(chunk)
        if captured is not None:
            total += len(chunk)
            if total > max_bytes:
                raise errors.ResourceExhausted(
                    f"{program} wrote more than {max_bytes} bytes to stdout"
                )
            if got_enough is not None and got_enough.is_set():
                continue  # keep reading to the end: asyncio only reaps a child whose pipes closed
            captured += chunk
            if enough is not None and got_enough is not None and len(captured) >= enough:
                got_enough.set()
        if on_line is None:
            continue
        scan_from = len(pending)
        pending += chunk
        start = 0
        while (newline := pending.find(b"\n", scan_from)) != -1:
            on_line(_decode_line(pending[start:newline]))
            start = scan_from = newline + 1
        if start:
            del pending[:start]
        if len(pending) > max_bytes:
            raise errors.ResourceExhausted(
                f"{program} wrote a stdout line longer than {max_bytes} bytes"
            )
    if on_line is not None and pending:
        on_line(_decode_line(pending))


def _decode_line(raw: bytes | bytearray) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# Running


class _TimedOut(Exception):
    """Internal: the timeout expired while the program was still running."""


class _Stalled(Exception):
    """Internal: the program did too little I/O for too long."""


class _Enough(Exception):
    """Internal: the caller has all the stdout it wants."""


# Less I/O than this within the stall timeout is no progress: an engine that
# only retries connections, or prints status lines, moves a few KiB at most.
STALL_MIN_BYTES = 64 * 1024
_STALL_POLL_SECONDS = 1.0


def _io_chars(pid: int) -> int | None:
    """rchar + wchar of ``pid`` (bytes through read/write syscalls, files and
    sockets alike), or None when /proc does not tell."""
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        return int(fields[b"rchar"]) + int(fields[b"wchar"])
    except (OSError, KeyError, ValueError):
        return None


class _IoWatch:
    """Tells when a child has done less than STALL_MIN_BYTES of I/O, apart from
    writing to its own stdout/stderr, for ``limit`` seconds."""

    def __init__(self, pid: int, limit: float, now: float, piped: _Piped) -> None:
        self.pid = pid
        self.limit = limit
        self._piped = piped
        self._baseline: int | None = None
        self._since = now
        self.next_poll = now + _STALL_POLL_SECONDS

    def stalled(self, now: float) -> bool:
        self.next_poll = now + _STALL_POLL_SECONDS
        chars = _io_chars(self.pid)
        if chars is None:
            return False  # cannot tell: never call it stalled
        own = chars - self._piped.bytes
        if self._baseline is None or own - self._baseline >= STALL_MIN_BYTES:
            self._baseline = own
            self._since = now
            return False
        return now - self._since >= self.limit


async def _await_uninterruptibly(task: asyncio.Task[None]) -> bool:
    """Wait for ``task`` even across cancellations; return True if we were cancelled meanwhile."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                break
            cancelled = True
    return cancelled


async def _drain(readers: tuple[asyncio.Task[None], ...], timeout: float) -> None:
    """Let the pipe readers finish within ``timeout`` seconds, then cancel and collect them."""
    pending = [t for t in readers if not t.done()]
    if pending and timeout > 0:
        await asyncio.wait(pending, timeout=timeout)
    for task in readers:
        if not task.done():
            task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


async def _stop_and_drain(
    child: _Child, readers: tuple[asyncio.Task[None], ...], grace: float, reason: str
) -> None:
    await asyncio.shield(child.stop(grace, reason))
    await asyncio.shield(child.wait_task)
    await _drain(readers, _PIPE_DRAIN_SECONDS)


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    on_stdout_line: Callable[[str], None] | None = None,
    capture_stdout: bool = False,
    max_stdout_bytes: int = 64 * 1024 * 1024,
    secrets: Iterable[str] = (),
    stderr_tail_bytes: int = 16384,
    kill_grace: float = 5.0,
    on_start: Callable[[int], None] | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    stall_timeout: float | None = None,
    stdout_enough: int | None = None,
    raw_stdout: bool = False,
    niceness: int = 0,
) -> ProcessResult:
    """Run one program to completion and return its result.

    Takes:
      argv: the program and its arguments; never passed through a shell.
        argv[0] is looked up in ``env["PATH"]`` if it has no slash.
      env: the complete environment of the child (nothing is inherited).
      cwd: working directory of the child, or None for the agent's.
      timeout: seconds until the child is stopped, or None for no limit.
      on_stdout_line: called on the event loop with each stdout line as it
        arrives, decoded as UTF-8 (invalid bytes replaced), without its line
        ending. stdout is data and is not masked.
      capture_stdout: keep the whole stdout in the result.
      max_stdout_bytes: limit on captured stdout, and on a single unfinished
        line kept for on_stdout_line.
      secrets: strings masked as ``***`` in the result, errors and logs.
      stderr_tail_bytes: how much of the end of stderr to keep.
      kill_grace: seconds between SIGTERM and SIGKILL when stopping.
      on_start: called with the child's pid once it has started.
      stop_signal: the polite signal of the stop sequence; some programs
        clean up only on SIGINT (restic removes its repository lock).
      stall_timeout: seconds the child may go with less than
        :data:`STALL_MIN_BYTES` of file or network I/O (writes to its own
        stdout/stderr do not count) before it is stopped; None for no limit.
      stdout_enough: with ``capture_stdout``, stop the child once this many
        stdout bytes arrived and return them (``stdout_cut`` set), e.g. to
        read the head of a large file.
      raw_stdout: give the captured stdout undecoded, as ``stdout_raw`` (file contents).
      niceness: run the child with this CPU priority (``nice``; 0 for the agent's own).

    Stopping a child always signals its whole process group: SIGTERM, up to
    ``kill_grace`` seconds, then SIGKILL; the child is reaped before this
    returns or raises. Processes left in the group after the program exits
    are SIGKILLed.

    Returns a :class:`ProcessResult` whenever the program exits by itself or
    is stopped by :func:`terminate_all`, whatever its exit status.

    Raises:
      ExecutableNotFound: argv[0] does not exist or is not executable.
      agent.errors.NotFound: ``cwd`` does not exist.
      ProcessTimeout: the timeout expired (the child has been stopped).
      ProcessStalled: the stall timeout expired (the child has been stopped).
      agent.errors.ResourceExhausted: stdout exceeded ``max_stdout_bytes``
        (the child has been stopped).
      asyncio.CancelledError: the calling task was cancelled (the child has
        been stopped before this propagates).
      Any exception raised by ``on_stdout_line`` or ``on_start``, after the
      child has been stopped.
      agent.errors.Internal: the child could not be started for another reason.
    """
    if not argv:
        raise errors.InvalidArgument("empty argv")
    secrets = tuple(s for s in secrets if s)
    masked_argv = tuple(mask(str(a), secrets) for a in argv)
    program = os.path.basename(masked_argv[0]) or masked_argv[0]
    masked_cwd = None if cwd is None else mask(os.fspath(cwd), secrets)
    log = structlog.get_logger("agent.executor")
    loop = asyncio.get_running_loop()

    # setpriv execs the program itself, so a missing one would only show as setpriv's exit
    # status: look it up first, in the child's PATH.
    executable = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if executable is None:
        raise ExecutableNotFound(f"{program}: executable not found or not executable")
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *child_argv([executable, *argv[1:]], niceness=niceness),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        # The child reports a failed chdir or exec with the offending path.
        failed_path = None if exc.filename is None else os.fspath(exc.filename)
        if cwd is not None and failed_path == os.fspath(cwd):
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise errors.NotFound(f"working directory {masked_cwd} does not exist") from None
            raise errors.Internal(
                f"cannot enter working directory {masked_cwd}: {exc.strerror}"
            ) from None
        if (
            isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError))
            or exc.errno == errno.ENOEXEC
        ):
            raise ExecutableNotFound(f"{program}: executable not found or not executable") from None
        raise errors.Internal(f"cannot start {program}: {exc.strerror}") from None
    except Exception as exc:  # e.g. SubprocessError
        raise errors.Internal(f"cannot start {program}: {exc}") from None

    child = _Child(proc, log, stop_signal)
    _RUNNING[child.pid] = child
    log.info("process.start", argv=list(masked_argv), pid=child.pid, cwd=masked_cwd)

    tail = _StderrTail(stderr_tail_bytes, secrets)
    piped = _Piped()
    got_enough = asyncio.Event() if capture_stdout and stdout_enough is not None else None
    watch = None if stall_timeout is None else _IoWatch(child.pid, stall_timeout, loop.time(), piped)
    captured = bytearray() if capture_stdout else None
    assert proc.stdout is not None and proc.stderr is not None
    out_task = loop.create_task(
        _read_stdout(
            proc.stdout,
            on_line=on_stdout_line,
            captured=captured,
            max_bytes=max_stdout_bytes,
            program=program,
            piped=piped,
            enough=stdout_enough if capture_stdout else None,
            got_enough=got_enough,
        )
    )
    err_task = loop.create_task(_read_stderr(proc.stderr, tail, piped))
    readers = (out_task, err_task)

    def log_exit() -> None:
        returncode = proc.returncode
        fields: dict[str, object] = {
            "pid": child.pid,
            "returncode": returncode,
            "duration": round((child.exited_at or time.monotonic()) - started, 3),
        }
        if returncode != 0:
            fields["stderr_tail"] = tail.text()
        log.info("process.exit", **fields)

    async def stop(reason: str) -> bool:
        """Stop and reap the child, drain the pipes; return True if cancelled meanwhile."""
        task = loop.create_task(_stop_and_drain(child, readers, kill_grace, reason))
        cancelled = await _await_uninterruptibly(task)
        log_exit()
        return cancelled

    try:
        if on_start is not None:
            on_start(child.pid)
        await _supervise(child, readers, timeout, loop, watch, got_enough)
    except asyncio.CancelledError:
        await stop("cancelled")
        raise
    except _TimedOut:
        if await stop("timeout"):
            raise asyncio.CancelledError from None
        raise ProcessTimeout(
            f"{program} timed out after {timeout:g} seconds",
            detail=tail.text(),
            argv=masked_argv,
            timeout=timeout,
        ) from None
    except _Enough:
        if await stop("enough output"):
            raise asyncio.CancelledError from None
        assert captured is not None and stdout_enough is not None
        return ProcessResult(
            argv=masked_argv,
            returncode=proc.returncode if proc.returncode is not None else -1,
            stdout="" if raw_stdout else captured[:stdout_enough].decode("utf-8", errors="replace"),
            stderr_tail=tail.text(),
            stderr_unmasked=tail.unmasked(),
            duration=(child.exited_at or time.monotonic()) - started,
            stdout_cut=True,
            stdout_raw=bytes(captured[:stdout_enough]) if raw_stdout else b"",
        )
    except _Stalled:
        if await stop("stalled"):
            raise asyncio.CancelledError from None
        raise ProcessStalled(
            f"{program} made no progress (under {STALL_MIN_BYTES // 1024} KiB of file or network I/O) "
            f"for {stall_timeout:g} seconds and was stopped; is the repository reachable?",
            detail=tail.text(),
        ) from None
    except BaseException as exc:
        cancelled = await stop("error")
        if isinstance(exc, errors.BucketsError) and not exc.detail:
            exc.detail = tail.text()
        if cancelled:
            raise asyncio.CancelledError from None
        raise
    finally:
        _RUNNING.pop(child.pid, None)

    log_exit()
    assert proc.returncode is not None
    return ProcessResult(
        argv=masked_argv,
        returncode=proc.returncode,
        stdout="" if captured is None or raw_stdout else captured.decode("utf-8", errors="replace"),
        stderr_tail=tail.text(),
        stderr_unmasked=tail.unmasked(),
        duration=(child.exited_at or time.monotonic()) - started,
        stdout_raw=bytes(captured) if captured is not None and raw_stdout else b"",
        stdout_cut=got_enough is not None and got_enough.is_set(),
    )


async def _supervise(
    child: _Child,
    readers: tuple[asyncio.Task[None], ...],
    timeout: float | None,
    loop: asyncio.AbstractEventLoop,
    watch: _IoWatch | None = None,
    got_enough: asyncio.Event | None = None,
) -> None:
    """Wait until the child is reaped and its pipes are drained.

    Raises a reader's exception as soon as it happens, :class:`_TimedOut`
    if the program is still running at the deadline, :class:`_Stalled` when
    ``watch`` says it stalled.
    """
    deadline = None if timeout is None else loop.time() + timeout
    drain_deadline: float | None = None
    while True:
        for task in readers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        pending = [t for t in (*readers, child.wait_task) if not t.done()]
        if not pending:
            return
        now = loop.time()
        if child.wait_task.done():
            if drain_deadline is None:
                drain_deadline = now + _PIPE_DRAIN_SECONDS
            if now >= drain_deadline:
                log = structlog.get_logger("agent.executor")
                log.warning("process.pipes_held_open", pid=child.pid)
                await _drain(readers, 0)
                return
            limit: float | None = drain_deadline
        else:
            if deadline is not None and now >= deadline:
                raise _TimedOut()
            if got_enough is not None and got_enough.is_set():
                raise _Enough()
            limit = deadline
            if watch is not None:
                if now >= watch.next_poll and watch.stalled(now):
                    raise _Stalled()
                limit = watch.next_poll if limit is None else min(limit, watch.next_poll)
        waiting = set(pending)
        enough_task = None
        if got_enough is not None and not got_enough.is_set() and not child.wait_task.done():
            enough_task = asyncio.ensure_future(got_enough.wait())
            waiting.add(enough_task)
        try:
            await asyncio.wait(
                waiting,
                timeout=None if limit is None else limit - now,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if enough_task is not None and not enough_task.done():
                enough_task.cancel()
