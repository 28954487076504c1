"""The agent over the real rustic binary: the pinned rustic built by scripts/tools.sh.

These run the same scenarios as the restic tests with ``engine = "rustic"``:
backup, list, restore and verify in a local directory and in the S3 bucket;
a wrong password; no secret on any engine command line; and interop both ways
with stock restic on the same repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, write_tree
from tests.tools import require_tool

pytestmark = [requires_restic]


@pytest.fixture(scope="module")
def rustic_binary() -> str:
    """The pinned rustic; the module skips, saying so, only when it is not built."""
    return require_tool("rustic")

PASSWORD = "rustic-real-password-91f3"


def rustic_agent(agent_factory, tmp_path, rustic_binary, s3_server=None):
    password_file = tmp_path / "repo.password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    if s3_server is None:
        extra = f'[repository]\nkind = "local"\n[repository.local]\npassword_file = "{password_file}"\n'
    else:
        extra = f"""
[repository]
kind = "s3"

[repository.s3]
endpoint = "{s3_server.endpoint}"
region = "us-east-1"
bucket_prefix = "rustic-real"
access_key_id = "{s3_server.access_key_id}"
secret_access_key = "{s3_server.secret_access_key}"
password_file = "{password_file}"
create_bucket = true
"""
    # Lines before the first table header land in the harness's [engine] table.
    return agent_factory("rustic-agent", extra=f'rustic_binary = "{rustic_binary}"\n' + extra, engine="rustic")


def round_trip(agent, project_id):
    write_tree(agent.home(project_id), files=60)
    write_tree(agent.persist(project_id), files=3, depth=0)
    before = manifest(agent.home(project_id)), manifest(agent.persist(project_id))
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    listing = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30)
    assert len(listing.snapshots) == 1 and listing.snapshots[0].id.startswith(backup.summary.snapshot_id[:8])
    for path in list(agent.home(project_id).rglob("*.bin"))[:5]:
        path.unlink()
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    assert restore.state == pb.SUCCEEDED, restore.error
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before
    verify = agent.wait(agent.verify(project_id).id)
    assert verify.state == pb.SUCCEEDED, verify.error
    return backup


def test_capabilities_name_rustic(agent_factory, rustic_binary, tmp_path):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    caps = agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=30)
    assert caps.engine == "rustic" and caps.engine_version
    assert "read-data-subset" in caps.features


def test_local_round_trip_and_stock_restic_reads_it(agent_factory, rustic_binary, tmp_path, project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    round_trip(agent, project_id)
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD": PASSWORD}
    repo = str(agent.repository(project_id))
    subprocess.run(["restic", "-r", repo, "--no-cache", "check", "--read-data"], env=env, check=True,
                   capture_output=True, timeout=300)
    target = tmp_path / "stock"
    subprocess.run(["restic", "-r", repo, "--no-cache", "restore", "latest", "--target", str(target)],
                   env=env, check=True, capture_output=True, timeout=300)
    assert manifest(target / "project") == manifest(agent.home(project_id))
    assert manifest(target / "persist") == manifest(agent.persist(project_id))


def test_s3_round_trip_without_secrets_on_command_lines(agent_factory, rustic_binary, s3_server, tmp_path, project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary, s3_server)
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if "rustic" in cmdline:
                    seen.append(cmdline)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        round_trip(agent, project_id)
    finally:
        stop.set()
        sampler.join()
    assert seen, "no rustic process was sampled"
    for secret in (PASSWORD, s3_server.secret_access_key):
        assert not any(secret in line for line in seen)
        assert secret not in agent.log_path.read_text()
    assert not list((agent.state_dir / "profiles").iterdir()), "profile files must not outlive their run"


def test_wrong_password_is_failed_precondition(agent_factory, rustic_binary, tmp_path, project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    round_trip(agent, project_id)
    wrong = pb.RepositorySpec(local=pb.LocalRepository(path=str(agent.repository(project_id))), password="wrong")
    final = agent.wait(agent.verify(project_id, repository=wrong).id)
    assert final.state == pb.FAILED and final.error.code == "FAILED_PRECONDITION"
