"""The agent side of a move's pre-copy (issue 18) on real agents and real engines: PreCopy
restores a snapshot into a staging kept for the move; EnsureProject with the same precopy_key
brings it to the catch-up snapshot, reading only what differs, and places it.

Two agents per engine (a source that backs up, a target that pre-copies), sharing one local
repository root as hosts of a region share a bucket; lean trees. Outcomes are checked against
ground truth: the source tree that was backed up (a full manifest with content hashes), the
staged and placed trees on disk, the engine runs the agent logged, the inodes of files a
catch-up must not rewrite."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import grpc
import psutil
import pytest

from agent import catch_up
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.engines import ENGINES, EngineUnderTest, engine_ids
from tests.harness import AgentProcess, catch_engine, manifest, new_id

UNCHANGED_FILES = 16
FILE_SIZE = 64 * 1024
KEY = "move-1:round.a_b"
# The module's engine fixture narrowed to rustic for a test (no skip reported for the others).
ONLY_RUSTIC = pytest.mark.parametrize("engine", [ENGINES[0]], ids=[ENGINES[0].id], indirect=True)


@pytest.fixture(scope="module", params=ENGINES, ids=engine_ids())
def engine(request) -> EngineUnderTest:
    return request.param


@pytest.fixture(scope="module")
def hosts(engine: EngineUnderTest, tmp_path_factory):
    """(source, target) agents of ``engine`` sharing a repository root and password."""
    base = tmp_path_factory.mktemp(f"precopy-{engine.id}")
    password_file = base / "repo.password"
    password_file.write_text("precopy-test-password\n")
    password_file.chmod(0o600)
    extra = (engine.engine_lines() + f'[repository]\nkind = "local"\n[repository.local]\n'
             f'root = "{base / "shared-repos"}"\npassword_file = "{password_file}"\n')
    agents = [AgentProcess(base=base / name, extra=extra, engine=engine.driver, host_id=name)
              for name in ("source", "target")]
    try:
        for agent in agents:
            agent.start()
        yield tuple(agents)
    finally:
        for agent in agents:
            agent.stop()
            agent.kill()


def first_tree(home: Path, persist: Path) -> None:
    """Files that stay, and one of each kind that will change."""
    rng = random.Random(7)
    (home / "big").mkdir(parents=True)
    for index in range(UNCHANGED_FILES):
        (home / "big" / f"f{index:02d}.dat").write_bytes(rng.randbytes(FILE_SIZE))
    (home / "gone.txt").write_text("deleted later\n")
    (home / "old-name.txt").write_text("renamed later\n")
    (home / "mode.sh").write_text("#!/bin/sh\n")
    (home / "mode.sh").chmod(0o644)
    (home / "content.txt").write_text("version 1\n")
    (home / "becomes-link.txt").write_text("a file, then a symlink\n")
    (home / "becomes-file").mkdir()
    (home / "becomes-file" / "inside.txt").write_text("a directory, then a file\n")
    persist.mkdir(parents=True, exist_ok=True)
    (persist / "state.db").write_bytes(rng.randbytes(4096))


def change_tree(home: Path, persist: Path) -> None:
    (home / "gone.txt").unlink()
    (home / "old-name.txt").rename(home / "new-name.txt")
    (home / "mode.sh").chmod(0o755)
    (home / "content.txt").write_text("version 2, longer\n")
    (home / "becomes-link.txt").unlink()
    (home / "becomes-link.txt").symlink_to("big/f00.dat")
    shutil.rmtree(home / "becomes-file")
    (home / "becomes-file").write_text("now a file\n")
    (persist / "state.db").write_bytes(b"rewritten\n")


def ensure(agent: AgentProcess, project_id: str, **fields) -> pb.Operation:
    fields.setdefault("mode", pb.EnsureProjectRequest.AUTO)
    operation = agent.stub.EnsureProject(pb.EnsureProjectRequest(
        request_id=new_id(), project_id=project_id, **fields), timeout=30)
    return agent.wait(operation.id)


def precopy(agent: AgentProcess, project_id: str, snapshot_id: str, key: str = KEY, wait: bool = True,
            request_id: str | None = None) -> pb.Operation:
    operation = agent.stub.PreCopy(pb.PreCopyRequest(
        request_id=request_id or new_id(), project_id=project_id, snapshot_id=snapshot_id, key=key), timeout=30)
    return agent.wait(operation.id) if wait else operation


def backup(agent: AgentProcess, project_id: str) -> str:
    done = agent.wait(agent.backup(project_id).id)
    assert done.state == pb.SUCCEEDED, done.error
    return done.summary.snapshot_id


def staged(agent: AgentProcess, project_id: str, key: str = KEY) -> tuple[Path, Path]:
    name = f"precopy-{project_id}-{key}"
    return agent.projects_root / ".staging" / name / "project", agent.persist_root / ".staging" / name / "persist"


def source_project(source: AgentProcess) -> str:
    project_id = new_id()
    done = ensure(source, project_id, mode=pb.EnsureProjectRequest.NONE)
    assert done.state == pb.SUCCEEDED, done.error
    first_tree(source.home(project_id), source.persist(project_id))
    return project_id


def expected_mode(agent: AgentProcess, *, base: str | None) -> str:
    """The restore mode the agent's engine allows over a pre-copy holding ``base`` whole (None:
    an unfinished one), as agent/catch_up.py decides it from the engine's features."""
    features = frozenset(agent.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10).features)
    return "incremental" if catch_up.way_for(features, base_snapshot_id=base) else "whole"


