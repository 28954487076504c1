"""The hub's records only take what can be used later: malformed ids, addresses and a project in
another region than its host are refused on the way in (exit 2, nothing stored); hosts and
projects can be removed (not while something names them) and a host undrained; force-off says
what it did. Through the `buckets` CLI on a SQLite store, no agent needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from tests.harness import REPO_ROOT


def buckets(store, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_client", "--retries", "1", "--deadline", "5", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env=dict(os.environ, BUCKETS_STORE=str(store)))


def listed(store, what: str) -> list[dict]:
    result = buckets(store, what, "--json", *(["--no-probe"] if what == "hosts" else []))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_bad_records_are_refused_on_the_way_in_and_nothing_is_stored(tmp_path):
    store = tmp_path / "hub.sqlite"
    assert buckets(store, "hosts", "add", "host-a", "127.0.0.1:1", "--region", "eu").returncode == 0
    project = str(uuid.uuid4())
    refused = {
        "not a uuid": buckets(store, "projects", "add", "not-a-uuid", "--host", "host-a", "--region", "eu"),
        "upper-case uuid": buckets(store, "projects", "add", project.upper(), "--host", "host-a", "--region", "eu"),
        "no port": buckets(store, "hosts", "add", "host-b", "not-an-address", "--region", "eu"),
        "port 0": buckets(store, "hosts", "add", "host-b", "10.0.0.2:0", "--region", "eu"),
        "bad host id": buckets(store, "hosts", "add", "host b!", "10.0.0.2:50051", "--region", "eu"),
        "other region": buckets(store, "projects", "add", project, "--host", "host-a", "--region", "us"),
        "unknown host": buckets(store, "projects", "add", project, "--host", "host-zz", "--region", "eu"),
    }
    for case, result in refused.items():
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (case, result.stderr)
    assert "region eu, not us" in refused["other region"].stderr
    assert "host-zz" in refused["unknown host"].stderr
    assert [h["id"] for h in listed(store, "hosts")] == ["host-a"]
    assert listed(store, "projects") == []


def test_remove_and_undrain_and_force_off_say_what_they_did(tmp_path):
    store = tmp_path / "hub.sqlite"
    project = str(uuid.uuid4())
    assert buckets(store, "hosts", "add", "host-a", "127.0.0.1:1", "--region", "eu").returncode == 0
    assert buckets(store, "projects", "add", project, "--host", "host-a", "--region", "eu").returncode == 0

    in_use = buckets(store, "hosts", "remove", "host-a")
    assert in_use.returncode == 2 and "host-a" in in_use.stderr
    assert [h["id"] for h in listed(store, "hosts")] == ["host-a"]

    off = buckets(store, "force-off", "host-a")
    assert off.returncode == 0, off.stderr
    assert "host host-a is off" in off.stdout and project in off.stdout  # never backed up: may be lost
    assert listed(store, "hosts")[0]["status"] == "off"
    back = buckets(store, "hosts", "undrain", "host-a")
    assert back.returncode == 0 and listed(store, "hosts")[0]["status"] == "running"

    forgotten = buckets(store, "projects", "remove", project)
    assert forgotten.returncode == 0 and "files and backups are untouched" in forgotten.stdout
    assert listed(store, "projects") == []
    assert buckets(store, "projects", "remove", project).returncode == 2  # unknown now
    gone = buckets(store, "hosts", "remove", "host-a")
    assert gone.returncode == 0, gone.stderr
    assert listed(store, "hosts") == []


def test_a_move_names_a_missing_target_and_says_when_it_replaces_a_refused_move(tmp_path):
    store = tmp_path / "hub.sqlite"
    project = str(uuid.uuid4())
    for host in ("host-a", "host-b", "host-c"):  # nothing answers at these addresses
        assert buckets(store, "hosts", "add", host, "127.0.0.1:1", "--region", "eu").returncode == 0
    assert buckets(store, "projects", "add", project, "--host", "host-a", "--region", "eu").returncode == 0

    missing = buckets(store, "move", project, "--to", "host-zz")
    assert missing.returncode == 2 and "host host-zz not found" in missing.stderr, missing.stderr
    assert "host-a" not in missing.stderr

    refused = buckets(store, "--json", "move", project, "--to", "host-b")
    assert refused.returncode == 1, refused.stderr  # preflight: the hosts do not answer
    first = json.loads(refused.stdout.splitlines()[0])["move_id"]
    again = buckets(store, "--json", "move", project, "--to", "host-c")
    said = [json.loads(line) for line in again.stdout.splitlines() if line.strip()]
    assert any(e["move_id"] == first and e["kind"] == "cancelled" for e in said), said
