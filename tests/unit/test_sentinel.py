"""The move sentinel's path rules (pure) and its write/compare on real temporary trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import errors, sentinel
from agent.sentinel import Sentinel


# ---------------------------------------------------------------- check (pure)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("persist/.buckets-move", Sentinel("persist", (".buckets-move",))),
        ("project/a/b/c.txt", Sentinel("project", ("a", "b", "c.txt"))),
        ("project/with:colon and space", Sentinel("project", ("with:colon and space",))),
    ],
)
def test_check_splits_a_good_path_into_root_and_parts(path, expected):
    checked = sentinel.check(path, "content", required=False)
    assert checked == expected
    assert checked.path == path and checked.name == expected.parts[-1]


@pytest.mark.parametrize(
    "path",
    [
        "../x", "/etc/x", "persist/../../x", "project/a/../b", "other/x", "x", "project", "persist/",
        "project/a/", "project//a", "project/./a", "./project/a", "project/a\x00b", "Project/a",
        "project/" + "a" * 5000,
    ],
)
def test_check_refuses_bad_paths(path):
    with pytest.raises(errors.InvalidArgument):
        sentinel.check(path, "content", required=False)


def test_check_content_limit_is_in_utf8_bytes():
    assert sentinel.check("persist/s", "a" * sentinel.MAX_CONTENT_BYTES, required=True)
    with pytest.raises(errors.InvalidArgument, match="4096"):
        sentinel.check("persist/s", "a" * (sentinel.MAX_CONTENT_BYTES + 1), required=True)
    with pytest.raises(errors.InvalidArgument):
        sentinel.check("persist/s", "é" * (sentinel.MAX_CONTENT_BYTES // 2 + 1), required=True)


def test_check_empty_path():
    assert sentinel.check("", "", required=False) is None
    with pytest.raises(errors.InvalidArgument, match="sentinel_path is empty"):
        sentinel.check("", "content", required=False)
    with pytest.raises(errors.InvalidArgument, match="required"):
        sentinel.check("", "", required=True)


def test_check_allows_empty_content():
    assert sentinel.check("persist/s", "", required=True) == Sentinel("persist", ("s",))


# ---------------------------------------------------------------- write / mismatch (temporary trees)


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    home, persist = tmp_path / "home", tmp_path / "persist"
    home.mkdir()
    persist.mkdir()
    return sentinel.roots_of(home, persist)


def test_write_creates_parents_and_replaces_an_earlier_sentinel_atomically(roots):
    location = sentinel.check("persist/moves/m1/sentinel", "buckets move m1 first", required=True)
    sentinel.write(location, b"buckets move m1 first", roots)
    target = roots["persist"] / "moves" / "m1" / "sentinel"
    assert target.read_bytes() == b"buckets move m1 first"
    sentinel.write(location, b"buckets move m1 first", roots)  # a Freeze repeated
    sentinel.write(location, b"buckets move m2 second", roots)  # a later move's
    assert target.read_bytes() == b"buckets move m2 second"
    assert sorted(os.listdir(target.parent)) == ["sentinel"], "no temporary file may stay behind"
    assert sentinel.mismatch(location, b"buckets move m2 second", roots) is None


def test_write_never_overwrites_a_users_file_or_link_at_the_sentinel_path(roots, tmp_path):
    location = sentinel.check("persist/.buckets-move-sentinel", "buckets move m1", required=True)
    users = roots["persist"] / ".buckets-move-sentinel"
    users.write_bytes(b"the user's own notes")
    with pytest.raises(errors.FailedPrecondition, match="not a move's sentinel"):
        sentinel.write(location, b"buckets move m1", roots)
    assert users.read_bytes() == b"the user's own notes"
    assert sorted(os.listdir(roots["persist"])) == [".buckets-move-sentinel"], "no temporary file may stay behind"
    users.unlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"buckets move m0, but outside the project")
    users.symlink_to(outside)
    with pytest.raises(errors.FailedPrecondition):
        sentinel.write(location, b"buckets move m1", roots)
    assert users.is_symlink() and os.readlink(users) == str(outside)
    assert outside.read_bytes() == b"buckets move m0, but outside the project"


def test_mismatch_names_missing_and_different_without_the_content(roots):
    location = sentinel.check("project/s", "x", required=True)
    assert sentinel.mismatch(location, b"expected", roots) == "is missing"
    assert sentinel.mismatch(sentinel.check("project/no/such/dir/s", "x", required=True), b"e", roots) == "is missing"
    (roots["project"] / "s").write_bytes(b"secret-ish other content")
    problem = sentinel.mismatch(location, b"expected", roots)
    assert problem.startswith("differs") and "secret" not in problem and "expected" in problem
    (roots["project"] / "s").write_bytes(b"expected-and-more")
    assert sentinel.mismatch(location, b"expected", roots).startswith("differs")
    (roots["project"] / "s").write_bytes(b"expected")
    assert sentinel.mismatch(location, b"expected", roots) is None
    assert sentinel.mismatch(location, b"", roots).startswith("differs")


def test_mismatch_does_not_follow_a_final_symlink(roots):
    (roots["project"] / "real").write_bytes(b"expected")
    (roots["project"] / "s").symlink_to("real")
    location = sentinel.check("project/s", "expected", required=True)
    assert "symlink" in sentinel.mismatch(location, b"expected", roots)
    (roots["project"] / "dir").mkdir()
    assert sentinel.mismatch(sentinel.check("project/dir", "", required=True), b"", roots) == "is not a regular file"


def test_a_symlink_out_of_the_root_is_refused_and_nothing_is_written(roots, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (roots["persist"] / "escape").symlink_to(outside)
    location = sentinel.check("persist/escape/s", "c", required=True)
    with pytest.raises(errors.InvalidArgument, match="leads out"):
        sentinel.confine(location, roots)
    with pytest.raises(errors.InvalidArgument, match="leads out"):
        sentinel.write(location, b"c", roots)
    with pytest.raises(errors.InvalidArgument, match="leads out"):
        sentinel.mismatch(location, b"c", roots)
    assert list(outside.iterdir()) == []
    # A dangling link out of the root must not make write create the directory it names.
    (roots["persist"] / "dangling").symlink_to(tmp_path / "not-yet")
    with pytest.raises(errors.InvalidArgument):
        sentinel.write(sentinel.check("persist/dangling/s", "c", required=True), b"c", roots)
    assert not (tmp_path / "not-yet").exists()


def test_a_symlink_that_stays_inside_the_root_is_followed(roots):
    (roots["project"] / "real").mkdir()
    (roots["project"] / "alias").symlink_to("real")
    location = sentinel.check("project/alias/s", "c", required=True)
    sentinel.confine(location, roots)
    sentinel.write(location, b"c", roots)
    assert (roots["project"] / "real" / "s").read_bytes() == b"c"
    assert sentinel.mismatch(location, b"c", roots) is None


def test_write_into_something_that_is_not_a_directory_is_refused(roots):
    (roots["persist"] / "file").write_bytes(b"a file")
    with pytest.raises(errors.InvalidArgument):
        sentinel.write(sentinel.check("persist/file/s", "c", required=True), b"c", roots)
    (roots["persist"] / "dir").mkdir()
    with pytest.raises(errors.InvalidArgument):
        sentinel.write(sentinel.check("persist/dir", "c", required=True), b"c", roots)
    assert (roots["persist"] / "file").read_bytes() == b"a file"


def test_write_into_a_missing_root_is_not_found(tmp_path):
    roots = sentinel.roots_of(tmp_path / "home", tmp_path / "missing-persist")
    with pytest.raises(errors.NotFound):
        sentinel.write(sentinel.check("persist/s", "c", required=True), b"c", roots)
    assert not (tmp_path / "missing-persist").exists()
