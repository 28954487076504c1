"""Bad input gets the status code of DESIGN.md's error table, and nothing is touched."""

from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree

pytestmark = requires_restic


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "../../etc", "PROJECT-1", "12345678-1234-1234-1234-1234567890123"])
def test_malformed_project_id_is_invalid_argument(shared_agent, bad):
    assert code_of(lambda: shared_agent.backup(bad)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: shared_agent.restore(bad, "latest")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(
        lambda: shared_agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=bad), timeout=10)
    ) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("path", ["../x", "a/../../b", "/etc", "/"])
def test_restore_path_escaping_the_project_is_invalid_argument(shared_agent, project_id, path):
    for fields in ({"subpath": path}, {"target_path": path}):
        assert code_of(lambda: shared_agent.restore(project_id, "latest", **fields)) == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_request_id_and_bad_snapshot_id_are_invalid_argument(shared_agent, project_id):
    stub = shared_agent.stub
    assert code_of(
        lambda: stub.Backup(pb.BackupRequest(project_id=project_id), timeout=10)
    ) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: shared_agent.restore(project_id, "zz-not-hex")) == grpc.StatusCode.INVALID_ARGUMENT


def test_backup_of_a_missing_project_is_not_found(shared_agent, project_id):
    assert code_of(lambda: shared_agent.backup(project_id)) == grpc.StatusCode.NOT_FOUND


def test_unknown_operation_is_not_found(shared_agent):
    for call in (
        lambda: shared_agent.stub.GetOperation(pb.GetOperationRequest(operation_id=new_id()), timeout=10),
        lambda: shared_agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=new_id()), timeout=10),
        lambda: shared_agent.events(new_id()),
    ):
        assert code_of(call) == grpc.StatusCode.NOT_FOUND


def test_unknown_snapshot_fails_the_restore_with_not_found(shared_agent, project_id):
    agent = shared_agent
    write_tree(agent.home(project_id), files=3)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    before = manifest(agent.home(project_id))
    operation = agent.wait(agent.restore(project_id, "deadbeefdeadbeef").id)
    assert operation.state == pb.FAILED
    assert operation.error.code == "NOT_FOUND"
    assert manifest(agent.home(project_id)) == before


def test_wrong_repository_password_is_failed_precondition(shared_agent, project_id, tmp_path):
    agent = shared_agent
    write_tree(agent.home(project_id), files=3)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(agent.repository(project_id))), password="definitely-not-the-password-7")
    before = manifest(agent.home(project_id))
    for start in (
        lambda: agent.restore(project_id, "latest", repository=spec),
        lambda: agent.backup(project_id, repository=spec),
        lambda: agent.verify(project_id, repository=spec),
    ):
        final = agent.wait(start().id)
        assert final.state == pb.FAILED
        assert final.error.code == "FAILED_PRECONDITION", final.error
        assert "password" in final.error.message
    assert code_of(
        lambda: agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id, repository=spec), timeout=30)
    ) == grpc.StatusCode.FAILED_PRECONDITION
    assert manifest(agent.home(project_id)) == before


def test_snapshot_without_layout_v2_metadata_is_refused(shared_agent, project_id, tmp_path):
    """A snapshot written by hand with plain restic (no v2 tags) is refused; the project is untouched."""
    agent = shared_agent
    write_tree(agent.home(project_id), files=3)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    foreign = tmp_path / "foreign"
    (foreign / "project").mkdir(parents=True)
    (foreign / "project" / "x.txt").write_text("not v2")
    (foreign / "persist").mkdir()
    env = {"RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password"), "PATH": os.environ["PATH"]}
    out = subprocess.run(
        ["restic", "-r", str(agent.repository(project_id)), "--no-cache", "backup", "--json",
         "--host", f"project-{project_id}", "project", "persist"],
        cwd=foreign, env=env, capture_output=True, text=True, check=True,
    ).stdout
    import json

    snapshot_id = [json.loads(line) for line in out.splitlines() if '"summary"' in line][0]["snapshot_id"]
    before = manifest(agent.home(project_id))
    operation = agent.wait(agent.restore(project_id, snapshot_id).id)
    assert operation.state == pb.FAILED
    assert operation.error.code == "FAILED_PRECONDITION"
    assert "layout" in operation.error.message
    assert manifest(agent.home(project_id)) == before


def test_verify_of_a_project_without_repository_is_not_found(shared_agent, project_id):
    operation = shared_agent.wait(shared_agent.verify(project_id).id)
    assert operation.state == pb.FAILED
    assert operation.error.code == "NOT_FOUND"


def test_bad_enum_and_page_token_values(shared_agent, project_id):
    stub = shared_agent.stub
    assert code_of(
        lambda: stub.ListOperations(pb.ListOperationsRequest(page_token="garbage"), timeout=10)
    ) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(
        lambda: stub.ListOperations(pb.ListOperationsRequest(states=[42]), timeout=10)
    ) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(
        lambda: stub.Verify(pb.VerifyRequest(request_id=new_id(), project_id=project_id, mode=42), timeout=10)
    ) == grpc.StatusCode.INVALID_ARGUMENT
