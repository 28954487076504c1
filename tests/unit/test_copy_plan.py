"""The pure decisions of a copy between projects: paths, steps, resume points, request ids."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub_client.steps import job_request_id
from hub_client.copying import HOST_STEPS, LOCAL_STEPS, CopyRefused, copy_path, resume_point, steps_of
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
    assert job_request_id("copy", "c1", "restore", 2) == "copy:c1:restore:2"
    assert job_request_id("copy", "c1", "restore", 2) != job_request_id("copy", "c1", "restore", 3)


def test_a_source_unreachable_at_forget_fails_the_copy_with_a_copy_error(tmp_path) -> None:
    """Regression (fault suite): forget's agent call is not wrapped like the others, so its
    AgentError reached the failure record, whose log entry could not hold a grpc.StatusCode; the
    caller got a TypeError instead of CopyError. Now the copy fails at forget, resumably."""
    import grpc

    from hub_client.client import AgentError
    from hub_client.copying import CopyError, CopyRunner
    from hub_client.store import Host, Project, open_store

    class Unreachable:
        def forget(self, *args, **kwargs):
            raise AgentError(grpc.StatusCode.UNAVAILABLE, "connection refused")

    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        for host in ("host-a", "host-b"):
            store.upsert_host(Host(host, "127.0.0.1:9", "eu", "running"))
        store.upsert_project(Project("p1", "host-a", "eu", ""))
        store.upsert_project(Project("p2", "host-b", "eu", ""))
        copy = store.create_copy("p1", "data", "p2", "in/data", Conflict.FAIL, source_host="host-a",
                                 target_host="host-b")
        store.update_copy_step(copy.id, "forget")
        store.set_copy_snapshot(copy.id, "0123456789abcdef")
        store.update_copy_status(copy.id, CopyStatus.FAILED, error="forget failed")
        with pytest.raises(CopyError, match="UNAVAILABLE"):
            CopyRunner(store, lambda host: Unreachable(), copy.id).resume()
        failed = store.get_copy(copy.id)
        assert (failed.status, failed.step, failed.snapshot_id) == (CopyStatus.FAILED, "forget", "0123456789abcdef")
        assert store.copylog(copy.id)[-1].data["code"] == "UNAVAILABLE"
        assert resume_point(failed) == ("forget", False)
    finally:
        store.close()
