"""Fixtures that own the real parts the tests start (agent processes, temporary trees)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.harness import AgentProcess

requires_restic = pytest.mark.skipif(
    shutil.which("restic") is None, reason="the restic binary is not on PATH (make test installs it)"
)


@pytest.fixture
def agent_factory(tmp_path: Path):
    """Start agents on demand; every agent started is stopped (SIGKILL if needed) when the test ends."""
    started: list[AgentProcess] = []

    def start(name: str = "agent", *, limits: str = "", extra: str = "", engine: str = "restic") -> AgentProcess:
        process = AgentProcess(base=tmp_path / name, limits=limits, extra=extra, engine=engine)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        process.kill()


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


@pytest.fixture
def project_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server on 127.0.0.1 with a random port and enforced credentials, for the whole session."""
    from tests.s3server import S3Server

    server = S3Server(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
