"""The pure and filesystem-only parts of copying: cp's argv and failures, the path rules, putting a
staged tree in place by a conflict policy, and the snapshot checks of a copy's restore and forget."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import errors, fsops, jobs, placing, project_paths, usertree
from agent.copy import classify_cp_failure, cp_args
from agent.engine.base import Snapshot
from agent.placing import ConflictPolicy

PROJECT = "11111111-2222-3333-4444-555555555555"
OTHER = "66666666-7777-8888-9999-000000000000"

# ---------------------------------------------------------------- cp


def test_cp_args_exact() -> None:
    assert cp_args("cp", "/snap/project/docs", "/home/p/.buckets-copy-1/tree/docs") == [
        "cp", "--reflink=auto", "-a", "--no-target-directory", "--", "/snap/project/docs",
        "/home/p/.buckets-copy-1/tree/docs",
    ]


@pytest.mark.parametrize("source, target", [("docs", "/t"), ("/s", "-rf"), ("", "/t"), ("/s", "/t\x00x")])
def test_cp_args_refuses_relative_or_empty_paths(source: str, target: str) -> None:
    with pytest.raises(ValueError):
        cp_args("cp", source, target)
    with pytest.raises(ValueError):
        cp_args("", "/s", "/t")


@pytest.mark.parametrize("stderr, error", [
    ("cp: error writing '/t/x': No space left on device", errors.ResourceExhausted),
    ("cp: cannot create regular file '/t/x': Disk quota exceeded", errors.ResourceExhausted),
    ("cp: cannot create directory '/t/x': Read-only file system", errors.FailedPrecondition),
    ("cp: cannot stat '/s/x': No such file or directory", errors.NotFound),
    ("cp: something new", errors.Internal),
])
def test_cp_failures_are_classified(stderr: str, error: type) -> None:
    found = classify_cp_failure(1, stderr)
    assert type(found) is error
    assert found.detail == stderr


# ---------------------------------------------------------------- path rules


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/../../x", "..", "", "a/\x00"])
def test_relative_refuses_escapes_and_empty(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        project_paths.relative(bad, field="source_path")


def test_relative_normalises() -> None:
    assert project_paths.relative("a//b/./c/", field="p") == "a/b/c"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with a/b.txt, a/sub/, link-in -> a, link-out -> <outside>, up -> .."""
    home = tmp_path / "project"
    (home / "a" / "sub").mkdir(parents=True)
    (home / "a" / "b.txt").write_text("b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours")
    (home / "link-in").symlink_to("a")
    (home / "link-out").symlink_to(outside)
    (home / "up").symlink_to("..")
    return home


def test_source_rules(home: Path) -> None:
    assert project_paths.check_source(home, "a/b.txt", field="f").st_size == 1
    assert stat.S_ISLNK(project_paths.check_source(home, "link-in", field="f").st_mode)  # copied as a link
    with pytest.raises(errors.NotFound):
        project_paths.check_source(home, "a/missing", field="f")
    for bad in ("link-out", "link-out/secret", "link-in/b.txt", "up/outside", "a/b.txt/x"):
        with pytest.raises(errors.InvalidArgument):
            project_paths.check_source(home, bad, field="f")
    # In a read-only snapshot an absolute link resolves against the live system: not followed there.
    assert stat.S_ISLNK(project_paths.check_source(home, "link-out", field="f", check_link=False).st_mode)


def test_target_rules(home: Path) -> None:
    assert project_paths.check_target(home, "new/dir/x", field="f") is None
    assert stat.S_ISLNK(project_paths.check_target(home, "link-in", field="f").st_mode)  # the link itself
    # No symlink on a target's way, not even one that stays inside: the agent writes where the
    # path names, never where a link the user can change points.
    for bad in ("link-in/new", "link-out", "link-out/new", "up/new", "up/x/y", "a/b.txt/x"):
        with pytest.raises(errors.InvalidArgument):
            project_paths.check_target(home, bad, field="f")


def test_a_symlinked_home_is_failed_precondition(home: Path, tmp_path: Path) -> None:
    link = tmp_path / "linked"
    link.symlink_to(home)
    for check in (project_paths.check_source, project_paths.check_target):
        with pytest.raises(errors.FailedPrecondition):
            check(link, "a/b.txt", field="f")


def test_nested() -> None:
    assert project_paths.nested("a", "a")
    assert project_paths.nested("a", "a/b/c")
    assert not project_paths.nested("a", "ab")
    assert not project_paths.nested("a/b", "a")


# ---------------------------------------------------------------- placing