def engine_runs(agent: AgentProcess) -> int:
    return len(agent.started_argvs())


def test_precopy_then_ensure_places_the_catch_up_snapshot_reading_only_the_difference(hosts, engine) -> None:
    source, target = hosts
    project_id = source_project(source)
    first = backup(source, project_id)
    bulk = (manifest(source.home(project_id)), manifest(source.persist(project_id)))

    done = precopy(target, project_id, first[:12])
    assert done.state == pb.SUCCEEDED, done.error
    assert done.kind == pb.OPERATION_KIND_PRECOPY
    assert done.summary.snapshot_id == first and len(first) == 64
    assert done.summary.restore_mode == "whole"
    assert not target.home(project_id).exists() and not target.persist(project_id).exists()
    staged_home, staged_persist = staged(target, project_id)
    assert (manifest(staged_home), manifest(staged_persist)) == bulk

    # The same pre-copy again (a resumed move): UP_TO_DATE, no engine run.
    runs = engine_runs(target)
    again = precopy(target, project_id, first)
    assert again.state == pb.UP_TO_DATE and again.summary.snapshot_id == first
    assert engine_runs(target) == runs

    # A second pre-copy round: the bulk changed in every way a project changes.
    change_tree(source.home(project_id), source.persist(project_id))
    second = backup(source, project_id)
    kept_inode = (staged_home / "big" / "f05.dat").stat().st_ino
    round_two = precopy(target, project_id, second)
    assert round_two.state == pb.SUCCEEDED, round_two.error
    assert round_two.summary.snapshot_id == second
    assert (manifest(staged_home), manifest(staged_persist)) == trees(source, project_id)
    incremental = expected_mode(target, base=first) == "incremental"
    assert round_two.summary.restore_mode == ("incremental" if incremental else "whole")
    if incremental:  # unchanged files were not written again
        assert (staged_home / "big" / "f05.dat").stat().st_ino == kept_inode
        assert 0 < round_two.summary.files_fetched < UNCHANGED_FILES
        assert round_two.summary.files_deleted > 0

    # The catch-up after the freeze: a small change more.
    (source.home(project_id) / "content.txt").write_text("version 3, after the bulk\n")
    (source.home(project_id) / "added.txt").write_text("new before the freeze\n")
    (source.home(project_id) / "new-name.txt").unlink()
    third = backup(source, project_id)
    caught_up = trees(source, project_id)
    kept_inode = (staged_home / "big" / "f05.dat").stat().st_ino
    placed = ensure(target, project_id, snapshot_id=third, precopy_key=KEY)
    assert placed.state == pb.SUCCEEDED, placed.error
    assert placed.summary.snapshot_id == third
    assert trees(target, project_id) == caught_up
    assert placed.summary.restore_mode == ("incremental" if incremental else "whole")
    if incremental:
        # Unchanged files were not written again: the placed file is the pre-copied one.
        assert (target.home(project_id) / "big" / "f05.dat").stat().st_ino == kept_inode
        assert 0 < placed.summary.files_fetched <= 8 and placed.summary.files_deleted >= 1
        assert placed.summary.bytes_fetched < FILE_SIZE  # rustic reports no bytes: 0
    # Used up: the staging goes, the receipt names the snapshot, the same request again is in place.
    assert target.staging_after_cleanup() == []
    status = target.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert status.present and status.last_restore.snapshot_id == third
    again = ensure(target, project_id, snapshot_id=third, precopy_key=KEY)
    assert again.state == pb.SUCCEEDED and again.summary.snapshot_id == third


