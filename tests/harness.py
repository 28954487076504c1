"""Test harness: a real agent process on 127.0.0.1, its client stub, and tree helpers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
TERMINAL_STATES = {
    pb.SUCCEEDED,
    pb.SUCCEEDED_WITH_WARNINGS,
    pb.UP_TO_DATE,
    pb.FAILED,
    pb.CANCELLED,
    pb.INTERRUPTED,
}


def config_text(
    base: Path, *, port_file: Path, extra: str = "", limits: str = "", server: str = "", engine: str = "restic",
    backend: str = "directory", grace_period: float = 5.0, host_id: str = "test-host",
) -> str:
    """The agent's TOML config; ``limits`` are lines of its [limits] section, where a
    ``kill_grace`` of their own replaces the tests' 2 s."""
    if not any(line.split("=", 1)[0].strip() == "kill_grace" for line in limits.splitlines()):
        limits = f"kill_grace = 2.0\n{limits}"
    return f"""
host_id = "{host_id}"
base_dir = "{base}"
backend = "{backend}"

[server]
listen = "127.0.0.1:0"
port_file = "{port_file}"
grace_period = {grace_period}
keepalive_interval = 0.5
{server}

[limits]
{limits}

[logging]
level = "debug"

[engine]
engine = "{engine}"
{extra}
"""


