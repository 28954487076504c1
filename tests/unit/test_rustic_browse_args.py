"""Unit tests of the browsing and keep-policy parts of agent.engine.rustic_args.

Every sample read here is recorded from the real rustic 0.11.4 (``*_v0.11.4.*`` under
samples/rustic/, see its README "Browsing and keep policies" for the commands and the tree).
No process is started.
"""

from __future__ import annotations

import dataclasses
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import errors
from agent.convert import entry_to_proto
from agent.engine.restic_args import KeepPolicy
from agent.engine.rustic_args import (
    LocalRepository,
    Profile,
    cat_masterkey_args,
    cat_tree_blob_args,
    check_snapshot_path,
    classify_failure,
    dump_args,
    forget_plan_args,
    go_unquote,
    parse_forget_plan,
    parse_masterkey,
    parse_snapshots,
    parse_tree_blob,
    render_profile,
    tree_id_of,
)

SAMPLES = Path(__file__).parent / "samples" / "rustic"
RUSTIC = "/usr/local/bin/rustic"
PROFILE = "/run/buckets/rustic/p.toml"
PREFIX = [RUSTIC, "-P", "/run/buckets/rustic/p", "--no-progress"]
FULL_SNAP = "a9a492cf5564cce622df394650d42cf7ba576b99a139d2ac41e1d3ddcfc8ce1f"
TREE = "ede2093e06b40450d49e3d5ee8899247be5b28b45b09613a8cddf74461b6e0d3"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------
# Argument builders
# --------------------------------------------------------------------------


def test_cat_and_dump_args_exact() -> None:
    assert cat_masterkey_args(RUSTIC, PROFILE) == [*PREFIX, "cat", "masterkey"]
    assert cat_tree_blob_args(RUSTIC, PROFILE, TREE) == [*PREFIX, "cat", "tree-blob", "--", TREE]
    assert dump_args(RUSTIC, PROFILE, FULL_SNAP, "/project/sp ace\nx") == [
        *PREFIX, "dump", "--archive", "content", "--", f"{FULL_SNAP}:/project/sp ace\nx"]


@pytest.mark.parametrize("bad", ["", TREE[:8], TREE.upper(), "-" + TREE[1:], TREE + "0"])
def test_cat_tree_blob_args_refuses_anything_but_a_full_id(bad: str) -> None:
    with pytest.raises(ValueError):
        cat_tree_blob_args(RUSTIC, PROFILE, bad)


@pytest.mark.parametrize("path", ["", "/", "//", "project/a", "/project/a\x00b"])
def test_dump_args_refuses_root_relative_and_nul(path: str) -> None:
    with pytest.raises(ValueError):
        dump_args(RUSTIC, PROFILE, FULL_SNAP, path)
    with pytest.raises(ValueError):
        dump_args(RUSTIC, PROFILE, "latest", "/project/a")


def test_forget_plan_args_exact_and_grouped_like_restic() -> None:
    policy = KeepPolicy(last=2, hourly=0, daily=3, weekly=0, monthly=1)
    assert forget_plan_args(RUSTIC, PROFILE, host="project-x", policy=policy) == [
        *PREFIX, "--dry-run", "forget", "--json", "--filter-host", "project-x", "--group-by", "host",
        "--keep-last", "2", "--keep-daily", "3", "--keep-monthly", "1"]
    with pytest.raises(ValueError):
        forget_plan_args(RUSTIC, PROFILE, host="-x", policy=policy)
    with pytest.raises(ValueError):  # rustic would refuse; restic would forget everything
        forget_plan_args(RUSTIC, PROFILE, host="project-x", policy=KeepPolicy())


def test_profile_with_master_key_has_no_password() -> None:
    key = '{"mac":{"k":"a","r":"b"},"encrypt":"c"}'
    text = render_profile(Profile(LocalRepository("/srv/repo"), password="pw", cache_dir="/c", master_key=key))
    data = tomllib.loads(text)["repository"]
    assert data == {"repository": "/srv/repo", "key": key, "cache-dir": "/c"}
    assert "pw" not in text
    assert key not in repr(Profile(LocalRepository("/srv/repo"), password="pw", master_key=key))


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------


