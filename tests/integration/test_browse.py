"""ListFiles and ReadFile inside snapshots, through a real agent and restic."""

from __future__ import annotations

import os

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic

pytestmark = requires_restic

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def browsed(shared_agent, tmp_path_factory):
    """One project with 10,000 small files, a nested subtree, a 5 MB file and symlinks; backed up."""
    import uuid

    agent = shared_agent
    project_id = str(uuid.uuid4())
    home = agent.home(project_id)
    for index in range(10_000):
        directory = home / "many" / f"d{index % 100:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:05d}.txt").write_text(f"file {index}\n")
    deep = home / "tree" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (home / "tree" / "top.txt").write_text("top")
    (home / "tree" / "a" / "one.txt").write_text("one")
    (home / "tree" / "a" / "b" / "two.txt").write_text("two")
    (home / "tree" / "a" / "b" / "c" / "three.txt").write_text("three")
    (deep / "four.txt").write_text("four")
    big = os.urandom(5 * MiB)
    (home / "big.bin").write_bytes(big)
    (home / "notes.txt").write_text("plain text, ünïcödé\n")
    os.symlink("notes.txt", home / "link-inside")
    os.symlink("/etc/passwd", home / "link-absolute")
    os.symlink("../../outside", home / "tree" / "link-up")
    agent.persist(project_id).mkdir(parents=True)
    (agent.persist(project_id) / "db").write_text("persisted")
    backup = agent.wait(agent.backup(project_id).id, timeout=300)
    assert backup.state == pb.SUCCEEDED, backup.error
    return agent, project_id, backup.summary.snapshot_id, big


def list_files(agent, project_id, snapshot_id, path, **fields) -> pb.ListFilesResponse:
    return agent.stub.ListFiles(
        pb.ListFilesRequest(project_id=project_id, snapshot_id=snapshot_id, path=path, **fields), timeout=120
    )


def read_file(agent, project_id, snapshot_id, path, max_bytes=0) -> pb.ReadFileResponse:
    return agent.stub.ReadFile(
        pb.ReadFileRequest(project_id=project_id, snapshot_id=snapshot_id, path=path, max_bytes=max_bytes),
        timeout=120,
    )


def test_ten_thousand_files_page_by_page_each_exactly_once(browsed):
    agent, project_id, snapshot_id, _ = browsed
    seen, token, pages = [], "", 0
    while True:
        page = list_files(agent, project_id, snapshot_id, "project/many", depth=2, page_size=777,
                          page_token=token)
        seen += [entry.path for entry in page.entries]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    files = [p for p in seen if p.endswith(".txt")]
    assert len(files) == 10_000 and len(set(seen)) == len(seen) == 10_100  # 100 directories too
    assert seen == sorted(seen, key=lambda p: p.split("/"))  # a stable order: the snapshot never changes
    assert pages == -(-10_100 // 777)
    expected = {f"project/many/d{i % 100:02d}/f{i:05d}.txt" for i in range(10_000)}
    assert set(files) == expected


def test_a_subtree_three_levels_deep_in_one_call(browsed):
    agent, project_id, snapshot_id, _ = browsed
    page = list_files(agent, project_id, snapshot_id, "project/tree", depth=3)
    paths = {entry.path for entry in page.entries}
    assert "project/tree/a/b/c" in paths and "project/tree/a/b/two.txt" in paths
    assert "project/tree/a/b/c/three.txt" not in paths and "project/tree/a/b/c/d" not in paths
    assert not page.next_page_token
    kinds = {entry.path: entry.type for entry in page.entries}
    assert kinds["project/tree/a"] == pb.FileEntry.DIRECTORY and kinds["project/tree/top.txt"] == pb.FileEntry.FILE
    assert kinds["project/tree/link-up"] == pb.FileEntry.SYMLINK
    direct = list_files(agent, project_id, snapshot_id, "")
    assert {e.path for e in direct.entries} == {"project", "persist"}


def test_read_file_caps_and_says_truncated(browsed):
    agent, project_id, snapshot_id, big = browsed
    head = read_file(agent, project_id, snapshot_id, "project/big.bin", max_bytes=MiB)
    assert len(head.content) == MiB and head.content == big[:MiB]
    assert head.truncated and head.binary and head.size == 5 * MiB
    text = read_file(agent, project_id, snapshot_id, "project/notes.txt")
    assert text.content.decode() == "plain text, ünïcödé\n" and not text.truncated and not text.binary
    assert read_file(agent, project_id, snapshot_id, "persist/db").content == b"persisted"
    # A symlink that stays inside the project is followed.
    assert read_file(agent, project_id, snapshot_id, "project/link-inside").content == text.content


@pytest.mark.parametrize(
    "path",
    ["project/../etc/passwd", "/etc/passwd", "project/link-absolute", "project/tree/link-up", "elsewhere/x",
     "project//notes.txt"],
)
def test_path_escapes_are_invalid_argument(browsed, path):
    agent, project_id, snapshot_id, _ = browsed
    with pytest.raises(grpc.RpcError) as info:
        read_file(agent, project_id, snapshot_id, path)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


def test_missing_paths_and_snapshots_are_not_found(browsed):
    agent, project_id, snapshot_id, _ = browsed
    for call in (
        lambda: read_file(agent, project_id, snapshot_id, "project/no-such-file"),
        lambda: list_files(agent, project_id, snapshot_id, "project/no-such-dir"),
        lambda: list_files(agent, project_id, "0123abcd", "project"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