def operation_error(agent: AgentProcess, call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


# The request checks do not depend on the engine: on the production engine only.
@ONLY_RUSTIC
def test_precopy_refusals_create_nothing(hosts, engine) -> None:
    source, target = hosts
    project_id = source_project(source)
    first = backup(source, project_id)
    before = (source.staging_left(), target.staging_left())

    def call(agent, **fields):
        request = {"request_id": new_id(), "project_id": project_id, "snapshot_id": first, "key": KEY, **fields}
        return lambda: agent.stub.PreCopy(pb.PreCopyRequest(**request), timeout=10)

    # Present on the host (it has a home): FAILED_PRECONDITION.
    assert operation_error(source, call(source)) == grpc.StatusCode.FAILED_PRECONDITION
    for bad in ("", "a/b", "..x/", "x" * 65, "sp ace", "ключ"):
        assert operation_error(target, call(target, key=bad)) == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert operation_error(target, call(target, snapshot_id="latest")) == grpc.StatusCode.INVALID_ARGUMENT
    assert operation_error(target, call(target, snapshot_id="")) == grpc.StatusCode.INVALID_ARGUMENT
    ensure_without_snapshot = lambda: target.stub.EnsureProject(pb.EnsureProjectRequest(  # noqa: E731
        request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.AUTO, precopy_key=KEY), timeout=10)
    assert operation_error(target, ensure_without_snapshot) == grpc.StatusCode.INVALID_ARGUMENT
    bad_key_ensure = lambda: target.stub.EnsureProject(pb.EnsureProjectRequest(  # noqa: E731
        request_id=new_id(), project_id=project_id, mode=pb.EnsureProjectRequest.AUTO, snapshot_id=first,
        precopy_key="no/slash"), timeout=10)
    assert operation_error(target, bad_key_ensure) == grpc.StatusCode.INVALID_ARGUMENT
    # A snapshot that is not there: the operation fails NOT_FOUND and leaves nothing.
    missing = precopy(target, project_id, "0123456789abcdef")
    assert missing.state == pb.FAILED and missing.error.code == "NOT_FOUND"
    # Not a whole layout-v2 snapshot of the project: one of another project, one of a path only.
    other = source_project(source)
    other_snapshot = backup(source, other)
    # A full id not in the project's repository: NOT_FOUND (rustic reads snapshots/<id> directly).
    elsewhere = precopy(target, project_id, other_snapshot)
    assert elsewhere.state == pb.FAILED and elsewhere.error.code == "NOT_FOUND", elsewhere.error
    other_repository = target.base.parent / "shared-repos" / f"project-{other}"
    spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(other_repository)), password="precopy-test-password")
    foreign = target.wait(target.stub.PreCopy(pb.PreCopyRequest(
        request_id=new_id(), project_id=project_id, snapshot_id=other_snapshot, key=KEY, repository=spec),
        timeout=10).id)
    assert foreign.state == pb.FAILED and foreign.error.code == "FAILED_PRECONDITION", foreign.error
    part = source.wait(source.backup(project_id, subpath="big").id)
    assert part.state == pb.SUCCEEDED, part.error
    partial = precopy(target, project_id, part.summary.snapshot_id)
    assert partial.state == pb.FAILED and partial.error.code == "FAILED_PRECONDITION", partial.error
    assert (source.staging_left(), target.staging_left()) == before
    assert not target.home(project_id).exists()
    caps = target.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    assert "precopy" in caps.features