@dataclass
class AgentProcess:
    """One agent daemon run by the tests; ``base`` holds its state, projects and repositories."""

    base: Path
    limits: str = ""
    extra: str = ""
    # Pinned, not "auto": most tests are about the agent over restic, the engine this machine has.
    engine: str = "restic"
    backend: str = "directory"
    host_id: str = "test-host"
    grace_period: float = 5.0
    # Added to (a None value: removed from) the environment the agent inherits.
    env: dict[str, str | None] | None = None
    # Before a project's first Backup through :meth:`backup`: make its local repository with a
    # cheap key (:meth:`make_missing_repository`). False: the agent initialises it (a real init),
    # for tests of the init and of the engines themselves.
    make_repositories: bool = True
    # For an agent with [server.tls] (in ``extra``): the channel's credentials, e.g. TLS composed
    # with a bearer token (grpc.composite_channel_credentials), so ``stub`` and the helpers work.
    credentials: grpc.ChannelCredentials | None = None
    process: subprocess.Popen | None = None
    port: int = 0
    channel: grpc.Channel | None = None
    stub: pb_grpc.AgentStub | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "agent.log"
        self.config_path = self.base / "agent.toml"
        self.port_file = self.base / "agent.port"
        self.config_path.write_text(
            config_text(self.base, port_file=self.port_file, limits=self.limits, extra=self.extra, engine=self.engine,
                        backend=self.backend, host_id=self.host_id, grace_period=self.grace_period)
        )

    @property
    def projects_root(self) -> Path:
        return self.base / "projects"

    @property
    def persist_root(self) -> Path:
        return self.base / "persist"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def home(self, project_id: str) -> Path:
        return self.projects_root / f"project-{project_id}"

    def persist(self, project_id: str) -> Path:
        return self.persist_root / f"project-{project_id}"

    def repository(self, project_id: str) -> Path:
        return self.state_dir / "repos" / f"project-{project_id}"

    def make_missing_repository(self, project_id: str) -> bool:
        """:meth:`make_repository` when this agent keeps ``project_id``'s repository in a local
        directory that does not exist yet and the project's home exists (a Backup the agent
        would refuse before any engine run, such as one of a missing project, gets no
        repository); returns whether it made one. Anything the agent's configuration or the id
        does not allow is left to the agent to refuse."""
        from agent.config import load_config
        from agent.errors import BucketsError
        from agent.repository import resolve
        from tests import cheap_repository

        try:
            if str(uuid.UUID(project_id)) != project_id or not self.home(project_id).is_dir():
                return False
            repo = resolve(None, project_id, load_config(self.config_path))
        except (ValueError, BucketsError):
            return False
        if repo.kind != "local" or os.path.lexists(repo.location):
            return False
        try:
            cheap_repository.init_local(Path(repo.location), repo.password)
        except FileExistsError:
            return False  # made meanwhile (another thread of the test, or the agent)
        return True

    def make_repository(self, project_id: str) -> str:
        """Make ``project_id``'s repository, with a cheap key (tests/cheap_repository.py), where
        this agent's configuration puts it (local directory or S3 bucket, the agent's own
        ``agent.repository.resolve``) and under its password: the agent then opens it instead of
        initialising one at the first backup. Returns where it is; raises FileExistsError when
        a repository is there already."""
        from agent.config import load_config
        from agent.repository import resolve
        from tests import cheap_repository

        repo = resolve(None, project_id, load_config(self.config_path))
        if repo.kind == "local":
            cheap_repository.init_local(Path(repo.location), repo.password)
        else:
            cheap_repository.init_s3(repo.s3, repo.password)
        return repo.location

    def staging_left(self) -> list[Path]:
        """What restores' staging holds now (their old trees, on the way out, included)."""
        return sorted(entry for parent in (self.projects_root / ".staging", self.persist_root / ".staging")
                      if parent.is_dir() for entry in parent.iterdir())

    def staging_after_cleanup(self, timeout: float = 60.0) -> list[Path]:
        """The staging left once the agent's background removal of old trees had ``timeout``
        seconds to end: a successful restore answers before its old trees are gone."""
        deadline = time.monotonic() + timeout
        while (left := self.staging_left()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def start(self, timeout: float = 30.0) -> "AgentProcess":
        self.port_file.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=self._environment(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        self.channel = (grpc.insecure_channel(f"127.0.0.1:{self.port}") if self.credentials is None
                        else grpc.secure_channel(f"127.0.0.1:{self.port}", self.credentials))
        self.stub = pb_grpc.AgentStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        return self

    def _environment(self) -> dict[str, str] | None:
        if self.env is None:
            return None  # inherit unchanged
        merged: dict[str, str | None] = {**os.environ, **self.env}
        return {key: value for key, value in merged.items() if value is not None}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_events(self) -> list[dict]:
        """The JSON events of the agent's log, in order (other lines, e.g. from gRPC, skipped)."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def started_argvs(self) -> list[list[str]]:
        """The argv of every process the agent started, in order (its ``process.start`` events)."""
        return [[str(a) for a in e.get("argv", [])] for e in self.log_events() if e.get("event") == "process.start"]

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self._close_channel()
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._close_channel()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_channel()

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # ------------------------------------------------------------ calls

    def backup(self, project_id: str, request_id: str | None = None, **fields) -> pb.Operation:
        """Backup RPC; first, unless ``make_repositories`` is off or the request names its own
        repository, :meth:`make_missing_repository`."""
        if self.make_repositories and "repository" not in fields:
            self.make_missing_repository(project_id)
        return self.stub.Backup(
            pb.BackupRequest(request_id=request_id or new_id(), project_id=project_id, **fields), timeout=30
        )

    def restore(self, project_id: str, snapshot_id: str, request_id: str | None = None, **fields) -> pb.Operation:
        return self.stub.Restore(
            pb.RestoreRequest(
                request_id=request_id or new_id(), project_id=project_id, snapshot_id=snapshot_id, **fields
            ),
            timeout=30,
        )

    def verify(self, project_id: str, request_id: str | None = None, **fields) -> pb.Operation:
        return self.stub.Verify(
            pb.VerifyRequest(request_id=request_id or new_id(), project_id=project_id, **fields), timeout=30
        )

    def wait(self, operation_id: str, timeout: float = 120.0) -> pb.Operation:
        """Poll GetOperation until the operation is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            operation = self.stub.GetOperation(pb.GetOperationRequest(operation_id=operation_id), timeout=10)
            if operation.state in TERMINAL_STATES:
                return operation
            if time.monotonic() > deadline:
                raise TimeoutError(f"operation {operation_id} still {pb.OperationState.Name(operation.state)}")
            time.sleep(0.05)

    def events(self, operation_id: str, from_seq: int = 0, timeout: float = 120.0) -> list[pb.ProgressUpdate]:
        """Every update of a StreamProgress call until the stream ends."""
        return list(
            self.stub.StreamProgress(
                pb.StreamProgressRequest(operation_id=operation_id, from_seq=from_seq), timeout=timeout
            )
        )


def create_project(agent: AgentProcess, *, files: int, size: int = 512, repository: bool | None = None) -> str:
    """A new project on ``agent`` (EnsureProject NONE) with ``files`` files and some persist state.

    ``repository`` (default: the agent's ``make_repositories``): make the project's repository
    now with a cheap key (:meth:`AgentProcess.make_repository`, local or S3, also for backups
    a hub asks for), so that its engine runs skip the key derivation of a calibrated key
    (~0.8 s of CPU each on restic 0.14) and its first backup the init (~3 s); False leaves the
    repository to the agent's first backup (a real ``init``), for tests of that.
    """
    project_id = new_id()
    if agent.make_repositories if repository is None else repository:
        agent.make_repository(project_id)
    operation = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.NONE),
        timeout=30)
    assert agent.wait(operation.id).state == pb.SUCCEEDED
    write_tree(agent.home(project_id), files=files, size=size)
    agent.persist(project_id).mkdir(parents=True, exist_ok=True)
    (agent.persist(project_id) / "app.db").write_bytes(b"persistent state\n" * 100)
    return project_id


