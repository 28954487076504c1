"""The agent over the real rustic binary: the pinned rustic built by scripts/tools.sh.

What only rustic needs beyond the per-engine suites (test_engine_conformance.py runs the local
round trip, wrong password and cancellation on every engine): the S3 round trip with no secret
on any command line or in a profile left behind, a SIGTERM-ed rustic (it exits 0), a cancel that
reaches a rustic caught mid-run, and path restores through rustic's glob.
Interop with the stock CLIs is tests/integration/test_engine_interop.py (all three engines).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import stock_cli
from tests.conftest import requires_restic
from tests.engines import ENGINES
from tests.harness import catch_engine, manifest, write_tree
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
    # Over unsaved changes (the deleted files): a pre-restore snapshot first, named in the warnings.
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error
    assert any("pre-restore snapshot" in w for w in restore.summary.warnings), restore.summary.warnings
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before
    listing = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30)
    assert sorted(s.purpose for s in listing.snapshots) == ["backup", "pre-restore"]
    verify = agent.wait(agent.verify(project_id).id)
    assert verify.state == pb.SUCCEEDED, verify.error
    return backup


def test_capabilities_name_rustic(agent_factory, rustic_binary, tmp_path):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    caps = agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=30)
    assert caps.engine == "rustic" and caps.engine_version
    assert "read-data-subset" in caps.features


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


def big_tree(root, megabytes: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(megabytes):
        (root / f"big-{index}.bin").write_bytes(os.urandom(1024 * 1024))


# Bytes the caught rustic must have moved first (read for a backup, written for a restore): it
# is then past start-up, with its signal handler in place, and far from done with 60 MiB.
MOVED_FIRST = 4 * 1024 * 1024


def catch_rustic(agent, subcommand: str, timeout: float = 60.0) -> psutil.Process:
    """The agent's rustic child running ``subcommand``, caught mid-run (tests.harness.catch_engine)."""
    return catch_engine(agent, subcommand, moved_first=MOVED_FIRST, names=("rustic",), timeout=timeout)


def terminate_frozen(child: psutil.Process) -> None:
    child.send_signal(signal.SIGTERM)
    child.resume()


def backed_up_then_changed(agent, project_id, megabytes: int = 60):
    """A project with one snapshot, then changed on disk; returns (snapshot id, manifests now)."""
    write_tree(agent.home(project_id), files=20)
    big_tree(agent.home(project_id) / "big", megabytes)
    write_tree(agent.persist(project_id), files=3, depth=0)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    for path in sorted(agent.home(project_id).rglob("*.bin"))[::3]:
        path.unlink()
    (agent.home(project_id) / "after-backup.txt").write_text("written after the snapshot\n")
    return backup.summary.snapshot_id, (manifest(agent.home(project_id)), manifest(agent.persist(project_id)))


def test_sigterm_to_rustic_backup_fails_and_writes_no_snapshot(agent_factory, rustic_binary, tmp_path, project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    write_tree(agent.home(project_id), files=5)
    big_tree(agent.home(project_id) / "big", 60)
    write_tree(agent.persist(project_id), files=1, depth=0)
    operation = agent.backup(project_id)
    terminate_frozen(catch_rustic(agent, "backup"))
    final = agent.wait(operation.id)
    assert final.state in (pb.FAILED, pb.CANCELLED), final
    repository = agent.repository(project_id)
    if (repository / "config").exists():
        rustic = next(e for e in ENGINES if e.driver == "rustic")
        assert stock_cli.snapshot_ids(rustic, repository, tmp_path / "repo.password", scratch=tmp_path / "stock") == set()


def test_sigterm_to_rustic_restore_fails_and_leaves_the_project_alone(agent_factory, rustic_binary, tmp_path,
                                                                      project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    snapshot_id, before = backed_up_then_changed(agent, project_id)
    operation = agent.restore(project_id, snapshot_id)
    terminate_frozen(catch_rustic(agent, "restore"))
    final = agent.wait(operation.id)
    assert final.state in (pb.FAILED, pb.CANCELLED), final
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before


def test_cancelled_rustic_restore_is_cancelled_and_leaves_the_project_alone(agent_factory, rustic_binary, tmp_path,
                                                                            project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    snapshot_id, before = backed_up_then_changed(agent, project_id)
    operation = agent.restore(project_id, snapshot_id)
    child = catch_rustic(agent, "restore")
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    child.resume()  # the agent's SIGTERM is pending; it arrives now
    final = agent.wait(operation.id)
    assert final.state in (pb.CANCELLED, pb.FAILED), final
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before


def test_cancelled_rustic_backup_is_cancelled(agent_factory, rustic_binary, tmp_path, project_id):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    write_tree(agent.home(project_id), files=5)
    big_tree(agent.home(project_id) / "big", 60)
    write_tree(agent.persist(project_id), files=1, depth=0)
    operation = agent.backup(project_id)
    child = catch_rustic(agent, "backup")
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    child.resume()
    final = agent.wait(operation.id)
    assert final.state in (pb.CANCELLED, pb.FAILED), final


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_restore_of_a_path(agent_factory, rustic_binary, tmp_path, project_id, kind):
    agent = rustic_agent(agent_factory, tmp_path, rustic_binary)
    home = agent.home(project_id)
    (home / "keep" / "deep").mkdir(parents=True)
    (home / "keep" / "deep" / "a.txt").write_text("a\n")
    (home / "keep" / "b.bin").write_bytes(os.urandom(5000))
    (home / "other.txt").write_text("other\n")
    write_tree(agent.persist(project_id), files=1, depth=0)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    before = manifest(home)
    shutil.rmtree(home / "keep")
    (home / "other.txt").write_text("changed after the backup\n")
    subpath = "keep" if kind == "dir" else "keep/deep/a.txt"
    if kind == "file":
        (home / "keep" / "deep").mkdir(parents=True)
    final = agent.wait(agent.restore(project_id, backup.summary.snapshot_id, subpath=subpath).id)
    assert final.state == pb.SUCCEEDED, final.error
    after = manifest(home)
    restored = {k: v for k, v in before.items() if k == subpath or k.startswith(subpath + "/")}
    assert restored and {k: after.get(k) for k in restored} == restored
    assert (home / "other.txt").read_text() == "changed after the backup\n"  # the rest untouched