# The life cycle does not depend on the engine (continuing a pre-copy does: below).
@ONLY_RUSTIC
def test_precopy_lifecycle_restart_replace_delete(hosts, engine) -> None:
    """A complete pre-copy survives an agent restart (start-up's stale staging removal keeps it);
    one under another key replaces it; DeleteProject removes it though the project has no home."""
    source, target = hosts
    project_id = source_project(source)
    first = backup(source, project_id)
    assert precopy(target, project_id, first).state == pb.SUCCEEDED
    staged_home, _ = staged(target, project_id)
    tree = manifest(staged_home)

    target.stop()
    target.start()
    assert manifest(staged_home) == tree
    runs = engine_runs(target)
    assert precopy(target, project_id, first).state == pb.UP_TO_DATE
    assert engine_runs(target) == runs

    other = precopy(target, project_id, first, key="move-2")
    assert other.state == pb.SUCCEEDED, other.error
    assert not staged_home.exists()
    assert manifest(staged(target, project_id, "move-2")[0]) == tree
    deleted = target.wait(target.stub.DeleteProject(pb.DeleteProjectRequest(
        request_id=new_id(), project_id=project_id), timeout=10).id)
    assert deleted.state == pb.SUCCEEDED, deleted.error
    assert target.staging_after_cleanup() == []
    assert not target.home(project_id).exists()

    # EnsureProject under a key without a pre-copy restores whole; one under another key is of
    # no use once the project is here: it goes too.
    assert precopy(target, project_id, first, key="move-3").state == pb.SUCCEEDED
    placed = ensure(target, project_id, snapshot_id=first, precopy_key=KEY)
    assert placed.state == pb.SUCCEEDED, placed.error
    assert placed.summary.restore_mode == "whole" and placed.summary.snapshot_id == first
    assert manifest(target.home(project_id)) == tree
    assert target.staging_after_cleanup() == []


BIG_FILES = 40
BIG_SIZE = 160 * 1024


def big_project(source: AgentProcess) -> str:
    """A project large enough for an engine's restore to be caught mid-run (about 6 MiB)."""
    project_id = source_project(source)
    rng = random.Random(11)
    (source.home(project_id) / "bulk").mkdir()
    for index in range(BIG_FILES):
        (source.home(project_id) / "bulk" / f"b{index:02d}.dat").write_bytes(rng.randbytes(BIG_SIZE))
    return project_id


def trees(agent: AgentProcess, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def kill_with_child(agent: AgentProcess, child) -> None:
    """SIGKILL the agent and the engine child it was caught running (stopped by catch_engine)."""
    agent.kill()
    try:
        child.kill()
    except psutil.NoSuchProcess:
        pass


# Stopping an engine on cancel is the executor's, tested per engine elsewhere.
@ONLY_RUSTIC
def test_cancelled_precopy_leaves_no_staging(hosts, engine) -> None:
    source, target = hosts
    project_id = big_project(source)
    first = backup(source, project_id)
    operation, child = precopy_caught(target, project_id, first, moved_first=BIG_SIZE * 4)
    target.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation.id), timeout=10)
    child.resume()
    done = target.wait(operation.id)
    assert done.state == pb.CANCELLED
    assert target.staging_after_cleanup() == []
    # Nothing of it is used later: the next PreCopy restores whole.
    again = precopy(target, project_id, first)
    assert again.state == pb.SUCCEEDED and again.summary.restore_mode == "whole"
    target.wait(target.stub.DeleteProject(pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id),
                                          timeout=10).id)


