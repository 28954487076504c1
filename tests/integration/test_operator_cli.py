"""The operator commands of both CLIs against a real agent: `buckets-agent COMMAND` finds the
local agent through its config (port file), `buckets --agent ADDRESS COMMAND` is told where it
is; both run the same command code, so their --json output is the same."""

from __future__ import annotations

import base64
import errno
import json
import os
import pty
import random
import select
import subprocess
import sys
import time

import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, manifest, new_id, write_tree

pytestmark = requires_restic


def host_cli(agent, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`buckets-agent --config <the agent's config> ...`: the address comes from the config."""
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(agent.config_path), *args],
                          cwd=REPO_ROOT, capture_output=True, timeout=timeout)


def hub_cli(agent, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_client", "--retries", "2", "--agent",
                           f"127.0.0.1:{agent.port}", *args], cwd=REPO_ROOT, capture_output=True, timeout=timeout)


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


def test_ensure_backup_and_browse_through_both_clis(shared_agent):
    project_id = new_id()
    ensured = json_lines(host_cli(shared_agent, "--json", "ensure", project_id, "--mode", "none"))
    assert [(o["kind"], o["state"]) for o in ensured] == [("OPERATION_KIND_ENSURE", "SUCCEEDED")]
    home = shared_agent.home(project_id)
    write_tree(home, files=12)
    binary = bytes(range(256)) * 7 + b"\x00\r\n\xff"
    (home / "blob.bin").write_bytes(binary)
    # Over gRPC's default 4 MiB message limit: one ReadFile answer must still get through.
    big = random.Random(8).randbytes(5 * 1024 * 1024 + 17)
    (home / "big.bin").write_bytes(big)

    # On a terminal the progress line is redrawn in place (\r); through a pipe see the next test.
    code, screen = _on_a_terminal([sys.executable, "-m", "agent", "--config", str(shared_agent.config_path),
                                   "backup", project_id])
    assert code == 0 and "\r" in screen and "SUCCEEDED" in screen and "snapshot " in screen, screen

    # snapshots / ls / cat give the same answers through both CLIs.
    snapshots = json_lines(host_cli(shared_agent, "--json", "snapshots", project_id))
    assert json_lines(hub_cli(shared_agent, "snapshots", project_id, "--json")) == snapshots
    [snapshot_id] = [s["id"] for s in snapshots]
    assert f"snapshot {snapshot_id[:8]}" in screen
    root = json_lines(host_cli(shared_agent, "--json", "ls", project_id, snapshot_id))
    assert sorted((e["path"], e["type"]) for e in root) == [("persist", "DIRECTORY"), ("project", "DIRECTORY")]
    listed = json_lines(host_cli(shared_agent, "--json", "ls", project_id, "latest", "project"))
    assert json_lines(hub_cli(shared_agent, "ls", project_id, snapshot_id, "project", "--json")) == listed
    on_disk = {f"project/{p.name}": p for p in home.iterdir()}
    assert {e["path"] for e in listed} == set(on_disk)
    blob = next(e for e in listed if e["path"] == "project/blob.bin")
    assert (blob["type"], int(blob["size"])) == ("FILE", len(binary))
    text = host_cli(shared_agent, "ls", project_id, snapshot_id, "project")
    line = next(row for row in text.stdout.decode().splitlines() if row.endswith(" project/blob.bin"))
    assert line.startswith("-rw") and f" {len(binary)} " in line  # type+mode, size, mtime, path
    # A symlink's row names its target as ls -l does (listings carry targets on every engine).
    assert any(row.startswith("lrwx") and row.endswith(" project/link-to-first -> d0/f0.bin")
               for row in text.stdout.decode().splitlines()), text.stdout.decode()

    cat = host_cli(shared_agent, "cat", project_id, snapshot_id, "project/blob.bin")
    assert cat.returncode == 0 and cat.stdout == binary, cat.stderr.decode()
    cat = hub_cli(shared_agent, "cat", project_id, "latest", "project/big.bin")
    assert cat.returncode == 0 and cat.stdout == big, cat.stderr.decode()[-500:]
    # --max-bytes asks for a part: exit 0 although the file goes on.
    [record] = json_lines(host_cli(shared_agent, "--json", "cat", project_id, snapshot_id, "project/blob.bin",
                                   "--max-bytes", "100"))
    assert base64.b64decode(record["content_base64"]) == binary[:100] and record["binary"] is True
    assert (record["size"], record["truncated"]) == (len(binary), True)

    [status] = json_lines(hub_cli(shared_agent, "--json", "status", project_id))
    assert (status["present"], status["frozen"], status["last_backup_snapshot_id"][:8]) == (True, False,
                                                                                          snapshot_id[:8])
    [host] = json_lines(host_cli(shared_agent, "status", "--json"))
    assert host["host_id"] == "test-host" and int(host["projects"]) >= 1
    assert "last backup" in host_cli(shared_agent, "status", project_id).stdout.decode()


def test_exit_codes_freeze_thaw_delete_and_ensure(shared_agent):
    project_id = new_id()
    assert host_cli(shared_agent, "ensure", project_id, "--mode", "none").returncode == 0
    write_tree(shared_agent.home(project_id), files=6)
    before = manifest(shared_agent.home(project_id))
    backup = hub_cli(shared_agent, "backup", project_id)  # stdout is a pipe: plain progress lines
    assert backup.returncode == 0 and b"\r" not in backup.stdout and b"SUCCEEDED" in backup.stdout

    # 1: the operation ran and failed (a well-formed snapshot id that names no snapshot).
    missing = host_cli(shared_agent, "restore", project_id, "deadbeef00")
    assert missing.returncode == 1 and b"NOT_FOUND" in missing.stderr, missing.stderr
    # 2: the call was refused (a malformed id) or did not parse.
    malformed = hub_cli(shared_agent, "restore", project_id, "not-a-snapshot")
    assert malformed.returncode == 2 and b"INVALID_ARGUMENT" in malformed.stderr
    usage = host_cli(shared_agent, "restore", project_id)
    assert usage.returncode == 2 and b"usage:" in usage.stderr

    # Freeze / thaw round trip: a frozen project refuses a restore (1, FAILED_PRECONDITION).
    assert json_lines(host_cli(shared_agent, "--json", "freeze", project_id)) == [
        {"project_id": project_id, "frozen": True, "stopped": [], "cgroup": ""}]
    with pytest.raises(OSError) as info:  # the ground truth: nothing can write now
        (shared_agent.home(project_id) / "after-freeze.txt").write_text("x")
    assert info.value.errno == errno.EROFS
    assert json_lines(hub_cli(shared_agent, "--json", "status", project_id))[0]["frozen"] is True
    refused = hub_cli(shared_agent, "restore", project_id, "latest")
    assert refused.returncode == 1 and b"FAILED_PRECONDITION" in refused.stderr, refused.stderr
    assert json_lines(hub_cli(shared_agent, "--json", "thaw", project_id)) == [
        {"project_id": project_id, "frozen": False}]
    assert json_lines(host_cli(shared_agent, "--json", "status", project_id))[0]["frozen"] is False

    # Delete on the host (backups kept), then ensure (auto) brings the backup back.
    deleted = json_lines(host_cli(shared_agent, "--json", "delete", project_id, "--yes"))
    assert deleted[0]["state"] == "SUCCEEDED" and not shared_agent.home(project_id).exists()
    assert host_cli(shared_agent, "delete", project_id).returncode == 2  # no --yes
    restored = json_lines(hub_cli(shared_agent, "--json", "ensure", project_id))
    assert restored[0]["state"] == "SUCCEEDED"
    assert manifest(shared_agent.home(project_id)) == before

    # A move is the hub's: buckets-agent says which command to run there.
    move = host_cli(shared_agent, "move", project_id, "--to", "host-b")
    assert move.returncode == 2 and f"buckets move {project_id} --to host-b".encode() in move.stderr


def test_copy_and_drain_on_the_host(agent_factory):
    # A drain backs up every project of its host: an agent of our own, with a small read limit.
    agent = agent_factory("operator-cli", limits="read_file_max_bytes = 1024")
    source, target = new_id(), new_id()
    for project_id in (source, target):
        assert host_cli(agent, "ensure", project_id, "--mode", "none").returncode == 0
    write_tree(agent.home(source), files=20)

    copied = host_cli(agent, "copy", f"{source}:d1", f"{target}:from-source/d1")
    assert copied.returncode == 0, copied.stderr.decode()
    assert manifest(agent.home(target) / "from-source" / "d1") == manifest(agent.home(source) / "d1")
    again = host_cli(agent, "copy", f"{source}:d1", f"{target}:from-source/d1")  # --on-conflict fail
    assert again.returncode == 1 and b"FAILED_PRECONDITION" in again.stderr, again.stderr
    assert host_cli(agent, "copy", f"{source}", f"{target}:x").returncode == 2  # not PROJECT:PATH

    drained = json_lines(host_cli(agent, "--json", "drain", "--concurrency", "2"))
    assert drained[0]["kind"] == "OPERATION_KIND_DRAIN" and drained[0]["state"] == "SUCCEEDED"
    outcomes = {p["project_id"]: p["state"] for p in drained[0]["summary"]["projects"]}
    assert outcomes == {source: "SUCCEEDED", target: "SUCCEEDED"}  # neither was backed up before
    listed = json_lines(host_cli(agent, "--json", "operations", "--project", target))
    assert [o["kind"] for o in listed][:2] == ["OPERATION_KIND_BACKUP", "OPERATION_KIND_COPY"]

    # ReadFile has no offset: a file over the agent's read limit is cut there, and cat says so (1).
    large = next(p for p in sorted(agent.home(source).rglob("*.bin")) if p.stat().st_size > 1024)
    path = f"project/{large.relative_to(agent.home(source))}"
    cut = host_cli(agent, "cat", source, "latest", path)
    assert cut.returncode == 1 and cut.stdout == large.read_bytes()[:1024], cut.stderr
    assert b"only the first 1024 of" in cut.stderr


def _on_a_terminal(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; (exit code, what it wrote)."""
    main, child = pty.openpty()
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the child side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), b"".join(chunks).decode(errors="replace")
    finally:
        process.kill()
        os.close(main)