def tree(root: Path) -> dict[str, str]:
    """Relative path → file content, "<dir>" or "-> target" for everything under ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[key] = "<dir>"
        else:
            found[key] = path.read_text()
    return found


def stage(home: Path, target_rel: str, content: dict[str, str] | str, op: str = "op1",
          agent_staging: Path | None = None) -> placing.Staging:
    """Staging for ``target_rel`` holding a directory of ``content`` (or a file when a str)."""
    root = usertree.open_root(home)
    try:
        staging = placing.prepare(root, target_rel, kind="copy", operation_id=op, agent_staging=agent_staging)
    finally:
        os.close(root)
    item = Path(staging.item_path())
    if isinstance(content, str):
        item.write_text(content)
    else:
        item.mkdir()
        for name, text in content.items():
            (item / name).parent.mkdir(parents=True, exist_ok=True)
            (item / name).write_text(text)
    return staging


@pytest.fixture
def target_home(tmp_path: Path) -> Path:
    home = tmp_path / "target"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "a.txt").write_text("a old")
    (home / "docs" / "c.txt").write_text("c old")
    (home / "f.txt").write_text("f old")
    return home


NEW_DOCS = {"a.txt": "a new", "b.txt": "b new", "sub/d.txt": "d new"}


def found(home: Path, rel: str):
    return project_paths.check_target(home, rel, field="target_path")


def test_fail_refuses_an_existing_target_and_leaves_it(target_home: Path) -> None:
    before = tree(target_home)
    for rel, content in (("docs", NEW_DOCS), ("f.txt", "f new")):
        with pytest.raises(errors.FailedPrecondition):
            placing.refuse_existing(found(target_home, rel), ConflictPolicy.FAIL, field="target_path", shown=rel)
        staging = stage(target_home, rel, content)
        with pytest.raises(errors.FailedPrecondition):  # the check at the final rename
            placing.place(staging, ConflictPolicy.FAIL)
        placing.discard(staging)
    assert tree(target_home) == before


def test_fail_places_into_a_free_target_and_creates_missing_parents(target_home: Path) -> None:
    staging = stage(target_home, "new/deeper/docs", NEW_DOCS)
    assert staging.base_depth == 0
    assert placing.place(staging, ConflictPolicy.FAIL) == placing.Placed("created")
    placing.discard(staging)
    assert tree(target_home / "new") == {"deeper": "<dir>", "deeper/docs": "<dir>", "deeper/docs/a.txt": "a new",
                                         "deeper/docs/b.txt": "b new", "deeper/docs/sub": "<dir>",
                                         "deeper/docs/sub/d.txt": "d new"}
    assert not list(target_home.rglob(".buckets-*"))


def test_fail_when_the_target_appears_while_staging(target_home: Path) -> None:
    staging = stage(target_home, "late", "staged")
    (target_home / "late").write_text("made meanwhile")
    with pytest.raises(errors.FailedPrecondition):
        placing.place(staging, ConflictPolicy.FAIL)
    assert (target_home / "late").read_text() == "made meanwhile"


def test_a_missing_parent_made_meanwhile_is_descended_into_not_replaced(target_home: Path) -> None:
    staging = stage(target_home, "new/x.txt", "x")
    (target_home / "new").mkdir()
    (target_home / "new" / "mine.txt").write_text("made meanwhile")
    assert placing.place(staging, ConflictPolicy.OVERWRITE).outcome == "created"
    assert tree(target_home / "new") == {"mine.txt": "made meanwhile", "x.txt": "x"}


def test_overwrite_replaces_a_directory_and_a_file(target_home: Path) -> None:
    for rel, content in (("docs", NEW_DOCS), ("f.txt", "f new")):
        staging = stage(target_home, rel, content, op=rel)
        assert placing.place(staging, ConflictPolicy.OVERWRITE).outcome == "replaced"
        placing.discard(staging)
    assert tree(target_home / "docs") == {"a.txt": "a new", "b.txt": "b new", "sub": "<dir>", "sub/d.txt": "d new"}
    assert (target_home / "f.txt").read_text() == "f new"
    assert not list(target_home.glob(".buckets-*"))


def test_skip_merges_a_directory_and_keeps_a_file(target_home: Path) -> None:
    a_inode = (target_home / "docs" / "a.txt").stat().st_ino
    staging = stage(target_home, "docs", NEW_DOCS)
    assert placing.place(staging, ConflictPolicy.SKIP) == placing.Placed("merged", added=2, kept=1)
    assert tree(target_home / "docs") == {"a.txt": "a old", "b.txt": "b new", "c.txt": "c old", "sub": "<dir>",
                                          "sub/d.txt": "d new"}
    assert (target_home / "docs" / "a.txt").stat().st_ino == a_inode  # kept as it is, not rewritten
    staging = stage(target_home, "f.txt", "f new", op="op2")
    assert placing.place(staging, ConflictPolicy.SKIP) == placing.Placed("kept", kept=1)
    assert (target_home / "f.txt").read_text() == "f old"


def test_skip_never_follows_a_symlink_in_the_target(target_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (target_home / "docs" / "sub").symlink_to(outside)
    staging = stage(target_home, "docs", NEW_DOCS)
    assert placing.place(staging, ConflictPolicy.SKIP).outcome == "merged"
    assert list(outside.iterdir()) == []  # sub/d.txt was not written through the link
    assert os.readlink(target_home / "docs" / "sub") == str(outside)


def test_a_failed_merge_moves_back_what_it_added(target_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree(target_home)
    staging = stage(target_home, "docs", {"b1.txt": "1", "b2.txt": "2", "b3.txt": "3"})
    real = fsops.renameat2

    def failing(source, source_name, target, target_name, flags):
        if source_name == "b3.txt":
            raise OSError(5, "Input/output error")
        return real(source, source_name, target, target_name, flags)

    monkeypatch.setattr(fsops, "renameat2", failing)
    with pytest.raises(errors.Internal):
        placing.place(staging, ConflictPolicy.SKIP)
    assert {k: v for k, v in tree(target_home).items() if not k.startswith(".buckets-")} == before
    assert sorted(os.listdir(staging.item_path())) == ["b1.txt", "b2.txt", "b3.txt"]


def test_a_target_under_a_file_or_a_symlink_is_refused(target_home: Path, tmp_path: Path) -> None:
    (target_home / "link").symlink_to(target_home / "docs")
    root = usertree.open_root(target_home)
    try:
        for rel in ("f.txt/x", "link/x"):
            with pytest.raises(errors.InvalidArgument):
                placing.prepare(root, rel, kind="copy", operation_id="op", agent_staging=None)
    finally:
        os.close(root)
    assert not list(target_home.rglob(".buckets-*"))


def test_a_parent_turned_into_a_symlink_while_staging_fails(target_home: Path, tmp_path: Path) -> None:
    staging = stage(target_home, "docs/x.txt", "x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.rename(target_home / "docs", target_home / "docs-moved")
    (target_home / "docs").symlink_to(outside)
    with pytest.raises(errors.FailedPrecondition):
        placing.place(staging, ConflictPolicy.OVERWRITE)
    assert list(outside.iterdir()) == []
    placing.discard(staging)  # found by descriptor where the user moved it
    assert not list(target_home.rglob(".buckets-*"))


def test_staging_is_root_only_and_outside_the_home_when_the_agent_s_own_is_on_its_filesystem(
        target_home: Path, tmp_path: Path) -> None:
    own = tmp_path / "agent-staging"
    staging = stage(target_home, "docs/new/x.txt", "x", agent_staging=own)
    assert not staging.in_home and not list(target_home.rglob(".buckets-*"))
    made = own / "op1"
    assert made.stat().st_uid == os.geteuid() and stat.S_IMODE(made.stat().st_mode) == 0o700
    assert placing.place(staging, ConflictPolicy.FAIL).outcome == "created"
    placing.discard(staging)
    assert (target_home / "docs" / "new" / "x.txt").read_text() == "x"
    assert list(own.iterdir()) == []
    # In the home (another filesystem, a btrfs subvolume): root's, 0700, and gone after discard.
    staging = stage(target_home, "docs/y.txt", "y")
    made = target_home / "docs" / ".buckets-copy-op1"
    assert staging.in_home and stat.S_IMODE(made.stat().st_mode) == 0o700
    placing.discard(staging)
    assert not made.exists()


# ---------------------------------------------------------------- snapshots of a copy


def snapshot(id_: str, project: str, *, subpath: bool = False, host: str | None = None) -> Snapshot:
    tags = jobs.snapshot_tags(project_id=project, host_id="h", operation_id="op", purpose="copy", extra=["copy=1"],
                              subpath=subpath)
    return Snapshot(id=id_, short_id=id_[:8], time=datetime(2026, 1, 1, tzinfo=UTC),
                    hostname=host or f"project-{project}", paths=(), tags=tuple(tags), tree="", username="")


def test_subpath_snapshots_are_tagged_and_never_restored_whole() -> None:
    partial = snapshot("a" * 64, PROJECT, subpath=True)
    assert partial.tags[:6] == ("layout=v2", f"project={PROJECT}", "host=h", "op=op", "purpose=copy",
                                "scope=subpath")
    assert jobs.is_subpath_snapshot(partial)
    jobs.require_layout_v2(partial, PROJECT)  # a path of it may be restored
    with pytest.raises(errors.FailedPrecondition):
        jobs.require_whole(partial, PROJECT)
    jobs.require_whole(snapshot("b" * 64, PROJECT), PROJECT)


def test_forget_exactly_resolves_each_id_to_one_snapshot_of_the_project() -> None:
    mine, theirs = snapshot("ab" * 32, PROJECT), snapshot("cd" * 32, OTHER)
    found = [mine, theirs]
    assert jobs._one_snapshot(found, "abababab", PROJECT) is mine
    with pytest.raises(errors.NotFound):
        jobs._one_snapshot(found, "deadbeef", PROJECT)
    with pytest.raises(errors.FailedPrecondition):
        jobs._one_snapshot(found, "cdcdcdcd", PROJECT)
    with pytest.raises(errors.InvalidArgument):
        jobs._one_snapshot([mine, snapshot("ab" * 31 + "ff", PROJECT)], "abababab", PROJECT)
