"""The operator CLI against a real agent, and what the agent's log may never contain."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, write_tree

pytestmark = requires_restic


def buckets(agent, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_client", "--agent", f"127.0.0.1:{agent.port}", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def test_cli_backup_snapshots_restore_verify(shared_agent, project_id):
    write_tree(shared_agent.home(project_id), files=10)
    backup = buckets(shared_agent, "--json", "backup", project_id)
    assert backup.returncode == 0, backup.stderr
    snapshot_id = json.loads(backup.stdout.splitlines()[-1])["summary"]["snapshot_id"]
    listing = buckets(shared_agent, "--json", "snapshots", project_id)
    assert json.loads(listing.stdout)["id"] == snapshot_id
    assert buckets(shared_agent, "restore", project_id, snapshot_id).returncode == 0
    assert buckets(shared_agent, "verify", project_id).returncode == 0


def test_cli_exit_codes_for_failures(shared_agent, project_id):
    missing = buckets(shared_agent, "backup", project_id)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    failed = buckets(shared_agent, "verify", project_id)  # no repository yet: the operation fails
    assert failed.returncode == 1


def test_no_repository_password_in_the_log_or_engine_command_lines(shared_agent, project_id, tmp_path):
    from hub_client.proto.buckets.v1 import agent_pb2 as pb

    password = "request-secret-password-8d1f"
    write_tree(shared_agent.home(project_id), files=5)
    spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(tmp_path / "repo")), password=password)
    operation = shared_agent.wait(shared_agent.backup(project_id, repository=spec).id)
    assert operation.state == pb.SUCCEEDED
    configured = (shared_agent.state_dir / "repository.password").read_text().strip()
    log = shared_agent.log_path.read_text()
    assert '"process.start"' in log  # engine command lines are logged ...
    assert password not in log and configured not in log  # ... without any password
