"""What the rustic driver keeps between listings, on the real binary: the master key per
repository and password, and the tree blobs it read (agent/engine/rustic.py ``_TreeReader``).

A second listing of a snapshot reads no tree blob again and derives no key from the password
(nor does any other run that only reads the repository);
a listing of a newer snapshot reads only the directories that changed. What is kept never lets a
wrong password through, and a repository made anew at the same place with the same password is
listed right (the kept key fails, is read again, and the listing is the new repository's)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agent import errors
from agent.backends.base import EngineView
from agent.repository import Repository
from tests.engines import ENGINES
from tests.integration.test_restore_over import build_engine

RUSTIC = next(engine for engine in ENGINES if engine.driver == "rustic")


def make_tree(root: Path, directories: int) -> None:
    for index in range(directories):
        directory = root / "project" / f"d{index}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "f.txt").write_text(f"file {index}\n")
    (root / "persist").mkdir(parents=True, exist_ok=True)
    (root / "persist" / "state").write_text("state\n")


def engine_repo_source(tmp_path: Path, name: str, password: str, directories: int):
    """An engine of its own (agent dir ``name``), a local repository under ``tmp_path`` with
    ``password`` and a source tree of ``directories`` directories (:func:`make_tree`)."""
    engine = build_engine(RUSTIC, tmp_path / name)
    repo = Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password=password)
    source = tmp_path / "source"
    make_tree(source, directories=directories)
    return engine, repo, source


class Counting:
    """Counts the driver's rustic runs by subcommand ("cat masterkey", "cat tree-blob", …)."""

    def __init__(self, engine, monkeypatch) -> None:
        self.runs: list[str] = []
        # Every run goes through _run_once, the master key's own read (``cat masterkey``) too.
        original = engine._run_once

        async def run(repo, build, **kwargs):
            argv = build("/profile.toml")
            self.runs.append(" ".join(argv[argv.index("cat"):argv.index("cat") + 2]) if "cat" in argv
                             else kwargs.get("action", "?"))
            return await original(repo, build, **kwargs)

        monkeypatch.setattr(engine, "_run_once", run)

    def take(self) -> list[str]:
        taken, self.runs = self.runs, []
        return taken


def recording_keys(engine, monkeypatch) -> list[tuple[str, bool]]:
    """A list the driver's rustic runs are appended to from now on: (action, run with a master key)."""
    keyed: list[tuple[str, bool]] = []
    run_once = engine._run_once

    async def recording(repo_, build, **kwargs):
        keyed.append((kwargs["action"], kwargs["master_key"] is not None))
        return await run_once(repo_, build, **kwargs)

    monkeypatch.setattr(engine, "_run_once", recording)
    return keyed


