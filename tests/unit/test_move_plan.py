"""The move's pure decisions and the movelog's rendering."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hub_client.move import (
    DEFAULT_PRECOPY_STOP_BYTES, OFFLINE_STEPS, ONLINE_STEPS, MoveSettings, caught_up_bytes, fetched_bytes_known,
    newest_backup,
    possible_loss_minutes, precopy_done, precopy_key, resume_point, round_difference, same_snapshot, steps_of,
)
from hub_client.store.models import Move, frozen_entry, frozen_window
from hub_client.movelog_view import MovelogPrinter, entry_record, render_entry
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.steps import job_request_id
from hub_client.store import MovelogEntry

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("backup, edited, minutes", [
    (T0, None, None),                                     # never edited
    (T0, T0, None),                                       # edit captured by the backup
    (T0 + timedelta(seconds=1), T0, None),
    (T0, T0 + timedelta(seconds=1), 1),                   # any loss counts as a minute
    (T0, T0 + timedelta(minutes=41, seconds=30), 42),     # rounded up
    (T0, T0 + timedelta(hours=2), 120),
    (None, T0, None),                                     # no backup: nothing to move from (refused elsewhere)
])
def test_possible_loss_minutes(backup, edited, minutes) -> None:
    assert possible_loss_minutes(backup, edited) == minutes


@pytest.mark.parametrize("plan, step, crashed, start", [
    (None, "preflight", False, "preflight"),
    ("online", "created", True, "preflight"),
    ("online", "backup", False, "backup"),              # nothing undone before the freeze
    ("online", "final_backup", True, "final_backup"),   # hub crash: continue the step
    ("online", "precopy", True, "precopy"),             # hub crash: continue (rejoin) the pre-copy
    ("online", "precopy", False, "precopy"),            # failure removed the pre-copy: pre-copy again
    ("online", "freeze", True, "freeze"),
    ("online", "final_backup", False, "precopy"),       # failure thawed, removed the pre-copy: pre-copy again
    ("online", "verify", False, "precopy"),
    ("online", "restore", True, "restore"),             # hub crash: the pre-copy is intact, catch up
    ("online", "finalize", True, "finalize"),
    ("offline", "verify", False, "restore"),            # failure removed the target's copy
    ("offline", "restore", True, "restore"),
    ("offline", "backup", False, "preflight"),          # not a step of that plan
    ("cross-region", "final_sync", False, "precopy"),    # thawed, pre-copy removed: pre-copy again
    ("cross-region", "precopy", True, "precopy"),
    ("cross-region", "sync", False, "sync"),             # nothing undone yet: the copy goes on
    ("cross-region", "final_sync", True, "final_sync"),
    ("some-plan", "restore", True, "preflight"),         # an unknown plan starts over
])
def test_resume_point(plan, step, crashed, start) -> None:
    assert resume_point(plan, step, crashed) == start


def test_steps_and_request_ids() -> None:
    assert steps_of("online") == ONLINE_STEPS and steps_of("offline") == OFFLINE_STEPS
    cross = steps_of("cross-region")
    assert cross.index("sync") < cross.index("freeze") < cross.index("final_backup") < cross.index("final_sync") \
        < cross.index("restore")
    assert ONLINE_STEPS == ("preflight", "backup", "precopy", "freeze", "final_backup", "restore", "verify",
                            "finalize")
    assert cross == ("preflight", "backup", "sync", "precopy", "freeze", "final_backup", "final_sync", "restore",
                     "verify", "finalize")  # the pre-copy reads the target region's copy: after the sync
    assert OFFLINE_STEPS == ("preflight", "restore", "verify", "finalize")
    assert job_request_id("move", "m1", "restore", 2) == "move:m1:restore:2"
    assert job_request_id("move", "m1", "restore", 2) != job_request_id("move", "m1", "restore", 3)


def test_same_snapshot_accepts_short_and_full_ids_only() -> None:
    full = "4488a640" + "0" * 56
    assert same_snapshot("4488a640", full) and same_snapshot(full, full)
    assert not same_snapshot("4488a64", full)  # too short to mean anything
    assert not same_snapshot("", full) and not same_snapshot("4488a641", full)


def snapshot(sid: str, minute: int, *, layout: str = "v2", project: str = "p1", purpose: str = "backup",
             tags: tuple[str, ...] = ()) -> pb.Snapshot:
    stamp = Timestamp()
    stamp.FromDatetime(T0 + timedelta(minutes=minute))
    return pb.Snapshot(id=sid, time=stamp, layout=layout, project_id=project, purpose=purpose, tags=tags)


def test_newest_backup_takes_the_newest_v2_snapshot_of_the_project() -> None:
    snapshots = [snapshot("a", 1), snapshot("b", 5, layout=""), snapshot("c", 3), snapshot("d", 9, project="p2")]
    assert newest_backup(snapshots, "p1").id == "c"
    assert newest_backup([snapshot("b", 5, layout="")], "p1") is None


def test_render_entry_lines() -> None:
    step = MovelogEntry("m1", 1, T0, "step", "restore", {"step": "restore"})
    assert render_entry(step) == "12:00:00 step      restore"
    progress = MovelogEntry("m1", 2, T0, "progress", "restore", {
        "host": "host-b", "phase": "restore", "percent": 50.0, "bytes_done": 1024, "bytes_total": 2048,
        "files_done": 5, "files_total": 10, "bytes_per_second": 0, "terminal": False})
    line = render_entry(progress)
    assert "host-b restore" in line and "50.0%" in line and "1.0 KiB/2.0 KiB" in line and "5/10 files" in line
    assert "#" * 14 + "-" * 14 in line
    done = MovelogEntry("m1", 3, T0, "progress", "", {"host": "host-b", "phase": "done", "terminal": True,
                                                      "state": "SUCCEEDED"})
    assert render_entry(done).endswith("host-b done: SUCCEEDED")
    assert entry_record(step) == {"move_id": "m1", "seq": 1, "time": T0.isoformat(), "kind": "step",
                                  "message": "restore", "data": {"step": "restore"}}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_movelog_printer_redraws_progress_on_a_terminal_only() -> None:
    def progress(seq: int, percent: float) -> MovelogEntry:
        return MovelogEntry("m1", seq, T0, "progress", "", {"host": "host-b", "phase": "restore",
                                                             "percent": percent, "terminal": False})

    step = MovelogEntry("m1", 1, T0, "step", "restore", {})
    done = MovelogEntry("m1", 4, T0, "step", "verify", {})
    terminal = Terminal()
    printer = MovelogPrinter(terminal)
    for entry in (step, progress(2, 10.0), progress(3, 60.0), done):
        printer.show(entry)
    lines = terminal.getvalue().split("\n")
    assert lines[0] == render_entry(step)
    assert lines[1].startswith("\r") and lines[1].count("\r") == 2 and lines[1].rstrip().endswith("60.0%")
    assert lines[2] == render_entry(done) and lines[3] == ""

    plain = io.StringIO()
    printer = MovelogPrinter(plain)
    for entry in (step, progress(2, 10.0), progress(3, 60.0), done):
        printer.show(entry)
    assert plain.getvalue().splitlines() == [render_entry(e) for e in (step, progress(2, 10.0), progress(3, 60.0), done)]


def test_newest_backup_never_takes_a_copy_a_rescue_or_a_pre_restore_snapshot() -> None:
    own = snapshot("a", 1, purpose="move")
    newer = [snapshot("r", 7, purpose="rescue"), snapshot("p", 8, purpose="pre-restore"),
             snapshot("c", 9, purpose="copy", tags=("scope=subpath",))]
    assert newest_backup([own, *newer], "p1").id == "a"
    assert newest_backup(newer, "p1") is None


# ---------------------------------------------------------------- pre-copy and the frozen window


@pytest.mark.parametrize("done, rounds, difference, stop, expected", [
    (1, 1, None, 100, True),       # one round allowed: the bulk snapshot's pre-copy only
    (1, 3, None, 100, False),      # the first round has no difference yet: another backup follows
    (2, 3, 500, 100, False),       # still changing fast: one more round
    (2, 3, 100, 100, True),        # at the threshold: small enough
    (2, 3, 0, 100, True),
    (3, 3, 10_000, 100, True),     # the round count is reached, however large the difference
    (2, 5, 1, 0, False),           # threshold 0: only an unchanged project stops early
    (2, 5, 0, 0, True),
])
def test_precopy_stop_rule(done, rounds, difference, stop, expected) -> None:
    assert precopy_done(done, rounds, difference, stop) is expected


def test_round_difference_is_what_the_backup_added() -> None:
    assert round_difference(pb.OperationSummary(bytes_added=10 << 20, bytes_processed=1 << 30)) == 10 << 20
    assert round_difference(pb.OperationSummary()) == 0


def test_precopy_settings() -> None:
    assert MoveSettings().precopy_rounds == 3 and MoveSettings().precopy_stop_bytes == DEFAULT_PRECOPY_STOP_BYTES
    assert MoveSettings(precopy_rounds=0).precopy_rounds == 0
    with pytest.raises(ValueError, match="precopy_rounds"):
        MoveSettings(precopy_rounds=-1)
    with pytest.raises(ValueError, match="precopy_stop_bytes"):
        MoveSettings(precopy_stop_bytes=-5)


def test_precopy_key_is_the_move_id_or_a_digest_within_the_agents_charset() -> None:
    move_id = "0b6f1c2e-1111-4222-8333-944455556666"
    assert precopy_key(move_id) == move_id
    odd = precopy_key("a move/with spaces" + "x" * 80)
    assert odd.startswith("move-") and len(odd) <= 64 and odd == precopy_key("a move/with spaces" + "x" * 80)
    assert precopy_key("a move/with spaces") != precopy_key("a move/with spaces!")


def entry(seq: int, kind: str, data: dict) -> MovelogEntry:
    return MovelogEntry("m1", seq, T0, kind, kind, data)


def test_caught_up_bytes_from_the_movelog() -> None:
    assert caught_up_bytes([entry(1, "step", {})]) is None
    log = [entry(1, "sync", {"step": "sync", "copied_bytes": 900}),
           entry(2, "restore", {"bytes_fetched": 5}),        # an earlier attempt's restore
           entry(3, "restore", {"bytes_fetched": 70}),
           entry(4, "backup", {"bytes_fetched": 1000})]
    assert caught_up_bytes(log) == 70  # the bulk sync is before the freeze: not caught up after it
    log.append(entry(5, "sync", {"step": "final_sync", "copied_bytes": 30}))
    assert caught_up_bytes(log) == 100
    log.append(entry(6, "restore", {"bytes_fetched": 0, "bytes_known": False}))  # not reported: unknown
    assert caught_up_bytes(log) is None


def test_fetched_bytes_known() -> None:
    assert fetched_bytes_known(pb.OperationSummary(bytes_fetched=5, files_fetched=1))
    assert fetched_bytes_known(pb.OperationSummary())  # nothing fetched at all
    assert not fetched_bytes_known(pb.OperationSummary(files_fetched=3))  # files fetched, bytes not said


def move_at(frozen_at, placed_at, caught=None) -> Move:
    return Move("m1", "p1", "a", "b", "complete", "succeeded", False, None, 1, T0, T0,
                frozen_at=frozen_at, placed_at=placed_at, caught_up_bytes=caught)


def test_frozen_window() -> None:
    assert frozen_window(T0, T0 + timedelta(seconds=1.25)) == 1.25
    assert frozen_window(None, T0) is None and frozen_window(T0, None) is None
    assert frozen_window(T0 + timedelta(seconds=1), T0) == 0.0  # a clock stepped back: not negative
    move = move_at(T0, T0 + timedelta(milliseconds=1500), 10 << 20)
    assert move.frozen_seconds == 1.5
    message, data = frozen_entry(move)
    assert message == "frozen for 1.50 s (freeze → placement); 10485760 bytes caught up after the freeze"
    assert data == {"frozen_seconds": 1.5, "caught_up_bytes": 10 << 20, "frozen_at": T0.isoformat(),
                    "placed_at": (T0 + timedelta(milliseconds=1500)).isoformat()}
    assert frozen_entry(move_at(None, T0)) is None  # no freeze (an offline move): no entry
