"""The pure parts of a content-exact catch-up (issue 18): restic's ``diff --json --metadata``
(argv and parser, on the outputs recorded from restic 0.14.0 and 0.18.1 under
samples/restic/diff_*), its ``--include`` batches, rustic's tree-blob diff
(:func:`rustic_args.diff_trees`), and the plans of :mod:`agent.catch_up`. No process here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import catch_up, errors
from agent.catch_up import DiffPlan, diff_plan, fetched_figures, invalidation, topmost, way_for
from agent.engine import restic_args as ra
from agent.engine import rustic_args as rua
from agent.engine.base import RESTORE_OVER, RESTORE_PATHS, SNAPSHOT_DIFF, DiffEntry

SAMPLES = Path(__file__).parent / "samples" / "restic"
BASE = "32a481046e511c2b1fadc164abd698387feec1a8545706bab065652dc434ee62"
NEW = "5b6e777f6d713ce07be7a3fcb9d2594fdb8cc9f4c9de6f9f71ac49247479ee68"
BARE = ra.CommonOptions(repository="/srv/repo", cache_dir=None, password_file=None)


def D(path: str, change: str, is_dir: bool = False, size: int = 0) -> DiffEntry:
    return DiffEntry(path=path, change=change, is_dir=is_dir, size=size)


# --------------------------------------------------------------------------
# restic diff
# --------------------------------------------------------------------------


def test_diff_args() -> None:
    assert ra.diff_args("restic", BARE, BASE, NEW[:8]) == [
        "restic", "-r", "/srv/repo", "--no-cache", "--no-lock", "diff", "--json", "--metadata", "--", BASE, NEW[:8]]
    with pytest.raises(ValueError):
        ra.diff_args("restic", BARE, "--help", NEW)


KINDS = [
    D("/project", "metadata", True),
    D("/project/a.txt", "content"),  # same size, same mtime, other content
    D("/project/chm", "metadata"),
    D("/project/d", "metadata", True),
    D("/project/d/sub", "metadata", True),
    D("/project/d/sub/m", "added"),
    D("/project/dir2file", "type"),
    D("/project/file2link", "type"),
    D("/project/gone", "removed", True),
    D("/project/gone/x", "removed", True),
    D("/project/gone/x/y", "removed"),
    D("/project/keep", "metadata"),
    D("/project/new", "added", True),
    D("/project/new/n2", "added", True),
    D("/project/new/n2/*?[x]\\\\", "added"),
    D("/project/same.txt", "content"),
    D("/project/ünï", "added"),
]


@pytest.mark.parametrize("version", ["0.14.0", "0.18.1"])
def test_parse_diff_of_every_kind_of_change(version) -> None:
    assert ra.parse_diff((SAMPLES / f"diff_kinds_v{version}.stdout.jsonl").read_text()) == KINDS


@pytest.mark.parametrize("version", ["0.14.0", "0.18.1"])
def test_parse_diff_type_to_dir_symlink_target_hard_link_and_newline_name(version) -> None:
    assert ra.parse_diff((SAMPLES / f"diff_metadata_v{version}.stdout.jsonl").read_text()) == [
        D("/persist", "metadata", True),
        D("/persist/db2", "added"),
        D("/project", "metadata", True),
        D("/project/f2d", "type", True),  # a file became a directory: its child is not listed
        D("/project/gone", "removed", True),
        D("/project/gone/x", "removed", True),
        D("/project/gone/x/y", "removed"),
        D("/project/h1", "metadata"),  # its link count
        D("/project/h2", "added"),
        D("/project/lnk", "metadata"),  # a symlink's new target is "U" only
        D("/project/nl\nname", "content"),
    ]


@pytest.mark.parametrize("modifier,change", [
    ("+", "added"), ("-", "removed"), ("M", "content"), ("?", "content"), ("M?", "content"), ("U", "metadata"),
    ("T", "type"), ("TU", "type"),
])
def test_parse_diff_modifiers(modifier, change) -> None:
    line = json.dumps({"message_type": "change", "path": "/project/x", "modifier": modifier})
    assert ra.parse_diff(line + '\n{"message_type":"statistics"}\n') == [D("/project/x", change)]


@pytest.mark.parametrize("stdout", [
    "",  # nothing at all
    '{"message_type":"change","path":"/project/x","modifier":"M"}\n',  # no statistics: not finished
    '{"message_type":"change","path":"/project/x","modifier":"X"}\n{"message_type":"statistics"}\n',
    '{"message_type":"change","path":"/project/x","modifier":"+-"}\n{"message_type":"statistics"}\n',
    '{"message_type":"change","path":"project/x","modifier":"M"}\n{"message_type":"statistics"}\n',
    '{"message_type":"change","path":"/project/../x","modifier":"M"}\n{"message_type":"statistics"}\n',
    '{"message_type":"change","path":"/project//x","modifier":"M"}\n{"message_type":"statistics"}\n',
    'M    /project/x\n{"message_type":"statistics"}\n',
    '{"message_type":"statistics"}\n{"message_type":"change","path":"/project/x","modifier":"M"}\n',
    '{"message_type":"surprise"}\n{"message_type":"statistics"}\n',
])
def test_parse_diff_refuses_what_is_not_a_finished_diff(stdout) -> None:
    with pytest.raises(errors.Internal):
        ra.parse_diff(stdout)


def test_include_batches_escape_and_split(monkeypatch) -> None:
    assert ra.include_batches(["/project/a*b", "/project/[x]?\\"]) == [["/project/a\\*b", "/project/\\[x\\]\\?\\\\"]]
    monkeypatch.setattr(ra, "INCLUDE_BATCH", 2)
    assert ra.include_batches([f"/project/{i}" for i in range(5)]) == [
        ["/project/0", "/project/1"], ["/project/2", "/project/3"], ["/project/4"]]
    monkeypatch.setattr(ra, "INCLUDE_BATCH_CHARS", 25)
    assert ra.include_batches(["/project/aaaaaaaaaa", "/project/bbbbbbbbbb"]) == [
        ["/project/aaaaaaaaaa"], ["/project/bbbbbbbbbb"]]
    assert ra.include_batches([]) == []
    for bad in ("/", "relative"):
        with pytest.raises(ValueError):
            ra.include_batches([bad])


def test_restic_snapshot_diff_feature_from_0_14() -> None:
    assert SNAPSHOT_DIFF in ra.features((0, 14, 0))
    assert RESTORE_OVER not in ra.features((0, 14, 0))
    assert {SNAPSHOT_DIFF, RESTORE_OVER} <= ra.features((0, 18, 1))


# --------------------------------------------------------------------------
# rustic: tree blobs
# --------------------------------------------------------------------------

BLOB = {name: name * 64 for name in "abcdef"}


def _node(name: str, kind: str = "file", **fields) -> dict:
    node = {"name": name, "type": kind, "mode": 0o644 if kind != "dir" else 0o755 | (1 << 31),
            "mtime": "2026-12-06T14:51:04.375301546+00:00", "uid": 0, "gid": 0, "size": 5}
    if kind == "file":
        node["content"] = [BLOB["a"]]
    if kind == "dir":
        node["subtree"] = BLOB["f"]
    if kind == "symlink":
        node["linktarget"] = "target"
    node.update(fields)
    return node


def _tree(directory: str, *nodes: dict) -> list[rua.TreeEntry]:
    return rua.parse_tree_blob(json.dumps({"nodes": list(nodes)}), directory)


def test_parse_tree_blob_keeps_a_files_content_ids() -> None:
    (entry,) = rua.parse_tree_blob((Path(__file__).parent / "samples" / "rustic" /
                                    "cat_tree_blob_escaped_v0.11.4.stdout.json").read_text(), "/project")
    assert entry.content == ("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",)
    with pytest.raises(errors.Internal):
        _tree("/project", _node("f", content=["not-an-id"]))


def test_diff_trees_compares_files_by_content_not_size_and_mtime() -> None:
    old = _tree("/project", _node("same"), _node("changed"), _node("chmod"), _node("gone"),
                _node("d", "dir"), _node("eqdir", "dir"), _node("typed"), _node("link", "symlink"),
                _node("gonedir", "dir"))
    new = _tree("/project", _node("same"), _node("changed", content=[BLOB["b"]]), _node("chmod", mode=0o755),
                _node("d", "dir", subtree=BLOB["e"]), _node("eqdir", "dir"), _node("typed", "dir"),
                _node("link", "symlink", linktarget="elsewhere"), _node("added"), _node("addeddir", "dir"))
    changes, descend = rua.diff_trees(old, new)
    assert changes == [
        D("/project/added", "added", size=5),  # sizes of files in the newer snapshot: what a restore writes
        D("/project/addeddir", "added", True),
        D("/project/changed", "content", size=5),  # same size, same mtime
        D("/project/chmod", "metadata"),
        D("/project/gone", "removed"),
        D("/project/gonedir", "removed", True),
        D("/project/link", "metadata"),
        D("/project/typed", "type", True),
    ]
    # Only the directory whose tree id changed is read next; the equal one is pruned.
    assert [(was.node.path, now.subtree) for was, now in descend] == [("/project/d", BLOB["e"])]


def test_diff_trees_metadata_and_descend_of_one_directory() -> None:
    old = _tree("/", _node("project", "dir"))
    new = _tree("/", _node("project", "dir", subtree=BLOB["b"], mtime="2026-12-07T00:00:00+00:00"))
    changes, descend = rua.diff_trees(old, new)
    assert changes == [D("/project", "metadata", True)]
    assert len(descend) == 1


# --------------------------------------------------------------------------
# catch_up: ways and plans
# --------------------------------------------------------------------------


def test_the_bytes_a_restore_over_fetches_are_the_sizes_of_files_the_diff_names() -> None:
    changes = [D("/project/a", "added", size=3), D("/project/b", "content", size=5), D("/project/c", "type", size=7),
               D("/project/d", "added", True), D("/project/e", "metadata"), D("/project/f", "removed")]
    assert catch_up.fetched_bytes(changes) == 15
    assert catch_up.fetched_bytes([]) == 0


def test_way_for() -> None:
    both = frozenset({RESTORE_OVER, SNAPSHOT_DIFF})
    assert way_for(both, base_snapshot_id=BASE) == "restore-over"
    assert way_for(both, base_snapshot_id=None) == "restore-over"
    assert way_for(frozenset({RESTORE_OVER}), base_snapshot_id=None) == "restore-over"
    # Without a diff a restore over a base could keep stale content: no way.
    assert way_for(frozenset({RESTORE_OVER}), base_snapshot_id=BASE) is None
    assert way_for(frozenset({SNAPSHOT_DIFF}), base_snapshot_id=BASE) == "diff"
    assert way_for(frozenset({SNAPSHOT_DIFF}), base_snapshot_id=None) is None
    assert way_for(frozenset(), base_snapshot_id=BASE) is None
    # An engine that restores a list of paths in one run (rustic) takes only what differs.
    rustic = frozenset({RESTORE_OVER, SNAPSHOT_DIFF, RESTORE_PATHS})
    assert way_for(rustic, base_snapshot_id=BASE) == "diff"
    assert way_for(rustic, base_snapshot_id=None) == "restore-over"  # no base: nothing to diff from
    assert way_for(frozenset({RESTORE_OVER, RESTORE_PATHS}), base_snapshot_id=BASE) is None


def test_a_name_the_listing_could_not_spell_is_told() -> None:
    assert catch_up.spelled("/project/a/b c")
    assert not catch_up.spelled("/project/a/\ufffdb")


def test_topmost() -> None:
    assert topmost(["/project/a/b", "/project/a", "/project/ab", "/project/c/d", "/project/a/b/c"]) == [
        "/project/a", "/project/ab", "/project/c/d"]


def test_invalidation_removes_what_restore_over_would_keep() -> None:
    assert invalidation(KINDS) == ["/project/a.txt", "/project/dir2file", "/project/file2link", "/project/same.txt"]
    # A symlink whose node changed (restic: "U" for a new target) goes too.
    assert invalidation([D("/project/lnk", "metadata"), D("/project/chm", "metadata")], ["/project/lnk"]) == [
        "/project/lnk"]


def test_diff_plan_of_every_kind_of_change() -> None:
    plan = diff_plan(KINDS)
    assert plan == DiffPlan(
        remove=("/project/a.txt", "/project/dir2file", "/project/file2link", "/project/gone", "/project/same.txt"),
        fetch=("/project/a.txt", "/project/d/sub/m", "/project/dir2file", "/project/file2link", "/project/new",
               "/project/same.txt", "/project/ünï"),
        # deepest first: every directory above a removed or restored entry and every
        # metadata-only entry, nothing inside a restored path
        fix=("/project/d/sub", "/project/chm", "/project/d", "/project/keep", "/project"),
        deleted=("/project/gone",),
    )


def test_diff_plan_fixes_directories_above_changes_the_diff_does_not_name() -> None:
    plan = diff_plan([D("/project/a/b/gone.txt", "removed"), D("/persist/x/new", "added"),
                      D("/project/lnk", "metadata")], ["/project/lnk"])
    assert plan.remove == ("/project/a/b/gone.txt", "/project/lnk")
    assert plan.fetch == ("/persist/x/new", "/project/lnk")
    assert plan.fix == ("/project/a/b", "/persist/x", "/project/a", "/persist", "/project")
    assert plan.deleted == ("/project/a/b/gone.txt",)


def test_diff_plan_of_a_type_change_to_a_directory_restores_it_whole() -> None:
    plan = diff_plan([D("/project", "metadata", True), D("/project/f2d", "type", True)])
    assert plan.remove == plan.fetch == ("/project/f2d",)
    assert plan.fix == ("/project",)


@pytest.mark.parametrize("change", [
    D("/elsewhere/x", "added"), D("/project", "removed", True), D("/persist", "type", True), D("/", "metadata"),
    D("relative", "added"),
])
def test_plans_refuse_changes_outside_the_two_roots(change) -> None:
    with pytest.raises(errors.Internal):
        diff_plan([change])
    with pytest.raises(errors.Internal):
        invalidation([change])


def test_fetched_figures_count_the_files_at_or_below_the_restored_paths() -> None:
    nodes = [n.node for n in _tree("/project", _node("a", size=10), _node("ab", size=100), _node("d", "dir"),
                                   _node("l", "symlink"))]
    nodes += [n.node for n in _tree("/project/d", _node("x", size=1000), _node("y", size=5))]
    figures = fetched_figures(nodes, ["/project/a", "/project/d"])
    assert (figures.files_total, figures.files_restored, figures.files_skipped) == (4, 3, 1)
    assert (figures.bytes_total, figures.bytes_restored, figures.bytes_skipped) == (1115, 1015, 100)


def test_module_docstring_names_both_ways() -> None:
    assert "restore-over" in catch_up.__doc__ and '"diff"' in catch_up.__doc__
