"""restic >= 0.17 features chosen by the probed version (restore --json progress and summary,
restore --overwrite if-changed --delete, JSON exit errors) and rustic's restore over a tree:
argv, parsers and the drivers' run logic, on output recorded from restic 0.18.1 and rustic 0.11.4
(tests/unit/samples/*/…_v0.18.1…, …_v0.11.4…) and stand-in binaries that replay it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent import errors
from agent.backends.base import EngineView
from agent.engine import restic_args as ra
from agent.engine import rustic_args as rua
from agent.engine.base import RestoreStatus, RestoreSummary
from agent.engine.restic import ResticEngine
from agent.repository import Repository

SAMPLES = Path(__file__).parent / "samples"
RESTIC = SAMPLES / "restic"
COMMON = ra.CommonOptions(repository="/r", cache_dir=None, password_file=None)
ID = "0123456789abcdef"


def sample(name: str) -> str:
    return (RESTIC / name).read_text()


# ------------------------------------------------------------------ argv


def test_restore_args_of_a_restore_over_a_tree() -> None:
    assert ra.restore_args("restic", COMMON, snapshot_id=ID, target="/t", json_output=True,
                           overwrite="if-changed", delete=True) == [
        "restic", "-r", "/r", "--no-cache", "restore", "--json", "--target", "/t",
        "--overwrite", "if-changed", "--delete", "--", ID]


def test_restore_args_without_the_new_options_are_what_restic_0_14_takes() -> None:
    assert ra.restore_args("restic", COMMON, snapshot_id=ID, target="/t") == [
        "restic", "-r", "/r", "--no-cache", "restore", "--target", "/t", "--", ID]


def test_restore_args_refuse_an_unknown_overwrite_mode_and_delete_with_includes() -> None:
    with pytest.raises(ValueError, match="overwrite"):
        ra.restore_args("restic", COMMON, snapshot_id=ID, target="/t", overwrite="sometimes")
    with pytest.raises(ValueError, match="delete"):
        ra.restore_args("restic", COMMON, snapshot_id=ID, target="/t", include=["/project/a"], delete=True)


def test_rustic_restore_args_with_delete() -> None:
    assert rua.restore_args("rustic", "/p/x.toml", snapshot_id=ID, target="/t", delete=True)[-5:] == [
        "--numeric-id", "--delete", "--", ID, "/t"]
    with pytest.raises(ValueError, match="delete"):
        rua.restore_args("rustic", "/p/x.toml", snapshot_id=ID, target="/t", only="a", delete=True)


@pytest.mark.parametrize(("version", "has"), [((0, 14, 0), False), ((0, 16, 4), False), ((0, 17, 0), True),
                                               ((0, 18, 1), True)])
def test_restic_features_come_from_the_version(version, has) -> None:
    feats = ra.features(version)
    assert {"restore-json-progress", "restore-over", "json-errors"} <= feats if has else not (
        {"restore-json-progress", "restore-over", "json-errors"} & feats)


def test_rustic_restore_over_from_0_11_4() -> None:
    assert "restore-over" in rua.features((0, 11, 4))
    assert "restore-over" not in rua.features((0, 11, 3))


# ------------------------------------------------------------------ parsers


def test_restore_json_lines_of_restic_0_18_1() -> None:
    parsed = [ra.parse_restore_line(line) for line in sample("restore_v0.18.1.stdout.jsonl").splitlines()]
    assert parsed[0] == RestoreStatus(percent=pytest.approx(1.3157904475415417), files_done=21, files_total=324,
                                      bytes_done=4000003, bytes_total=304000003, seconds_elapsed=0.0)
    assert parsed[-2].seconds_elapsed == 13 and parsed[-2].percent == pytest.approx(97.44323094628391)
    assert parsed[-1] == RestoreSummary(files_total=324, files_restored=324, files_skipped=0, files_deleted=0,
                                        bytes_total=304000003, bytes_restored=304000003, bytes_skipped=0,
                                        seconds_elapsed=13.0)


def test_the_summary_of_a_restore_over_a_tree_counts_what_was_skipped_and_deleted() -> None:
    summary = ra.parse_restore_line(sample("restore_over_v0.18.1.stdout.jsonl").splitlines()[-1])
    assert summary == RestoreSummary(files_total=6, files_restored=6, files_skipped=317, files_deleted=3,
                                     bytes_total=1000008, bytes_restored=1000008, bytes_skipped=300000003)


@pytest.mark.parametrize("line", ["", "restoring", "{", "[1]", '{"message_type":"verbose_status"}',
                                  '{"message_type":"status","percent_done":"x"}'])
def test_other_restore_lines_are_none(line) -> None:
    assert ra.parse_restore_line(line) is None


def test_rustic_files_line_of_a_restore_over_a_tree() -> None:
    stdout = (SAMPLES / "rustic" / "restore_over_v0.11.4.stdout").read_text()
    assert rua.parse_restore_files(stdout) == RestoreSummary(
        files_total=319, files_restored=2, files_skipped=317, files_deleted=3, bytes_total=0, bytes_restored=0,
        bytes_skipped=0)
    with pytest.raises(errors.Internal):
        rua.parse_restore_files("restore done.\n")


# ------------------------------------------------------------------ JSON exit errors


@pytest.mark.parametrize(
    ("name", "code", "error", "message"),
    [
        ("wrong_password_v0.18.1.stderr", 12, errors.FailedPrecondition, "wrong repository password"),
        ("no_repository_v0.18.1.stderr", 10, errors.NotFound, "repository does not exist"),
        ("locked_v0.18.1.stderr", 11, errors.Unavailable, "repository is locked"),
        # Stopped while retrying an unreachable S3 endpoint: the exit_error names the step that
        # was cancelled ("unable to open config file … Is there a repository"), the lines before
        # it the cause.
        ("s3_connection_refused_sigint_v0.18.1.stderr", 1, errors.Unavailable, "unreachable"),
        ("restore_sigterm_v0.18.1.stderr", 130, errors.Cancelled, "interrupted"),
        ("restore_no_snapshot_v0.18.1.stderr", 1, errors.NotFound, "snapshot does not exist"),
    ],
)
def test_recorded_restic_0_18_1_errors(name, code, error, message) -> None:
    text = sample(name)
    assert ra.parse_exit_error(text) is not None
    found = ra.classify_failure(code, text, action="restore")
    assert type(found) is error and message in str(found)


@pytest.mark.parametrize("name", ["wrong_password_v0.18.1.stderr", "no_repository_v0.18.1.stderr",
                                  "locked_v0.18.1.stderr"])
def test_the_json_message_decides_without_the_exit_code(name) -> None:
    """The exit_error alone (its text, exit code 1) gives the class the dedicated codes give."""
    text = sample(name)
    by_code = ra.classify_failure(ra.parse_exit_error(text).code, text, action="backup")
    assert type(ra.classify_failure(1, text, action="backup")) is type(by_code)


def test_parse_exit_error_of_the_recorded_lines() -> None:
    assert ra.parse_exit_error(sample("wrong_password_v0.18.1.stderr")) == ra.ExitError(
        code=12, message="Fatal: wrong password or no key found")
    assert ra.parse_exit_error(sample("wrong_password.stderr")) is None  # restic 0.14: text only
    assert ra.parse_exit_error('{"message_type":"exit_error","code":"x","message":1}') is None
    assert ra.parse_exit_error('{"message_type":"exit_error","code":1,"mess') is None


def test_the_exit_error_wins_over_earlier_lines_that_match_another_rule() -> None:
    """A backup's per-file error about a file named "Access Denied.txt" (on stderr before the
    fatal error) must not make a full disk a credentials problem. The per-file line has the shape
    restic 0.18.1 prints (backup_unreadable); the exit_error carries restic's disk-full text
    (backup_disk_full.stderr, 0.14)."""
    item = json.dumps({"message_type": "error", "error": {"message": "open /project/Access Denied.txt: "
                       "permission denied"}, "during": "archival", "item": "/project/Access Denied.txt"})
    fatal = json.dumps({"message_type": "exit_error", "code": 1, "message": "Fatal: unable to save snapshot: "
                        "write /r/data/ab/abcd: no space left on device"})
    found = ra.classify_failure(1, f"{item}\n{fatal}\n", action="backup")
    assert isinstance(found, errors.ResourceExhausted)
    # Without the exit_error line (restic 0.14) the text rules decide, first row first.
    assert isinstance(ra.classify_failure(1, f"{item}\nFatal: no space left on device\n", action="backup"),
                      errors.PermissionDenied)


def test_an_unknown_exit_error_is_internal_and_its_words_stay_in_the_detail() -> None:
    fatal = json.dumps({"message_type": "exit_error", "code": 1, "message": "Fatal: something new at /tmp/x"})
    found = ra.classify_failure(1, fatal, action="restore")
    assert type(found) is errors.Internal and str(found) == "restic restore failed with exit code 1"
    assert "something new" in found.detail


def test_an_interrupted_local_run_is_stopped_not_missing() -> None:
    """"context canceled" with "Is there a repository" (a signal during the config read) is no
    missing repository."""
    text = ("\x1b[2Ksignal terminated received, cleaning up\n" + json.dumps({
        "message_type": "exit_error", "code": 1, "message": "Fatal: unable to open config file: context canceled\n"
        "Is there a repository at the following location?\n/tmp/r"}) + "\n")
    found = ra.classify_failure(1, text, action="snapshots")
    assert type(found) is errors.Internal and "stopped by a signal" in str(found)


# ------------------------------------------------------------------ the driver, on stand-ins


def stand_in(tmp_path: Path, version: str, restore_stdout: str, restore_exit: int = 0,
             restore_stderr: str = "") -> tuple[Path, Path]:
    """A restic that prints ``version`` and, for restore, the given output; it logs its argv."""
    calls = tmp_path / "calls"
    out = tmp_path / "restore.out"
    out.write_text(restore_stdout)
    err = tmp_path / "restore.err"
    err.write_text(restore_stderr)
    binary = tmp_path / "restic"
    binary.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = version ] && {{ echo "restic {version} compiled with go1.26.8 on linux/amd64"; exit 0; }}\n'
        f'echo "$@" >> "{calls}"\n'
        f'cat "{out}"; cat "{err}" >&2; exit {restore_exit}\n')
    binary.chmod(0o755)
    return binary, calls


def driver(binary: Path, tmp_path: Path) -> ResticEngine:
    return ResticEngine(binary=str(binary), state_dir=tmp_path / "state", timeout=30, kill_grace=1)


def repository(tmp_path: Path) -> Repository:
    return Repository(kind="local", location=str(tmp_path / "repo"), display="repo", password="pw")


def test_restic_0_18_restore_reports_progress_and_needs_its_summary(tmp_path) -> None:
    binary, calls = stand_in(tmp_path, "0.18.1", sample("restore_v0.18.1.stdout.jsonl"))
    seen: list[RestoreStatus] = []
    engine = driver(binary, tmp_path)
    view = EngineView(wrapper=(), root=tmp_path / "target")
    asyncio.run(engine.restore(repository(tmp_path), ID, view, on_status=seen.append))
    assert [s.bytes_done for s in seen] == [4000003, 21280108, 296227425]
    assert "restore --json --target" in calls.read_text()


def test_restic_0_18_restore_without_a_summary_fails(tmp_path) -> None:
    """Exit 0 and status lines only (what a restic stopped between lines would leave): no success."""
    status_only = "".join(sample("restore_sigterm_v0.18.1.stdout.jsonl"))
    binary, _ = stand_in(tmp_path, "0.18.1", status_only)
    with pytest.raises(errors.Internal, match="without a summary"):
        asyncio.run(driver(binary, tmp_path).restore(repository(tmp_path), ID,
                                                     EngineView(wrapper=(), root=tmp_path / "t")))


def test_restic_0_18_restore_stopped_by_sigterm_is_cancelled(tmp_path) -> None:
    binary, _ = stand_in(tmp_path, "0.18.1", sample("restore_sigterm_v0.18.1.stdout.jsonl"), restore_exit=130,
                         restore_stderr=sample("restore_sigterm_v0.18.1.stderr"))
    with pytest.raises(errors.Cancelled):
        asyncio.run(driver(binary, tmp_path).restore(repository(tmp_path), ID,
                                                     EngineView(wrapper=(), root=tmp_path / "t")))


def test_restic_0_14_restores_as_before_and_cannot_restore_over(tmp_path) -> None:
    binary, calls = stand_in(tmp_path, "0.14.0", "")
    engine = driver(binary, tmp_path)
    asyncio.run(engine.restore(repository(tmp_path), ID, EngineView(wrapper=(), root=tmp_path / "t")))
    assert "--json" not in calls.read_text()
    with pytest.raises(errors.Unimplemented, match="0.17"):
        asyncio.run(engine.restore_over(repository(tmp_path), ID, EngineView(wrapper=(), root=tmp_path / "t")))
    assert len(calls.read_text().splitlines()) == 1  # nothing ran for the refused restore_over


def test_restic_0_18_restore_over_returns_the_summary(tmp_path) -> None:
    binary, calls = stand_in(tmp_path, "0.18.1", sample("restore_over_v0.18.1.stdout.jsonl"))
    summary = asyncio.run(driver(binary, tmp_path).restore_over(repository(tmp_path), ID,
                                                                EngineView(wrapper=(), root=tmp_path / "t")))
    assert (summary.files_skipped, summary.files_deleted) == (317, 3)
    assert "--overwrite if-changed --delete" in calls.read_text()


def test_restic_0_18_restore_of_a_path_needs_its_summary_too(tmp_path) -> None:
    binary, calls = stand_in(tmp_path, "0.18.1", "")
    with pytest.raises(errors.Internal, match="without a summary"):
        asyncio.run(driver(binary, tmp_path).restore_path(repository(tmp_path), ID, "/project/a",
                                                          EngineView(wrapper=(), root=tmp_path / "t")))
    assert "restore --json --target" in calls.read_text() and "--include /project/a" in calls.read_text()


# ------------------------------------------------------------------ rustic, on its recording stand-in


@pytest.fixture
def rustic_stand_in(tmp_path: Path):
    from tests.unit.test_rustic_engine import StandIn

    return StandIn(tmp_path)


def target_view(tmp_path: Path) -> EngineView:
    (tmp_path / "t").mkdir(exist_ok=True)  # rustic runs inside the view
    return EngineView(wrapper=(), root=tmp_path / "t")


def rustic_engine(stand_in, tmp_path: Path):
    from agent.engine.rustic import RusticEngine

    (tmp_path / "state").mkdir(exist_ok=True)
    return RusticEngine(binary=str(stand_in.binary), state_dir=tmp_path / "state", timeout=60, kill_grace=1)


def test_rustic_restore_over_runs_restore_delete_and_returns_its_counts(rustic_stand_in, tmp_path) -> None:
    rustic_stand_in.answer(version="rustic 0.11.4", restore=("restore_over_v0.11.4.stdout", "", 0))
    summary = asyncio.run(rustic_engine(rustic_stand_in, tmp_path).restore_over(
        repository(tmp_path), ID, target_view(tmp_path)))
    assert (summary.files_skipped, summary.files_restored, summary.files_deleted) == (317, 2, 3)
    assert "--delete" in rustic_stand_in.last()["argv"]


@pytest.mark.parametrize(("stdout", "stderr"), [("", "backup_sigterm_v0.11.4.stderr"), ("", "")])
def test_a_rustic_restore_over_stopped_or_unfinished_is_no_success(rustic_stand_in, tmp_path, stdout,
                                                                   stderr) -> None:
    """rustic exits 0 after SIGTERM: without "restore done." the run did not finish."""
    rustic_stand_in.answer(version="rustic 0.11.4", restore=(stdout, stderr, 0))
    with pytest.raises(errors.Internal):
        asyncio.run(rustic_engine(rustic_stand_in, tmp_path).restore_over(
            repository(tmp_path), ID, target_view(tmp_path)))


def test_rustic_before_0_11_4_is_not_asked_to_restore_over(rustic_stand_in, tmp_path) -> None:
    rustic_stand_in.answer(version="rustic v0.11.3")
    with pytest.raises(errors.Unimplemented):
        asyncio.run(rustic_engine(rustic_stand_in, tmp_path).restore_over(
            repository(tmp_path), ID, target_view(tmp_path)))
    assert rustic_stand_in.runs() == [] or all("restore" not in r["argv"] for r in rustic_stand_in.runs())