def precopy_caught(target: AgentProcess, project_id: str, snapshot_id: str, *, moved_first: int,
                   tries: int = 3) -> tuple[pb.Operation, psutil.Process]:
    """A PreCopy whose engine is caught mid-restore (stopped): on a loaded machine a restore may
    end before the catch sees it move data, and then the pre-copy is discarded and made again."""
    for _ in range(tries):
        operation = precopy(target, project_id, snapshot_id, wait=False)
        try:
            return operation, catch_engine(target, "restore", moved_first=moved_first, timeout=30)
        except AssertionError:
            target.wait(operation.id)
            target.wait(target.stub.DeleteProject(
                pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id), timeout=10).id)
    raise AssertionError(f"the pre-copy's restore was not caught mid-run in {tries} tries")


def test_killed_precopy_is_continued_then_killed_catch_up_is_continued(hosts, engine) -> None:
    source, target = hosts
    project_id = big_project(source)
    first = backup(source, project_id)
    bulk = trees(source, project_id)

    operation, child = precopy_caught(target, project_id, first, moved_first=BIG_SIZE * BIG_FILES // 4)
    kill_with_child(target, child)
    staged_home, staged_persist = staged(target, project_id)
    # What the killed run had written whole (on a fast run that may be every file's content,
    # the restore still unfinished: the operation below was INTERRUPTED, never SUCCEEDED).
    partial = {path.name: path.stat().st_ino for path in (staged_home / "bulk").iterdir()
               if path.read_bytes() == (source.home(project_id) / "bulk" / path.name).read_bytes()}
    target.start()
    assert target.wait(operation.id).state == pb.INTERRUPTED

    resumed = precopy(target, project_id, first)
    assert resumed.state == pb.SUCCEEDED, resumed.error
    assert (manifest(staged_home), manifest(staged_persist)) == bulk
    if expected_mode(target, base=None) == "whole":  # restic 0.14 cannot continue a restore: whole, exact
        assert resumed.summary.restore_mode == "whole"
    else:
        assert resumed.summary.restore_mode == "incremental"
        # Continued, not restarted: what the killed run had written whole stayed in place.
        kept = [name for name, inode in partial.items() if (staged_home / "bulk" / name).stat().st_ino == inode]
        assert partial and kept == list(partial)
        assert resumed.summary.files_fetched < BIG_FILES + UNCHANGED_FILES

    change_tree(source.home(project_id), source.persist(project_id))
    # And 24 MB new: a catch-up of a few changed bytes can be over within one poll of a loaded machine.
    (source.home(project_id) / "catch-up.dat").write_bytes(os.urandom(24 * 1024 * 1024))
    second = backup(source, project_id)
    caught_up = trees(source, project_id)
    placing = ensure_started(target, project_id, snapshot_id=second, precopy_key=KEY)
    child = catch_engine(target, "restore", moved_first=1)
    kill_with_child(target, child)
    assert not target.home(project_id).exists()  # killed before the swap
    target.start()
    assert target.wait(placing.id).state == pb.INTERRUPTED

    placed = ensure(target, project_id, snapshot_id=second, precopy_key=KEY)
    assert placed.state == pb.SUCCEEDED, placed.error
    assert trees(target, project_id) == caught_up
    assert placed.summary.restore_mode == expected_mode(target, base=first)
    status = target.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=10)
    assert status.last_restore.snapshot_id == second
    assert target.staging_after_cleanup() == []


def ensure_started(agent: AgentProcess, project_id: str, **fields) -> pb.Operation:
    fields.setdefault("mode", pb.EnsureProjectRequest.AUTO)
    return agent.stub.EnsureProject(pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, **fields),
                                    timeout=30)