def test_parse_masterkey_compacts_and_hides_garbage() -> None:
    assert parse_masterkey(' {"mac": {"k": "K", "r": "R"}, "encrypt": "E"}\n') == \
        '{"mac":{"k":"K","r":"R"},"encrypt":"E"}'
    for bad in ("", "[]", '{"mac": {"k": "K"}, "encrypt": "E"}', '{"mac": {"k": "K", "r": "R"}}'):
        with pytest.raises(errors.Internal) as caught:
            parse_masterkey(bad)
        assert caught.value.detail == ""  # never the output: it may be a key


@pytest.mark.parametrize(("stored", "name"), [
    ("plain ü", "plain ü"),
    ("sp ace\\nnl ü", "sp ace\nnl ü"),
    ('q\\"uote\\\\back', 'q"uote\\back'),
    ("tab\\tcr\\rbell\\a\\b\\f\\v", "tab\tcr\rbell\a\b\f\v"),
    ("\\x41\\101\\u00fc\\U0001F600", "AAü😀"),
    ("bad\\xff", "bad\ufffd"),  # not UTF-8: U+FFFD, as restic's JSON shows it
])
def test_go_unquote(stored: str, name: str) -> None:
    assert go_unquote(stored) == name


@pytest.mark.parametrize("bad", ["end\\", "\\q", "\\x4", "\\u12", "\\400", "\\uD800", "\\'"])
def test_go_unquote_refuses_malformed_escapes(bad: str) -> None:
    with pytest.raises(ValueError):
        go_unquote(bad)


def test_parse_tree_blob_project_v0_11_4() -> None:
    entries = parse_tree_blob(sample("cat_tree_blob_v0.11.4.stdout.json"), "/project")
    by_name = {e.node.name: e for e in entries}
    assert list(by_name) == ["a.txt", "empty", "fifo", "link", "stick", "sub"]
    a = by_name["a.txt"].node
    assert (a.path, a.type, a.size, a.mode, a.uid, a.gid) == ("/project/a.txt", "file", 5, 0o4755, 0, 0)
    assert a.mtime_ns == 1577934245_123456789
    assert a.mtime == datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    empty = by_name["empty"].node
    assert (empty.size, empty.mode, empty.uid, empty.gid) == (0, 0o644, 1234, 5678)
    fifo = by_name["fifo"].node
    assert (fifo.type, fifo.raw_type, fifo.mode, fifo.size) == ("other", "fifo", 0o644, 0)
    link = by_name["link"].node
    # rustic stores the target's length as a symlink's size; restic lists sizes for files only
    assert (link.type, link.link_target, link.size, link.mode) == ("symlink", "a.txt", 0, 0o777)
    stick = by_name["stick"]
    assert (stick.node.type, stick.node.mode) == ("dir", 0o1777)
    assert stick.subtree == "ac08ce34ba4f8123618661bef2425f7028ffb9ac740578a3ee88684d2523fee8"
    assert all(e.subtree == "" for e in entries if e.node.type != "dir")


def test_parse_tree_blob_root_and_escaped_names_v0_11_4() -> None:
    root = parse_tree_blob(sample("cat_tree_blob_root_v0.11.4.stdout.json"), "/")
    assert [(e.node.path, e.node.type) for e in root] == [("/persist", "dir"), ("/project", "dir")]
    (odd,) = parse_tree_blob(sample("cat_tree_blob_escaped_v0.11.4.stdout.json"), "/project/sub")
    assert odd.node.name == "sp ace\nnl ü"
    assert odd.node.path == "/project/sub/sp ace\nnl ü"


