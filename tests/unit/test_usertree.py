"""The fd module for paths inside a user's tree (agent/usertree.py): no symlink is ever followed,
nothing leads out of the directory a lookup starts from."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agent import errors, usertree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """home/{a/b/c.txt, link-in -> a, a/up -> .., abs -> <outside>, a/abs-file -> <outside>/secret}"""
    home = tmp_path / "home"
    (home / "a" / "b").mkdir(parents=True)
    (home / "a" / "b" / "c.txt").write_text("c")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours")
    (home / "link-in").symlink_to("a")
    (home / "a" / "up").symlink_to("..")
    (home / "abs").symlink_to(outside)
    (home / "a" / "abs-file").symlink_to(outside / "secret")
    return home


@pytest.fixture
def root(tree: Path):
    fd = usertree.open_root(tree)
    yield fd
    os.close(fd)


def test_plain_paths_open(root: int) -> None:
    fd = usertree.open_dir(root, "a/b")
    try:
        assert sorted(os.listdir(fd)) == ["c.txt"]
    finally:
        os.close(fd)
    assert usertree.lstat(root, "a/b/c.txt").st_size == 1
    assert usertree.lstat(root, "a/missing") is None


@pytest.mark.parametrize("rel", ["link-in/b", "link-in", "a/up/a", "abs", "abs/x"])
def test_a_symlink_anywhere_on_the_way_is_never_followed(root: int, rel: str) -> None:
    with pytest.raises(OSError) as caught:
        usertree.open_dir(root, rel)
    # A link as the last component of a directory open is ENOTDIR (O_DIRECTORY|O_NOFOLLOW).
    assert caught.value.errno in ((errno.ELOOP, errno.ENOTDIR) if rel in ("link-in", "abs") else (errno.ELOOP,))


def test_a_symlink_as_the_last_component_is_not_followed(root: int) -> None:
    with pytest.raises(OSError) as caught:
        usertree.openat2(root, "a/abs-file", os.O_RDONLY)
    assert caught.value.errno == errno.ELOOP
    assert usertree.lstat(root, "a/abs-file").st_mode & 0o170000 == 0o120000  # seen as the link itself


@pytest.mark.parametrize("rel", ["..", "a/../..", "/etc", "/"])
def test_dotdot_and_absolute_paths_cannot_leave(root: int, rel: str) -> None:
    with pytest.raises(OSError) as caught:
        usertree.open_dir(root, rel)
    assert caught.value.errno == errno.EXDEV


def test_dotdot_that_stays_beneath_is_allowed(root: int) -> None:
    fd = usertree.open_dir(root, "a/b/..")
    try:
        assert "b" in os.listdir(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("magic", ["/proc/self/root", "/proc/self/cwd", "/proc/self/exe"])
def test_magic_links_are_not_followed(magic: str) -> None:
    proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            usertree.openat2(proc, magic.removeprefix("/proc/self/"), os.O_PATH)
        assert caught.value.errno == errno.ELOOP
        # Without RESOLVE_BENEATH/NO_SYMLINKS, NO_MAGICLINKS alone still refuses them.
        with pytest.raises(OSError) as caught:
            usertree.openat2(proc, magic.removeprefix("/proc/self/"), os.O_PATH,
                             resolve=usertree.RESOLVE_NO_MAGICLINKS)
        assert caught.value.errno == errno.ELOOP
    finally:
        os.close(proc)


def test_a_symlinked_or_file_root_is_failed_precondition(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "linked-home"
    link.symlink_to(tree)
    with pytest.raises(errors.FailedPrecondition):
        usertree.open_root(link)
    with pytest.raises(errors.FailedPrecondition):
        usertree.check_root(link)
    (tmp_path / "file-home").write_text("x")
    with pytest.raises(errors.FailedPrecondition):
        usertree.open_root(tmp_path / "file-home")
    with pytest.raises(errors.NotFound):
        usertree.open_root(tmp_path / "missing")
    usertree.check_root(tmp_path / "missing")  # missing is fine by default


def test_remove_tree_removes_links_never_their_targets(tree: Path, tmp_path: Path, root: int) -> None:
    os.chmod(tree / "a" / "b", 0o500)
    usertree.remove_tree(root, "a")
    usertree.remove_tree(root, "abs")
    usertree.remove_tree(root, "missing")
    assert sorted(os.listdir(tree)) == ["link-in"]
    assert (tmp_path / "outside" / "secret").read_text() == "not yours"


def test_mkdir_has_exactly_the_mode_and_renames_take_one_component(root: int, tree: Path) -> None:
    old = os.umask(0o077)
    try:
        fd = usertree.mkdir(root, "made", 0o755)
    finally:
        os.umask(old)
    os.close(fd)
    assert (tree / "made").stat().st_mode & 0o777 == 0o755
    with pytest.raises(ValueError):
        usertree.rename(root, "made", root, "a/made")
    with pytest.raises(ValueError):
        usertree.remove_tree(root, "..")
    usertree.rename(root, "made", root, "made2")
    assert (tree / "made2").is_dir()


def test_without_openat2_everything_fails_closed(monkeypatch: pytest.MonkeyPatch, tree: Path) -> None:
    monkeypatch.setattr(usertree, "_available", False)
    with pytest.raises(errors.Unimplemented):
        usertree.open_root(tree)
