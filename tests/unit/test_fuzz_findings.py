"""Regression tests of the bugs the API fuzzer (tests/integration/test_fuzz_api.py) found: each
input here once made the agent answer INTERNAL (or a wrong code) instead of the error table's code."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent import browse, convert, errors, ids, sentinel
from agent.engine import restic_args as ra
from agent.executor import classify_failed, run_process
from agent.repository import LocalSpec, RepositorySpec, S3Spec, check_spec
from agent.servicer import MAX_STATUS_MESSAGE_BYTES, Undecodable, _check_decoded, _lenient, status_message
from hub_client.proto.buckets.v1 import agent_pb2 as pb

PY = sys.executable

# ---------------------------------------------------------------- masked stderr vs. classification


@pytest.mark.parametrize("secret", [" ", "password", "o", "wrong"])
def test_a_secret_that_is_a_common_word_does_not_hide_what_the_failure_means(secret):
    """A request password " " used to turn restic's "wrong password or no key found" into
    "wrong***password***or..." before classification: INTERNAL instead of FAILED_PRECONDITION."""
    code = "import sys; sys.stderr.write('Fatal: wrong password or no key found\\n'); sys.exit(1)"
    result = asyncio.run(run_process([PY, "-c", code], env={}, secrets=[secret]))
    assert "***" in result.stderr_tail  # what is shown stays masked
    error = classify_failed(result, ra.classify_failure, action="snapshots")
    assert isinstance(error, errors.FailedPrecondition)
    assert error.message == "restic snapshots failed: wrong repository password"
    assert error.detail == result.stderr_tail.strip()
    assert "stderr_unmasked" not in repr(result)  # never printed by accident


# ---------------------------------------------------------------- MarkEdited time


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-1, -1), (0, 1_000_000_000), (2**62, 0), (-(2**63), 0), (253_402_300_800, 0), (-62_135_596_801, 0)],
)
def test_a_timestamp_out_of_range_is_invalid_argument(seconds, nanos):
    with pytest.raises(errors.InvalidArgument, match="time is not a valid timestamp"):
        convert.seconds_from_proto(Timestamp(seconds=seconds, nanos=nanos), field="time")


def test_a_timestamp_is_read_as_utc_whatever_the_local_zone(monkeypatch):
    """ToDatetime() gives a naive UTC datetime; its .timestamp() read it as local time."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert convert.seconds_from_proto(Timestamp(seconds=1_700_000_000, nanos=500_000_000), field="t") == \
            1_700_000_000.5
        assert convert.seconds_from_proto(Timestamp(seconds=-62_135_596_800), field="t") == -62_135_596_800
        assert convert.seconds_from_proto(Timestamp(seconds=253_402_300_799, nanos=999_999_999), field="t") > 0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# ---------------------------------------------------------------- names longer than NAME_MAX


def test_a_path_component_longer_than_name_max_is_invalid_argument():
    """os.lstat / os.open raise ENAMETOOLONG (an OSError, so INTERNAL) for such a name."""
    assert ids.relative_path("x" * 255) == "x" * 255
    for bad in ("x" * 256, "a/" + "x" * 300 + "/b", "é" * 128):
        with pytest.raises(errors.InvalidArgument, match="longer than 255 bytes"):
            ids.relative_path(bad, field="subpath")
    with pytest.raises(errors.InvalidArgument, match="longer than 255 bytes"):
        browse.snapshot_path("project/" + "x" * 256, root=browse.SNAPSHOT_ROOT)
    with pytest.raises(errors.InvalidArgument, match="longer than 255 bytes"):
        sentinel.check("project/" + "x" * 300, "", required=True)


# ---------------------------------------------------------------- repository specs in requests


@pytest.mark.parametrize(
    "spec",
    [
        RepositorySpec(password="a\x00b"),
        RepositorySpec(location=LocalSpec("relative/repo")),
        RepositorySpec(location=LocalSpec("/srv/re\x00po")),
        RepositorySpec(location=LocalSpec("/" + "x" * 70000)),
        RepositorySpec(location=LocalSpec("/srv/" + "é" * 200)),
        RepositorySpec(location=LocalSpec("/dev/null/repo")),
        RepositorySpec(location=LocalSpec("/dev/null")),
    ],
)
def test_bad_local_repository_specs_are_invalid_argument(spec):
    with pytest.raises(errors.InvalidArgument):
        check_spec(spec)


