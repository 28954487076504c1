"""The error → status mapping (agent.status_codes) and the shared wire shape (hub_client.rich_status)."""

from __future__ import annotations

import re

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from agent import errors, status_codes
from hub_client import rich_status


def all_error_classes() -> list[type[errors.BucketsError]]:
    found, todo = [], [errors.BucketsError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def decode(status: grpc.Status) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    (key, value), = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    message = status_pb2.Status.FromString(value)
    info = error_details_pb2.ErrorInfo()
    (detail,) = message.details
    assert detail.Unpack(info)
    return message, info


def test_every_error_class_has_an_upper_snake_reason_and_the_precise_ones_are_distinct():
    classes = [c for c in all_error_classes() if c.__module__ == "agent.errors"]
    for cls in classes:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", cls.reason), cls
    precise = [c for c in classes if c.__bases__[0] is not errors.BucketsError and c is not errors.BucketsError]
    reasons = [c.reason for c in precise]
    assert len(set(reasons)) == len(reasons) and precise
    for cls in precise:  # a precise cause keeps its base's status code, under its own reason
        assert status_codes.status_code_for(cls("x")) is status_codes.status_code_for(cls.__bases__[0]("x"))
        assert cls.reason != cls.__bases__[0].reason


def test_an_agent_error_becomes_code_message_and_one_error_info_with_its_ids():
    error = errors.Conflict("busy", operation_id="op-1", project_id="p-1", empty="", nothing=None)
    message, info = decode(status_codes.status_for(error, "busy (cut)"))
    assert (message.code, message.message) == (grpc.StatusCode.ABORTED.value[0], "busy (cut)")
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "OPERATION_CONFLICT", "buckets.v1", {"operation_id": "op-1", "project_id": "p-1"})
    status = status_codes.status_for(errors.SnapshotNotFound("gone", snapshot_id="ab" * 4), "gone")
    assert status.code is grpc.StatusCode.NOT_FOUND
    assert decode(status)[1].reason == "SNAPSHOT_NOT_FOUND"


def test_anything_else_is_internal_without_metadata():
    status = status_codes.status_for(KeyError("secret-ish"), "internal error")
    message, info = decode(status)
    assert status.code is grpc.StatusCode.INTERNAL and info.reason == "INTERNAL" and not info.metadata


def test_metadata_is_bounded_and_keys_are_checked():
    many = {f"key{i}": "v" * 1000 for i in range(40)}
    cleaned = rich_status.clean_metadata({"Bad Key": "x", "1st": "x", **many})
    assert len(cleaned) == rich_status.MAX_METADATA_ENTRIES
    assert all(len(v) == rich_status.MAX_METADATA_VALUE for v in cleaned.values())
    assert "Bad Key" not in cleaned and "1st" not in cleaned


@pytest.mark.parametrize("reason", ["lower", "Mixed_Case", "TRAILING_", "", "A"])
def test_a_reason_that_is_not_upper_snake_is_a_programming_error(reason):
    with pytest.raises(ValueError):
        rich_status.status_for(grpc.StatusCode.NOT_FOUND, "x", reason)


def test_ok_has_no_rich_error():
    with pytest.raises(ValueError):
        rich_status.status_for(grpc.StatusCode.OK, "x", "FINE")
