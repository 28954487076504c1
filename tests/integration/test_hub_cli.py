"""The `buckets` hub commands as an operator runs them: separate processes over one store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from hub_client.store import open_store
from tests.harness import REPO_ROOT, create_project, manifest


def buckets(store: str, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_client", "--store", store, "--retries", "3", *argv],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_register_move_and_follow_the_movelog_from_another_process(two_hosts, tmp_path: Path) -> None:
    a, b = two_hosts
    store_url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    for name, agent in (("host-a", a), ("host-b", b)):
        added = buckets(store_url, "--json", "hosts", "add", name, f"127.0.0.1:{agent.port}", "--region", "eu")
        assert added.returncode == 0, added.stderr
    listed = buckets(store_url, "--json", "hosts")
    rows = json_lines(listed.stdout)
    assert [(r["id"], r["reachable"], r["projects"]) for r in rows] == [("host-a", True, 0), ("host-b", True, 0)]

    store = open_store(store_url)
    try:
        project_id = create_project(a, files=800)
        added = buckets(store_url, "projects", "add", project_id, "--host", "host-a", "--region", "eu")
        assert added.returncode == 0, added.stderr
        before = manifest(a.home(project_id))
        projects = json_lines(buckets(store_url, "--json", "projects", "--host", "host-a").stdout)
        assert [(p["id"], p["host_id"]) for p in projects] == [(project_id, "host-a")]

        mover = subprocess.Popen(
            [sys.executable, "-m", "hub_client", "--store", store_url, "move", project_id, "--to", "host-b"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while store.active_move(project_id) is None and not store.list_moves(project_id=project_id):
                assert time.monotonic() < deadline and mover.poll() is None, mover.communicate()
                time.sleep(0.02)
            move_id = store.list_moves(project_id=project_id)[0].id
            followed = buckets(store_url, "--json", "movelog", move_id, "--follow")
            out, err = mover.communicate(timeout=180)
        finally:
            mover.kill()
        assert mover.returncode == 0, err
        # The text view: step lines and progress bars as the move ran.
        assert "step      restore" in out and "complete: project" in out and "[" in out and "%" in out

        assert followed.returncode == 0, followed.stderr
        entries = json_lines(followed.stdout)
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        kinds = [e["kind"] for e in entries]
        assert "complete" in kinds and "progress" in kinds
        assert [e["message"] for e in entries if e["kind"] == "step"][-1] == "finalize"
        assert manifest(b.home(project_id)) == before

        moves = json_lines(buckets(store_url, "--json", "moves", "--project", project_id).stdout)
        assert [(m["id"], m["status"], m["target_host"], m["cleanup"]) for m in moves] == [
            (move_id, "succeeded", "host-b", "done")]
        again = buckets(store_url, "move", project_id, "--to", "host-b")
        assert again.returncode == 1 and "already on host-b" in again.stderr
        unknown = buckets(store_url, "movelog", "no-such-move")
        assert unknown.returncode == 2 and "not found" in unknown.stderr
    finally:
        store.close()


def test_copy_commands_with_exit_codes(two_hosts, tmp_path: Path) -> None:
    a, b = two_hosts
    store_url = f"sqlite://{tmp_path / 'hub.sqlite'}"
    for name, agent in (("host-a", a), ("host-b", b)):
        assert buckets(store_url, "hosts", "add", name, f"127.0.0.1:{agent.port}", "--region", "eu").returncode == 0
    source, target = create_project(a, files=30), create_project(b, files=0)
    for project_id, host in ((source, "host-a"), (target, "host-b")):
        assert buckets(store_url, "projects", "add", project_id, "--host", host, "--region", "eu").returncode == 0

    refused = buckets(store_url, "copy", f"{source}:../etc", f"{target}:x")
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr, refused.stderr

    copied = buckets(store_url, "--json", "copy", f"{source}:d1", f"{target}:from-a/d1")
    assert copied.returncode == 0, copied.stderr
    entries = json_lines(copied.stdout)
    copy_id = entries[-1]["copy_id"]
    assert entries[-1]["kind"] == "complete"
    assert manifest(b.home(target) / "from-a" / "d1") == manifest(a.home(source) / "d1")

    again = buckets(store_url, "copy", f"{source}:d1", f"{target}:from-a/d1")  # on_conflict fail by default
    assert again.returncode == 1 and "FAILED_PRECONDITION" in again.stderr, again.stderr
    rows = json_lines(buckets(store_url, "--json", "copies", "--project", target).stdout)
    assert [(r["id"] == copy_id, r["status"]) for r in rows] == [(False, "failed"), (True, "succeeded")]
    log = json_lines(buckets(store_url, "--json", "copylog", copy_id).stdout)
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1)) and log[-1]["kind"] == "complete"
