"""rustic and restic give the same browsing results, keep-policy plans and prune outcome for one
history, through real agents over gRPC; and Verify SNAPSHOT_TREE / COUNTS work on rustic agents.

One repository is written by a rustic agent (the production engine): two backups of a project
holding every kind of entry (files, an empty file, directories, symlinks inside, dangling and
pointing out, a fifo, setuid / setgid / sticky modes, another owner, a nanosecond mtime, names
with spaces, a newline and non-ASCII letters), then a history of older snapshots written by stock
restic at fixed times. A copy of that repository is opened by restic agents (0.18.1 and Debian's
0.14), so destructive steps (forget, prune) run on each engine's own copy of the same history.
Every comparison is asserted against the other engines and against the ground truth recorded
from the live tree when it was backed up.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.engines import ENGINES
from tests.harness import new_id
from tests.integration.test_move_support import ensure, ensured, full_id
from tests.tools import tool

pytestmark = requires_restic

RUSTIC, RESTIC_NEW, RESTIC_OLD = ENGINES
# (day of January 2026, hour) of the older snapshots stock restic writes, oldest first.
HISTORY = [(1, 10), (2, 10), (3, 10), (3, 15), (4, 10), (4, 18)]
NS_MTIME = 1_577_934_245_123_456_789  # 2020-01-02T03:04:05.123456789Z


def repository_config(root: Path, password_file: Path) -> str:
    return f'[repository]\nkind = "local"\n[repository.local]\nroot = "{root}"\npassword_file = "{password_file}"\n'


def start(agent_factory, engine, name: str, root: Path, password_file: Path):
    return agent_factory(name, extra=engine.engine_lines() + repository_config(root, password_file),
                         engine=engine.driver, host_id=name)


def build_tree(home: Path, persist: Path) -> None:
    """Every kind of entry a project holds, with the modes and names that are easy to get wrong."""
    (home / "src").mkdir()
    (home / "src" / "a.txt").write_text("alpha\n")
    (home / "src" / "empty").write_bytes(b"")
    odd = home / "sp ace dir"
    odd.mkdir()
    (odd / "new\nline.txt").write_text("a name with a newline\n")
    (home / "ünï cödé.md").write_text("unicode name\n")
    (home / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (home / "big.txt").write_text("0123456789" * 300)
    (home / "suid.sh").write_text("#!/bin/sh\n")
    os.chmod(home / "suid.sh", 0o4755)
    (home / "shared").mkdir()
    (home / "shared" / "f").write_text("f")
    os.chmod(home / "shared", 0o1777)
    (home / "group").mkdir()
    (home / "group" / "g").write_text("g")
    os.chmod(home / "group", 0o2750)
    (home / "owned.txt").write_text("owned")
    os.chown(home / "owned.txt", 1234, 5678)
    os.symlink("src/a.txt", home / "link")
    os.symlink("missing/nowhere", home / "dangling")
    os.symlink("/etc/hostname", home / "outside")
    os.mkfifo(home / "pipe")
    (home / "deep" / "a" / "b").mkdir(parents=True)
    (home / "deep" / "a" / "b" / "c.txt").write_text("deep")
    os.utime(home / "src" / "a.txt", ns=(NS_MTIME, NS_MTIME))
    (persist / "state.db").write_text("state")


def ground_truth(root: Path, prefix: str) -> dict[str, tuple]:
    """{path as ListFiles names it: (type, size, mode, mtime_ns, link target)} of a live tree."""
    kinds = {stat.S_IFREG: pb.FileEntry.FILE, stat.S_IFDIR: pb.FileEntry.DIRECTORY,
             stat.S_IFLNK: pb.FileEntry.SYMLINK}
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            kind = kinds.get(stat.S_IFMT(info.st_mode), pb.FileEntry.OTHER)
            found[f"{prefix}/{path.relative_to(root)}"] = (
                kind, info.st_size if kind == pb.FileEntry.FILE else 0, stat.S_IMODE(info.st_mode),
                info.st_mtime_ns, os.readlink(path) if kind == pb.FileEntry.SYMLINK else "")
    return found


def listing(agent, project_id: str, snapshot_id: str, path: str, depth: int) -> dict[str, tuple]:
    """Every entry ListFiles gives (all pages of 7), as ground_truth describes one."""
    entries, token = [], ""
    while True:
        page = agent.stub.ListFiles(pb.ListFilesRequest(project_id=project_id, snapshot_id=snapshot_id, path=path,
                                                        depth=depth, page_size=7, page_token=token), timeout=120)
        entries += page.entries
        token = page.next_page_token
        if not token:
            break
    by_path = {e.path: (e.type, e.size, e.mode, e.mtime.seconds * 1_000_000_000 + e.mtime.nanos, e.link_target)
               for e in entries}
    assert len(by_path) == len(entries)
    return by_path


def without_targets(entries: dict[str, tuple]) -> dict[str, tuple]:
    return {path: entry[:4] for path, entry in entries.items()}


def read(agent, project_id: str, snapshot_id: str, path: str, max_bytes: int = 0):
    """(content, truncated, binary, size) of ReadFile, or the gRPC status name it failed with."""
    try:
        got = agent.stub.ReadFile(pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id, path=path,
                                                     max_bytes=max_bytes), timeout=120)
    except grpc.RpcError as exc:
        return exc.code().name
    return got.content, got.truncated, got.binary, got.size


def snapshot_ids(agent, project_id: str) -> set[str]:
    return {s.id for s in agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id),
                                                   timeout=60).snapshots}


def restic_history(repository: Path, password_file: Path, project_id: str, source: Path) -> dict:
    """Older snapshots of the project's host at HISTORY times, by stock restic (``--time``); keep
    policies go by host and time only, so they need no layout-v2 roots. {(day, hour): full id}."""
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(password_file)}
    ids = {}
    for day, hour in HISTORY:
        (source / "version.txt").write_text(f"{day} {hour}")
        out = subprocess.run(
            ["restic", "-r", str(repository), "--no-cache", "backup", "--json", "--host", f"project-{project_id}",
             "--time", f"2026-01-{day:02d} {hour:02d}:00:00", "."],
            cwd=source, env=env, check=True, capture_output=True, text=True, timeout=120).stdout
        short = [line for line in out.splitlines() if '"summary"' in line][0].split('"snapshot_id":"')[1][:8]
        ids[(day, hour)] = short
    return ids


def stock_check(binary: str, repository: Path, password_file: Path, *flags: str) -> None:
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(password_file)}
    done = subprocess.run([binary, "-r", str(repository), "--no-cache", "check", *flags], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "no errors were found" in done.stdout, (binary, done.stdout, done.stderr)


def test_browsing_keep_policies_and_prune_match_restic(agent_factory, project_id, tmp_path):
    password_file = tmp_path / "repository.password"
    rustic_root, restic_root = tmp_path / "rustic-repos", tmp_path / "restic-repos"
    writer = start(agent_factory, RUSTIC, "rustic-a", rustic_root, password_file)
    ensured(writer, project_id)
    home, persist = writer.home(project_id), writer.persist(project_id)
    build_tree(home, persist)
    first = writer.wait(writer.backup(project_id).id)
    assert first.state == pb.SUCCEEDED, first.error
    truth = {}
    first_id = full_id(writer, project_id, first.summary.snapshot_id)
    truth[first_id] = {**ground_truth(home, "project"), **ground_truth(persist, "persist")}
    (home / "src" / "a.txt").write_text("alpha, changed\n")
    (home / "big.txt").unlink()
    (home / "src" / "new.txt").write_text("new")
    second = writer.wait(writer.backup(project_id).id)
    assert second.state == pb.SUCCEEDED, second.error
    second_id = full_id(writer, project_id, second.summary.snapshot_id)
    truth[second_id] = {**ground_truth(home, "project"), **ground_truth(persist, "persist")}
    assert truth[first_id] != truth[second_id]

    repository = rustic_root / f"project-{project_id}"
    history_source = tmp_path / "history"
    history_source.mkdir()
    history = restic_history(repository, password_file, project_id, history_source)
    restic_root.mkdir()
    shutil.copytree(repository, restic_root / repository.name, symlinks=True)
    readers = [start(agent_factory, RESTIC_OLD, "restic-old", restic_root, password_file)]
    if tool("restic") is not None:
        readers.append(start(agent_factory, RESTIC_NEW, "restic-new", restic_root, password_file))

    # ListFiles: the same entries with the same metadata, on every engine, whole trees (depth 10,
    # paged) and one directory; and they are the live trees as backed up, for both snapshots.
    for snapshot_id, expected in truth.items():
        whole = {**listing(writer, project_id, snapshot_id, "project", 10),
                 **listing(writer, project_id, snapshot_id, "persist", 10)}
        assert whole == expected, snapshot_id
    roots = listing(writer, project_id, first_id, "", 1)
    assert sorted(roots) == ["persist", "project"]
    src = listing(writer, project_id, first_id, "project/src", 1)
    assert sorted(src) == ["project/src/a.txt", "project/src/empty"]
    whole = listing(writer, project_id, first_id, "project", 10)
    for reader in readers:
        theirs = listing(reader, project_id, first_id, "project", 10)
        # restic's ls carries no symlink target (its find does, and ReadFile follows it).
        assert without_targets(theirs) == without_targets(whole), reader.base
        assert {p: e[4] for p, e in theirs.items() if e[4]} == {}, reader.base
    assert listing(readers[0], project_id, first_id, "", 1) == roots
    assert without_targets(listing(readers[0], project_id, first_id, "project/src", 1)) == without_targets(src)
    assert whole["project/suid.sh"][2] == 0o4755 and whole["project/shared"][2] == 0o1777
    assert whole["project/group"][2] == 0o2750 and whole["project/src/a.txt"][3] == NS_MTIME

    # ReadFile: the bytes and flags of the snapshot, or the error restic gives.
    got = {case: read(writer, project_id, first_id, *case) for case in [
        ("project/src/a.txt", 0), ("project/link", 0), ("project/binary.bin", 0), ("project/big.txt", 100),
        ("project/sp ace dir/new\nline.txt", 0), ("project/src/empty", 0),
        ("project/nothere", 0), ("project/src", 0), ("project/outside", 0)]}
    assert got[("project/src/a.txt", 0)] == (b"alpha\n", False, False, 6)
    assert got[("project/link", 0)] == got[("project/src/a.txt", 0)]
    assert got[("project/binary.bin", 0)] == (bytes(range(256)) * 8, False, True, 2048)
    assert got[("project/big.txt", 100)] == (b"0123456789" * 10, True, False, 3000)
    assert got[("project/sp ace dir/new\nline.txt", 0)] == (b"a name with a newline\n", False, False, 22)
    assert got[("project/src/empty", 0)] == (b"", False, False, 0)
    assert (got[("project/nothere", 0)], got[("project/outside", 0)]) == ("NOT_FOUND", "INVALID_ARGUMENT")
    assert read(writer, project_id, second_id, "project/src/a.txt") == (b"alpha, changed\n", False, False, 15)
    for case in [("project/big.txt", 100), ("project/sp ace dir/new\nline.txt", 0), ("project/nothere", 0),
                 ("project/src", 0)]:
        assert read(readers[0], project_id, first_id, *case) == got[case], case

    # Forget with a keep policy, then prune, on each engine's copy of the same history.
    policy = dict(keep_last=2, keep_daily=3, prune=True)
    remaining = {}
    for agent in (writer, readers[0]):
        final = agent.wait(agent.stub.Forget(pb.ForgetRequest(request_id=new_id(), project_id=project_id, **policy),
                                             timeout=30).id, timeout=300)
        assert final.state == pb.SUCCEEDED, final.error
        remaining[agent.base] = snapshot_ids(agent, project_id)
    # keep_last=2: the two backups of today; keep_daily=3: the newest of today, of 01-04 (18:00)
    # and of 01-03 (15:00). Everything else of the history goes.
    expected = {first_id, second_id} | {s for s in snapshot_ids(readers[0], project_id)
                                          if s[:8] in (history[(4, 18)], history[(3, 15)])}
    assert len(expected) == 4
    assert remaining == {writer.base: expected, readers[0].base: expected}

    # Prune left both repositories whole: stock restic (both versions) and the agents' own check.
    for copy in (repository, restic_root / repository.name):
        stock_check("restic", copy, password_file, "--read-data")
        if tool("restic") is not None:
            stock_check(tool("restic"), copy, password_file)
    for agent in (writer, readers[0]):
        checked = agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.REPOSITORY).id, timeout=300)
        assert checked.state == pb.SUCCEEDED, checked.error
    assert read(writer, project_id, first_id, "project/src/a.txt") == (b"alpha\n", False, False, 6)


def tree_verify(agent, project_id: str, snapshot_id: str) -> pb.Operation:
    return agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.SNAPSHOT_TREE, snapshot_id=snapshot_id).id)


def counts_verify(agent, project_id: str, snapshot_id: str) -> pb.Operation:
    return agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.COUNTS, snapshot_id=snapshot_id).id)


def data_loss(operation: pb.Operation) -> str:
    assert (operation.state, operation.error.code) == (pb.FAILED, "DATA_LOSS"), operation
    return operation.error.message


def test_verify_snapshot_tree_and_counts_on_rustic_agents(agent_factory, project_id, tmp_path):
    password_file = tmp_path / "repository.password"
    root = tmp_path / "repos"
    source = start(agent_factory, RUSTIC, "rustic-source", root, password_file)
    target = start(agent_factory, RUSTIC, "rustic-target", root, password_file)
    ensured(source, project_id)
    build_tree(source.home(project_id), source.persist(project_id))
    backup = source.wait(source.backup(project_id).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    snapshot_id = full_id(source, project_id, backup.summary.snapshot_id)
    restored = target.wait(ensure(target, project_id, pb.EnsureProjectRequest.REQUIRED, snapshot_id).id)
    assert restored.state == pb.SUCCEEDED, restored.error
    home = target.home(project_id)

    passed = tree_verify(target, project_id, snapshot_id)
    assert passed.state == pb.SUCCEEDED, passed.error
    entries = sum(len(d) + len(f) for tree in (home, target.persist(project_id)) for _, d, f in os.walk(tree)) + 2
    assert passed.summary.files_processed == entries
    assert tree_verify(source, project_id, snapshot_id).state == pb.SUCCEEDED
    counted = counts_verify(target, project_id, snapshot_id)
    assert counted.state == pb.SUCCEEDED and counted.summary.files_processed == entries, counted

    # A changed file (its size, the directory's mtime put back): named; COUNTS sees the bytes.
    victim = home / "sp ace dir" / "new\nline.txt"
    parent = victim.parent.stat()
    victim.write_text("longer than it was in the snapshot\n")
    os.utime(victim.parent, ns=(parent.st_atime_ns, parent.st_mtime_ns))
    message = data_loss(tree_verify(target, project_id, snapshot_id))
    assert "project/sp ace dir/new\nline.txt: size (35 bytes, 22 in the snapshot)" in message, message
    assert "bytes in files" in data_loss(counts_verify(target, project_id, snapshot_id))
    # The setuid bit dropped: named as a mode difference (the listing keeps the special bits).
    os.chmod(home / "suid.sh", 0o755)
    assert "project/suid.sh: mode (0755, 4755 in the snapshot)" in data_loss(tree_verify(target, project_id,
                                                                                          snapshot_id))