def test_listings_reuse_the_key_and_the_blobs_but_never_past_the_password(tmp_path, monkeypatch) -> None:
    engine, repo, source = engine_repo_source(tmp_path, "agent", "listing-cache", 6)
    # Tree blobs through the engine (``cat tree-blob``), as for an S3 repository: a local one's are
    # read from its files (test_a_local_repository_is_listed_from_its_files below).
    monkeypatch.setattr(engine, "_repository_reader", lambda repo: None)

    async def backup(by=engine) -> str:
        outcome = await by.backup(repo, EngineView(wrapper=(), root=source), host="project-cache",
                                  tags=["layout=v2"], on_status=lambda status: None)
        return outcome.summary.snapshot_id

    async def paths(snapshot_id: str, repository: Repository = repo) -> set[str]:
        return {node.path for node in await engine.listing(repository, snapshot_id)}

    async def scenario() -> None:
        first = await backup()
        runs = Counting(engine, monkeypatch)
        listed = await paths(first)
        assert "/project/d5/f.txt" in listed
        cold = runs.take()
        assert cold.count("cat masterkey") == 1 and cold.count("cat tree-blob") >= 8  # root, project, d0-d5 …

        assert await paths(first) == listed
        assert runs.take() == ["snapshots"]  # the kept key; every blob from the cache

        (source / "project" / "d2" / "new.txt").write_text("new\n")
        second = await backup()
        assert "/project/d2/new.txt" in await paths(second)
        warm = runs.take()
        # The root, project/ and d2/ changed; d0, d1, d3, d4, d5 and persist/ did not.
        assert "cat masterkey" not in warm and warm.count("cat tree-blob") == 3, warm

        wrong = Repository(kind="local", location=repo.location, display="repo", password="not-the-password")
        with pytest.raises(errors.FailedPrecondition):
            await paths(first, wrong)
        with pytest.raises(errors.FailedPrecondition):
            await engine.snapshots(wrong)  # a read run: the kept key is never the wrong password's
        runs.take()
        # Every read run uses the kept key (no KDF), e.g. a listing of the snapshots.
        keyed = recording_keys(engine, monkeypatch)
        assert {s.id for s in await engine.snapshots(repo)} == {first, second}
        assert keyed == [("snapshots", True)]

        # The same place and password, a new repository (made by another agent: this driver's
        # backup would drop its key itself): the kept key fails, is read again.
        shutil.rmtree(repo.location)
        (source / "project" / "d0" / "f.txt").write_text("after the new repository\n")
        third = await backup(build_engine(RUSTIC, tmp_path / "other-agent"))
        # The kept key is the old repository's: refused, dropped, and the run made with the password.
        keyed.clear()
        assert [s.id for s in await engine.snapshots(repo)] == [third]
        assert keyed == [("snapshots", True), ("snapshots", False)]
        assert await paths(third) == listed | {"/project/d2/new.txt"}
        anew = runs.take()
        assert anew.count("cat masterkey") == 1, anew
        with pytest.raises(errors.NotFound):
            await paths(first)  # the old repository's snapshot is gone with it

    asyncio.run(scenario())


def forget_trees(engine) -> None:
    """The driver keeps no tree blob, nor any tree's parsed nodes, from what it read before."""
    engine._tree_blobs = type(engine._tree_blobs)(1 << 20)
    engine._parsed_trees = type(engine._parsed_trees)(100_000)


RESTIC_014 = next(engine for engine in ENGINES if engine.id == "restic-0.14-debian")


