"""One engine conformance suite, run through the agent's gRPC API on every engine under test
(rustic 0.11.4, restic 0.18, Debian's restic 0.14; tests/engines.py), each test naming its engine.

Every test asserts the same outcome on every engine — state, gRPC code, and for the same history
the same results — and computes what it expects from the ground truth (the tree written, a
manifest of it, the history of snapshot times), never from one engine's output. One agent per
engine serves the module (each test has its own project, so its own repository); the tests that
kill an agent start their own.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import grpc
import psutil
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.repository_copy import BucketConfig, copy_repository
from tests import stock_cli
from tests.engines import ENGINES, EngineUnderTest, engine_ids
from tests.harness import AgentProcess, adopting_orphans, manifest, new_id, unmount_below, wait_reaped, write_tree
from tests.harness import catch_engine as harness_catch_engine

FULL_ID = re.compile(r"[0-9a-f]{64}")
# Bytes the caught engine must have moved (read for a backup, written for a restore) before it is
# stopped: past its start-up, far from done with BIG_MIB.
MOVED_FIRST = 4 * 1024 * 1024
BIG_MIB = 32


@pytest.fixture(scope="module", params=ENGINES, ids=engine_ids())
def engine_under_test(request) -> EngineUnderTest:
    """Each engine in turn, module-scoped here so that one agent serves each engine's tests."""
    return request.param


@pytest.fixture(scope="module")
def agent(engine_under_test: EngineUnderTest, tmp_path_factory):
    """The module's agent on the engine under test, with local repositories under its state dir
    and the password it generated there; the engine initialises each of them (no cheap-key
    repositories here: the init is part of what every engine must do)."""
    engine = engine_under_test
    process = AgentProcess(base=tmp_path_factory.mktemp(f"conformance-{engine.id}"), engine=engine.driver,
                           extra=engine.engine_lines(), make_repositories=False)
    process.start()
    yield process
    process.stop()
    process.kill()
    unmount_below(process.base)


def password_file(agent) -> Path:
    return agent.state_dir / "repository.password"


def ground_truth(agent, project_id: str, *, files: int = 12, seed: int = 1) -> None:
    """A small project: nested files with distinctive modes and mtimes, a symlink, an empty
    directory, a text file, and a persist location."""
    home = agent.home(project_id)
    write_tree(home, files=files, size=1500, seed=seed)
    (home / "docs" / "sub").mkdir(parents=True, exist_ok=True)
    (home / "docs" / "readme.txt").write_text("conformance: plain text, ünïcödé\n")
    (home / "docs" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 40)
    (home / "docs" / "sub" / "data.bin").chmod(0o640)
    (home / "empty").mkdir(exist_ok=True)
    (home / "empty").chmod(0o750)
    for path in (home / "docs" / "readme.txt", home / "docs" / "sub" / "data.bin", home / "docs" / "sub",
                 home / "empty"):
        os.utime(path, ns=(1_650_000_000_123_456_789,) * 2)
    write_tree(agent.persist(project_id), files=3, size=700, seed=seed + 1, depth=0)


def backed_up(agent, project_id: str, **fields) -> pb.Operation:
    final = agent.wait(agent.backup(project_id, **fields).id, timeout=300)
    assert final.state == pb.SUCCEEDED, (pb.OperationState.Name(final.state), final.error)
    return final


