"""The rustic driver's wiring (agent/engine/rustic.py) against a recording stand-in binary.

No rustic binary is available here (tests/integration/test_rustic_real.py runs
the real one when it is on PATH). The stand-in is a small script that records
its argv, working directory, environment and the profile file it was given
(text and mode, read while it runs) and answers with the hand-written samples
of tests/unit/samples/rustic/ (see their README for where each format is
documented). What is checked is what the driver does around rustic: the
profile's life cycle, which flags the version decides, what reaches argv and
the environment, and how outputs and failures become results and errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from agent import errors, s3_access
from agent.backends.base import EngineView
from agent.engine.rustic import RusticEngine
from agent.repository import Repository, S3Spec

SAMPLES = Path(__file__).parent / "samples" / "rustic"
PASSWORD = "pw-Zq8-repository"
SECRET_KEY = "sk-Ab3-secret-access"
HOST = "project-11111111-2222-3333-4444-555555555555"
TAGS = ["layout=v2", "project=11111111-2222-3333-4444-555555555555", "op=op-1", "purpose=backup"]

# The stand-in: RECORDS and SCRIPT are filled in per test. SCRIPT maps a
# subcommand to (stdout sample, stderr sample, exit code); "--version" answers VERSION.
STAND_IN = """#!{python}
import json, os, sys
records = {records!r}
script = json.load(open(os.path.join(records, "script.json")))
argv = sys.argv[1:]
record = {{"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}}
if "-P" in argv:
    profile = argv[argv.index("-P") + 1] + ".toml"
    record["profile_path"] = profile
    record["profile_text"] = open(profile).read()
    record["profile_mode"] = os.stat(profile).st_mode & 0o777
    record["profile_dir_mode"] = os.stat(os.path.dirname(profile)).st_mode & 0o777
n = len(os.listdir(records))
with open(os.path.join(records, "run-%03d.json" % n), "w") as f:
    json.dump(record, f)
if argv == ["--version"]:
    print(script["version"])
    sys.exit(0)
command = next(a for a in argv[3:] if a in ("init", "backup", "snapshots", "restore", "check", "forget", "prune", "ls"))
stdout, stderr, code = script.get(command, ["", "", 0])
if stdout:
    sys.stdout.write(open(stdout).read())
if stderr:
    sys.stderr.write(open(stderr).read())
sys.exit(code)
"""


class StandIn:
    def __init__(self, root: Path) -> None:
        self.records = root / "records"
        self.records.mkdir()
        self.binary = root / "rustic"
        self.binary.write_text(STAND_IN.format(python=sys.executable, records=str(self.records)))
        self.binary.chmod(0o755)
        self.answer(version="rustic v0.9.5")

    def answer(self, version: str | None = None, **commands: tuple[str, str, int]) -> None:
        path = self.records / "script.json"
        script = json.loads(path.read_text()) if path.exists() else {}
        if version:
            script["version"] = version
        for command, (out, err, code) in commands.items():
            script[command] = [str(SAMPLES / out) if out else "", str(SAMPLES / err) if err else "", code]
        path.write_text(json.dumps(script))

    def runs(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.records.glob("run-*.json"))]

    def last(self) -> dict:
        return self.runs()[-1]


@pytest.fixture(autouse=True)
def no_bucket_check(monkeypatch):
    """The stand-in binary plays rustic; no S3 endpoint answers the agent's own bucket check
    (agent/s3_access.py, tested with a real MinIO in tests/integration/test_s3.py), so it is
    passed here: what is under test is what rustic is given and how its output is read."""
    async def answered(repo, *, create=False):
        return False
    monkeypatch.setattr(s3_access, "require", answered)


@pytest.fixture
def stand_in(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path)


@pytest.fixture
def engine(stand_in: StandIn, tmp_path: Path) -> RusticEngine:
    state = tmp_path / "state"
    state.mkdir()
    return RusticEngine(binary=str(stand_in.binary), state_dir=state, timeout=60, kill_grace=1)


def s3_repo() -> Repository:
    spec = S3Spec(endpoint="http://127.0.0.1:9", region="", bucket="buckets-eu", root="rustic/project-1",
                  access_key_id="AKIDEXAMPLE", secret_access_key=SECRET_KEY)
    return Repository(kind="s3", location="s3:http://127.0.0.1:9/buckets-eu/rustic/project-1",
                      display="s3:http://127.0.0.1:9/buckets-eu/rustic/project-1", password=PASSWORD,
                      env={"AWS_SECRET_ACCESS_KEY": SECRET_KEY}, s3=spec)


def local_repo(path: Path) -> Repository:
    return Repository(kind="local", location=str(path), display=str(path), password=PASSWORD)


def view(tmp_path: Path) -> EngineView:
    root = tmp_path / "view"
    (root / "project").mkdir(parents=True, exist_ok=True)
    (root / "persist").mkdir(exist_ok=True)
    return EngineView(wrapper=(), root=root)


def run(coro):
    return asyncio.run(coro)


def assert_no_secret_outside_profile(record: dict) -> None:
    for secret in (PASSWORD, SECRET_KEY):
        assert not any(secret in arg for arg in record["argv"])
        assert not any(secret in value for value in record["env"].values())


def test_backup_argv_profile_and_summary_on_rustic_0_9_5(engine, stand_in, tmp_path) -> None:
    stand_in.answer(backup=("backup_v0.9.5.stdout.json", "", 0))
    statuses = []
    outcome = run(engine.backup(s3_repo(), view(tmp_path), host=HOST, tags=TAGS, on_status=statuses.append))
    record = stand_in.last()
    profile = record["profile_path"]
    # 0.9.5 has no --json-progress: no progress output, so the pre-scan is skipped.
    assert record["argv"] == [
        str(stand_in.binary), "-P", profile[: -len(".toml")], "--no-progress", "backup", "--json",
        "--host", HOST, *[x for tag in TAGS for x in ("--tag", tag)],
        "--as-path", "/", "--no-scan", "--init", "--", ".",
    ]
    assert record["cwd"] == str(tmp_path / "view")
    assert record["profile_mode"] == 0o600 and record["profile_dir_mode"] == 0o700
    text = record["profile_text"]
    assert 'repository = "opendal:s3"' in text and f'password = "{PASSWORD}"' in text
    assert f'secret_access_key = "{SECRET_KEY}"' in text and 'region = "us-east-1"' in text
    assert 'bucket = "buckets-eu"' in text and 'root = "rustic/project-1"' in text
    assert_no_secret_outside_profile(record)
    assert not any(k.startswith(("RUSTIC_", "AWS_")) for k in record["env"])
    assert not Path(profile).exists(), "the profile must be removed after the run"
    assert outcome.summary.snapshot_id and outcome.summary.total_files_processed > 0
    assert statuses == []


def test_backup_with_json_progress_on_rustic_0_11_4(engine, stand_in, tmp_path) -> None:
    stand_in.answer(version="rustic v0.11.4", backup=("backup_json_progress_v0.11.4.stdout.jsonl", "", 0))
    statuses = []
    outcome = run(engine.backup(local_repo(tmp_path / "repo"), view(tmp_path), host=HOST, tags=TAGS,
                                on_status=statuses.append))
    argv = stand_in.last()["argv"]
    assert argv[3] == "--json-progress" and "--no-scan" not in argv
    assert [round(s.percent) for s in statuses] == [0, 100]
    assert statuses[-1].bytes_total == 3018
    assert outcome.summary.files_new == 5
    assert f'repository = "{tmp_path / "repo"}"' in stand_in.last()["profile_text"]


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("wrong_password_v0.9.5.stderr", errors.FailedPrecondition),
        ("no_repository_v0.9.5.stderr", errors.NotFound),
        ("s3_connection_refused_v0.9.5.stderr", errors.Unavailable),
        ("restore_mac_failure_v0.9.5.stderr", errors.DataLoss),
    ],
)
def test_restore_failure_is_classified_and_profile_removed(engine, stand_in, tmp_path, stderr, error) -> None:
    stand_in.answer(restore=("", stderr, 1))
    with pytest.raises(error):
        run(engine.restore(s3_repo(), "0123abcd" * 8, view(tmp_path)))
    record = stand_in.last()
    assert record["argv"][-4:] == ["--numeric-id", "--", "0123abcd" * 8, str(tmp_path / "view")]
    assert not Path(record["profile_path"]).exists()
    assert list((tmp_path / "state" / "profiles").iterdir()) == []


def test_restore_counts_only_with_restore_done_v0_11_4(engine, stand_in, tmp_path) -> None:
    # rustic 0.11.4 (recorded): a finished restore ends with "restore done."; a SIGTERM-ed one
    # exits 0 without it, having printed only the plan (or nothing).
    stand_in.answer(version="rustic 0.11.4", restore=("restore_v0.11.4.stdout", "", 0))
    run(engine.restore(s3_repo(), "0123abcd" * 8, view(tmp_path)))
    stand_in.answer(restore=("", "backup_sigterm_v0.11.4.stderr", 0))
    with pytest.raises(errors.Internal, match="stopped by a signal"):
        run(engine.restore(s3_repo(), "0123abcd" * 8, view(tmp_path)))
    stand_in.answer(restore=("", "", 0))
    with pytest.raises(errors.Internal, match="restore done"):
        run(engine.restore(s3_repo(), "0123abcd" * 8, view(tmp_path)))


@pytest.mark.parametrize("command", ["check", "forget", "prune", "init"])
def test_any_command_stopped_by_a_signal_fails_despite_exit_0(engine, stand_in, tmp_path, command) -> None:
    stand_in.answer(version="rustic 0.11.4", **{command: ("", "backup_sigterm_v0.11.4.stderr", 0)})
    call = {
        "check": lambda: engine.check(s3_repo()),
        "forget": lambda: engine.forget(s3_repo(), ["0123abcd"]),
        "prune": lambda: engine.prune(s3_repo()),
        "init": lambda: engine.init(s3_repo()),
    }[command]
    with pytest.raises(errors.Internal, match="stopped by a signal"):
        run(call())


def test_restore_path_restores_the_parent_with_a_glob_for_the_name(engine, stand_in, tmp_path) -> None:
    stand_in.answer(version="rustic 0.11.4", restore=("restore_v0.11.4.stdout", "", 0))
    run(engine.restore_path(s3_repo(), "0123abcd" * 8, "/project/a b/c*", view(tmp_path)))
    argv = stand_in.last()["argv"]
    assert argv[argv.index("restore"):] == [
        "restore", "--numeric-id", "--glob", "/c\\*", "--glob", "/c\\*/**",
        "--", "0123abcd" * 8 + ":/project/a b", str(tmp_path / "view" / "project" / "a b"),
    ]


def test_check_damage_logged_with_exit_0_is_data_loss(engine, stand_in) -> None:
    # rustic < 0.10.1 logs damage as [ERROR] and exits 0 (src/commands/check.rs v0.9.5).
    stand_in.answer(check=("", "check_damaged_v0.9.5.stderr", 0))
    with pytest.raises(errors.DataLoss, match="Hash mismatch"):
        run(engine.check(s3_repo(), read_data_subset="1/5"))
    assert stand_in.last()["argv"][4:] == ["check", "--read-data", "--read-data-subset", "1/5"]


def test_check_clean(engine, stand_in) -> None:
    stand_in.answer(check=("", "", 0))
    run(engine.check(s3_repo()))
    assert stand_in.last()["argv"][4:] == ["check"]


def test_snapshots_and_restore_size(engine, stand_in, tmp_path) -> None:
    stand_in.answer(snapshots=("snapshots_v0.10.3.stdout.json", "", 0))
    snaps = run(engine.snapshots(s3_repo(), host=HOST))
    assert len(snaps) > 1  # the stand-in does not filter; rustic would
    assert stand_in.last()["argv"][4:] == ["snapshots", "--json", "--filter-host", HOST]
    size = run(engine.restore_size(s3_repo(), snaps[0].id))
    assert size.total_files > 0 and size.total_bytes > 0
    assert stand_in.last()["argv"][-2:] == ["--", snaps[0].id]


def test_s3_without_keys_is_refused_before_rustic_runs(engine, stand_in) -> None:
    repo = s3_repo()
    keyless = Repository(kind="s3", location=repo.location, display=repo.display, password=PASSWORD,
                         s3=S3Spec(endpoint="http://127.0.0.1:9", region="r", bucket="b", root="x",
                                   access_key_id="", secret_access_key=""))
    with pytest.raises(errors.FailedPrecondition, match="S3 keys"):
        run(engine.snapshots(keyless))
    assert stand_in.runs() == []


def test_version_features_and_too_old(engine, stand_in) -> None:
    assert run(engine.version()) == "0.9.5"
    assert "read-data-subset" in run(engine.features()) and "json-progress" not in run(engine.features())
    old = RusticEngine(binary=str(stand_in.binary), state_dir=engine._home, timeout=60, kill_grace=1)
    stand_in.answer(version="rustic v0.8.0")
    with pytest.raises(errors.Unimplemented, match="older than"):
        run(old.version())


def test_missing_binary_is_unimplemented(tmp_path) -> None:
    engine = RusticEngine(binary=str(tmp_path / "nope"), state_dir=tmp_path, timeout=60, kill_grace=1)
    with pytest.raises(errors.Unimplemented):
        run(engine.version())


def test_remove_stale_profiles(engine, tmp_path) -> None:
    profiles = tmp_path / "state" / "profiles"
    profiles.mkdir()
    (profiles / "left.toml").write_text(f'password = "{PASSWORD}"\n')
    assert engine.remove_stale() == [str(profiles / "left.toml")]
    assert list(profiles.iterdir()) == []


def test_bandwidth_limits_are_a_stated_limitation(tmp_path) -> None:
    limited = RusticEngine(binary="rustic", state_dir=tmp_path, timeout=1, kill_grace=1, upload_limit_kib=100)
    assert any("bandwidth" in text for text in limited.limitations())
    assert RusticEngine(binary="rustic", state_dir=tmp_path, timeout=1, kill_grace=1).limitations() == ()


def test_profile_mode_is_private_even_with_a_loose_umask(engine, stand_in, tmp_path) -> None:
    stand_in.answer(snapshots=("snapshots_empty_v0.10.3.stdout.json", "", 0))
    old = os.umask(0)
    try:
        run(engine.snapshots(s3_repo()))
    finally:
        os.umask(old)
    record = stand_in.last()
    assert record["profile_mode"] == 0o600 and stat.S_IMODE(record["profile_dir_mode"]) == 0o700
