"""The one map from the hub library's exceptions to gRPC codes (hub_client/service/status_codes.py)."""

from __future__ import annotations

import grpc
import pytest

from agent import errors as agent_errors
from hub_client.client import AgentError
from hub_client.copying import CopyError, CopyRefused
from hub_client.move import MoveError, MoveRefused
from hub_client.service.status_codes import is_known, status_code_for
from hub_client.store import CopyInProgress, HostInUse, InvalidTransition, MoveInProgress, NotFound

Code = grpc.StatusCode


@pytest.mark.parametrize("error, code", [
    (NotFound("move x not found"), Code.NOT_FOUND),
    (MoveInProgress("p", "m"), Code.ABORTED),
    (CopyInProgress("p", "c"), Code.ABORTED),
    (InvalidTransition("finished"), Code.FAILED_PRECONDITION),
    (HostInUse("h", "project p"), Code.FAILED_PRECONDITION),
    (MoveRefused("target down"), Code.FAILED_PRECONDITION),
    (MoveError("move m is succeeded; there is nothing to resume"), Code.FAILED_PRECONDITION),
    (MoveError("restore failed", "DATA_LOSS"), Code.DATA_LOSS),
    (MoveError("agent crashed", "INTERNAL"), Code.FAILED_PRECONDITION),
    (CopyRefused("bad path", "INVALID_ARGUMENT"), Code.INVALID_ARGUMENT),
    (CopyError("lost", "UNAVAILABLE"), Code.UNAVAILABLE),
    (AgentError(Code.UNAVAILABLE, "connection refused"), Code.UNAVAILABLE),
    (AgentError(Code.NOT_FOUND, "no such project"), Code.NOT_FOUND),
    (agent_errors.InvalidArgument("bad id"), Code.INVALID_ARGUMENT),
    (agent_errors.AlreadyExists("request id reused"), Code.ALREADY_EXISTS),
    (agent_errors.Conflict("running here"), Code.ABORTED),
    (KeyError("a bug"), Code.INTERNAL),
])
def test_codes(error: BaseException, code: grpc.StatusCode) -> None:
    assert status_code_for(error) is code
    assert is_known(error) == (code is not Code.INTERNAL)