def _snapshot_ids(agent, project_id: str) -> list[str]:
    """The project's snapshots newest first, from the agent (ListSnapshots)."""
    listed = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=60).snapshots
    return [s.id for s in sorted(listed, key=lambda s: (s.time.seconds, s.time.nanos), reverse=True)]


def _pack_files(agent, project_id: str) -> set[str]:
    return {p.name for p in (agent.repository(project_id) / "data").rglob("*") if p.is_file()}


def test_forget_by_policy_or_by_id_and_prune_through_the_cli(shared_agent):
    agent, project_id = shared_agent, new_id()
    json_lines(host_cli(agent, "--json", "ensure", project_id, "--mode", "none"))
    agent.make_missing_repository(project_id)
    for round_ in range(3):  # three snapshots, each with data of its own
        (agent.home(project_id) / f"round-{round_}.bin").write_bytes(random.Random(round_).randbytes(200_000))
        assert host_cli(agent, "backup", project_id).returncode == 0
    newest_first = _snapshot_ids(agent, project_id)
    assert len(newest_first) == 3

    refused = host_cli(agent, "forget", project_id, "--yes")  # no rule: would forget everything
    assert refused.returncode == 2 and b"--keep" in refused.stderr
    assert host_cli(agent, "forget", project_id, "--keep-last", "2").returncode == 2  # --yes is required
    assert _snapshot_ids(agent, project_id) == newest_first

    kept = host_cli(agent, "forget", project_id, "--keep-last", "2", "--yes")
    assert kept.returncode == 0, kept.stderr.decode()
    assert _snapshot_ids(agent, project_id) == newest_first[:2]

    packs_before = _pack_files(agent, project_id)
    by_id = host_cli(agent, "forget", project_id, newest_first[1][:8], "--yes")
    assert by_id.returncode == 0, by_id.stderr.decode()
    assert _snapshot_ids(agent, project_id) == newest_first[:1]
    assert _pack_files(agent, project_id) == packs_before  # forgetting alone removes no data

    pruned = hub_cli(agent, "prune", project_id)
    assert pruned.returncode == 0, pruned.stderr.decode()
    assert _snapshot_ids(agent, project_id) == newest_first[:1]  # prune forgets nothing
    assert _pack_files(agent, project_id) != packs_before
    # What is left restores whole: the newest snapshot's files, byte for byte.
    expected = manifest(agent.home(project_id))
    for path in agent.home(project_id).glob("round-*.bin"):
        path.unlink()
    restored = host_cli(agent, "restore", project_id, newest_first[0])
    assert restored.returncode == 0, restored.stderr.decode()
    assert manifest(agent.home(project_id)) == expected
    checked = host_cli(agent, "verify", project_id, "--read-data-subset", "100%")
    assert checked.returncode == 0, checked.stderr.decode()


