"""The pure decisions of a copy between projects: paths, steps, resume points, request ids."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub_client.copying import HOST_STEPS, LOCAL_STEPS, CopyRefused, copy_path, copy_request_id, resume_point, steps_of
from hub_client.store import Conflict, Copy, CopyStatus

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def a_copy(status: str, step: str, *, target_host: str = "host-b") -> Copy:
    return Copy("c1", "p1", "data", "p2", "in/data", Conflict.FAIL, "host-a", target_host, step, status, None, 1,
                T0, T0)


@pytest.mark.parametrize("value, normal", [("data", "data"), ("a//b/", "a/b"), ("./a/./b", "a/b"),
                                           ("x..y", "x..y"), ("..hidden", "..hidden")])
def test_copy_paths_are_normalised(value: str, normal: str) -> None:
    assert copy_path(value, field="source_path") == normal


@pytest.mark.parametrize("value", ["", ".", "./", "..", "../x", "a/../../x", "a/..", "/etc", "/", "a\x00b"])
def test_copy_paths_out_of_the_project_are_invalid_arguments(value: str) -> None:
    with pytest.raises(CopyRefused) as refused:
        copy_path(value, field="target_path")
    assert refused.value.code == "INVALID_ARGUMENT" and "target_path" in str(refused.value)


def test_steps_between_hosts_and_on_one_host() -> None:
    assert steps_of(a_copy(CopyStatus.PENDING, "created")) == HOST_STEPS
    assert steps_of(a_copy(CopyStatus.PENDING, "created", target_host="host-a")) == LOCAL_STEPS
    assert HOST_STEPS == ("preflight", "backup", "restore", "forget", "finalize")


@pytest.mark.parametrize("status, step, expected", [
    (CopyStatus.RUNNING, "restore", ("restore", True)),   # a stopped hub: the same step, same request id
    (CopyStatus.RUNNING, "forget", ("forget", True)),
    (CopyStatus.FAILED, "restore", ("preflight", False)),  # the temporary snapshot was forgotten: anew
    (CopyStatus.FAILED, "backup", ("preflight", False)),
    (CopyStatus.FAILED, "forget", ("forget", False)),      # files in place: only forget again
    (CopyStatus.PENDING, "created", ("preflight", False)),
    (CopyStatus.RUNNING, "created", ("preflight", False)),
])
def test_resume_point(status: str, step: str, expected: tuple[str, bool]) -> None:
    assert resume_point(a_copy(status, step)) == expected


def test_request_ids_are_stable_per_step_and_round() -> None:
    assert copy_request_id("c1", "restore", 2) == "copy:c1:restore:2"
    assert copy_request_id("c1", "restore", 2) != copy_request_id("c1", "restore", 3)
