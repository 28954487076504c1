"""The raw CLI side of `make bench` per engine (bench/raw_engines.py): argvs by exact equality,
the rustic S3 profile, the engine choice of --engines, the backup output parsers, and the
fastest-engine lines of the table (bench/bench.py). No process is started."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from bench import bench as bench_module
from bench import raw_engines as rawe

RUSTIC = rawe.RawEngine("rustic-0.11.4", "rustic", "/opt/rustic")
RESTIC = rawe.RawEngine("restic-0.18.1", "restic", "/opt/restic")
REPO = Path("/scratch/raw-repo-x/d")
CACHE = Path("/scratch/raw-cache")
S3 = rawe.S3Location(endpoint="http://127.0.0.1:9000/", region="us-east-1", bucket="buckets-bench",
                     root="bench/raw-1", access_key_id="AK", secret_access_key='se"cret')
PROFILE = Path("/scratch/raw-profiles/bench_raw-1.toml")
PATHS = ["projects/project-1", "persist/project-1"]

AVAILABLE = [("rustic-0.11.4", "rustic", "/opt/rustic"), ("restic-0.18.1", "restic", "/opt/restic"),
             ("restic-0.14-debian", "restic", "/usr/bin/restic")]


def test_restic_local_argvs():
    assert rawe.init_argvs(RESTIC, REPO, CACHE) == [
        ["/opt/restic", "-r", str(REPO), "--cache-dir", str(CACHE), "init"]]
    assert rawe.backup_argv(RESTIC, REPO, CACHE, host="project-1", paths=PATHS, init=True) == [
        "/opt/restic", "-r", str(REPO), "--cache-dir", str(CACHE),
        "backup", "--json", "--host", "project-1", "--", *PATHS]
    assert rawe.restore_argv(RESTIC, REPO, CACHE, snapshot_id="abcd1234", target=Path("/t")) == [
        "/opt/restic", "-r", str(REPO), "--cache-dir", str(CACHE), "restore", "--target", "/t", "--", "abcd1234"]


def test_restic_s3_argv_and_environment():
    assert rawe.restore_argv(RESTIC, S3, CACHE, snapshot_id="abcd1234", target=Path("/t"))[:3] == [
        "/opt/restic", "-r", "s3:http://127.0.0.1:9000/buckets-bench/bench/raw-1"]
    env = rawe.environment(RESTIC, S3, "pw", {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "RESTIC_PASSWORD": "pw", "AWS_ACCESS_KEY_ID": "AK",
                   "AWS_SECRET_ACCESS_KEY": 'se"cret', "AWS_DEFAULT_REGION": "us-east-1"}
    assert rawe.environment(RESTIC, REPO, "pw", {}) == {"RESTIC_PASSWORD": "pw"}


def test_rustic_local_backup_initialises_in_the_same_process():
    assert rawe.init_argvs(RUSTIC, REPO, CACHE) == []
    assert rawe.backup_argv(RUSTIC, REPO, CACHE, host="project-1", paths=PATHS, init=True) == [
        "/opt/rustic", "-r", str(REPO), "--cache-dir", str(CACHE), "--no-progress",
        "backup", "--init", "--json", "--host", "project-1", "--", *PATHS]
    # Into an existing repository (the unchanged row): no --init.
    assert "--init" not in rawe.backup_argv(RUSTIC, REPO, CACHE, host="h", paths=PATHS, init=False)
    assert rawe.restore_argv(RUSTIC, REPO, CACHE, snapshot_id="abcd1234", target=Path("/t")) == [
        "/opt/rustic", "-r", str(REPO), "--cache-dir", str(CACHE), "--no-progress",
        "restore", "--", "abcd1234", "/t"]
    # The password only in the environment, never in argv.
    assert rawe.environment(RUSTIC, REPO, "pw", {"HOME": "/h"}) == {"HOME": "/h", "RUSTIC_PASSWORD": "pw",
                                                                   "NO_COLOR": "1"}


def test_rustic_master_key_argv_and_restic_has_none():
    """The frozen-window floor row's raw catch-up backup reads rustic's key once, as the agent keeps it."""
    assert rawe.masterkey_argv(RUSTIC, REPO, CACHE) == [
        "/opt/rustic", "-r", str(REPO), "--cache-dir", str(CACHE), "--no-progress", "cat", "masterkey"]
    with pytest.raises(ValueError, match="no master key"):
        rawe.masterkey_argv(RESTIC, REPO, CACHE)
    # ... and restores the catch-up snapshot over the tree restored before, as the agent's staging.
    assert rawe.restore_argv(RUSTIC, REPO, CACHE, snapshot_id="abcd1234", target=Path("/t"), over=True) == [
        "/opt/rustic", "-r", str(REPO), "--cache-dir", str(CACHE), "--no-progress",
        "restore", "--delete", "--", "abcd1234", "/t"]
    with pytest.raises(ValueError, match="rustic only"):
        rawe.restore_argv(RESTIC, REPO, CACHE, snapshot_id="abcd1234", target=Path("/t"), over=True)


def test_rustic_s3_goes_through_a_profile_without_its_suffix():
    argv = rawe.restore_argv(RUSTIC, S3, CACHE, snapshot_id="abcd1234", target=Path("/t"), profile=PROFILE)
    assert argv == ["/opt/rustic", "-P", "/scratch/raw-profiles/bench_raw-1", "--cache-dir", str(CACHE),
                    "--no-progress", "restore", "--", "abcd1234", "/t"]
    with pytest.raises(ValueError, match="profile"):
        rawe.backup_argv(RUSTIC, S3, CACHE, host="h", paths=PATHS, init=True)
    with pytest.raises(ValueError, match="profile"):
        rawe.init_argvs(RUSTIC, S3, CACHE, Path("/scratch/p"))
    # Keys go to the profile, not to the environment.
    assert "AWS_ACCESS_KEY_ID" not in rawe.environment(RUSTIC, S3, "pw", {})


def test_rustic_s3_profile_is_the_documented_layout():
    profile = tomllib.loads(rawe.rustic_s3_profile(S3))
    assert profile == {"repository": {"repository": "opendal:s3", "options": {
        "endpoint": "http://127.0.0.1:9000/", "region": "us-east-1", "bucket": "buckets-bench",
        "root": "bench/raw-1", "access_key_id": "AK", "secret_access_key": 'se"cret'}}}


def test_unknown_driver_is_refused():
    with pytest.raises(ValueError, match="driver"):
        rawe.restore_argv(rawe.RawEngine("x", "borg", "/b"), REPO, CACHE, snapshot_id="a", target=Path("/t"))


def test_engines_by_id_or_prefix_in_table_order():
    chosen = rawe.resolve_engines("restic-0.14,rustic", AVAILABLE)
    assert [e.id for e in chosen] == ["rustic-0.11.4", "restic-0.14-debian"]
    assert [e.id for e in rawe.resolve_engines("all", AVAILABLE)] == [a[0] for a in AVAILABLE]
    assert rawe.resolve_engines("restic-0.18", AVAILABLE) == [RESTIC]
    assert rawe.resolve_engines("restic-0.18.1", AVAILABLE) == [RESTIC]


@pytest.mark.parametrize("wanted, message", [
    ("restic", "more than one engine"), ("borg", "no engine"), (" , ", "names no engine"),
])
def test_engines_that_name_nothing_or_too_much_are_refused(wanted, message):
    with pytest.raises(ValueError, match=message):
        rawe.resolve_engines(wanted, AVAILABLE)


def test_an_engine_not_built_is_reported_not_measured():
    available = [("rustic-0.11.4", "rustic", None), *AVAILABLE[1:]]
    assert rawe.resolve_engines("all", available)[0] == "rustic-0.11.4: not found"


def test_backup_summaries():
    # Recorded from rustic 0.11.4 (`rustic -r R --no-progress backup --init --json --host h -- src`), trimmed.
    rustic_out = json.dumps({"time": "2026-12-06T14:52:04.178152513+00:00", "program_version": "rustic 0.11.4",
                             "paths": ["src"], "hostname": "h",
                             "summary": {"files_new": 1, "files_changed": 0, "files_unmodified": 0},
                             "id": "0f3c" * 16}, indent=2)
    assert rawe.backup_summary(RUSTIC, rustic_out) == {
        "files_new": 1, "files_changed": 0, "files_unmodified": 0, "snapshot_id": "0f3c" * 16}
    restic_out = '{"message_type":"status","percent_done":1}\n{"message_type":"summary","snapshot_id":"ab12cd34"}\n'
    assert rawe.backup_summary(RESTIC, restic_out)["snapshot_id"] == "ab12cd34"
    for engine, out in ((RUSTIC, ""), (RUSTIC, "{}"), (RESTIC, '{"message_type":"status"}\n')):
        with pytest.raises(ValueError):
            rawe.backup_summary(engine, out)


def test_a_rustic_restore_must_say_it_finished():
    assert rawe.restore_done(RUSTIC, "Files: 1 to restore\nrestore done.\n", "")
    assert not rawe.restore_done(RUSTIC, "Files: 1 to restore\n", "")  # e.g. stopped by a signal, exit 0


def test_fastest_engine_per_row():
    figure = bench_module.Figure
    figures = [
        figure("Backup (full, new repo)", agent=[2.0, 2.2], raw=[1.9], engine="rustic-0.11.4"),
        figure("Backup (full, new repo)", agent=[3.0], raw=[1.8], engine="restic-0.18.1"),
        figure("Restore (full)", agent=[1.0], raw=[1.0], engine="rustic-0.11.4"),  # one engine only
        figure("Drain", agent=[1.0], unit="projects/s", target=None, engine="restic-0.14-debian"),
    ]
    assert bench_module.fastest_engines(figures) == [{
        "operation": "Backup (full, new repo)", "agent": "rustic-0.11.4", "agent_median": 2.1,
        "raw": "restic-0.18.1", "raw_median": 1.8}]
