"""What a move between two hosts needs from the agents, through real agent processes: Freeze
writing the move sentinel, Verify SENTINEL on the live tree, and EnsureProject of an exact
snapshot on a second agent sharing the first one's repository. The directory backend always;
btrfs where a loop device can be made."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import manifest, new_id, write_tree
from tests.integration.test_freshness_and_ensure import restic_restores

pytestmark = requires_restic

MOVE_TOKEN = "buckets move 5f0c7d8e: frozen on host-a for host-b"


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def ensure(agent, project_id: str, mode=pb.EnsureProjectRequest.NONE, snapshot_id: str = "",
           request_id: str | None = None) -> pb.Operation:
    return agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=request_id or new_id(), project_id=project_id, mode=mode,
                                snapshot_id=snapshot_id),
        timeout=30,
    )


def ensured(agent, project_id: str) -> None:
    final = agent.wait(ensure(agent, project_id).id)
    assert final.state == pb.SUCCEEDED, final.error


def freeze(agent, project_id: str, path: str = "", content: str = "") -> pb.FreezeResponse:
    return agent.stub.Freeze(
        pb.FreezeRequest(project_id=project_id, sentinel_path=path, sentinel_content=content), timeout=30
    )


def is_frozen(agent, project_id: str) -> bool:
    """Whether the project is frozen, from the ground truth: a new file in the home or the
    persist location is refused (EROFS); the agent's own status must agree."""
    refused = []
    for tree in (agent.home(project_id), agent.persist(project_id)):
        probe = tree / f".probe-{uuid.uuid4().hex}"
        try:
            probe.write_text("probe")
        except OSError as exc:
            assert exc.errno == errno.EROFS, exc
            refused.append(True)
        else:
            probe.unlink()
            refused.append(False)
    assert refused[0] == refused[1], f"home refused writes: {refused[0]}, persist: {refused[1]}"
    reported = agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30).frozen
    assert reported == refused[0], f"status says frozen={reported}, a write was refused={refused[0]}"
    return refused[0]


def verify_sentinel(agent, project_id: str, path: str, content: str) -> pb.Operation:
    return agent.verify(project_id, mode=pb.VerifyRequest.SENTINEL, sentinel_path=path, sentinel_content=content)


def live_path(agent, project_id: str, path: str) -> Path:
    root, _, rest = path.partition("/")
    return (agent.home(project_id) if root == "project" else agent.persist(project_id)) / rest


