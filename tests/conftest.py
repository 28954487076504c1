"""Fixtures that own the real parts the tests start (agent processes, temporary trees)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests import summaries
from tests.engines import ENGINES, EngineUnderTest, engine_ids
from tests.harness import AgentProcess, unmount_below

requires_restic = pytest.mark.skipif(
    shutil.which("restic") is None, reason="the restic binary is not on PATH (make test installs it)"
)


@pytest.fixture
def agent_factory(tmp_path: Path):
    """Start agents on demand; every agent started is stopped (SIGKILL if needed) when the test ends.

    ``make_repositories`` (AgentProcess): on by default, a project's local repository is made
    with a cheap key before its first Backup through the harness (tests/cheap_repository.py);
    off, the agent initialises it, for tests of the init and of the engines."""
    started: list[AgentProcess] = []

    def start(
        name: str = "agent", *, limits: str = "", extra: str = "", engine: str = "restic",
        backend: str = "directory", base: Path | None = None, host_id: str = "test-host",
        make_repositories: bool = True,
    ) -> AgentProcess:
        process = AgentProcess(base=base or tmp_path / name, limits=limits, extra=extra, engine=engine,
                               backend=backend, host_id=host_id, make_repositories=make_repositories)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        process.kill()
    for process in started:
        unmount_below(process.base)  # a frozen directory-backend project's read-only binds


@pytest.fixture(scope="session")
def shared_agent(tmp_path_factory: pytest.TempPathFactory):
    """One agent for the whole session, for tests that neither kill it nor change its limits."""
    if shutil.which("restic") is None:
        pytest.skip("the restic binary is not on PATH (make test installs it)")
    process = AgentProcess(base=tmp_path_factory.mktemp("shared-agent"))
    process.start()
    yield process
    process.stop()
    process.kill()
    unmount_below(process.base)


@pytest.fixture(params=ENGINES, ids=engine_ids())
def engine_under_test(request) -> EngineUnderTest:
    """Each of the three engines in turn (tests/engines.py), named in the test id."""
    return request.param


@pytest.fixture
def project_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """The pinned MinIO on 127.0.0.1 (random port, its own data and config dirs, root keys made
    for the run) for the whole session (one per xdist worker); skips when MinIO is not built.
    Tests that stop or kill a server start their own (:func:`own_s3_server`), never this one."""
    from tests.minio_server import MinioServer
    from tests.tools import require_tool

    require_tool("minio")
    server = MinioServer(log_path=tmp_path_factory.mktemp("minio") / "minio.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_s3_server(tmp_path: Path):
    """A MinIO of this test alone (it may kill and restart it; ~0.5 s to start), stopped at its end."""
    from tests.minio_server import MinioServer
    from tests.tools import require_tool

    require_tool("minio")
    server = MinioServer(log_path=tmp_path / "minio.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def btrfs_fs(tmp_path_factory: pytest.TempPathFactory):
    """A real btrfs filesystem (quotas on) on a loop device for the whole session; skips with the
    reason when this machine cannot make one (not root, no btrfs-progs, no loop devices)."""
    from tests.btrfsfs import LoopBtrfs, btrfs_unavailable_reason

    reason = btrfs_unavailable_reason()
    if reason is not None:
        pytest.skip(f"btrfs tests need a loop-device btrfs: {reason}")
    filesystem = LoopBtrfs(tmp_path_factory.mktemp("btrfs"), size_mb=1536)
    filesystem.start()
    try:
        yield filesystem
    finally:
        filesystem.stop()


def pytest_sessionfinish(session) -> None:
    """In a pytest-xdist worker: hand this worker's summary tables to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        summaries.to_worker_output(workeroutput)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the xdist controller: take a finished worker's summary tables."""
    summaries.from_worker_output(getattr(node, "workeroutput", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    """The tables tests registered (tests/summaries.py): the API fuzzer's cases and codes …"""
    for title, lines in summaries.collect().items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


# The modules whose tests take tens of seconds each (fault tables, outages, real moves of a
# gigabyte, the TypeScript and pip-install runs): started first, so the three workers end
# together instead of one of them finishing a long test alone after the others went idle.
LONG_MODULES = frozenset({
    "test_faults_storage.py", "test_faults_hub.py", "test_faults_agent.py", "test_s3_outage.py",
    "test_move_precopy.py", "test_typescript_sdk.py", "test_pip_install.py", "test_stale_locks.py",
    "test_schedule.py", "test_hub_service_takeover.py", "test_hub_takeover.py", "test_precopy_agent.py",
    "test_restore_undo.py", "test_engine_conformance.py", "test_move_writers.py",
})


def pytest_collection_modifyitems(session, config, items) -> None:
    """Long modules first, each module's tests kept in their order (a stable sort)."""
    items.sort(key=lambda item: item.path.name not in LONG_MODULES)