def _s3(**fields) -> RepositorySpec:
    base = dict(endpoint="http://127.0.0.1:9000", region="us-east-1", bucket="buckets-test",
                root="rustic/project-x", access_key_id="AKIA", secret_access_key="secret")
    return RepositorySpec(location=S3Spec(**{**base, **fields}), password="pw")


@pytest.mark.parametrize(
    "fields",
    [
        {"endpoint": "http://[::1"}, {"endpoint": "http://127.0.0.1:99999"}, {"endpoint": "ftp://127.0.0.1:1"},
        {"endpoint": "127.0.0.1:1"}, {"endpoint": "http://127.0.0.1:1/path"}, {"endpoint": "http://h:1/?q=1"},
        {"endpoint": "http://user:pw@127.0.0.1:1"}, {"endpoint": "http://127.0.0.1:1\x00"},
        {"bucket": "b"}, {"bucket": "x/y"}, {"bucket": "Upper_Case"}, {"bucket": "buck\tet"},
        {"root": "../../etc"}, {"root": "a//b"}, {"root": "r\x19"}, {"region": "EU"}, {"region": "${HOME}"},
        {"secret_access_key": ""}, {"access_key_id": ""}, {"access_key_id": "AK\x00"},
    ],
)
def test_bad_s3_repository_specs_are_invalid_argument(fields):
    """restic failed on these with exit code 1 and an unknown message ("parsing repository location
    failed", "Secret ($AWS_SECRET_ACCESS_KEY) is empty", "embedded null byte"): INTERNAL."""
    with pytest.raises(errors.InvalidArgument):
        check_spec(_s3(**fields))


@pytest.mark.parametrize(
    "spec",
    [
        _s3(), _s3(endpoint="https://account.r2.cloudflarestorage.com/", region="auto"), _s3(endpoint="", region=""),
        _s3(access_key_id="", secret_access_key=""), RepositorySpec(location=LocalSpec("/proc/buckets-missing/repo")),
        RepositorySpec(location=LocalSpec("/tmp")), RepositorySpec(password=" "),
    ],
)
def test_good_repository_specs_pass(spec):
    check_spec(spec)


def test_a_local_repository_path_through_a_file_is_invalid_argument(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "file" / "repo"):
        with pytest.raises(errors.InvalidArgument, match="is not a directory"):
            check_spec(RepositorySpec(location=LocalSpec(str(path))))
    check_spec(RepositorySpec(location=LocalSpec(str(tmp_path / "new" / "repo"))))
    assert sorted(os.listdir(tmp_path)) == ["file"]  # nothing made


# ---------------------------------------------------------------- restic init where nothing can be made


def test_restic_init_that_cannot_create_the_repository_is_failed_precondition():
    stderr = "Fatal: create repository at /proc/x/repo failed: mkdir /proc/x: no such file or directory\n"
    error = ra.classify_failure(1, stderr, action="init")
    assert isinstance(error, errors.FailedPrecondition)
    assert isinstance(ra.classify_failure(1, "Fatal: create repository at /r failed: config file already exists\n",
                                          action="init"), errors.AlreadyExists)


# ---------------------------------------------------------------- status messages that echo input


def test_status_messages_are_cut_below_the_metadata_limit():
    """NOT_FOUND for a 64 KiB operation id echoed the id: the status message passed grpc's
    metadata limit and the caller got RESOURCE_EXHAUSTED instead."""
    short = errors.NotFound("operation x not found")
    assert status_message(short) == "operation x not found"
    for filler in ("x" * 70000, "é😀" * 12000):
        message = status_message(errors.NotFound(f"operation {filler} not found"))
        assert len(message.encode("utf-8")) <= MAX_STATUS_MESSAGE_BYTES
        assert message.startswith("operation ") and message.endswith("(cut)")


# ---------------------------------------------------------------- request bytes that are no message


@pytest.mark.parametrize("payload", [b"\x12\x05ab", b"\xff\xff\xff", b"\x0a\x02\xc3\x28"])
def test_request_bytes_that_are_no_message_are_invalid_argument(payload):
    """grpc's own deserializer failing answered UNKNOWN."""
    parsed = _lenient(pb.GetOperationRequest)(payload)
    assert isinstance(parsed, Undecodable)
    with pytest.raises(errors.InvalidArgument, match="not a valid buckets.v1.GetOperationRequest message"):
        _check_decoded(parsed)
    good = _lenient(pb.GetOperationRequest)(pb.GetOperationRequest(operation_id="x").SerializeToString())
    assert good == pb.GetOperationRequest(operation_id="x")
    _check_decoded(good)