def trees(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


# ---------------------------------------------------------------- Freeze with a sentinel


@pytest.mark.parametrize("path", ["persist/.buckets/moves/sentinel", "project/.buckets-move/sentinel"])
def test_freeze_writes_the_sentinel_then_freezes_and_a_resumed_freeze_must_match(agent_factory, project_id, path):
    agent = agent_factory("freeze")
    ensured(agent, project_id)
    write_tree(agent.home(project_id), files=5)
    target = live_path(agent, project_id, path)
    assert not target.exists() and not target.parent.exists()

    freeze(agent, project_id, path, MOVE_TOKEN)
    assert target.read_text() == MOVE_TOKEN
    assert is_frozen(agent, project_id)
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == [], "no temporary file may stay"

    freeze(agent, project_id, path, MOVE_TOKEN)  # a resumed move: same sentinel, OK
    assert is_frozen(agent, project_id)
    code, details = code_of(lambda: freeze(agent, project_id, path, "buckets move another one"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "frozen and its sentinel differs" in details and "buckets move another one" not in details
    assert target.read_text() == MOVE_TOKEN and is_frozen(agent, project_id)

    agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=10)
    assert not is_frozen(agent, project_id)
    freeze(agent, project_id, path, "buckets move another one")  # thawed: a new move may freeze it
    assert target.read_text() == "buckets move another one" and is_frozen(agent, project_id)


def test_bad_sentinel_paths_are_invalid_argument_and_write_nothing(agent_factory, project_id, tmp_path):
    agent = agent_factory("bad-sentinel")
    ensured(agent, project_id)
    write_tree(agent.home(project_id), files=5)
    outside = tmp_path / "outside"
    outside.mkdir()
    (agent.persist(project_id) / "escape").symlink_to(outside)
    before = trees(agent, project_id)
    etc_x_existed = Path("/etc/x").exists()

    for path, content in [
        ("../x", "c"), ("/etc/x", "c"), ("persist/../../x", "c"), ("other/x", "c"), ("persist/escape/x", "c"),
        ("persist/escape/deeper/x", "c"), ("persist", "c"), ("", "content without a path"),
        ("persist/ok", "x" * 4097),
    ]:
        code, details = code_of(lambda: freeze(agent, project_id, path, content))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, details)
    assert list(outside.iterdir()) == []
    assert not (agent.projects_root / "x").exists() and not (agent.base / "x").exists()
    assert Path("/etc/x").exists() == etc_x_existed
    assert trees(agent, project_id) == before
    assert not is_frozen(agent, project_id), "a refused Freeze must not freeze"

    code, _ = code_of(lambda: freeze(agent, str(uuid.uuid4()), "persist/s", "c"))
    assert code == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- Verify SENTINEL


def test_verify_sentinel_matches_or_fails_with_data_loss(agent_factory, project_id):
    agent = agent_factory("verify-sentinel")
    ensured(agent, project_id)
    path = "persist/.buckets/sentinel"
    (agent.persist(project_id) / "escape").symlink_to(agent.base)  # before the tree is read-only
    freeze(agent, project_id, path, MOVE_TOKEN)
    assert is_frozen(agent, project_id)

    matching = agent.wait(verify_sentinel(agent, project_id, path, MOVE_TOKEN).id)
    assert matching.state == pb.SUCCEEDED, matching.error
    assert matching.kind == pb.OPERATION_KIND_VERIFY
    messages = [u.event.message for u in agent.events(matching.id) if u.HasField("event")]
    assert any("matches" in m for m in messages), messages

    missing = agent.wait(verify_sentinel(agent, project_id, "persist/.buckets/other", MOVE_TOKEN).id)
    assert (missing.state, missing.error.code) == (pb.FAILED, "DATA_LOSS")
    assert "persist/.buckets/other" in missing.error.message and "missing" in missing.error.message

    long_expected = "expected " * 100
    differs = agent.wait(verify_sentinel(agent, project_id, path, long_expected).id)
    assert (differs.state, differs.error.code) == (pb.FAILED, "DATA_LOSS")
    assert path in differs.error.message and "differs" in differs.error.message
    assert long_expected not in differs.error.message and MOVE_TOKEN not in differs.error.message

    absent = agent.wait(verify_sentinel(agent, str(uuid.uuid4()), path, MOVE_TOKEN).id)
    assert (absent.state, absent.error.code) == (pb.FAILED, "NOT_FOUND")

    for bad_path in ("", "../x", "other/x"):
        code, _ = code_of(lambda: verify_sentinel(agent, project_id, bad_path, MOVE_TOKEN))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad_path
    code, _ = code_of(lambda: verify_sentinel(agent, project_id, "persist/escape/agent.toml", ""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: agent.verify(project_id, mode=pb.VerifyRequest.SNAPSHOT_TREE))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # no snapshot_id (test_verify_tree.py has the mode)


# ---------------------------------------------------------------- EnsureProject of an exact snapshot


def shared_repository(tmp_path: Path) -> str:
    """Config for agents that share one local repository root and password (as hosts of one
    region share a bucket)."""
    shared = tmp_path / "shared-repository"
    return (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{shared / "repos"}"\n'
            f'password_file = "{shared / "repository.password"}"\n')


def restic_backup_without_layout(agent, project_id: str, tmp_path: Path) -> str:
    """A snapshot of the project's host name without layout-v2 tags, written by restic itself."""
    source = tmp_path / "not-v2"
    source.mkdir()
    (source / "file").write_text("not a layout v2 snapshot")
    env = {"PATH": os.environ["PATH"],
           "RESTIC_PASSWORD_FILE": str(tmp_path / "shared-repository" / "repository.password")}
    out = subprocess.run(
        ["restic", "-r", str(tmp_path / "shared-repository" / "repos" / f"project-{project_id}"), "--no-cache",
         "backup", "--host", f"project-{project_id}", "--json", "."],
        cwd=source, env=env, check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]["snapshot_id"]


def full_id(agent, project_id: str, short_id: str) -> str:
    """The full id of a snapshot (restic 0.14's backup summary holds the short one)."""
    snapshots = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots
    (found,) = [s.id for s in snapshots if s.id.startswith(short_id)]
    assert len(found) == 64
    return found


def test_ensure_restores_exactly_the_older_snapshot_on_a_second_host(agent_factory, project_id, tmp_path):
    extra = shared_repository(tmp_path)
    source = agent_factory("host-a", extra=extra, host_id="host-a")
    target = agent_factory("host-b", extra=extra, host_id="host-b")
    required = pb.EnsureProjectRequest.REQUIRED

    ensured(source, project_id)
    write_tree(source.home(project_id), files=15, seed=1)
    (source.persist(project_id) / "state.db").write_text("older")
    older = source.wait(source.backup(project_id).id)
    assert older.state == pb.SUCCEEDED, older.error
    expected = trees(source, project_id)
    write_tree(source.home(project_id), files=25, seed=2)
    (source.persist(project_id) / "state.db").write_text("newest")
    newest = source.wait(source.backup(project_id).id)
    assert newest.state == pb.SUCCEEDED and newest.summary.snapshot_id != older.summary.snapshot_id
    older_id, newest_id = (full_id(source, project_id, op.summary.snapshot_id) for op in (older, newest))

    # Refused at request time.
    code, _ = code_of(lambda: ensure(target, project_id, pb.EnsureProjectRequest.NONE, older_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: ensure(target, project_id, required, "latest"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    # Unknown and non-layout-v2 snapshots fail the operation, and create nothing.
    unknown = target.wait(ensure(target, project_id, required, "0123abcd" * 8).id)
    assert (unknown.state, unknown.error.code) == (pb.FAILED, "NOT_FOUND"), unknown.error
    not_v2 = target.wait(ensure(target, project_id, required,
                                restic_backup_without_layout(target, project_id, tmp_path)).id)
    assert (not_v2.state, not_v2.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), not_v2.error
    assert not target.home(project_id).exists()

    # The older snapshot by a prefix: exactly its trees, not the newest; the full id in summary and receipt.
    restores = restic_restores(target)
    first = target.wait(ensure(target, project_id, required, older_id[:12]).id)
    assert first.state == pb.SUCCEEDED, first.error
    assert first.summary.snapshot_id == older_id
    assert trees(target, project_id) == expected
    assert (target.persist(project_id) / "state.db").read_text() == "older"
    assert restic_restores(target) == restores + 1
    receipt = target.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30).last_restore
    assert (receipt.snapshot_id, receipt.operation_id) == (older_id, first.id)
    listed = {s.id: s for s in target.stub.ListSnapshots(
        pb.ListSnapshotsRequest(project_id=project_id), timeout=30).snapshots}
    assert listed[older_id].source_host_id == "host-a"
    assert restic_restores(source) == 0, "the source host restores nothing"

    # Asked again (a resumed move, a new request id): nothing is touched.
    again = target.wait(ensure(target, project_id, required, older_id).id)
    assert again.state == pb.SUCCEEDED and again.summary.snapshot_id == older_id
    assert trees(target, project_id) == expected and restic_restores(target) == restores + 1

    # Files that came from elsewhere are never replaced by another snapshot.
    (target.home(project_id) / "local-only.txt").write_text("written on host-b")
    kept = trees(target, project_id)
    other = target.wait(ensure(target, project_id, required, newest_id).id)
    assert (other.state, other.error.code) == (pb.FAILED, "FAILED_PRECONDITION")
    assert "already has files" in other.error.message
    assert trees(target, project_id) == kept and restic_restores(target) == restores + 1


def test_a_running_ensure_is_joined_only_by_the_same_snapshot(agent_factory, project_id, tmp_path):
    extra = shared_repository(tmp_path)
    source = agent_factory("host-a", extra=extra, host_id="host-a")
    target = agent_factory("host-b", extra=extra, host_id="host-b")
    ensured(source, project_id)
    write_tree(source.home(project_id), files=200, seed=3, size=64 * 1024)
    first_backup = source.wait(source.backup(project_id).id)
    (source.home(project_id) / "later.txt").write_text("later")
    second_backup = source.wait(source.backup(project_id).id)
    assert first_backup.state == second_backup.state == pb.SUCCEEDED
    required = pb.EnsureProjectRequest.REQUIRED

    running = ensure(target, project_id, required, first_backup.summary.snapshot_id)
    code, details = code_of(lambda: ensure(target, project_id, required, second_backup.summary.snapshot_id))
    assert code == grpc.StatusCode.ABORTED and running.id in details
    joined = ensure(target, project_id, required, first_backup.summary.snapshot_id)
    assert joined.id == running.id and joined.joined
    final = target.wait(running.id)
    assert final.state == pb.SUCCEEDED, final.error
    assert final.summary.snapshot_id == full_id(source, project_id, first_backup.summary.snapshot_id)
    assert not (target.home(project_id) / "later.txt").exists()


# ---------------------------------------------------------------- btrfs


def test_btrfs_freeze_with_a_sentinel_makes_both_trees_read_only_and_verify_reads_it(
    agent_factory, btrfs_fs, project_id
):
    base = btrfs_fs.mountpoint / f"move-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(base.name, backend="btrfs", base=base)
    ensured(agent, project_id)
    write_tree(agent.home(project_id), files=5)
    path = "persist/.buckets/sentinel"

    freeze(agent, project_id, path, MOVE_TOKEN)
    assert live_path(agent, project_id, path).read_text() == MOVE_TOKEN
    for target in (agent.home(project_id) / "new.txt", agent.persist(project_id) / "new.txt"):
        with pytest.raises(OSError) as info:
            target.write_text("after the freeze")
        assert info.value.errno == errno.EROFS
    freeze(agent, project_id, path, MOVE_TOKEN)  # resumed: reads the read-only tree
    assert is_frozen(agent, project_id)
    code, _ = code_of(lambda: freeze(agent, project_id, path, "another move"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    verified = agent.wait(verify_sentinel(agent, project_id, path, MOVE_TOKEN).id)
    assert verified.state == pb.SUCCEEDED, verified.error
    agent.stub.Thaw(pb.ThawRequest(project_id=project_id), timeout=10)
    (agent.home(project_id) / "new.txt").write_text("after the thaw")