def new_id() -> str:
    return str(uuid.uuid4())


def write_tree(root: Path, *, files: int, size: int = 2048, seed: int = 1, depth: int = 3) -> None:
    """Fill ``root`` with ``files`` files of random bytes (about ``size`` bytes each) in nested directories,
    plus a symlink and a few distinctive modes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        parts = [f"d{rng.randrange(8)}" for _ in range(rng.randrange(depth + 1))]
        directory = root.joinpath(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"f{index}.bin"
        path.write_bytes(rng.randbytes(rng.randrange(size // 2, size + size // 2 + 1)))
        if index % 7 == 0:
            path.chmod(0o600)
        elif index % 11 == 0:
            path.chmod(0o755)
        os.utime(path, ns=(1_600_000_000_000_000_000 + index * 1_000_000_007,) * 2)
    link = root / "link-to-first"
    if not link.is_symlink():
        link.symlink_to("d0/f0.bin")


def manifest(root: Path) -> dict[str, tuple]:
    """(type, mode, mtime_ns, size, sha256 or link target) for every entry under ``root``, keyed by relative path.

    Directory mtimes are included: a restore must bring them back too.
    """
    result: dict[str, tuple] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                result[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[relative] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[relative] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, info.st_size, digest)
    info = root.lstat()
    result["."] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    return result


def unmount_below(root: Path) -> list[str]:
    """Detach every mount at or below ``root`` (a directory-backend freeze's read-only binds a
    test left behind), deepest first; returns what was detached."""
    from agent.backends.mounts import parse_mountinfo

    real = os.path.realpath(root)
    with open("/proc/self/mountinfo") as f:
        points = [m.mount_point for m in parse_mountinfo(f.read())
                  if m.mount_point == real or m.mount_point.startswith(real + "/")]
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    return points


def catch_engine(agent: "AgentProcess", subcommand: str, *, moved_first: int,
                 names: tuple[str, ...] = ("rustic", "restic"), timeout: float = 120.0) -> psutil.Process:
    """The agent's engine child (named one of ``names``) running ``subcommand``, stopped (SIGSTOP)
    once it has moved ``moved_first`` bytes (read for a backup, written for a restore): caught
    mid-run, however fast the machine. The caller resumes or kills it."""
    agent_process = psutil.Process(agent.process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in agent_process.children(recursive=True):
            try:
                if child.name() not in names or subcommand not in child.cmdline():
                    continue
                io = child.io_counters()
                if (io.read_chars if subcommand == "backup" else io.write_chars) >= moved_first:
                    child.suspend()
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.002)
    raise AssertionError(f"no {' or '.join(names)} {subcommand} was seen moving data")



_PR_SET_CHILD_SUBREAPER = 36


def _set_child_subreaper(on: bool) -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@contextlib.contextmanager
def adopting_orphans():
    """Within the block this process is a child subreaper: the orphans of its descendants that
    die meanwhile (an agent killed here) become its children, which :func:`wait_reaped` reaps at
    once. Why: a zombie's pid still exists (restic's stale-lock test keeps the lock of such a
    pid), and this machine's init reaps orphans only every 2 s. Only around a kill: an orphan
    adopted and never reaped here stays a zombie for good."""
    _set_child_subreaper(True)
    try:
        yield
    finally:
        _set_child_subreaper(False)


def wait_reaped(processes: list[psutil.Process], timeout: float = 60.0) -> None:
    """Return once each of ``processes`` is gone and reaped (by this process when it adopted
    them, see :func:`adopting_orphans`); AssertionError when one outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    for process in processes:
        while psutil.pid_exists(process.pid):
            try:
                os.waitpid(process.pid, os.WNOHANG)
            except ChildProcessError:
                pass  # not a child of this process: another reaps it
            assert time.monotonic() < deadline, f"process {process.pid} was not gone and reaped in {timeout:g} s"
            time.sleep(0.005)


def kill_and_reap(agent: "AgentProcess", engines: list[psutil.Process], timeout: float = 60.0) -> None:
    """SIGKILL ``agent``; return once each of ``engines`` (its engine children, which die with
    it: PDEATHSIG) is gone and reaped, so that restic's stale-lock test holds for their locks.
    Raises AssertionError when one outlives ``timeout``."""
    with adopting_orphans():
        agent.kill()
        wait_reaped(engines, timeout)
