"""rustic and restic give the same browsing results, keep-policy plans and prune outcome for one
history, through real agents over gRPC; a hub move between two rustic agents verifies the target
with Verify SNAPSHOT_TREE and COUNTS and completes, and those checks name what was changed.

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

import asyncio
import dataclasses
import os
import shutil
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from agent.backends.base import EngineView
from agent.engine.restic import ResticEngine
from agent.engine.rustic import RusticEngine
from agent.repository import Repository
from hub_client.move import ONLINE_STEPS, SENTINEL_PATH
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MoveStatus, open_store
from tests.conftest import requires_restic
from tests.engines import ENGINES
from tests.harness import manifest, new_id
from tests.hubs import make_hub
from tests.integration.test_move_support import ensured, full_id
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
        # Symlink targets included: the restic driver takes them from its find (its ls has none).
        assert theirs == whole, reader.base
    assert listing(readers[0], project_id, first_id, "", 1) == roots
    assert listing(readers[0], project_id, first_id, "project/src", 1) == src
    assert whole["project/suid.sh"][2] == 0o4755 and whole["project/shared"][2] == 0o1777
    assert whole["project/group"][2] == 0o2750 and whole["project/src/a.txt"][3] == NS_MTIME

    # ReadFile: the bytes and flags of the snapshot, or the error restic gives.
    # (Asked four at a time: the agents serve concurrent reads; this only saves wall time.)
    cases = [("project/src/a.txt", 0), ("project/link", 0), ("project/binary.bin", 0), ("project/big.txt", 100),
             ("project/sp ace dir/new\nline.txt", 0), ("project/src/empty", 0), ("project/nothere", 0),
             ("project/src", 0), ("project/outside", 0)]
    compared = [("project/big.txt", 100), ("project/sp ace dir/new\nline.txt", 0), ("project/nothere", 0),
                ("project/src", 0)]
    with ThreadPoolExecutor(4) as pool:
        got = dict(zip(cases, pool.map(lambda case: read(writer, project_id, first_id, *case), cases)))
        theirs = dict(zip(compared, pool.map(lambda case: read(readers[0], project_id, first_id, *case), compared)))
    assert theirs == {case: got[case] for case in compared}
    assert got[("project/src/a.txt", 0)] == (b"alpha\n", False, False, 6)
    assert got[("project/link", 0)] == got[("project/src/a.txt", 0)]
    assert got[("project/binary.bin", 0)] == (bytes(range(256)) * 8, False, True, 2048)
    assert got[("project/big.txt", 100)] == (b"0123456789" * 10, True, False, 3000)
    assert got[("project/sp ace dir/new\nline.txt", 0)] == (b"a name with a newline\n", False, False, 22)
    assert got[("project/src/empty", 0)] == (b"", False, False, 0)
    assert (got[("project/nothere", 0)], got[("project/outside", 0)]) == ("NOT_FOUND", "INVALID_ARGUMENT")
    assert read(writer, project_id, second_id, "project/src/a.txt") == (b"alpha, changed\n", False, False, 15)

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


def test_a_hub_move_between_two_rustic_agents_verifies_and_verify_names_what_differs(agent_factory, tmp_path):
    """The move verifies the target with SNAPSHOT_TREE and COUNTS from rustic's listing and
    completes; afterwards the same checks on the target fail with DATA_LOSS naming what was
    changed by hand."""
    password_file = tmp_path / "repository.password"
    root = tmp_path / "repos"
    a = start(agent_factory, RUSTIC, "host-a", root, password_file)
    b = start(agent_factory, RUSTIC, "host-b", root, password_file)
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        with make_hub(store, (a, b)) as hub:
            project_id = new_id()
            a.make_repository(project_id)  # a cheap key: the hub's backups are not the harness's
            ensured(a, project_id)
            build_tree(a.home(project_id), a.persist(project_id))
            (a.home(project_id) / "pipe").unlink()  # tests.harness.manifest would block opening it
            hub.add_project(project_id, "host-a", "eu")
            seen = {}

            def before_step(step: str) -> None:
                if step == "freeze":  # only the catch-up backup carries this
                    (a.home(project_id) / "late.txt").write_text("late edit\n")
                if step == "restore":
                    seen["home"], seen["persist"] = manifest(a.home(project_id)), manifest(a.persist(project_id))

            entries = []
            move = hub.move(project_id, "host-b", observer=entries.append, before_step=before_step)
            assert move.status == MoveStatus.SUCCEEDED
            assert [e.message for e in entries if e.kind == "step"] == list(ONLINE_STEPS)
            assert hub.store.get_project(project_id).host_id == "host-b"
            assert manifest(b.home(project_id)) == seen["home"]
            # The move's sentinel was in the source's persist location from the freeze on; the
            # target's lost it at finalize.
            assert manifest(b.persist(project_id)) == {k: v for k, v in seen["persist"].items()
                                                       if k != SENTINEL_PATH.split("/", 1)[1]}
            assert (b.home(project_id) / "late.txt").read_text() == "late edit\n"
            # The target proved its live trees equal the snapshot (SNAPSHOT_TREE, then COUNTS right
            # before placement) from rustic's listing of it.
            verified = [e.message for e in entries if e.kind == "verify"]
            assert any("the live trees on host-b equal snapshot" in m and "sentinel found" in m for m in verified)
            assert any("host-b still holds snapshot" in m for m in verified), verified
            # A local repository's trees are read from its files: no rustic process per directory.
            assert not any("tree-blob" in argv for argv in b.started_argvs())
            snapshot_id = hub.store.get_move(move.id).snapshot_id
    finally:
        store.close()

    home = b.home(project_id)
    # The move's snapshot holds the move's sentinel, which finalize took out of the target's tree:
    # the target's own first backup is what its live trees equal.
    assert "persist/.buckets-move-sentinel: missing" in data_loss(tree_verify(b, project_id, snapshot_id))
    backed_up = b.wait(b.backup(project_id).id)
    assert backed_up.state == pb.SUCCEEDED, backed_up.error
    snapshot_id = backed_up.summary.snapshot_id
    passed = tree_verify(b, project_id, snapshot_id)
    assert passed.state == pb.SUCCEEDED, passed.error
    entries = sum(len(d) + len(f) for tree in (home, b.persist(project_id)) for _, d, f in os.walk(tree)) + 2
    assert passed.summary.files_processed == entries
    # A changed file (its size; the directory's mtime put back): named; COUNTS sees the bytes.
    victim = home / "sp ace dir" / "new\nline.txt"
    parent = victim.parent.stat()
    victim.write_text("longer than it was in the snapshot\n")
    os.utime(victim.parent, ns=(parent.st_atime_ns, parent.st_mtime_ns))
    message = data_loss(tree_verify(b, project_id, snapshot_id))
    assert "project/sp ace dir/new\nline.txt: size (35 bytes, 22 in the snapshot)" in message, message
    assert "bytes in files" in data_loss(counts_verify(b, project_id, snapshot_id))
    # The setuid bit dropped: named as a mode difference (the listing keeps the special bits).
    os.chmod(home / "suid.sh", 0o755)
    assert "project/suid.sh: mode (0755, 4755 in the snapshot)" in data_loss(tree_verify(b, project_id, snapshot_id))


def test_a_rustic_listing_reads_each_distinct_directory_once_and_keeps_the_key_off_argv(tmp_path):
    """The driver itself on the real rustic (no agent): a listing of a tree of D distinct directories
    runs D + 2 rustic processes (master key, snapshot, one tree blob each; identical directories
    share a tree and are read once), gives restic's nodes, and leaves no profile (they held the
    master key) and no key on any command line."""
    binary = RUSTIC.binary()
    calls = tmp_path / "calls"
    wrapper = tmp_path / "rustic"
    # Records each argv and profile text, then runs the real rustic.
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nfor a; do case "$prev" in -P) cat "$a.toml" '
                       f'>> {calls}.profiles;; esac; prev="$a"; done\nexec {binary} "$@"\n')
    wrapper.chmod(0o755)
    view = tmp_path / "view"
    for empty in ("e1", "e2", "e3", "x/e4"):  # four identical empty directories: one tree
        (view / "project" / empty).mkdir(parents=True)
    (view / "project" / "x" / "f").write_text("f")
    (view / "project" / "y" / "z").mkdir(parents=True)
    (view / "project" / "y" / "z" / "g").write_text("g")
    (view / "persist").mkdir()
    repo = Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="pw-listing-1")
    rustic = RusticEngine(binary=str(wrapper), state_dir=tmp_path / "state", timeout=120, kill_grace=2)
    # Tree blobs through rustic, as for a repository the driver cannot read itself (a local
    # one's are read from its files: tests/integration/test_rustic_listing_cache.py).
    rustic._repository_reader = lambda repo: None
    restic = ResticEngine(binary="restic", state_dir=tmp_path / "restic-state", timeout=120, kill_grace=2)

    async def scenario():
        outcome = await rustic.backup(repo, EngineView(wrapper=(), root=view), host="h", tags=["t"],
                                      on_status=lambda status: None)
        snapshot = outcome.summary.snapshot_id
        calls.write_text("")
        ours = await rustic.find(repo, snapshot, ["/project", "/persist"])
        return ours, await restic.find(repo, snapshot, ["/project", "/persist"])

    ours, theirs = asyncio.run(scenario())
    # Distinct trees: root, project, persist (empty, same as e1..e4), x, y, y/z.
    runs = calls.read_text().splitlines()
    assert sum("cat masterkey" in r for r in runs) == 1 and sum("snapshots" in r for r in runs) == 1
    assert sum("cat tree-blob" in r for r in runs) == 6, runs
    assert len(runs) == 8
    key_profiles = [t for t in (tmp_path / "calls.profiles").read_text().split("# rustic profile")
                    if "\nkey = " in t]
    assert len(key_profiles) == 7 and all("password" not in t for t in key_profiles)
    key = key_profiles[0].split("\nkey = ")[1].splitlines()[0]
    assert all(key not in r for r in runs) and "pw-listing-1" not in calls.read_text()
    assert list((tmp_path / "state" / "profiles").iterdir()) == []
    by_path = lambda nodes: {n.path: n for n in nodes}  # noqa: E731
    assert sorted(by_path(ours)) == sorted(by_path(theirs)) and len(ours) == 11
    for path, node in by_path(theirs).items():
        expected = node if node.type == "file" else dataclasses.replace(node, size=0)
        assert by_path(ours)[path] == expected, path
