"""Unit tests of agent.browse: path mapping, paging, symlink confinement, read caps.

No process is started. Besides synthetic trees, the listing of a real
snapshot recorded from restic 0.14 (samples/restic/ls_tree.stdout.jsonl and
find_nodes.stdout.json, see samples/restic/README.md) is browsed as the
driver would hand it over.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import browse, errors
from agent.browse import (
    MAX_DEPTH,
    MAX_PAGE_SIZE,
    SNAPSHOT_ROOT,
    Entry,
    check_readable,
    is_binary,
    list_page,
    read_limit,
    read_result,
    relative_path,
    snapshot_path,
    symlink_target_path,
)
from agent.engine.base import TreeNode
from agent.engine.restic_args import parse_find, parse_ls

SAMPLES = Path(__file__).parent / "samples" / "restic"
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def node(path: str, type: str = "file", *, size: int = 0, link: str = "", mode: int = 0o644) -> TreeNode:
    return TreeNode(
        path=path,
        name=path.rsplit("/", 1)[-1],
        type=type,
        size=size,
        mode=mode,
        mtime=T0,
        link_target=link,
    )


def paths(entries: list[Entry]) -> list[str]:
    return [e.path for e in entries]


def all_pages(nodes, base, *, depth=0, page_size=0, **kw) -> list[list[Entry]]:
    pages = []
    token = ""
    while True:
        entries, token = list_page(nodes, base, depth, page_size, token, **kw)
        pages.append(entries)
        if not token:
            return pages
        assert len(pages) < 10_000, "paging does not end"


# --------------------------------------------------------------------------
# snapshot_path
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_path", "expected"),
    [
        ("", "/project"),
        ("src", "/project/src"),
        ("src/", "/project/src"),
        ("src/a.txt", "/project/src/a.txt"),
        ("src/my file.txt", "/project/src/my file.txt"),
        ("ünï cödé.txt", "/project/ünï cödé.txt"),
        ("x*[y]?.txt", "/project/x*[y]?.txt"),
        ("back\\slash", "/project/back\\slash"),  # a legal name character on Linux
        ("a:b", "/project/a:b"),
        ("...", "/project/..."),  # only exactly "." and ".." are special
        ("..a/b..", "/project/..a/b.."),
        ("-rf", "/project/-rf"),
    ],
)
def test_snapshot_path_maps_into_the_project_root(user_path: str, expected: str) -> None:
    assert snapshot_path(user_path) == expected


def test_snapshot_path_other_roots() -> None:
    assert snapshot_path("state.db", root="persist") == "/persist/state.db"
    assert snapshot_path("", root="persist") == "/persist"
    assert snapshot_path("", root=SNAPSHOT_ROOT) == "/"
    assert snapshot_path("project/src", root=SNAPSHOT_ROOT) == "/project/src"
    assert snapshot_path("persist", root=SNAPSHOT_ROOT) == "/persist"
    with pytest.raises(errors.InvalidArgument, match="must start with 'project/' or 'persist/'"):
        snapshot_path("etc/passwd", root=SNAPSHOT_ROOT)
    with pytest.raises(ValueError):
        snapshot_path("src", root="home")


@pytest.mark.parametrize(
    ("user_path", "problem"),
    [
        ("/etc/passwd", "not absolute"),
        ("/", "not absolute"),
        ("//src", "not absolute"),
        ("..", "'..' component"),
        ("../x", "'..' component"),
        ("src/../../x", "'..' component"),
        ("src/..", "'..' component"),
        (".", "'.' component"),
        ("./src", "'.' component"),
        ("src/./a", "'.' component"),
        ("src//a", "empty component"),
        ("src//", "empty component"),
        ("src\x00.txt", "NUL byte"),
        ("a/" * 2100, "longer than 4096 bytes"),
    ],
)
def test_snapshot_path_refuses_escapes_and_oddities(user_path: str, problem: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=problem):
        snapshot_path(user_path)


def test_snapshot_path_refuses_non_strings() -> None:
    with pytest.raises(errors.InvalidArgument):
        snapshot_path(None)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        snapshot_path(b"src")  # type: ignore[arg-type]


def test_relative_path() -> None:
    assert relative_path("/project/src/a.txt") == "src/a.txt"
    assert relative_path("/project") == ""
    assert relative_path("/persist/db", "persist") == "db"
    assert relative_path("/project/src", SNAPSHOT_ROOT) == "project/src"
    with pytest.raises(ValueError):
        relative_path("/projectx/a")
    with pytest.raises(ValueError):
        relative_path("/persist/db")


# --------------------------------------------------------------------------
# list_page
# --------------------------------------------------------------------------


def test_ten_thousand_entries_paged_by_333_each_exactly_once_in_order() -> None:
    names = [f"f{i:05d}" for i in range(10_000)]
    nodes = [node("/project", "dir"), node("/project/big", "dir")]
    nodes += [node(f"/project/big/{n}") for n in names]
    random.Random(4).shuffle(nodes)  # the driver's order does not matter
    base = snapshot_path("big")
    pages = all_pages(nodes, base, page_size=333, scope="snap-1:project")
    assert [len(p) for p in pages] == [333] * 30 + [10]
    flat = [e.path for p in pages for e in p]
    assert flat == [f"big/{n}" for n in names]
    assert len(set(flat)) == 10_000


def test_paging_survives_a_page_size_change_and_equal_paths() -> None:
    # The same path twice never occurs in one restic tree; if it does, each
    # copy is still returned exactly once, in input order, across pages.
    nodes = [
        node("/project", "dir"),
        node("/project/a", size=1),
        node("/project/b", size=2),
        node("/project/b", size=3),
        node("/project/b", size=4),
        node("/project/c", size=5),
    ]
    token = ""
    seen = []
    for size in (2, 1, 1, 5):
        entries, token = list_page(nodes, "/project", 1, size, token)
        seen += [(e.path, e.size) for e in entries]
        if not token:
            break
    assert seen == [("a", 1), ("b", 2), ("b", 3), ("b", 4), ("c", 5)]
    assert token == ""


def test_depth_3_subtree_in_one_call_in_tree_order() -> None:
    nodes = [
        node("/project", "dir"),
        node("/project/a b", "dir"),
        node("/project/a", "dir"),
        node("/project/a/b", "dir"),
        node("/project/a/b/c", "dir"),
        node("/project/a/b/c/d", "dir"),  # depth 4 below the root
        node("/project/a/b/c/d/e"),
        node("/project/a/b/z.txt"),
        node("/project/a.txt"),
        node("/project/Z"),
        node("/project/é"),
        node("/persist", "dir"),
        node("/persist/db"),
    ]
    entries, token = list_page(nodes, "/project", 3, 0, "")
    assert token == ""
    # A directory comes right before its contents; names by code point.
    assert paths(entries) == ["Z", "a", "a/b", "a/b/c", "a/b/z.txt", "a b", "a.txt", "é"]
    assert entries[1] == Entry(
        path="a", name="a", type="dir", size=0, mode=0o644, mtime=T0, link_target=""
    )
    one, _ = list_page(nodes, "/project", 1, 0, "")
    assert paths(one) == ["Z", "a", "a b", "a.txt", "é"]
    zero, _ = list_page(nodes, "/project", 0, 0, "")  # proto3 unset → 1
    assert zero == one
    sub, _ = list_page(nodes, "/project/a/b", MAX_DEPTH, 0, "")
    assert paths(sub) == ["a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/z.txt"]


def test_depth_and_page_size_limits() -> None:
    nodes = [node("/project", "dir")] + [node(f"/project/f{i:05d}") for i in range(MAX_PAGE_SIZE + 5)]
    first, token = list_page(nodes, "/project", 1, 0, "")
    assert len(first) == browse.DEFAULT_PAGE_SIZE and token
    big, token = list_page(nodes, "/project", 1, 10 * MAX_PAGE_SIZE, "")
    assert len(big) == MAX_PAGE_SIZE and token  # lowered, not refused
    with pytest.raises(errors.InvalidArgument, match="page_size"):
        list_page(nodes, "/project", 1, -1, "")
    with pytest.raises(errors.InvalidArgument, match=f"at most {MAX_DEPTH}"):
        list_page(nodes, "/project", MAX_DEPTH + 1, 0, "")
    with pytest.raises(errors.InvalidArgument, match="depth"):
        list_page(nodes, "/project", -1, 0, "")


def test_page_token_is_bound_to_its_listing() -> None:
    nodes = [node("/project", "dir"), node("/project/d", "dir")] + [
        node(f"/project/d/f{i}") for i in range(10)
    ]
    _, token = list_page(nodes, "/project/d", 1, 3, "", scope="snap-1:project")
    assert token
    # The same listing continues.
    more, _ = list_page(nodes, "/project/d", 1, 3, token, scope="snap-1:project")
    assert paths(more) == ["d/f3", "d/f4", "d/f5"]
    for base, depth, scope in [
        ("/project", 1, "snap-1:project"),  # other path
        ("/project/d", 2, "snap-1:project"),  # other depth
        ("/project/d", 1, "snap-2:project"),  # other snapshot
    ]:
        with pytest.raises(errors.InvalidArgument, match="different listing"):
            list_page(nodes, base, depth, 3, token, scope=scope)


def _token(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not base64 !",
        "e30",  # "{}"
        _token([1, 2]),
        _token({"v": 2, "l": "x", "k": [], "n": 0}),
        _token({"v": 1, "l": "x", "k": "a/b", "n": 0}),
        _token({"v": 1, "l": "x", "k": [1], "n": 0}),
        _token({"v": 1, "l": "x", "k": ["a"], "n": -1}),
        _token({"v": 1, "l": "x", "k": ["a"], "n": True}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "A" * 100_000,
    ],
)
def test_malformed_page_tokens_are_invalid_argument(token: str) -> None:
    nodes = [node("/project", "dir"), node("/project/a")]
    with pytest.raises(errors.InvalidArgument, match="page_token is malformed"):
        list_page(nodes, "/project", 1, 10, token)


def test_base_that_is_not_a_directory_or_not_there() -> None:
    nodes = [
        node("/project", "dir"),
        node("/project/a.txt", size=6),
        node("/project/link", "symlink", link="sub"),
        node("/project/sub", "dir"),
        node("/project/sub/x"),
    ]
    entries, token = list_page(nodes, "/project/a.txt", 3, 0, "")
    assert paths(entries) == ["a.txt"] and entries[0].size == 6 and token == ""
    link, _ = list_page(nodes, "/project/link", 1, 0, "")  # not followed, as ls(1)
    assert [(e.path, e.type, e.link_target) for e in link] == [("link", "symlink", "sub")]
    with pytest.raises(errors.NotFound, match="'nothere'"):
        list_page(nodes, "/project/nothere", 1, 0, "")
    with pytest.raises(errors.NotFound):
        list_page(nodes, "/project/a.txt/x", 1, 0, "")
    empty, token = list_page([node("/project/emptydir", "dir")], "/project/emptydir", 1, 0, "")
    assert empty == [] and token == ""


def test_base_implied_by_deeper_nodes_exists() -> None:
    # A listing that lacks the directory node itself (or holds only deeper
    # nodes) still proves the directory is there.
    nodes = [node("/project/a/b/c.txt")]
    assert list_page(nodes, "/project/a", 1, 0, "") == ([], "")
    entries, _ = list_page(nodes, "/project/a", 2, 0, "")
    assert paths(entries) == ["a/b/c.txt"]


def test_snapshot_root_listing_and_persist_root() -> None:
    nodes = [node("/persist", "dir"), node("/persist/db"), node("/project", "dir"), node("/project/a")]
    top, _ = list_page(nodes, "/", 1, 0, "", root=SNAPSHOT_ROOT)
    assert paths(top) == ["persist", "project"]
    both, _ = list_page(nodes, "/", 2, 0, "", root=SNAPSHOT_ROOT)
    assert paths(both) == ["persist", "persist/db", "project", "project/a"]
    persist, _ = list_page(nodes, "/persist", 1, 0, "", root="persist")
    assert paths(persist) == ["db"]


def test_base_path_must_come_from_snapshot_path() -> None:
    with pytest.raises(ValueError):
        list_page([], "project/a", 1, 0, "")
    with pytest.raises(ValueError):
        list_page([], "/project/../persist", 1, 0, "")
    with pytest.raises(ValueError):
        list_page([], "/persist/db", 1, 0, "")  # outside the default project root


def test_browsing_a_recorded_restic_listing() -> None:
    nodes = parse_ls((SAMPLES / "ls_tree.stdout.jsonl").read_text())
    entries, token = list_page(nodes, snapshot_path(""), 1, 0, "")
    assert token == ""
    assert [(e.path, e.type) for e in entries] == [
        ("bin.dat", "file"),
        ("fifo", "other"),
        ("link-abs", "symlink"),
        ("link-dir", "symlink"),
        ("link-in", "symlink"),
        ("link-out", "symlink"),
        ("shared", "dir"),
        ("src", "dir"),
        ("tool.sh", "file"),
    ]
    src, _ = list_page(nodes, snapshot_path("src"), 3, 0, "")
    assert paths(src) == [
        "src/a.txt",
        "src/deep",
        "src/deep/deeper",
        "src/deep/deeper/d.txt",
        "src/my file.txt",
        "src/x*[y]?.txt",
        "src/ünï cödé.txt",
    ]
    # `ls --recursive /project/src` lists the same subtree (plus the base).
    rec = parse_ls((SAMPLES / "ls_recursive.stdout.jsonl").read_text())
    assert list_page(rec, snapshot_path("src"), 3, 0, "") == (src, "")


# --------------------------------------------------------------------------
# check_readable
# --------------------------------------------------------------------------


def recorded_nodes() -> dict[str, TreeNode]:
    """The recorded snapshot as a ReadFile driver sees it: `ls` nodes, symlinks from `find`."""
    by_path = {n.path: n for n in parse_ls((SAMPLES / "ls_tree.stdout.jsonl").read_text())}
    by_path.update({n.path: n for n in parse_find((SAMPLES / "find_nodes.stdout.json").read_text())})
    return by_path


def test_check_readable_on_the_recorded_snapshot() -> None:
    nodes = recorded_nodes()
    a = nodes["/project/src/a.txt"]
    assert check_readable(a, nodes) is a
    # link-in -> src/a.txt stays inside the project
    assert check_readable(nodes["/project/link-in"], nodes) is a
    # link-out -> ../persist/state.db climbs out of the project root
    with pytest.raises(errors.InvalidArgument, match="outside the project root"):
        check_readable(nodes["/project/link-out"], nodes)
    # link-abs -> /etc/hostname names a host path
    with pytest.raises(errors.InvalidArgument, match="absolute path"):
        check_readable(nodes["/project/link-abs"], nodes)
    # link-dir -> src is a directory
    with pytest.raises(errors.InvalidArgument, match="'src' is a directory"):
        check_readable(nodes["/project/link-dir"], nodes)
    with pytest.raises(errors.InvalidArgument, match="is a directory"):
        check_readable(nodes["/project/src"], nodes)
    with pytest.raises(errors.InvalidArgument, match="'fifo' is not a regular file"):
        check_readable(nodes["/project/fifo"], nodes)


@pytest.mark.parametrize(
    ("link", "target", "expected"),
    [
        ("/project/l", "a.txt", "/project/a.txt"),
        ("/project/l", "./a.txt", "/project/a.txt"),
        ("/project/l", "sub/../a.txt", "/project/a.txt"),
        ("/project/sub/l", "../a.txt", "/project/a.txt"),
        ("/project/sub/deep/l", "../../a.txt", "/project/a.txt"),
        ("/project/l", "sub//x/", "/project/sub/x"),
        ("/persist/l", "db", "/persist/db"),
    ],
)
def test_symlink_targets_inside_the_root(link: str, target: str, expected: str) -> None:
    assert symlink_target_path(node(link, "symlink", link=target)) == expected


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("/project/l", ".."),
        ("/project/l", "../project/a.txt"),  # the root is project-<uuid> on the host
        ("/project/sub/l", "../../a.txt"),
        ("/project/l", "sub/../../x"),
        ("/project/l", "/project/a.txt"),
        ("/project/l", "/etc/passwd"),
        ("/persist/l", "../project/a.txt"),
    ],
)
def test_symlink_targets_that_escape(link: str, target: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        symlink_target_path(node(link, "symlink", link=target))


def test_check_readable_follows_chains_and_stops_loops() -> None:
    nodes = {
        "/project/a.txt": node("/project/a.txt", size=3),
        "/project/l1": node("/project/l1", "symlink", link="sub/l2"),
        "/project/sub/l2": node("/project/sub/l2", "symlink", link="../a.txt"),
        "/project/loop1": node("/project/loop1", "symlink", link="loop2"),
        "/project/loop2": node("/project/loop2", "symlink", link="loop1"),
        "/project/dangling": node("/project/dangling", "symlink", link="gone.txt"),
        "/project/viadir": node("/project/viadir", "symlink", link="dirlink/a.txt"),
        "/project/dirlink": node("/project/dirlink", "symlink", link="."),
        "/project/unknown": node("/project/unknown", "symlink", link=""),
    }
    assert check_readable(nodes["/project/l1"], nodes) is nodes["/project/a.txt"]
    with pytest.raises(errors.InvalidArgument, match="too many levels of symbolic links"):
        check_readable(nodes["/project/loop1"], nodes)
    with pytest.raises(errors.NotFound, match="'gone.txt', which is not in the snapshot"):
        check_readable(nodes["/project/dangling"], nodes)
    # Directory symlinks inside a target are not followed (restic dump does not either).
    with pytest.raises(errors.NotFound):
        check_readable(nodes["/project/viadir"], nodes)
    with pytest.raises(errors.Internal, match="unknown"):
        check_readable(nodes["/project/unknown"], nodes)
    chain = {f"/project/c{i}": node(f"/project/c{i}", "symlink", link=f"c{i + 1}") for i in range(12)}
    chain["/project/c12"] = node("/project/c12")
    assert check_readable(chain[f"/project/c{12 - browse.MAX_SYMLINK_HOPS}"], chain) is chain["/project/c12"]
    with pytest.raises(errors.InvalidArgument, match="too many levels"):
        check_readable(chain[f"/project/c{11 - browse.MAX_SYMLINK_HOPS}"], chain)


# --------------------------------------------------------------------------
# ReadFile content
# --------------------------------------------------------------------------


def test_read_result_truncation() -> None:
    assert read_result(b"hello\n", 6, 100) == (b"hello\n", False, False)
    assert read_result(b"hello\n", 6, 6) == (b"hello\n", False, False)
    assert read_result(b"hello\n", 6, 5) == (b"hello", True, False)
    # The driver read one byte past the cap to learn the file goes on.
    assert read_result(b"hello", 1_000_000, 4) == (b"hell", True, False)
    # It stopped at the cap; the node's size tells the rest.
    assert read_result(b"hell", 6, 4) == (b"hell", True, False)
    assert read_result(b"", 0, 10) == (b"", False, False)
    with pytest.raises(ValueError):
        read_result(b"x", 1, 0)
    with pytest.raises(ValueError):
        read_result(b"x", -1, 10)


def test_binary_detection() -> None:
    recorded_binary = (SAMPLES / "dump_binary.stdout").read_bytes()  # b"\0\x01binary"
    assert read_result(recorded_binary, 8, 100) == (recorded_binary, False, True)
    recorded_text = (SAMPLES / "dump_file.stdout").read_bytes()
    assert read_result(recorded_text, 6, 100) == (b"hello\n", False, False)
    assert not is_binary("ünï cödé\n".encode())
    assert is_binary(b"caf\xe9")  # latin-1, not UTF-8
    assert is_binary(b"\xff\xfe\x00t\x00e")
    # A NUL late in an otherwise valid UTF-8 text is not looked at.
    assert not is_binary(b"a" * browse.BINARY_SNIFF_BYTES + b"\x00")
    assert is_binary(b"a" * (browse.BINARY_SNIFF_BYTES - 1) + b"\x00")
    # A multi-byte character cut by the cap is not held against the text ...
    text = "é".encode() * 3  # 6 bytes
    assert read_result(text, 6, 5) == (text[:5], True, False)
    # ... but the same bytes as a whole file are invalid UTF-8.
    assert read_result(text[:5], 5, 10) == (text[:5], False, True)


def test_read_limit() -> None:
    limit = 16 * 1024 * 1024
    assert read_limit(0, limit) == limit
    assert read_limit(100, limit) == 100
    assert read_limit(limit * 4, limit) == limit
    with pytest.raises(errors.InvalidArgument):
        read_limit(-1, limit)
    with pytest.raises(ValueError):
        read_limit(10, 0)
