"""The snapshot-vs-live comparison (agent.tree_compare) on constructed manifests, and the live walk
(agent.live_tree) on real trees in tmp_path."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from agent import live_tree
from agent.engine.base import TreeNode
from agent.tree_compare import Counts, Difference, Entry, compare, compare_counts, counts_of, describe, \
    manifest_from_nodes

T = 1_700_000_000_123_456_789


def entry(kind: str = "file", **fields) -> Entry:
    defaults = {"size": 3 if kind == "file" else 0, "mode": 0o755 if kind == "dir" else 0o644, "mtime_ns": T,
                "uid": 1000, "gid": 1000, "link_target": "a" if kind == "symlink" else ""}
    defaults.update(fields)
    return Entry(type=kind, **defaults)


def snapshot() -> dict[str, Entry]:
    return {
        "project": entry("dir"),
        "project/a": entry(),
        "project/sub": entry("dir"),
        "project/sub/b": entry(size=10),
        "project/link": entry("symlink", mode=0o777),
        "persist": entry("dir"),
        "persist/db": entry(size=5),
    }


def kinds(found: list[Difference]) -> list[tuple[str, str]]:
    return [(d.path, d.kind) for d in found]


def test_equal_manifests_have_no_difference() -> None:
    assert compare(snapshot(), snapshot()) == []


def test_an_emptied_home_names_the_missing_files_first() -> None:
    live = {path: e for path, e in snapshot().items() if not path.startswith("project/")}
    live["project"] = entry("dir", mtime_ns=T + 5)  # removing files changed the directory's mtime
    found = compare(snapshot(), live)
    # The missing directory stands for its contents; missing comes before metadata.
    assert kinds(found) == [("project/a", "missing"), ("project/link", "missing"), ("project/sub", "missing"),
                            ("project", "mtime")]
    text = describe(found)
    assert "project/a: missing (a file in the snapshot)" in text


def test_an_empty_live_tree_misses_everything() -> None:
    assert kinds(compare(snapshot(), {})) == [("persist", "missing"), ("project", "missing")]


def test_every_kind_of_difference_is_named() -> None:
    live = snapshot()
    live["project/a"] = entry(size=4)
    live["project/extra"] = entry()
    live["project/link"] = entry("symlink", mode=0o777, link_target="/etc")
    live["project/sub/b"] = entry(size=10, mode=0o600)
    live["project/sub"] = entry("dir", uid=0)
    live["persist/db"] = entry(size=5, mtime_ns=T + 1)
    found = compare(snapshot(), live)
    assert kinds(found) == [("project/extra", "extra"), ("project/a", "size"), ("project/link", "link target"),
                            ("project/sub/b", "mode"), ("project/sub", "owner"), ("persist/db", "mtime")]
    by_path = {d.path: d for d in found}
    assert by_path["project/a"].detail == "4 bytes, 3 in the snapshot"
    assert by_path["project/link"].detail == "'/etc', 'a' in the snapshot"
    assert by_path["project/sub/b"].detail == "0600, 0644 in the snapshot"
    assert by_path["project/sub"].detail == "uid 0, 1000 in the snapshot"


def test_a_retyped_entry_stands_for_what_is_below_it() -> None:
    live = snapshot()
    del live["project/sub/b"]
    live["project/sub"] = entry("symlink", mode=0o777, link_target="/outside")
    assert kinds(compare(snapshot(), live)) == [("project/sub", "type")]


def test_an_extra_directory_stands_for_its_contents() -> None:
    live = snapshot() | {"project/new": entry("dir"), "project/new/x": entry(), "project/new/y": entry()}
    assert kinds(compare(snapshot(), live)) == [("project/new", "extra")]


def test_special_files_compare_by_their_own_kind() -> None:
    expected = snapshot() | {"project/pipe": entry("fifo", size=0)}
    live = snapshot() | {"project/pipe": entry("chardev", size=0)}
    assert kinds(compare(expected, live)) == [("project/pipe", "type")]
    assert compare(expected, expected) == []


def test_sizes_count_for_files_only() -> None:
    # A directory's size is not in the snapshot listing; the live walk records 0 for it.
    expected = {"project": entry("dir", size=0)}
    assert compare(expected, {"project": entry("dir", size=0)}) == []


def test_an_owner_unknown_on_one_side_is_not_compared() -> None:
    expected = {"project": entry("dir", uid=None, gid=None)}
    assert compare(expected, {"project": entry("dir", uid=5, gid=6)}) == []


def test_mtime_is_compared_to_the_precision_the_snapshot_keeps() -> None:
    coarse = {"project": entry("dir", mtime_ns=T - T % 1000, mtime_step_ns=1000)}
    assert compare(coarse, {"project": entry("dir", mtime_ns=T)}) == []
    assert kinds(compare(coarse, {"project": entry("dir", mtime_ns=T + 1000)})) == [("project", "mtime")]
    exact = {"project": entry("dir")}
    assert kinds(compare(exact, {"project": entry("dir", mtime_ns=T + 1)})) == [("project", "mtime")]


def test_describe_names_the_first_few_and_how_many_more() -> None:
    found = [Difference(f"project/f{i}", "missing") for i in range(8)]
    assert describe(found, limit=3) == "project/f0: missing; project/f1: missing; project/f2: missing; and 5 more"
    assert describe(found[:1]) == "project/f0: missing"


def test_counts_are_entries_and_file_bytes() -> None:
    assert counts_of(snapshot()) == Counts(entries=7, bytes=18)
    assert compare_counts(Counts(7, 18), Counts(7, 18)) == []
    assert compare_counts(Counts(7, 18), Counts(3, 0)) == ["3 entries, 7 in the snapshot",
                                                           "0 bytes in files, 18 in the snapshot"]


def node(path: str, kind: str = "file", **fields) -> TreeNode:
    values = {"name": path.rsplit("/", 1)[-1], "size": 0, "mode": 0o644,
              "mtime": datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)}
    values.update(fields)
    return TreeNode(path=path, type=kind, **values)


def test_manifest_from_nodes_keeps_both_roots_and_exact_mtimes() -> None:
    nodes = [
        node("/project", "dir", mode=0o755, uid=1, gid=2, raw_type="dir", mtime_ns=T),
        node("/project/a", size=3, raw_type="file", mtime_ns=T),
        node("/project/l", "symlink", mode=0o777, link_target="a", raw_type="symlink", mtime_ns=T),
        node("/project/p", "other", raw_type="fifo", mtime_ns=T),
        node("/persist", "dir", mode=0o700),
        node("/elsewhere/x"),
    ]
    manifest = manifest_from_nodes(nodes)
    assert sorted(manifest) == ["persist", "project", "project/a", "project/l", "project/p"]
    assert manifest["project"] == Entry("dir", 0, 0o755, T, 1, 2)
    assert manifest["project/l"].link_target == "a"
    assert manifest["project/p"].type == "fifo"
    # Without nanoseconds in the listing, the datetime's microseconds are what is known.
    assert manifest["persist"].mtime_ns == 1_700_000_000_123_456_000
    assert manifest["persist"].mtime_step_ns == 1000


# ---------------------------------------------------------------- the live walk


def test_live_manifest_records_every_kind_without_following_symlinks(tmp_path) -> None:
    home, persist, outside = tmp_path / "home", tmp_path / "persist", tmp_path / "outside"
    for directory in (home / "sub", persist, outside):
        directory.mkdir(parents=True)
    (outside / "secret").write_text("x")
    (home / "a").write_text("abc")
    (home / "sub" / "b").write_bytes(b"0123456789")
    os.symlink("../outside", home / "sub" / "out")
    os.mkfifo(home / "pipe")
    os.chmod(home / "a", 0o4750)
    os.utime(home / "a", ns=(T, T))
    manifest = live_tree.manifest({"project": home, "persist": persist, "missing": tmp_path / "nope"})
    assert sorted(manifest) == ["persist", "project", "project/a", "project/pipe", "project/sub",
                                "project/sub/b", "project/sub/out"]
    assert manifest["project/a"] == Entry("file", 3, 0o4750, T, os.getuid(), os.getgid())
    assert manifest["project/sub/out"].type == "symlink"
    assert manifest["project/sub/out"].link_target == "../outside"
    assert manifest["project/pipe"].type == "fifo"
    assert manifest["project/sub"].size == 0
    assert counts_of(manifest) == Counts(entries=7, bytes=13)


def test_a_root_that_is_a_symlink_is_recorded_as_one_and_not_entered(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_text("x")
    os.symlink(real, tmp_path / "home")
    manifest = live_tree.manifest({"project": tmp_path / "home"})
    assert list(manifest) == ["project"]
    assert manifest["project"].type == "symlink"


@pytest.mark.parametrize("depth", [1, 300])
def test_the_walk_closes_every_descriptor(tmp_path, depth) -> None:
    deep = tmp_path / "home"
    path = deep
    for i in range(depth):
        path = path / f"d{i}"
    path.mkdir(parents=True)
    (path / "leaf").write_text("x")
    before = len(os.listdir("/proc/self/fd"))
    manifest = live_tree.manifest({"project": deep})
    assert len(manifest) == depth + 2
    assert len(os.listdir("/proc/self/fd")) == before


def test_live_counts_are_the_counts_of_the_live_manifest(tmp_path) -> None:
    """Verify COUNTS walks with live_tree.counts: it must count exactly what counts_of(manifest)
    counts, every kind included, never following a symlink (a root that is one, one to a
    directory full of files, one to a big file), a missing root as nothing."""
    home, persist, outside = tmp_path / "home", tmp_path / "persist", tmp_path / "outside"
    for directory in (home / "sub" / "deeper", home / "empty", persist / "state", outside / "many"):
        directory.mkdir(parents=True)
    for index in range(20):
        (outside / "many" / f"f{index}").write_bytes(b"x" * 1000)
    (outside / "big").write_bytes(b"y" * 50_000)
    (home / "a").write_text("abc")
    (home / "sub" / "deeper" / "b").write_bytes(b"0123456789")
    (home / "sub" / "hard").write_bytes(b"h" * 7)
    os.link(home / "sub" / "hard", home / "sub" / "hard-too")
    os.symlink("../outside/many", home / "sub" / "to-dir")
    os.symlink(str(outside / "big"), home / "to-file")
    os.symlink("nowhere", home / "dangling")
    os.mkfifo(home / "pipe")
    (persist / "state" / "db").write_bytes(b"z" * 123)
    os.symlink(outside, tmp_path / "linked-root")
    for roots in ({"project": home, "persist": persist},
                  {"project": home, "persist": tmp_path / "missing"},
                  {"project": tmp_path / "linked-root"},
                  {"project": home / "a"}):
        assert live_tree.counts(roots) == counts_of(live_tree.manifest(roots)), roots
    assert live_tree.counts({"project": home, "persist": persist}) == Counts(entries=15, bytes=3 + 10 + 7 + 7 + 123)