def both(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def list_snapshots(agent, project_id: str, repository: pb.RepositorySpec | None = None) -> list[pb.Snapshot]:
    request = pb.ListSnapshotsRequest(project_id=project_id, repository=repository)
    return list(agent.stub.ListSnapshots(request, timeout=120).snapshots)


def verified(agent, project_id: str, **fields) -> pb.Operation:
    return agent.wait(agent.verify(project_id, **fields).id, timeout=300)


def assert_forced_over_changes(final: pb.Operation) -> None:
    """A whole restore forced over unsaved changes: done, warning that those changes are only in
    the kept replaced tree (no pre-restore snapshot: forced)."""
    assert final.state == pb.SUCCEEDED_WITH_WARNINGS, (pb.OperationState.Name(final.state), final.error)
    assert any("not backed up first (force)" in w for w in final.summary.warnings), final.summary.warnings


def repository_files(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file of a local repository, keyed by relative path."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def stock_check_clean(engine: EngineUnderTest, agent, project_id: str, scratch: Path) -> None:
    result = stock_cli.check(engine, agent.repository(project_id), password_file(agent), scratch=scratch)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ backup, snapshots, restore, verify


def test_backup_reports_a_full_snapshot_id_that_is_listed(agent, engine_under_test, project_id, tmp_path):
    ground_truth(agent, project_id)
    backup = backed_up(agent, project_id)
    snapshot_id = backup.summary.snapshot_id
    assert FULL_ID.fullmatch(snapshot_id), snapshot_id
    listed = list_snapshots(agent, project_id)
    assert [(s.id, s.short_id, s.hostname, s.layout, s.project_id, s.purpose) for s in listed] == [
        (snapshot_id, snapshot_id[:8], f"project-{project_id}", "v2", project_id, "backup")]
    # The engine itself sees exactly that snapshot.
    assert stock_cli.snapshot_ids(engine_under_test, agent.repository(project_id), password_file(agent),
                                  scratch=tmp_path) == {snapshot_id}
    (agent.home(project_id) / "second.txt").write_text("after the first backup\n")
    second = backed_up(agent, project_id).summary.snapshot_id
    assert FULL_ID.fullmatch(second) and second != snapshot_id
    assert [s.id for s in list_snapshots(agent, project_id)] == [second, snapshot_id]  # newest first


def test_restore_whole_and_subpath_byte_equal(agent, project_id):
    ground_truth(agent, project_id)
    truth = both(agent, project_id)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    home = agent.home(project_id)

    shutil.rmtree(home / "docs")
    (home / "d0").rename(home / "moved")
    (home / "new-after-backup.txt").write_text("not in the snapshot\n")
    (agent.persist(project_id) / "f0.bin").write_bytes(b"changed")
    whole = agent.wait(agent.restore(project_id, snapshot_id, force=True).id, timeout=300)
    assert_forced_over_changes(whole)
    assert both(agent, project_id) == truth

    shutil.rmtree(home / "docs")
    (home / "new-after-backup.txt").write_text("kept: outside the restored path\n")
    part = agent.wait(agent.restore(project_id, snapshot_id, subpath="docs").id, timeout=300)
    assert part.state == pb.SUCCEEDED, part.error
    after = manifest(home)
    expected_docs = {k: v for k, v in truth[0].items() if k == "docs" or k.startswith("docs/")}
    assert {k: v for k, v in after.items() if k == "docs" or k.startswith("docs/")} == expected_docs
    assert (home / "new-after-backup.txt").read_text() == "kept: outside the restored path\n"
    assert {k: v for k, v in after.items() if k not in expected_docs and k not in (".", "new-after-backup.txt")} \
        == {k: v for k, v in truth[0].items() if k not in expected_docs and k != "."}


def test_verify_check_and_read_data_subset_and_a_damaged_pack(agent, project_id):
    ground_truth(agent, project_id, files=30)
    backed_up(agent, project_id)
    for fields in ({}, {"mode": pb.VerifyRequest.READ_DATA, "read_data_subset": "1/2"}):
        final = verified(agent, project_id, **fields)
        assert final.state == pb.SUCCEEDED, (fields, final.error)
    # One data pack damaged in place (same size): reading the data finds it, on every engine.
    packs = sorted(p for p in (agent.repository(project_id) / "data").rglob("*") if p.is_file())
    assert packs
    victim = max(packs, key=lambda p: p.stat().st_size)
    content = bytearray(victim.read_bytes())
    middle = len(content) // 2
    content[middle:middle + 64] = bytes(b ^ 0xFF for b in content[middle:middle + 64])
    victim.chmod(0o600)
    victim.write_bytes(bytes(content))
    # Everything read, however it is asked for (rustic draws "x%" subsets at random).
    for subset in ("", "100%"):
        damaged = verified(agent, project_id, mode=pb.VerifyRequest.READ_DATA, read_data_subset=subset)
        assert damaged.state == pb.FAILED and damaged.error.code == "DATA_LOSS", (subset, damaged.error)


# ------------------------------------------------------------------ browsing


def expected_entries(root: Path, prefix: str) -> dict[str, tuple]:
    """What ListFiles must say of every entry below ``root``: (type, size, mode, mtime in ns) or
    for a symlink (type, 0, target), from the tree itself."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            info = path.lstat()
            relative = f"{prefix}/{path.relative_to(root)}"
            if stat.S_ISLNK(info.st_mode):
                found[relative] = (pb.FileEntry.SYMLINK, 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = (pb.FileEntry.DIRECTORY, 0, stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            else:
                found[relative] = (pb.FileEntry.FILE, info.st_size, stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    return found


def listed_entries(entries, expected: dict[str, tuple]) -> dict[str, tuple]:
    """ListFiles' entries as :func:`expected_entries` says them. An mtime within a microsecond of
    the expected one counts as equal: where a listing has microseconds only, the agent keeps those."""
    found = {}
    for e in entries:
        if e.type == pb.FileEntry.SYMLINK:
            found[e.path] = (e.type, e.size, e.link_target)
            continue
        mtime = e.mtime.ToNanoseconds()
        want = expected.get(e.path)
        if want is not None and len(want) == 4 and abs(mtime - want[3]) < 1000:
            mtime = want[3]
        found[e.path] = (e.type, e.size if e.type == pb.FileEntry.FILE else 0, e.mode, mtime)
    return found


def all_pages(agent, request: pb.ListFilesRequest) -> list[pb.FileEntry]:
    entries = []
    while True:
        page = agent.stub.ListFiles(request, timeout=120)
        entries += page.entries
        if not page.next_page_token:
            return entries
        request.page_token = page.next_page_token


def test_browsing_lists_metadata_and_reads_bytes_of_the_tree(agent, project_id):
    ground_truth(agent, project_id)
    home, persist = agent.home(project_id), agent.persist(project_id)
    expected = {**expected_entries(home, "project"), **expected_entries(persist, "persist")}
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id

    top = agent.stub.ListFiles(pb.ListFilesRequest(project_id=project_id, snapshot_id=snapshot_id, path=""),
                               timeout=120)
    assert {e.path for e in top.entries} == {"project", "persist"}
    listed = {}
    for root in ("project", "persist"):
        listed.update(listed_entries(all_pages(agent, pb.ListFilesRequest(
            project_id=project_id, snapshot_id=snapshot_id, path=root, depth=10, page_size=7)), expected))
    assert listed == expected
    direct = agent.stub.ListFiles(pb.ListFilesRequest(project_id=project_id, snapshot_id=snapshot_id,
                                                      path="project/docs"), timeout=120)
    assert {e.path for e in direct.entries} == {"project/docs/readme.txt", "project/docs/sub"}

    # The bytes of a sample of the files (every one's size is in the listing above).
    files = sorted(relative for relative, entry in expected.items() if entry[0] == pb.FileEntry.FILE)
    for relative in {*files[::6], "project/docs/readme.txt", "project/docs/sub/data.bin", "persist/f1.bin"}:
        entry = expected[relative]
        live = (home if relative.startswith("project/") else persist) / relative.split("/", 1)[1]
        read = agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id,
                                                      path=relative), timeout=120)
        assert (read.content, read.size, read.truncated) == (live.read_bytes(), entry[1], False), relative
    text = agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id,
                                                  path="project/docs/readme.txt"), timeout=120)
    assert not text.binary
    head = agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id,
                                                  path="project/docs/sub/data.bin", max_bytes=100), timeout=120)
    assert (head.content, head.truncated, head.binary) == (bytes(range(100)), True, True)
    with pytest.raises(grpc.RpcError) as info:
        agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id,
                                               path="project/no-such-file"), timeout=120)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()


# ------------------------------------------------------------------ retention and prune

# (day of January 2026, hour): the history a keep policy is applied to, oldest first.
HISTORY = [(1, 10), (2, 10), (3, 10), (3, 15), (4, 10), (4, 12), (4, 18)]
STOCK_RESTIC = next(e for e in ENGINES if e.stock)  # the one writer of every engine's history


def make_history(agent, project_id: str) -> dict[tuple[int, int], str]:
    """Snapshots of the project's host at the HISTORY times, written by one stock writer
    (Debian's restic, ``backup --time``) into the repository the agent's engine made, so every
    engine is given the same history. Keep policies go by host and time only."""
    repo = str(agent.repository(project_id))
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(password_file(agent))}
    ids = {}
    for day, hour in HISTORY:
        (agent.home(project_id) / "version.txt").write_text(f"{day} {hour}")
        out = subprocess.run(
            [STOCK_RESTIC.binary(), "-r", repo, "--no-cache", "backup", "--json", "--host", f"project-{project_id}",
             "--time", f"2026-01-{day:02d} {hour:02d}:00:00", f"project-{project_id}"],
            cwd=agent.projects_root, env=env, check=True, capture_output=True, text=True, timeout=120,
        ).stdout
        # restic 0.14 prints the short id: the full one is the one listed with that prefix.
        ids[(day, hour)] = re.search(r'"snapshot_id":"([0-9a-f]{8,64})"', out).group(1)
    listed = stock_cli.snapshot_ids(STOCK_RESTIC, agent.repository(project_id), password_file(agent),
                                    scratch=agent.base / "stock")
    return {when: next(full for full in listed if full.startswith(short)) for when, short in ids.items()}


def test_forget_with_keep_policy_then_prune_keeps_exactly_the_policy(agent, engine_under_test, project_id,
                                                                      tmp_path):
    ground_truth(agent, project_id, files=20)
    truth = both(agent, project_id)
    own = backed_up(agent, project_id).summary.snapshot_id  # made today: the newest
    ids = make_history(agent, project_id)
    assert {s.id for s in list_snapshots(agent, project_id)} == {own, *ids.values()}
    protected = ids[(1, 10)]
    operation = agent.stub.Forget(pb.ForgetRequest(
        request_id=new_id(), project_id=project_id, keep_last=2, keep_daily=3, prune=True,
        protected_snapshot_ids=[protected[:8]]), timeout=30)
    final = agent.wait(operation.id, timeout=300)
    assert final.state == pb.SUCCEEDED, final.error
    # keep_last=2: today's backup and 01-04 18:00; keep_daily=3: the newest of today, of 01-04
    # (18:00) and of 01-03 (15:00); 01-01 10:00 is protected.
    expected = {own, ids[(4, 18)], ids[(3, 15)], protected}
    assert {s.id for s in list_snapshots(agent, project_id)} == expected
    assert stock_cli.snapshot_ids(engine_under_test, agent.repository(project_id), password_file(agent),
                                  scratch=tmp_path) == expected
    # Pruned clean, and what was kept is whole.
    assert verified(agent, project_id, mode=pb.VerifyRequest.READ_DATA).state == pb.SUCCEEDED
    stock_check_clean(engine_under_test, agent, project_id, tmp_path)
    restored = agent.wait(agent.restore(project_id, own, force=True).id, timeout=300)
    assert_forced_over_changes(restored)
    assert both(agent, project_id) == truth
    # A forget by exact id: the protected one goes too when named.
    exact = agent.wait(agent.stub.Forget(pb.ForgetRequest(
        request_id=new_id(), project_id=project_id, snapshot_ids=[protected]), timeout=30).id, timeout=300)
    assert exact.state == pb.SUCCEEDED, exact.error
    assert {s.id for s in list_snapshots(agent, project_id)} == expected - {protected}


# ------------------------------------------------------------------ copy snapshots to another repository


def test_copied_repository_is_read_checked_and_restored_by_the_engine(agent, project_id, s3_server):
    """The product's copy of a project's snapshots to another repository is the cross-region
    repository copy (hub_client/repository_copy.py): a backup into one bucket, copied into
    another; the engine then lists, checks and restores from the copy."""
    client = s3_server.client()
    suffix = uuid.uuid4().hex[:10]
    source_bucket, target_bucket = f"conf-src-{suffix}", f"conf-dst-{suffix}"
    for bucket in (source_bucket, target_bucket):
        client.create_bucket(Bucket=bucket)

    def spec(bucket: str) -> pb.RepositorySpec:
        return pb.RepositorySpec(s3=pb.S3Repository(
            endpoint=s3_server.endpoint, region="us-east-1", bucket=bucket, root=f"rustic/project-{project_id}",
            access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key))

    def bucket_config(bucket: str) -> BucketConfig:
        return BucketConfig(bucket=bucket, endpoint=s3_server.endpoint, access_key_id=s3_server.access_key_id,
                            secret_access_key=s3_server.secret_access_key)

    ground_truth(agent, project_id)
    truth = both(agent, project_id)
    snapshot_id = backed_up(agent, project_id, repository=spec(source_bucket)).summary.snapshot_id
    report = copy_repository(bucket_config(source_bucket), bucket_config(target_bucket), project_id)
    assert report.copied == report.objects > 0

    copied = spec(target_bucket)
    assert [s.id for s in list_snapshots(agent, project_id, copied)] == [snapshot_id]
    check = verified(agent, project_id, repository=copied, mode=pb.VerifyRequest.READ_DATA)
    assert check.state == pb.SUCCEEDED, check.error
    shutil.rmtree(agent.home(project_id) / "docs")
    restore = agent.wait(agent.restore(project_id, snapshot_id, repository=copied, force=True).id, timeout=300)
    assert_forced_over_changes(restore)
    assert both(agent, project_id) == truth


# ------------------------------------------------------------------ cancellation


def big_project(agent, project_id: str) -> None:
    ground_truth(agent, project_id, files=5)
    big = agent.home(project_id) / "big"
    big.mkdir()
    for index in range(BIG_MIB):
        (big / f"big-{index}.bin").write_bytes(os.urandom(1024 * 1024))


def catch_engine(agent, subcommand: str, timeout: float = 120.0) -> psutil.Process:
    """The agent's engine child running ``subcommand``, caught mid-run (tests.harness.catch_engine)."""
    return harness_catch_engine(agent, subcommand, moved_first=MOVED_FIRST, timeout=timeout)


def cancel_caught(agent, operation_id: str, child: psutil.Process) -> pb.Operation:
    """Cancel the operation while its engine is stopped, then let the engine take the signal."""
    agent.stub.CancelOperation(pb.CancelOperationRequest(operation_id=operation_id), timeout=10)
    try:
        child.resume()
    except psutil.NoSuchProcess:
        pass  # killed already: the agent's kill grace ran out on a loaded machine (a stopped engine takes only SIGKILL)
    return agent.wait(operation_id, timeout=300)


def test_cancelled_backup_is_cancelled_or_failed_and_leaves_no_snapshot(agent, engine_under_test, project_id,
                                                                        tmp_path):
    big_project(agent, project_id)
    operation = agent.backup(project_id)
    final = cancel_caught(agent, operation.id, catch_engine(agent, "backup"))
    assert final.state in (pb.CANCELLED, pb.FAILED), pb.OperationState.Name(final.state)
    assert not final.summary.snapshot_id
    assert list_snapshots(agent, project_id) == []
    if agent.repository(project_id).joinpath("config").exists():
        assert stock_cli.snapshot_ids(engine_under_test, agent.repository(project_id), password_file(agent),
                                      scratch=tmp_path) == set()
    retry = backed_up(agent, project_id)
    assert FULL_ID.fullmatch(retry.summary.snapshot_id)


def test_cancelled_restore_leaves_the_project_as_it_was(agent, project_id):
    big_project(agent, project_id)
    snapshot_id = backed_up(agent, project_id).summary.snapshot_id
    home = agent.home(project_id)
    for path in sorted((home / "big").iterdir())[::3]:
        path.unlink()
    (home / "after-backup.txt").write_text("written after the snapshot\n")
    before = both(agent, project_id)
    operation = agent.restore(project_id, snapshot_id, force=True)
    final = cancel_caught(agent, operation.id, catch_engine(agent, "restore"))
    assert final.state in (pb.CANCELLED, pb.FAILED), pb.OperationState.Name(final.state)
    assert both(agent, project_id) == before  # no partial restore swapped in
    assert agent.staging_after_cleanup() == []


# ------------------------------------------------------------------ SIGKILL of the agent mid-backup


def test_agent_killed_mid_backup_then_restarted_backs_up_and_checks_clean(agent_factory, engine_under_test,
                                                                          project_id, tmp_path):
    engine = engine_under_test
    agent = agent_factory("killed", engine=engine.driver, extra=engine.engine_lines())
    ground_truth(agent, project_id, files=5)
    backed_up(agent, project_id)  # the repository exists; the next backup adds to it
    big = agent.home(project_id) / "big"
    big.mkdir()
    for index in range(BIG_MIB // 2):
        (big / f"new-{index}.bin").write_bytes(os.urandom(1024 * 1024))
    operation = agent.backup(project_id)
    engine_child = catch_engine(agent, "backup")
    with adopting_orphans():
        agent.kill()
        engine_child.kill()  # the engine dies with its agent, holding whatever lock it took
        # Gone and reaped: restic's unlock keeps the lock of a pid that still exists, a zombie too.
        wait_reaped([engine_child])
    locks = agent.repository(project_id) / "locks"
    if engine.driver == "restic":  # the fault is real: restic's lock stays (rustic takes none)
        assert locks.is_dir() and any(locks.iterdir()), "the killed restic left no lock"

    agent.start()
    record = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=operation.id), timeout=10)
    assert record.state == pb.INTERRUPTED, pb.OperationState.Name(record.state)
    truth = both(agent, project_id)
    retry = backed_up(agent, project_id)
    # The engine's own check (restic's takes its exclusive lock) before any Verify could unlock.
    stock_check_clean(engine, agent, project_id, tmp_path / "stock")
    assert verified(agent, project_id).state == pb.SUCCEEDED
    target = tmp_path / "restored"
    result = stock_cli.restore(engine, agent.repository(project_id), password_file(agent),
                               retry.summary.snapshot_id, target, scratch=tmp_path / "stock")
    assert stock_cli.restored(engine, result), result.stdout + result.stderr
    assert (manifest(target / "project"), manifest(target / "persist")) == truth


# ------------------------------------------------------------------ wrong password, missing repository


def test_wrong_password_is_failed_precondition_and_writes_nothing(agent, project_id):
    ground_truth(agent, project_id, files=5)
    backed_up(agent, project_id)
    repository = agent.repository(project_id)
    before = repository_files(repository)
    (agent.home(project_id) / "changed.txt").write_text("to back up\n")
    wrong = pb.RepositorySpec(local=pb.LocalRepository(path=str(repository)), password="not-the-password")
    for final in (agent.wait(agent.backup(project_id, repository=wrong).id),
                  verified(agent, project_id, repository=wrong),
                  agent.wait(agent.restore(project_id, "latest", repository=wrong, force=True).id)):
        assert final.state == pb.FAILED, pb.OperationState.Name(final.state)
        assert final.error.code == "FAILED_PRECONDITION", final.error
        assert "password" in final.error.message.lower(), final.error.message
        assert "not-the-password" not in final.error.message
    with pytest.raises(grpc.RpcError) as info:
        list_snapshots(agent, project_id, wrong)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    assert repository_files(repository) == before
    assert (agent.home(project_id) / "changed.txt").exists()


def test_missing_repository_is_not_found_and_creates_nothing(agent, project_id, tmp_path):
    ground_truth(agent, project_id, files=3)
    missing = tmp_path / "no-repository-here"
    spec = pb.RepositorySpec(local=pb.LocalRepository(path=str(missing)))
    before = both(agent, project_id)
    for final in (verified(agent, project_id, repository=spec),
                  agent.wait(agent.restore(project_id, "latest", repository=spec, force=True).id),
                  agent.wait(agent.restore(project_id, "0123abcd" * 8, repository=spec, force=True).id)):
        assert final.state == pb.FAILED, pb.OperationState.Name(final.state)
        assert final.error.code == "NOT_FOUND", final.error
    assert list_snapshots(agent, project_id, spec) == []  # no repository yet: no backups
    assert not missing.exists()
    assert both(agent, project_id) == before
