"""The move's pure decisions and the movelog's rendering."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hub_client.move import (
    OFFLINE_STEPS, ONLINE_STEPS, newest_backup, possible_loss_minutes, resume_point, same_snapshot,
    steps_of,
)
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
    ("online", "final_backup", False, "freeze"),        # failure thawed the source: freeze again
    ("online", "verify", False, "freeze"),
    ("online", "restore", True, "restore"),
    ("offline", "verify", False, "restore"),            # failure removed the target's copy
    ("offline", "restore", True, "restore"),
    ("offline", "backup", False, "preflight"),          # not a step of that plan
    ("cross-region", "final_sync", False, "freeze"),     # the source was thawed: freeze again, copy again
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
    assert ONLINE_STEPS.index("freeze") < ONLINE_STEPS.index("final_backup") < ONLINE_STEPS.index("restore")
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