def test_precopy_on_btrfs_stages_subvolumes_with_the_quota(agent_factory, btrfs_fs) -> None:
    from tests.integration.test_btrfs import is_subvolume, qgroup_limit

    engine = ENGINES[1]  # restic 0.18: the incremental way over subvolumes
    quota = 64 * 1024 * 1024
    base = btrfs_fs.mountpoint / f"precopy-{new_id()[:8]}"
    base.mkdir()
    password_file = base / "repo.password"
    password_file.write_text("precopy-btrfs\n")
    password_file.chmod(0o600)
    extra = (engine.engine_lines() + f'[repository]\nkind = "local"\n[repository.local]\n'
             f'root = "{base / "shared-repos"}"\npassword_file = "{password_file}"\n'
             f'[btrfs]\ndefault_quota_bytes = {quota}\n')
    source, target = (agent_factory(name, backend="btrfs", base=base / name, extra=extra, engine=engine.driver,
                                    host_id=name) for name in ("source", "target"))
    project_id = source_project(source)
    first = backup(source, project_id)
    done = precopy(target, project_id, first)
    assert done.state == pb.SUCCEEDED, done.error
    staged_home, staged_persist = staged(target, project_id)
    assert is_subvolume(staged_home) and is_subvolume(staged_persist)
    assert qgroup_limit(staged_home) == quota
    tree = manifest(staged_home)
    target.stop()  # the btrfs backend's start-up removal of stale staging keeps it too
    target.start()
    assert is_subvolume(staged_home) and manifest(staged_home) == tree
    change_tree(source.home(project_id), source.persist(project_id))
    second = backup(source, project_id)
    placed = ensure(target, project_id, snapshot_id=second, precopy_key=KEY, quota_bytes=2 * quota)
    assert placed.state == pb.SUCCEEDED, placed.error
    assert placed.summary.restore_mode == "incremental"
    assert trees(target, project_id) == trees(source, project_id)
    # The request's quota, not the default the staging was made with.
    assert is_subvolume(target.home(project_id)) and qgroup_limit(target.home(project_id)) == 2 * quota
    assert target.staging_after_cleanup() == []


# The expiry does not depend on the engine.
@ONLY_RUSTIC
def test_precopy_older_than_max_age_is_discarded(hosts, engine, tmp_path) -> None:
    source, target = hosts
    project_id = source_project(source)
    first = backup(source, project_id)
    short = AgentProcess(base=tmp_path / "short", extra=target.extra + "[precopy]\nmax_age = 1\n",
                         engine=engine.driver, host_id="short")
    short.start()
    try:
        made = precopy(short, project_id, first)
        assert made.state == pb.SUCCEEDED and made.summary.restore_mode == "whole"
        # Housekeeping discards it a second after it was made (the harness waits up to a minute).
        assert short.staging_after_cleanup(timeout=60) == []
        again = precopy(short, project_id, first)  # its record went too: restored whole, not UP_TO_DATE
        assert again.state == pb.SUCCEEDED and again.summary.restore_mode == "whole"
    finally:
        short.stop()
        short.kill()


def test_a_pre_copy_that_is_not_its_snapshot_is_discarded_before_any_freeze(hosts, engine) -> None:
    """Every PreCopy ends by comparing the staged trees with the snapshot's listing. restic 0.14's
    diff way trusts the staging to hold the base snapshot: a stray file put into the staging
    between two rounds (in a directory the rounds do not change) survives its catch-up, and the
    check is what says so: DATA_LOSS naming the entry, and the pre-copy is gone (the next PreCopy
    restores whole). The engines that restore over the tree remove the stray file themselves."""
    source, target = hosts
    project_id = source_project(source)
    first = backup(source, project_id)
    assert precopy(target, project_id, first).state == pb.SUCCEEDED
    staged_home, _ = staged(target, project_id)
    (staged_home / "big" / "stray.txt").write_text("not in any snapshot\n")
    change_tree(source.home(project_id), source.persist(project_id))
    second = backup(source, project_id)
    done = precopy(target, project_id, second)
    if catch_up.way_for(frozenset(target.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10).features),
                        base_snapshot_id=first) == catch_up.DIFF_WAY:
        assert (done.state, done.error.code) == (pb.FAILED, "DATA_LOSS"), done.error
        assert "big/stray.txt" in done.error.message
        assert not staged_home.exists()
        again = precopy(target, project_id, second)
        assert (again.state, again.summary.restore_mode) == (pb.SUCCEEDED, "whole")
    else:
        assert done.state == pb.SUCCEEDED, done.error
        assert not (staged_home / "big" / "stray.txt").exists()
    assert (manifest(staged_home), manifest(staged(target, project_id)[1])) == (
        manifest(source.home(project_id)), manifest(source.persist(project_id)))
    target.wait(target.stub.DeleteProject(pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id),
                                          timeout=10).id)