def test_one_path_form_for_ls_cat_and_restore(shared_agent):
    agent, project_id = shared_agent, new_id()
    json_lines(host_cli(agent, "--json", "ensure", project_id, "--mode", "none"))
    agent.make_missing_repository(project_id)
    note = agent.home(project_id) / "docs" / "a.md"
    note.parent.mkdir(parents=True)
    note.write_text("the backed-up text\n")
    assert host_cli(agent, "backup", project_id).returncode == 0

    for listed in (("docs",), ("project/docs",)):
        rows = json_lines(hub_cli(agent, "--json", "ls", project_id, "latest", *listed))
        assert [row["path"] for row in rows] == ["project/docs/a.md"], rows
    for path in ("docs/a.md", "project/docs/a.md"):
        read = hub_cli(agent, "cat", project_id, "latest", path)
        assert read.returncode == 0 and read.stdout == b"the backed-up text\n", read.stderr

    for path in ("project/docs/a.md", "docs/a.md"):
        note.write_text("changed since\n")
        restored = hub_cli(agent, "restore", project_id, "latest", "--path", path)
        assert restored.returncode == 0, restored.stderr.decode()
        assert note.read_text() == "the backed-up text\n"
    refused = hub_cli(agent, "restore", project_id, "latest", "--path", "persist/app.db")
    assert refused.returncode == 2 and b"persist/ is restored with the whole project" in refused.stderr