@pytest.mark.parametrize("bad", [
    "", "[]", '{"nodes": {}}', '{"nodes": [1]}', '{"nodes": [{"type": "file"}]}',
    '{"nodes": [{"name": "a/b", "type": "file", "mode": 420, "mtime": "2020-01-01T00:00:00Z"}]}',
    '{"nodes": [{"name": "..", "type": "file", "mode": 420, "mtime": "2020-01-01T00:00:00Z"}]}',
    '{"nodes": [{"name": "d", "type": "dir", "mode": 2147484141, "mtime": "2020-01-01T00:00:00Z"}]}',
    '{"nodes": [{"name": "f", "type": "file", "mode": "x", "mtime": "2020-01-01T00:00:00Z"}]}',
    '{"nodes": [{"name": "f\\\\q", "type": "file", "mode": 420, "mtime": "2020-01-01T00:00:00Z"}]}',
])
def test_parse_tree_blob_refuses_what_is_not_a_tree(bad: str) -> None:
    with pytest.raises(errors.Internal):
        parse_tree_blob(bad, "/project")


def test_parse_tree_blob_empty_directory() -> None:
    assert parse_tree_blob('{"nodes":[]}\n', "/project") == []
    assert parse_tree_blob('{"nodes":null}\n', "/project") == []


def test_tree_id_of() -> None:
    snaps = parse_snapshots(sample("snapshots_v0.11.4.stdout.json"))
    assert tree_id_of(snaps, snaps[0].id[:8]) == snaps[0].tree
    with pytest.raises(errors.NotFound):
        tree_id_of([], "deadbeef")


def test_parse_forget_plan_v0_11_4() -> None:
    keep, remove = parse_forget_plan(sample("forget_dry_run_v0.11.4.stdout.json"))
    assert [s.id[:8] for s in keep] == ["0c3a6cd7", "bca306db"]
    assert [s.id[:8] for s in remove] == ["a9a492cf"]
    assert {s.hostname for s in keep + remove} == {"h1"}
    assert parse_forget_plan(sample("forget_dry_run_nothing_v0.11.4.stdout.json")) == ([], [])
    assert parse_forget_plan("") == ([], [])


@pytest.mark.parametrize("bad", ["{}", "[1]", '[{"items": [{"snapshot": {}}]}]',
                                 '[{"items": [{"keep": "yes", "snapshot": {}}]}]', '[{"items": {}}]'])
def test_parse_forget_plan_refuses_garbage(bad: str) -> None:
    with pytest.raises(errors.Internal):
        parse_forget_plan(bad)


@pytest.mark.parametrize(("name", "error", "words"), [
    ("dump_missing_v0.11.4.stderr", errors.NotFound, "path does not exist"),
    ("dump_below_file_v0.11.4.stderr", errors.InvalidArgument, "not a regular file"),
    ("cat_tree_blob_missing_v0.11.4.stderr", errors.DataLoss, "tree of the snapshot is missing"),
])
def test_classify_browsing_failures_v0_11_4(name: str, error: type, words: str) -> None:
    found = classify_failure(1, sample(name), action="dump")
    assert type(found) is error
    assert words in found.message


def test_file_entries_carry_the_listed_nanoseconds() -> None:
    """ListFiles gives a node's mtime exactly when the listing has nanoseconds (a float of them
    would lose the last few hundred), and about to the microsecond otherwise."""
    (odd,) = parse_tree_blob(sample("cat_tree_blob_escaped_v0.11.4.stdout.json"), "/project/sub")
    message = entry_to_proto(odd.node)
    assert message.mtime.seconds * 1_000_000_000 + message.mtime.nanos == odd.node.mtime_ns == 1796568664375301546
    coarse = entry_to_proto(dataclasses.replace(odd.node, mtime_ns=None))
    assert abs(coarse.mtime.seconds * 1_000_000_000 + coarse.mtime.nanos - 1796568664375301000) < 2000


def test_check_snapshot_path() -> None:
    check_snapshot_path(FULL_SNAP, "/project/a b")
    for snapshot_id, path in ((FULL_SNAP, "project/a"), ("latest", "/project"), (FULL_SNAP[:7], "/")):
        with pytest.raises(ValueError):
            check_snapshot_path(snapshot_id, path)
