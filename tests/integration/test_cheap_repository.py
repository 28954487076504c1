"""The tests' cheap-key repositories (tests/cheap_repository.py) are repositories every engine
opens as its own: each engine backs up into one, lists it, checks it and refuses a wrong
password; the agent backs up into one made where its configuration puts a project's repository
(local and S3) without an ``init``, and restores from it exactly."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import cheap_repository
from tests.conftest import requires_restic
from tests.harness import create_project, manifest, write_tree

PASSWORD = "cheap-key-test-password"


def run_engine(engine, repository: Path, password: str, *args: str, cwd: Path | None = None):
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    if engine.driver == "rustic":
        env.update(RUSTIC_PASSWORD=password, RUSTIC_REPOSITORY=str(repository), RUSTIC_NO_CACHE="true")
        argv = [engine.binary(), *args]
    else:
        env.update(RESTIC_PASSWORD=password)
        argv = [engine.binary(), "-r", str(repository), "--no-cache", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_polynomials():
    assert cheap_repository.irreducible(0b111)  # x^2 + x + 1
    assert not cheap_repository.irreducible(0b101)  # x^2 + 1 = (x + 1)^2
    assert cheap_repository.irreducible(0x3DA3358B4DC173)  # restic's chunker test polynomial
    assert not cheap_repository.irreducible(0x3DA3358B4DC173 ^ 0b10)
    polynomial = cheap_repository.random_polynomial()
    assert polynomial.bit_length() - 1 == 53 and cheap_repository.irreducible(polynomial)


@requires_restic
def test_reads_a_key_restic_made(tmp_path):
    """The key-file reader agrees with restic's writer (so the writer's format is restic's)."""
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD": PASSWORD}
    subprocess.run(["restic", "-r", str(tmp_path / "repo"), "--no-cache", "init"], env=env, check=True,
                   capture_output=True)
    [key] = (tmp_path / "repo" / "keys").iterdir()
    master, params = cheap_repository.open_key_file(key.read_bytes(), PASSWORD)
    config = json.loads(cheap_repository.unseal(master, (tmp_path / "repo" / "config").read_bytes()))
    assert config["version"] == 2 and len(config["id"]) == 64 and params.n >= 16384
    with pytest.raises(Exception):
        cheap_repository.open_key_file(key.read_bytes(), "wrong")


def test_every_engine_uses_a_cheap_repository(engine_under_test, tmp_path):
    repository = cheap_repository.init_local(tmp_path / "repo", PASSWORD)
    [key] = (repository / "keys").iterdir()
    assert json.loads(key.read_bytes())["N"] == cheap_repository.CHEAP.n
    source = tmp_path / "src"
    write_tree(source, files=12)
    backup = run_engine(engine_under_test, repository, PASSWORD, "backup", ".", cwd=source)
    assert backup.returncode == 0 and "snapshot" in (backup.stdout + backup.stderr).lower(), backup.stderr
    listed = run_engine(engine_under_test, repository, PASSWORD, "snapshots", "--json")
    assert listed.returncode == 0, listed.stderr
    snapshots = json.loads(listed.stdout)
    assert snapshots and "id" in json.dumps(snapshots)
    checked = run_engine(engine_under_test, repository, PASSWORD, "check", "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    if engine_under_test.driver == "rustic":
        assert "[ERROR]" not in checked.stderr and "[WARN]" not in checked.stderr, checked.stderr
    else:
        assert "no errors were found" in checked.stdout, checked.stdout + checked.stderr
    refused = run_engine(engine_under_test, repository, "not-the-password", "snapshots")
    assert "password" in refused.stderr.lower(), refused.stderr  # rustic exits 0: judged by output
    assert not refused.stdout.strip() or refused.returncode != 0


@requires_restic
def test_the_agent_opens_a_made_repository_without_init(agent_factory):
    agent = agent_factory()
    project_id = create_project(agent, files=20)
    assert agent.repository(project_id).is_dir()
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    before = manifest(agent.home(project_id))
    for path in sorted(agent.home(project_id).rglob("*.bin"))[:5]:
        path.unlink()
    (agent.home(project_id) / "new.txt").write_text("after the backup\n")
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    assert restore.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS), restore.error
    assert manifest(agent.home(project_id)) == before
    assert not [argv for argv in agent.started_argvs() if "init" in argv]
    with pytest.raises(FileExistsError):
        agent.make_repository(project_id)


@requires_restic
def test_the_harness_makes_a_missing_repository_before_the_first_backup(agent_factory, project_id):
    """``make_repositories`` on (the default): the harness's first Backup of a project finds its
    repository made; a Backup of a project that does not exist gets none (the agent refuses it)."""
    agent = agent_factory()
    with pytest.raises(grpc.RpcError) as refused:
        agent.backup(project_id)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert not agent.repository(project_id).exists()
    write_tree(agent.home(project_id), files=5)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    [key] = (agent.repository(project_id) / "keys").iterdir()
    assert json.loads(key.read_bytes())["N"] == cheap_repository.CHEAP.n
    assert not [argv for argv in agent.started_argvs() if "init" in argv]


@requires_restic
def test_without_made_repositories_the_agent_initialises_one(agent_factory):
    """``make_repositories`` off: the first backup initialises a real repository."""
    agent = agent_factory(make_repositories=False)
    project_id = create_project(agent, files=5)
    assert not agent.repository(project_id).exists()
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    assert [argv for argv in agent.started_argvs() if "init" in argv]
    # The repository directory did not exist: initialised first, one backup run (none that only
    # finds the repository missing).
    assert len([argv for argv in agent.started_argvs() if "backup" in argv]) == 1
    [key] = (agent.repository(project_id) / "keys").iterdir()
    assert json.loads(key.read_bytes())["N"] > cheap_repository.CHEAP.n


@requires_restic
def test_the_agent_opens_a_made_s3_repository(agent_factory, s3_server, tmp_path):
    password_file = tmp_path / "s3.password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    agent = agent_factory(extra=s3_server.agent_repository_config(password_file))
    project_id = create_project(agent, files=10)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    assert not [argv for argv in agent.started_argvs() if "init" in argv]
    # restic 0.14 names the new snapshot by its short id: the full one is read from the bucket's
    # listing of snapshots/, not from a `restic snapshots` run (a key derivation).
    assert not [argv for argv in agent.started_argvs() if "snapshots" in argv]
    listed = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30)
    assert [s.id for s in listed.snapshots] == [backup.summary.snapshot_id]
    with pytest.raises(FileExistsError):
        agent.make_repository(project_id)
