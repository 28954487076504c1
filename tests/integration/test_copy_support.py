"""What a copy of files needs from the agents, through real agent processes: a backup of one
subpath, its restore into another project on a second host (source_project_id), the
on_conflict rules, Forget of exact snapshots, CopyFiles on one host (directory backend, and
btrfs with shared extents where a loop device can be made), and the path rules."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree
from tests.integration.test_operations import SLOW, big_project

pytestmark = requires_restic


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def ensure(agent, project_id: str) -> None:
    operation = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.NONE),
        timeout=30)
    assert agent.wait(operation.id).state == pb.SUCCEEDED


def copy_files(agent, source: str, source_path: str, target: str, target_path: str,
               on_conflict=pb.CONFLICT_POLICY_UNSPECIFIED, request_id: str | None = None) -> pb.Operation:
    return agent.stub.CopyFiles(
        pb.CopyFilesRequest(request_id=request_id or new_id(), source_project_id=source, source_path=source_path,
                            target_project_id=target, target_path=target_path, on_conflict=on_conflict),
        timeout=30)


def forget(agent, project_id: str, **fields) -> pb.Operation:
    return agent.stub.Forget(pb.ForgetRequest(request_id=new_id(), project_id=project_id, **fields), timeout=30)


def snapshots(agent, project_id: str) -> list[pb.Snapshot]:
    return list(agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots)


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30)


def operations_of(agent, project_id: str) -> list[pb.Operation]:
    return list(agent.stub.ListOperations(pb.ListOperationsRequest(project_id=project_id), timeout=10).operations)


def conflict_fixture(root: Path) -> None:
    """The state a copy meets at its target: docs/ with an edited a.txt and an extra c.txt, an
    edited f.txt."""
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a at the target")
    (root / "docs" / "c.txt").write_text("only at the target")
    (root / "f.txt").write_text("f at the target")


def source_fixture(root: Path) -> None:
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a from the source")
    (root / "docs" / "b.txt").write_text("b from the source")
    (root / "docs" / "sub" / "d.txt").write_text("d from the source")
    (root / "f.txt").write_text("f from the source")


def check_policies(agent, run, source_home: Path, target_home: Path) -> None:
    """``run(source_path, target_path, policy)`` starts a restore or copy; every policy, onto a
    directory and onto a file, behaves as named."""
    # FAIL: refused when the request arrives, nothing changes; a free target is fine.
    conflict_fixture(target_home)
    before = manifest(target_home)
    for path in ("docs", "f.txt"):
        assert code_of(lambda: run(path, path, pb.FAIL)) == grpc.StatusCode.FAILED_PRECONDITION
    assert manifest(target_home) == before
    done = agent.wait(run("docs", "fresh/docs", pb.FAIL).id)
    assert done.state == pb.SUCCEEDED, done.error
    assert manifest(target_home / "fresh" / "docs") == manifest(source_home / "docs")

    # SKIP: a directory is merged (existing files keep their bytes, missing ones are added), a file kept.
    for path in ("docs", "f.txt"):
        done = agent.wait(run(path, path, pb.SKIP).id)
        assert done.state == pb.SUCCEEDED, done.error
    assert (target_home / "docs" / "a.txt").read_text() == "a at the target"
    assert (target_home / "docs" / "c.txt").read_text() == "only at the target"
    assert (target_home / "docs" / "b.txt").read_text() == "b from the source"
    assert (target_home / "docs" / "sub" / "d.txt").read_text() == "d from the source"
    assert (target_home / "f.txt").read_text() == "f at the target"

    # OVERWRITE (and unspecified, the same): what is at the target is replaced whole.
    for path, policy in (("docs", pb.OVERWRITE), ("f.txt", pb.CONFLICT_POLICY_UNSPECIFIED)):
        done = agent.wait(run(path, path, policy).id)
        assert done.state == pb.SUCCEEDED, done.error
    assert manifest(target_home / "docs") == manifest(source_home / "docs")  # c.txt is gone
    assert (target_home / "f.txt").read_text() == "f from the source"
    assert not list(target_home.rglob(".buckets-*")), "staging must be gone"


# ---------------------------------------------------------------- across hosts


def test_copy_building_blocks_across_two_hosts(two_hosts, tmp_path):
    host_a, host_b = two_hosts
    source, target = new_id(), new_id()
    ensure(host_a, source)
    ensure(host_b, target)
    write_tree(host_a.home(source) / "data", files=1000, size=256)
    (host_a.home(source) / "elsewhere.txt").write_text("not part of the copy")
    full = host_a.wait(host_a.backup(source).id)
    assert full.state == pb.SUCCEEDED, full.error
    backed_up = status(host_a, source)
    source_before = manifest(host_a.home(source))

    copy_id = f"copy-{uuid.uuid4().hex[:8]}"
    partial = host_a.wait(host_a.backup(source, subpath="data", purpose="copy", tags=[f"copy={copy_id}"]).id)
    assert partial.state == pb.SUCCEEDED, partial.error
    listed = snapshots(host_a, source)
    # restic 0.14 reports short ids in a backup's summary.
    full_id = next(s.id for s in listed if s.id.startswith(full.summary.snapshot_id))
    temporary = next(s.id for s in listed if s.id.startswith(partial.summary.snapshot_id))
    assert len(listed) == 2 and full_id != temporary
    tags = set(next(s for s in listed if s.id == temporary).tags)
    assert {"layout=v2", f"project={source}", "purpose=copy", f"copy={copy_id}", "scope=subpath"} <= tags
    # One path is not the whole project: the last backup is still the full one.
    after = status(host_a, source)
    assert after.last_backup == backed_up.last_backup
    assert after.last_backup_snapshot_id == full.summary.snapshot_id
    # ... and it is never restored as the whole project.
    whole = host_a.wait(host_a.restore(source, temporary).id)
    assert (whole.state, whole.error.code) == (pb.FAILED, "FAILED_PRECONDITION")
    assert code_of(lambda: host_b.restore(target, temporary, source_project_id=source)) == \
        grpc.StatusCode.FAILED_PRECONDITION  # a whole restore from another project never replaces a project
    clone = host_b.wait(host_b.restore(str(uuid.uuid4()), temporary, source_project_id=source).id)
    assert (clone.state, clone.error.code) == (pb.FAILED, "FAILED_PRECONDITION")  # nor clones a one-path snapshot

    restored = host_b.wait(host_b.restore(target, temporary, subpath="data", target_path="incoming/data",
                                          source_project_id=source, on_conflict=pb.FAIL).id)
    assert restored.state == pb.SUCCEEDED, restored.error
    assert manifest(host_b.home(target) / "incoming" / "data") == manifest(host_a.home(source) / "data")
    assert sorted(p.name for p in host_b.home(target).iterdir()) == ["incoming"]
    assert manifest(host_a.home(source)) == source_before

    # Forget exactly the temporary snapshot; checks first.
    assert code_of(lambda: forget(host_a, source, snapshot_ids=[temporary], keep_last=1)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    shared = pb.RepositorySpec(local=pb.LocalRepository(path=str(tmp_path / "shared-repos" / f"project-{source}")),
                               password="move-test-password")
    other = host_a.wait(forget(host_a, target, snapshot_ids=[temporary[:12]], repository=shared).id)
    assert (other.state, other.error.code) == (pb.FAILED, "FAILED_PRECONDITION")  # not the target's snapshot
    assert len(snapshots(host_a, source)) == 2
    missing = host_a.wait(forget(host_a, source, snapshot_ids=["deadbeefdeadbeef"]).id)
    assert (missing.state, missing.error.code) == (pb.FAILED, "NOT_FOUND")
    gone = host_a.wait(forget(host_a, source, snapshot_ids=[temporary[:12]]).id)
    assert gone.state == pb.SUCCEEDED, gone.error
    assert [s.id for s in snapshots(host_a, source)] == [full_id]
    assert manifest(host_a.home(source)) == source_before


def test_restore_of_a_path_by_each_conflict_policy(shared_agent, project_id):
    agent = shared_agent
    source = project_id
    ensure(agent, source)
    source_fixture(agent.home(source))
    snapshot = agent.wait(agent.backup(source).id).summary.snapshot_id
    target = new_id()
    ensure(agent, target)

    def run(path: str, target_path: str, policy) -> pb.Operation:
        return agent.restore(target, snapshot, subpath=path, target_path=target_path, source_project_id=source,
                             on_conflict=policy)

    check_policies(agent, run, agent.home(source), agent.home(target))


# ---------------------------------------------------------------- paths


BAD_PATHS = ["../x", "/etc", "a/../../x", "escape", "escape/inner", "up/x"]


def test_paths_leading_out_of_the_project_are_refused_before_any_work(shared_agent, project_id, tmp_path):
    """``escape`` is a symlink to a directory outside the project, ``up`` one to the projects root."""
    agent = shared_agent
    other = new_id()
    for project in (project_id, other):
        ensure(agent, project)
        (agent.home(project) / "a").mkdir()
        (agent.home(project) / "a" / "file.txt").write_text("inside")
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (agent.home(project_id) / "escape").symlink_to(outside)
    (agent.home(project_id) / "up").symlink_to("..")
    snapshot = agent.wait(agent.backup(project_id).id).summary.snapshot_id
    before = {p: manifest(agent.home(p)) for p in (project_id, other)}
    outside_before = manifest(outside)
    operations = {p: len(operations_of(agent, p)) for p in (project_id, other)}
    repository_snapshots = sorted((agent.repository(project_id) / "snapshots").iterdir())

    for bad in BAD_PATHS:
        calls = {
            "backup subpath": lambda: agent.backup(project_id, subpath=bad, purpose="copy"),
            "restore target_path": lambda: agent.restore(project_id, snapshot, subpath="a", target_path=bad),
            "restore target_path SKIP": lambda: agent.restore(project_id, snapshot, subpath="a", target_path=bad,
                                                              on_conflict=pb.SKIP),
            "copy source_path": lambda: copy_files(agent, project_id, bad, other, "a-copy"),
            "copy target_path": lambda: copy_files(agent, other, "a", project_id, bad, on_conflict=pb.SKIP),
        }
        for name, call in calls.items():
            assert code_of(call) == grpc.StatusCode.INVALID_ARGUMENT, (name, bad)
    assert {p: manifest(agent.home(p)) for p in (project_id, other)} == before
    assert manifest(outside) == outside_before
    assert {p: len(operations_of(agent, p)) for p in (project_id, other)} == operations
    assert sorted((agent.repository(project_id) / "snapshots").iterdir()) == repository_snapshots


# ---------------------------------------------------------------- CopyFiles on one host


def test_copy_files_on_one_host_by_each_conflict_policy(shared_agent, project_id):
    agent = shared_agent
    source, target = project_id, new_id()
    for project in (source, target):
        ensure(agent, project)
    source_fixture(agent.home(source))
    before = manifest(agent.home(source))

    def run(path: str, target_path: str, policy) -> pb.Operation:
        return copy_files(agent, source, path, target, target_path, on_conflict=policy)

    check_policies(agent, run, agent.home(source), agent.home(target))
    assert manifest(agent.home(source)) == before

    # Within one project, into another place of it; onto itself or into its own tree is refused.
    inside = agent.wait(copy_files(agent, source, "docs", source, "docs-copy").id)
    assert inside.state == pb.SUCCEEDED, inside.error
    assert manifest(agent.home(source) / "docs-copy") == manifest(agent.home(source) / "docs")
    for target_path in ("docs", "docs/sub/again"):
        assert code_of(lambda: copy_files(agent, source, "docs", source, target_path)) == \
            grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: copy_files(agent, source, "no/such", target, "x")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: copy_files(agent, source, "docs", new_id(), "x")) == grpc.StatusCode.NOT_FOUND


def test_copy_files_is_idempotent_by_request_id_and_refused_into_a_frozen_project(shared_agent, project_id):
    agent = shared_agent
    source, target = project_id, new_id()
    for project in (source, target):
        ensure(agent, project)
    write_tree(agent.home(source) / "data", files=20)

    request = new_id()
    first = copy_files(agent, source, "data", target, "data", on_conflict=pb.FAIL, request_id=request)
    done = agent.wait(first.id)
    assert done.state == pb.SUCCEEDED, done.error
    assert manifest(agent.home(target) / "data") == manifest(agent.home(source) / "data")
    # The same request again (the target exists now, on_conflict FAIL): the same operation.
    again = copy_files(agent, source, "data", target, "data", on_conflict=pb.FAIL, request_id=request)
    assert (again.id, again.joined, again.state) == (first.id, True, pb.SUCCEEDED)
    assert code_of(lambda: copy_files(agent, source, "data", target, "other", request_id=request)) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert done.kind == pb.OPERATION_KIND_COPY and done.project_id == target

    agent.stub.Freeze(pb.FreezeRequest(project_id=target), timeout=30)
    try:
        before = manifest(agent.home(target))
        frozen = agent.wait(copy_files(agent, source, "data", target, "more").id)
        assert (frozen.state, frozen.error.code) == (pb.FAILED, "FAILED_PRECONDITION")
        assert manifest(agent.home(target)) == before
    finally:
        agent.stub.Thaw(pb.ThawRequest(project_id=target), timeout=30)


def test_a_copy_and_writers_of_its_source_exclude_each_other(agent_factory, project_id):
    """A copy waiting for a slot (behind a slow backup) keeps its source from being restored or
    deleted and its target from being frozen; a running restore of a source keeps copies off it."""
    agent = agent_factory(limits="max_concurrent_operations = 1\n" + SLOW)
    blocker_project = new_id()
    big_project(agent, blocker_project, megabytes=2)
    source, target = project_id, new_id()
    for project in (source, target):
        ensure(agent, project)
    (agent.home(source) / "x.txt").write_text("to copy")
    snapshot = agent.wait(agent.backup(source).id).summary.snapshot_id

    blocker = agent.backup(blocker_project)
    copy = copy_files(agent, source, "x.txt", target, "x.txt")
    assert code_of(lambda: agent.restore(source, snapshot)) == grpc.StatusCode.ABORTED
    assert code_of(lambda: agent.stub.DeleteProject(
        pb.DeleteProjectRequest(request_id=new_id(), project_id=source), timeout=30)) == grpc.StatusCode.ABORTED
    assert code_of(lambda: agent.stub.Freeze(pb.FreezeRequest(project_id=target), timeout=30)) == \
        grpc.StatusCode.ABORTED
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=blocker.id), timeout=30)
    assert agent.wait(copy.id).state == pb.SUCCEEDED
    assert (agent.home(target) / "x.txt").read_text() == "to copy"

    blocker = agent.backup(blocker_project, force=True)
    restore = agent.restore(source, snapshot)
    assert code_of(lambda: copy_files(agent, source, "x.txt", target, "y.txt")) == grpc.StatusCode.ABORTED
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=blocker.id), timeout=30)
    assert agent.wait(restore.id).state == pb.SUCCEEDED


# ---------------------------------------------------------------- btrfs


def physical_extents(path: Path) -> list[str]:
    """The physical offsets of a file's extents (``filefrag -v``)."""
    out = subprocess.run(["filefrag", "-v", str(path)], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.replace(":", " ").replace("..", " ").split()
        if fields and fields[0].isdigit() and len(fields) >= 5:
            found.append(fields[3])
    return found


def test_copy_files_on_btrfs_shares_extents_and_a_subpath_backup_leaves_freshness_alone(
    agent_factory, btrfs_fs, project_id
):
    base = btrfs_fs.mountpoint / f"agent-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(base.name, backend="btrfs", base=base)
    source, target = project_id, new_id()
    for project in (source, target):
        ensure(agent, project)
    source_fixture(agent.home(source))
    big = agent.home(source) / "docs" / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024))
    os.sync()

    def run(path: str, target_path: str, policy) -> pb.Operation:
        return copy_files(agent, source, path, target, target_path, on_conflict=policy)

    check_policies(agent, run, agent.home(source), agent.home(target))
    os.sync()
    copied = agent.home(target) / "docs" / "big.bin"
    assert copied.read_bytes() == big.read_bytes()
    assert physical_extents(copied) and physical_extents(copied) == physical_extents(big), "a reflink copy"
    assert not list((agent.projects_root / ".snapshots").iterdir()), "the read-only snapshot is removed"

    # A subpath backup right after a full one, nothing changed in between (so a full backup would
    # be UP_TO_DATE by the generations): it runs all the same, and is not the last backup.
    full = agent.wait(agent.backup(source).id)
    assert full.state == pb.SUCCEEDED, full.error
    partial = agent.wait(agent.backup(source, subpath="docs", purpose="copy").id)
    assert partial.state == pb.SUCCEEDED, partial.error
    assert partial.summary.snapshot_id != full.summary.snapshot_id
    assert status(agent, source).last_backup_snapshot_id == full.summary.snapshot_id
    assert not list((agent.projects_root / ".snapshots").iterdir())


def test_check_copy_target_answers_without_changing_anything(shared_agent, project_id, tmp_path):
    agent = shared_agent
    ensure(agent, project_id)
    home = agent.home(project_id)
    (home / "present").write_text("x\n")
    (home / "out").symlink_to(tmp_path)
    before = sorted(os.listdir(home))

    def check(path: str, policy=pb.CONFLICT_POLICY_UNSPECIFIED, project: str = project_id):
        return agent.stub.CheckCopyTarget(
            pb.CheckCopyTargetRequest(project_id=project, target_path=path, on_conflict=policy), timeout=10)

    assert check("present").exists and check("present", pb.SKIP).exists
    assert not check("new/deeper/path", pb.FAIL).exists
    assert code_of(lambda: check("present", pb.FAIL)) == grpc.StatusCode.FAILED_PRECONDITION
    for bad in ("out/x", "out", "../x", "/etc", ""):
        assert code_of(lambda: check(bad)) == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert code_of(lambda: check("x", project=str(uuid.uuid4()))) == grpc.StatusCode.NOT_FOUND
    assert sorted(os.listdir(home)) == before and os.listdir(tmp_path) == []
