"""Repositories in an S3 bucket (MinIO on 127.0.0.1), and interop with stock restic."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import grpc
import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree
from tests.integration.test_operations import SLOW, big_project

pytestmark = requires_restic

PASSWORD = "s3-repository-password-4c2e"


def s3_agent(agent_factory, s3_server, tmp_path, *, limits: str = ""):
    password_file = tmp_path / "s3.password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    return agent_factory("s3-agent", extra=s3_server.agent_repository_config(password_file), limits=limits)


def restic_env(s3_server) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "RESTIC_PASSWORD": PASSWORD,
    }


def repo_url(s3_server, project_id: str) -> str:
    return f"s3:{s3_server.endpoint}/buckets-us-east-1/rustic/project-{project_id}"


def test_backup_list_restore_verify_in_a_bucket(agent_factory, s3_server, tmp_path, project_id):
    agent = s3_agent(agent_factory, s3_server, tmp_path)
    write_tree(agent.home(project_id), files=100)
    write_tree(agent.persist(project_id), files=3, depth=0)
    before = manifest(agent.home(project_id)), manifest(agent.persist(project_id))

    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket="buckets-us-east-1", Prefix=f"rustic/project-{project_id}/")["Contents"]]
    assert f"rustic/project-{project_id}/config" in keys

    listing = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30)
    assert [s.id for s in listing.snapshots] == [backup.summary.snapshot_id]  # full ids, both

    for path in list(agent.home(project_id).rglob("*.bin"))[:10]:
        path.unlink()
    restore = agent.wait(agent.restore(project_id, backup.summary.snapshot_id).id)
    # The deleted files were not backed up: a pre-restore snapshot takes them first (a warning).
    assert restore.state == pb.SUCCEEDED_WITH_WARNINGS, restore.error
    assert (manifest(agent.home(project_id)), manifest(agent.persist(project_id))) == before
    verify = agent.wait(agent.verify(project_id).id)
    assert verify.state == pb.SUCCEEDED, verify.error


def test_wrong_s3_credentials_and_wrong_password_have_their_own_codes(
    engine_under_test, agent_factory, s3_server, project_id
):
    """Four ways to be refused by the bucket, each PERMISSION_DENIED naming the S3 credentials:
    keys no server knows, a known key with the wrong secret, and a real MinIO user whose keys are
    valid but whose policy allows only another bucket (it backs up there, so its keys do work).
    The first three are refused by the agent's bucket check (HEAD bucket, 403); the same user in
    a bucket it may list but not read is refused by the engine, whose stderr is classified.
    A wrong repository password is FAILED_PRECONDITION. No secret reaches the log."""
    from tests.minio_server import LIST_ONLY_BUCKET, RESTRICTED_BUCKET, UNKNOWN_CREDENTIALS

    agent = agent_factory("creds", engine=engine_under_test.driver, extra=engine_under_test.engine_lines())
    write_tree(agent.home(project_id), files=3)
    bucket = f"creds-{project_id[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    restricted_key, restricted_secret = s3_server.restricted_credentials()
    for made in (RESTRICTED_BUCKET, LIST_ONLY_BUCKET):
        try:
            s3_server.client().create_bucket(Bucket=made)
        except s3_server.client().exceptions.BucketAlreadyOwnedByYou:
            pass

    def spec(key: str, secret: str, password: str = PASSWORD, in_bucket: str = bucket) -> pb.RepositorySpec:
        return pb.RepositorySpec(
            s3=pb.S3Repository(endpoint=s3_server.endpoint, region="us-east-1", bucket=in_bucket,
                               root=f"rustic/project-{project_id}", access_key_id=key, secret_access_key=secret),
            password=password,
        )

    good = agent.wait(agent.backup(project_id, repository=spec(s3_server.access_key_id,
                                                                s3_server.secret_access_key)).id)
    assert good.state == pb.SUCCEEDED, good.error
    refused = {
        "unknown keys": spec(*UNKNOWN_CREDENTIALS),
        "wrong secret": spec(s3_server.access_key_id, "not-the-secret-key-0000"),
        "user without access to the bucket": spec(restricted_key, restricted_secret),
        "user who may list the bucket but not read it": spec(restricted_key, restricted_secret,
                                                             in_bucket=LIST_ONLY_BUCKET),
    }
    for case, repository in refused.items():
        bad = agent.wait(agent.backup(project_id, repository=repository, force=True).id)
        assert (bad.state, bad.error.code) == (pb.FAILED, "PERMISSION_DENIED"), (case, bad.error)
        assert "S3 credentials" in bad.error.message, (case, bad.error)
    allowed = agent.wait(agent.backup(project_id, force=True, repository=spec(
        restricted_key, restricted_secret, in_bucket=RESTRICTED_BUCKET)).id)
    assert allowed.state == pb.SUCCEEDED, allowed.error
    bad_password = agent.wait(agent.backup(project_id, force=True, repository=spec(
        s3_server.access_key_id, s3_server.secret_access_key, password="not-the-password-0000")).id)
    assert (bad_password.state, bad_password.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), bad_password.error
    log = agent.log_path.read_text()
    for secret in (s3_server.secret_access_key, restricted_secret, PASSWORD, "not-the-secret-key-0000"):
        assert secret not in log


def test_no_secret_on_any_engine_command_line(agent_factory, s3_server, tmp_path, project_id):
    agent = s3_agent(agent_factory, s3_server, tmp_path, limits=SLOW)
    big_project(agent, project_id, megabytes=2)
    operation = agent.backup(project_id)
    seen: list[list[str]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for process in psutil.process_iter(["cmdline"]):
                cmdline = process.info["cmdline"] or []
                if any(part.endswith("restic") for part in cmdline):
                    seen.append(cmdline)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert agent.wait(operation.id).state == pb.SUCCEEDED
    finally:
        stop.set()
        sampler.join()
    assert seen, "no engine process was seen"
    secrets = (PASSWORD, s3_server.secret_access_key)
    assert not [c for c in seen if any(secret in " ".join(c) for secret in secrets)]
    log = agent.log_path.read_text()
    assert not [secret for secret in secrets if secret in log]


def test_stock_restic_reads_what_the_agent_wrote(agent_factory, s3_server, tmp_path, project_id):
    agent = s3_agent(agent_factory, s3_server, tmp_path)
    write_tree(agent.home(project_id), files=60)
    write_tree(agent.persist(project_id), files=2, depth=0)
    backup = agent.wait(agent.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED
    env = restic_env(s3_server)
    url = repo_url(s3_server, project_id)
    check = subprocess.run(["restic", "-r", url, "--no-cache", "check", "--read-data"], env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    target = tmp_path / "stock-restore"
    subprocess.run(["restic", "-r", url, "--no-cache", "restore", "latest", "--target", str(target)],
                   env=env, check=True, capture_output=True)
    assert manifest(target / "project") == manifest(agent.home(project_id))
    assert manifest(target / "persist") == manifest(agent.persist(project_id))


def test_agent_restores_a_layout_v2_snapshot_written_by_stock_restic(agent_factory, s3_server, tmp_path, project_id):
    agent = s3_agent(agent_factory, s3_server, tmp_path)
    source = tmp_path / "stock-source"
    write_tree(source / "project", files=40, seed=3)
    write_tree(source / "persist", files=2, seed=4, depth=0)
    env = restic_env(s3_server)
    url = repo_url(s3_server, project_id)
    # The bucket exists once any agent backup ran; make sure of it without relying on test order.
    try:
        s3_server.client().create_bucket(Bucket="buckets-us-east-1")
    except s3_server.client().exceptions.BucketAlreadyOwnedByYou:
        pass
    subprocess.run(["restic", "-r", url, "--no-cache", "init"], env=env, check=True, capture_output=True)
    tags = ["layout=v2", f"project={project_id}", "host=stock-cli", f"op={new_id()}", "purpose=backup"]
    out = subprocess.run(
        ["restic", "-r", url, "--no-cache", "backup", "--json", "--host", f"project-{project_id}",
         *[arg for tag in tags for arg in ("--tag", tag)], "project", "persist"],
        cwd=source, env=env, check=True, capture_output=True, text=True,
    ).stdout
    snapshot_id = [json.loads(line) for line in out.splitlines() if '"summary"' in line][0]["snapshot_id"]
    restore = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert restore.state == pb.SUCCEEDED, restore.error
    assert manifest(agent.home(project_id)) == manifest(source / "project")
    assert manifest(agent.persist(project_id)) == manifest(source / "persist")


def test_a_bucket_in_another_region_is_a_failed_precondition_naming_it(shared_agent, tmp_path, project_id):
    """A MinIO of its own that enforces region eu-west-1 (the session's accepts any region, as
    R2's "auto"). A repository naming us-east-1 is refused by the endpoint; boto3 would follow it
    to eu-west-1 silently, the engines would not (restic 0.18 retries it for minutes, rustic calls
    it unreachable), so the agent's bucket check says so: FAILED_PRECONDITION naming both regions,
    nothing written. The same repository in eu-west-1 backs up."""
    from tests.minio_server import MinioServer
    from tests.tools import require_tool

    require_tool("minio")
    server = MinioServer(log_path=tmp_path / "minio.log", region="eu-west-1", enforced_region="eu-west-1").start()
    try:
        server.client().create_bucket(Bucket="regional", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        write_tree(shared_agent.home(project_id), files=3)

        def spec(region: str) -> pb.RepositorySpec:
            return pb.RepositorySpec(
                s3=pb.S3Repository(endpoint=server.endpoint, region=region, bucket="regional",
                                   root=f"rustic/project-{project_id}", access_key_id=server.access_key_id,
                                   secret_access_key=server.secret_access_key),
                password=PASSWORD,
            )

        wrong = shared_agent.wait(shared_agent.backup(project_id, repository=spec("us-east-1")).id)
        assert (wrong.state, wrong.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), wrong.error
        assert "eu-west-1" in wrong.error.message and "us-east-1" in wrong.error.message
        assert server.client().list_objects_v2(Bucket="regional").get("KeyCount", 0) == 0
        right = shared_agent.wait(shared_agent.backup(project_id, repository=spec("eu-west-1")).id)
        assert right.state == pb.SUCCEEDED, right.error

        # Every other operation is refused the same way, before an engine would retry for minutes.
        with pytest.raises(grpc.RpcError) as listing:
            shared_agent.stub.ListSnapshots(
                pb.ListSnapshotsRequest(project_id=project_id, repository=spec("us-east-1")), timeout=60)
        assert listing.value.code() == grpc.StatusCode.FAILED_PRECONDITION, listing.value.details()
        assert "eu-west-1" in listing.value.details()
        before = manifest(shared_agent.home(project_id))
        restore = shared_agent.wait(shared_agent.stub.Restore(pb.RestoreRequest(
            request_id=new_id(), project_id=project_id, repository=spec("us-east-1"),
            snapshot_id=right.summary.snapshot_id, force=True), timeout=30).id)
        assert (restore.state, restore.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), restore.error
        assert manifest(shared_agent.home(project_id)) == before
    finally:
        server.stop()


def test_credentials_the_bucket_refuses_fail_at_once_on_every_engine(
        engine_under_test, agent_factory, s3_server, tmp_path, project_id):
    """An access key id the server does not know: restic 0.18 retries its refused Stat for minutes
    (seen on MinIO), so the agent's bucket check answers first: PERMISSION_DENIED for a listing
    and a restore, within the RPC's deadline, on every engine; nothing is written."""
    password_file = tmp_path / "s3.password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    agent = agent_factory("s3-refused", engine=engine_under_test.driver,
                          extra=engine_under_test.engine_lines() + s3_server.agent_repository_config(password_file))
    write_tree(agent.home(project_id), files=3)
    before = manifest(agent.home(project_id))
    client = s3_server.client()
    if not any(b["Name"] == "buckets-us-east-1" for b in client.list_buckets().get("Buckets", [])):
        client.create_bucket(Bucket="buckets-us-east-1")  # the refusal is about the key, not the bucket
    refused = pb.RepositorySpec(
        s3=pb.S3Repository(endpoint=s3_server.endpoint, region="us-east-1", bucket="buckets-us-east-1",
                           root=f"rustic/project-{project_id}", access_key_id="AKNOSUCHKEY" + new_id()[:8],
                           secret_access_key="not-the-secret-" + new_id()),
        password=PASSWORD)
    with pytest.raises(grpc.RpcError) as listing:
        agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id, repository=refused), timeout=60)
    assert listing.value.code() == grpc.StatusCode.PERMISSION_DENIED, listing.value.details()
    restore = agent.wait(agent.stub.Restore(pb.RestoreRequest(
        request_id=new_id(), project_id=project_id, repository=refused, snapshot_id="latest", force=True),
        timeout=30).id, timeout=60)
    assert (restore.state, restore.error.code) == (pb.FAILED, "PERMISSION_DENIED"), restore.error
    assert manifest(agent.home(project_id)) == before
    assert client.list_objects_v2(
        Bucket="buckets-us-east-1", Prefix=f"rustic/project-{project_id}/").get("KeyCount", 0) == 0
