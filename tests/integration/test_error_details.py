"""Rich errors from a real agent: every refusal carries a google.rpc.ErrorInfo (reason, ids).

The ids are checked against ground truth the test holds (the operation it started, the
request id it sent, the snapshot id it asked for), never against the message text.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from hub_client.client import AgentClient, AgentError, ClientConfig, RetryPolicy
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.rich_status import DOMAIN, error_info_of
from tests.conftest import requires_restic
from tests.harness import catch_engine, create_project, new_id
from tests.integration.test_operator_cli import host_cli

pytestmark = requires_restic


def client_of(agent) -> AgentClient:
    return AgentClient(ClientConfig(target=f"127.0.0.1:{agent.port}", deadline=60, retry=RetryPolicy(attempts=1)))


def refusal(call) -> AgentError:
    with pytest.raises(AgentError) as caught:
        call()
    assert caught.value.info is not None, f"no ErrorInfo on {caught.value}"
    assert caught.value.info.domain == DOMAIN
    return caught.value


def test_a_conflicting_operation_is_aborted_naming_the_running_one_and_a_reused_request_id_the_first(
        agent_factory):
    agent = agent_factory()
    project_id = create_project(agent, files=40, size=64 * 1024)
    with client_of(agent) as client:
        request_id = new_id()
        running = client.backup(project_id, request_id=request_id)
        engine = catch_engine(agent, "backup", moved_first=64 * 1024)  # held mid-run: it stays running
        try:
            aborted = refusal(lambda: client.restore(project_id, "latest"))
            assert aborted.code is grpc.StatusCode.ABORTED
            assert aborted.reason == "OPERATION_CONFLICT"
            assert aborted.metadata["operation_id"] == running.id
            assert aborted.metadata["operation_kind"] == "backup"
            assert aborted.metadata["project_id"] == project_id
            cli = host_cli(agent, "restore", project_id, "latest")
            assert cli.returncode == 3, cli.stderr.decode()  # EXIT_IN_PROGRESS: a conflict
            assert f"watch {running.id}`" in cli.stderr.decode()
            deleted = refusal(lambda: client.delete_project(project_id))
            assert (deleted.code, deleted.reason, deleted.metadata["operation_id"]) == (
                grpc.StatusCode.ABORTED, "OPERATION_CONFLICT", running.id)
        finally:
            engine.resume()
        assert running.wait(timeout=120).state == pb.SUCCEEDED

        reused = refusal(lambda: client.backup(project_id, request_id=request_id, force=True))
        assert reused.code is grpc.StatusCode.ALREADY_EXISTS
        assert reused.reason == "REQUEST_ID_REUSED"
        assert reused.metadata["request_id"] == request_id
        assert reused.metadata["operation_id"] == running.id


def test_not_found_and_failed_precondition_name_what_is_missing_or_in_the_way(shared_agent):
    agent = shared_agent
    project_id = create_project(agent, files=3)
    with client_of(agent) as client:
        backup = client.backup(project_id).wait(timeout=120)
        assert backup.state == pb.SUCCEEDED

        missing_snapshot = "0123abcd" * 8
        error = refusal(lambda: client.list_files(project_id, missing_snapshot))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SNAPSHOT_NOT_FOUND")
        assert error.metadata["snapshot_id"] == missing_snapshot
        assert error.metadata["project_id"] == project_id

        # Accepted, then failed by its job: the operation's record carries the same reason and ids.
        failed = client.restore(project_id, missing_snapshot).wait(timeout=120)
        assert (failed.state, failed.error.code, failed.error.reason) == (
            pb.FAILED, "NOT_FOUND", "SNAPSHOT_NOT_FOUND")
        assert failed.error.metadata["snapshot_id"] == missing_snapshot
        assert client.get_operation(failed.id).error.reason == "SNAPSHOT_NOT_FOUND"

        missing_project = new_id()
        error = refusal(lambda: client.backup(missing_project))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PROJECT_NOT_FOUND")
        assert error.metadata["project_id"] == missing_project

        missing_operation = new_id()
        error = refusal(lambda: client.get_operation(missing_operation))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "OPERATION_NOT_FOUND")
        assert error.metadata["operation_id"] == missing_operation

        (agent.home(project_id) / "a.txt").write_text("a")
        (agent.home(project_id) / "b.txt").write_text("b")
        error = refusal(lambda: client.copy_files(project_id, "a.txt", project_id, "b.txt", on_conflict=pb.FAIL))
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TARGET_EXISTS")
        assert error.metadata["path"] == "b.txt"
        assert (agent.home(project_id) / "b.txt").read_text() == "b"

        client.freeze(project_id)
        try:
            error = refusal(lambda: client.mark_edited(project_id))
            assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROJECT_FROZEN")
            assert error.metadata["project_id"] == project_id
        finally:
            assert client.thaw(project_id) is False


def test_the_details_are_on_the_wire_for_any_grpc_client_and_absent_from_grpcs_own_statuses(shared_agent):
    """A plain stub (no buckets code) decodes the same google.rpc.Status from the trailer; a
    status grpc makes itself (nothing listening) has none, and the client says so (info None)."""
    missing = new_id()
    with pytest.raises(grpc.RpcError) as caught:
        shared_agent.stub.GetOperation(pb.GetOperationRequest(operation_id=missing), timeout=30)
    status = rpc_status.from_call(caught.value)
    assert status is not None and status.code == grpc.StatusCode.NOT_FOUND.value[0]
    info = error_info_of(caught.value)
    assert (info.reason, dict(info.metadata)) == ("OPERATION_NOT_FOUND", {"operation_id": missing})

    with AgentClient(ClientConfig(target="127.0.0.1:1", deadline=5, retry=RetryPolicy(attempts=1))) as nowhere:
        with pytest.raises(AgentError) as caught:
            nowhere.capabilities()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.info is None and caught.value.reason == "" and dict(caught.value.metadata) == {}