@pytest.mark.parametrize("writer", [RUSTIC, RESTIC_014], ids=lambda engine: f"written-by-{engine.id}")
def test_a_local_repository_is_listed_from_its_files(writer, tmp_path, monkeypatch) -> None:
    """rustic's listing of a local repository reads its tree blobs from the files (no process per
    directory), equal node for node to what ``cat tree-blob`` gives, for a version 2 repository
    (rustic: compressed) and a version 1 one (restic 0.14); a newer snapshot's index is read
    again; a damaged tree blob is never listed (the engine is asked, and it refuses too)."""
    engine, repo, source = engine_repo_source(tmp_path, "agent", "direct-reads", 5)
    written_by = build_engine(writer, tmp_path / "writer")
    (source / "project" / "d1" / "link").symlink_to("../d2/f.txt")

    async def backup() -> str:
        outcome = await written_by.backup(repo, EngineView(wrapper=(), root=source), host="project-direct",
                                          tags=["layout=v2"], on_status=lambda status: None)
        return outcome.summary.snapshot_id

    async def listing(snapshot_id: str, *, direct: bool) -> list:
        if not direct:
            monkeypatch.setattr(engine, "_repository_reader", lambda repo: None)
        forget_trees(engine)  # nothing kept from an earlier listing
        try:
            return sorted(await engine.listing(repo, snapshot_id), key=lambda node: node.path)
        finally:
            monkeypatch.undo()

    async def scenario() -> None:
        first = await backup()
        runs = Counting(engine, monkeypatch)
        by_engine = await listing(first, direct=False)
        assert runs.take().count("cat tree-blob") >= 7
        runs = Counting(engine, monkeypatch)
        direct = await listing(first, direct=True)
        assert direct == by_engine and "/project/d1/link" in {node.path for node in direct}
        assert "cat tree-blob" not in runs.take()

        (source / "project" / "d3" / "new.txt").write_text("new\n")
        second = await backup()  # a new index file: read again
        runs = Counting(engine, monkeypatch)
        assert "/project/d3/new.txt" in {node.path for node in await listing(second, direct=True)}
        assert "cat tree-blob" not in runs.take()

        # Damage every tree pack's bytes (not the file names): the MAC refuses them, the engine
        # is asked and refuses them as well; nothing is listed.
        for pack in (Path(repo.location) / "data").rglob("*"):
            if pack.is_file():
                data = bytearray(pack.read_bytes())
                data[len(data) // 3] ^= 0xFF
                pack.write_bytes(bytes(data))
        with pytest.raises(errors.BucketsError):
            await listing(second, direct=True)

    asyncio.run(scenario())


def test_a_repository_in_a_bucket_is_listed_from_its_objects(own_s3_server, tmp_path, monkeypatch) -> None:
    """The same for a repository on MinIO: the tree packs are read as objects (one request per
    pack), equal to the engine's listing; with the server stopped the listing fails as the
    engine reports it (Unavailable), never with what was not read."""
    from agent import s3_access
    from agent.repository import S3Spec

    server = own_s3_server
    server.client().create_bucket(Bucket="listings")
    spec = S3Spec(endpoint=server.endpoint, region="us-east-1", bucket="listings", root="rustic/project-direct",
                  access_key_id=server.access_key_id, secret_access_key=server.secret_access_key)
    repo = Repository(kind="s3", location=f"s3:{server.endpoint}/listings/rustic/project-direct", display="s3",
                      password="direct-reads", s3=spec,
                      env={"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": server.access_key_id,
                           "AWS_SECRET_ACCESS_KEY": server.secret_access_key})
    engine = build_engine(RUSTIC, tmp_path / "agent")
    source = tmp_path / "source"
    make_tree(source, directories=5)

    async def scenario() -> None:
        outcome = await engine.backup(repo, EngineView(wrapper=(), root=source), host="project-direct",
                                      tags=["layout=v2"], on_status=lambda status: None)
        snapshot = outcome.summary.snapshot_id
        monkeypatch.setattr(engine, "_repository_reader", lambda repo: None)
        by_engine = sorted(await engine.listing(repo, snapshot), key=lambda node: node.path)
        monkeypatch.undo()
        forget_trees(engine)
        runs = Counting(engine, monkeypatch)
        direct = sorted(await engine.listing(repo, snapshot), key=lambda node: node.path)
        assert direct == by_engine and "/project/d4/f.txt" in {node.path for node in direct}
        assert "cat tree-blob" not in runs.take()

        forget_trees(engine)
        engine._readers.clear()
        server.stop()
        s3_access.forget()  # the bucket is asked again before the engine runs
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await engine.listing(repo, snapshot)


def test_a_backup_uses_the_kept_key_and_never_makes_a_repository_without_a_key_file(tmp_path, monkeypatch) -> None:
    """A backup with the key kept for its repository and password derives no key (the catch-up
    backup of a move, after its freeze); a repository removed or made anew since is backed up
    with the password as before, and what a backup made is always opened by the password alone
    (rustic's --init with a key profile would make a repository without a key file)."""
    engine, repo, source = engine_repo_source(tmp_path, "agent", "backup-key", 2)
    keyed = recording_keys(engine, monkeypatch)

    async def backup(by=engine, repository: Repository = repo) -> str:
        outcome = await by.backup(repository, EngineView(wrapper=(), root=source), host="project-key",
                                  tags=["layout=v2"], on_status=lambda status: None)
        return outcome.summary.snapshot_id

    async def opened_by_password(*expected: str) -> None:
        fresh = build_engine(RUSTIC, tmp_path / f"reader-{len(keyed)}")  # no key kept: the password's KDF
        assert {s.id for s in await fresh.snapshots(repo)} == set(expected)

    async def scenario() -> None:
        first = await backup()
        assert keyed == [("backup", False)]  # no key kept yet
        keyed.clear()
        await engine.keep_key(repo)
        await engine.keep_key(repo)  # kept and fresh: no second run
        assert keyed == [("cat", False)]
        keyed.clear()
        (source / "project" / "d0" / "f.txt").write_text("changed\n")
        second = await backup()
        assert keyed == [("backup", True)]
        await opened_by_password(first, second)

        wrong = Repository(kind="local", location=repo.location, display="repo", password="not-the-password")
        with pytest.raises(errors.FailedPrecondition):
            await backup(repository=wrong)  # the key kept is the right password's only

        # Removed since: refused with the key (never --init with it), made with the password.
        shutil.rmtree(repo.location)
        keyed.clear()
        third = await backup()
        assert keyed == [("backup", True), ("backup", False)]
        await opened_by_password(third)

        # Made anew by another agent since the key was kept: the key is refused, the password used.
        await engine.keep_key(repo)
        shutil.rmtree(repo.location)
        other = await backup(by=build_engine(RUSTIC, tmp_path / "other-agent"))
        keyed.clear()
        fourth = await backup()
        assert keyed == [("backup", True), ("backup", False)]
        await opened_by_password(other, fourth)

    asyncio.run(scenario())


def test_read_runs_started_together_derive_the_key_once_and_a_wrong_password_still_fails(tmp_path, monkeypatch) -> None:
    """A move's target starts its first reads of a repository together (the snapshot's lookup,
    its size, the restore): they wait for one ``cat masterkey`` and all run with that key. A
    wrong password derives nothing and fails the way it always did."""
    writer, repo, source = engine_repo_source(tmp_path, "writer", "together", 2)  # nothing kept here
    engine = build_engine(RUSTIC, tmp_path / "agent")

    async def scenario() -> None:
        outcome = await writer.backup(repo, EngineView(wrapper=(), root=source), host="project-together",
                                      tags=["layout=v2"], on_status=lambda status: None)
        keyed = recording_keys(engine, monkeypatch)
        listings = await asyncio.gather(*(engine.snapshots(repo) for _ in range(3)))
        assert all([s.id for s in listed] == [outcome.summary.snapshot_id] for listed in listings)
        assert sorted(keyed) == [("cat", False), ("snapshots", True), ("snapshots", True), ("snapshots", True)]

        keyed.clear()
        wrong = Repository(kind="local", location=repo.location, display="repo", password="not-together")
        with pytest.raises(errors.FailedPrecondition):
            await engine.snapshots(wrong)
        # The key could not be read with it: the run was made with the password, which failed.
        assert keyed == [("cat", False), ("snapshots", False)]
        assert engine._kept_master_key(wrong) is None

    asyncio.run(scenario())


def test_a_tree_from_the_callers_own_lookup_spares_the_readers_lookup(tmp_path, monkeypatch) -> None:
    """A catch-up or a verify looks its snapshot up first; given that lookup's root tree id, the
    listing, find and diff run no ``snapshots`` of their own for it (a diff still looks up its
    base), and list exactly what they list without it. Without a tree they look it up as before;
    a tree that is not a blob id is refused."""
    engine, repo, source = engine_repo_source(tmp_path, "agent", "tree-given", 3)

    async def backup() -> str:
        outcome = await engine.backup(repo, EngineView(wrapper=(), root=source), host="project-tree",
                                      tags=["layout=v2"], on_status=lambda status: None)
        return outcome.summary.snapshot_id

    async def scenario() -> None:
        first = await backup()
        (source / "project" / "d1" / "g.txt").write_text("new\n")
        second = await backup()
        await engine.keep_key(repo)
        looked_up = (await engine.snapshots(repo, ids=[second]))[0]
        runs = Counting(engine, monkeypatch)
        listed = await engine.listing(repo, second)
        diffed = await engine.diff(repo, first, second)
        found = await engine.find(repo, second, ["/project"])
        assert runs.take().count("snapshots") == 4  # listing, find and the diff's two
        assert await engine.listing(repo, second, tree=looked_up.tree) == listed
        assert await engine.diff(repo, first, second, tree=looked_up.tree) == diffed
        assert await engine.find(repo, second, ["/project"], tree=looked_up.tree) == found
        assert runs.take().count("snapshots") == 1  # the diff's base only
        assert "/project/d1/g.txt" in {node.path for node in listed}
        with pytest.raises(errors.Internal):
            await engine.listing(repo, second, tree="not-a-tree-id")

    asyncio.run(scenario())
