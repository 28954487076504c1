"""Store rows and library results as ``buckets.v1`` Hub messages, and request fields checked
into domain values. Pure functions: no store, no network."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from agent.errors import InvalidArgument
from hub_client import inputs
from hub_client.proto.buckets.v1 import agent_pb2 as apb
from hub_client.proto.buckets.v1 import hub_pb2 as hpb
from hub_client.store import Conflict
from hub_client.store.models import (
    Copy, Host, HostBackupStatus, Move, MovelogEntry, MoveStatus, OfflineLoss, Project, Rescue,
)

JOB_STATUS = {
    MoveStatus.PENDING: hpb.JOB_PENDING, MoveStatus.RUNNING: hpb.JOB_RUNNING, MoveStatus.FAILED: hpb.JOB_FAILED,
    MoveStatus.SUCCEEDED: hpb.JOB_SUCCEEDED, MoveStatus.CANCELLED: hpb.JOB_CANCELLED,
}
CONFLICT_POLICY = {Conflict.FAIL: apb.FAIL, Conflict.OVERWRITE: apb.OVERWRITE, Conflict.SKIP: apb.SKIP}
CONFLICT_RULE = {value: key for key, value in CONFLICT_POLICY.items()}

MAX_REQUEST_ID = 128


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _set_time(message, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, field).FromDatetime(value)


# ---------------------------------------------------------------- checking request fields


name = inputs.name
project_id = inputs.project_id


def job_id(value: str, field: str) -> str:
    """A move's or a copy's id (a uuid); InvalidArgument otherwise."""
    return project_id(value, field)


def request_id(value: str) -> str:
    """A caller's request id: required, printable, at most MAX_REQUEST_ID characters."""
    if not value:
        raise InvalidArgument("request_id is required: the same request_id returns the same job")
    if len(value) > MAX_REQUEST_ID or not value.isprintable():
        raise InvalidArgument(f"request_id must be at most {MAX_REQUEST_ID} printable characters")
    return value


address = inputs.address


def conflict_rule(policy: int) -> str:
    """The store's on_conflict rule of a ConflictPolicy; InvalidArgument for an unknown value."""
    # Unset is FAIL here, the hub's default (the CLI's too): a copy never replaces what it was
    # not told to (the agent's own unset means OVERWRITE, as its restores of a path always did).
    rule = Conflict.FAIL if policy == apb.CONFLICT_POLICY_UNSPECIFIED else CONFLICT_RULE.get(policy)
    if rule is None:
        raise InvalidArgument(f"on_conflict must be FAIL, OVERWRITE or SKIP, got {policy}")
    return rule


# ---------------------------------------------------------------- messages


def host_message(host: Host, backup: HostBackupStatus | None = None, *, probed: bool = False,
                 answer: apb.HostStatus | None = None) -> hpb.Host:
    """The Host message: the stored row, its backup counts, and the agent's RPO figures when a
    probe of this call got an ``answer``."""
    message = hpb.Host(id=host.id, address=host.address, region=host.region, status=host.status,
                       probed=probed, reachable=answer is not None)
    _set_time(message, "last_seen", host.last_seen)
    if backup is not None:
        message.backup.CopyFrom(hpb.HostBackupStatus(
            projects=backup.projects, dirty=backup.dirty, up_to_date=backup.up_to_date,
            never_backed_up=backup.never_backed_up, failing=backup.failing, checked_at=timestamp(backup.checked_at)))
    if answer is not None:
        rpo = message.rpo
        rpo.rpo_seconds = answer.rpo_seconds
        rpo.max_unprotected_age_seconds = answer.max_unprotected_age_seconds
        rpo.p99_unprotected_age_seconds = answer.p99_unprotected_age_seconds
        rpo.over_rpo_count = answer.over_rpo_count
        rpo.over_rpo.extend(answer.over_rpo)
        if answer.HasField("observed_at"):
            rpo.observed_at.CopyFrom(answer.observed_at)
    return message


def is_stale(project: Project, now: datetime, bound: timedelta) -> bool:
    """Whether the project's freshness figures are not vouched for at ``now``: no report, or
    one older than ``bound``. An unplaced project has no agent to report: never stale."""
    if project.host_id is None:
        return False
    return project.reported_at is None or now - project.reported_at > bound


def project_message(project: Project, now: datetime, bound: timedelta) -> hpb.Project:
    message = hpb.Project(id=project.id, host_id=project.host_id or "", region=project.region,
                          repository=project.repository, last_backup_snapshot=project.last_backup_snapshot,
                          stale=is_stale(project, now, bound), freshness_bound_seconds=bound.total_seconds())
    _set_time(message, "last_backup", project.last_backup)
    _set_time(message, "last_edited", project.last_edited)
    _set_time(message, "reported_at", project.reported_at)
    return message


def move_message(move: Move) -> hpb.Move:
    message = hpb.Move(
        id=move.id, project_id=move.project_id, source_host=move.source_host, target_host=move.target_host,
        step=move.step, status=JOB_STATUS.get(move.status, hpb.JOB_STATUS_UNSPECIFIED), force=move.force,
        error=move.error or "", attempts=move.attempts, snapshot_id=move.snapshot_id or "", cleanup=move.cleanup,
        cross_region=move.cross_region, force_target=move.force_target)
    for field in ("created_at", "updated_at", "frozen_at", "placed_at"):
        _set_time(message, field, getattr(move, field))
    if move.caught_up_bytes is not None:
        message.caught_up_bytes = move.caught_up_bytes
    if move.frozen_seconds is not None:
        message.frozen_seconds = move.frozen_seconds
    return message


def copy_message(copy: Copy) -> hpb.Copy:
    message = hpb.Copy(
        id=copy.id, source_project=copy.source_project, source_path=copy.source_path,
        target_project=copy.target_project, target_path=copy.target_path,
        on_conflict=CONFLICT_POLICY.get(copy.on_conflict, apb.FAIL), source_host=copy.source_host,
        target_host=copy.target_host, step=copy.step, status=JOB_STATUS.get(copy.status, hpb.JOB_STATUS_UNSPECIFIED),
        error=copy.error or "", attempts=copy.attempts, snapshot_id=copy.snapshot_id or "")
    _set_time(message, "created_at", copy.created_at)
    _set_time(message, "updated_at", copy.updated_at)
    return message


def entry_message(entry: MovelogEntry) -> hpb.LogEntry:
    return hpb.LogEntry(job_id=entry.move_id, seq=entry.seq, time=timestamp(entry.time), kind=entry.kind,
                        message=entry.message, data_json=json.dumps(entry.data, sort_keys=True, default=str))


def loss_message(loss: OfflineLoss) -> hpb.OfflineLoss:
    message = hpb.OfflineLoss(host_id=loss.host_id, project_id=loss.project_id)
    _set_time(message, "last_backup", loss.last_backup)
    _set_time(message, "last_edited", loss.last_edited)
    _set_time(message, "recorded_at", loss.recorded_at)
    if loss.loss_minutes is not None:
        message.loss_minutes = loss.loss_minutes
    return message


def rescue_message(rescue: Rescue) -> hpb.Rescue:
    return hpb.Rescue(move_id=rescue.move_id, project_id=rescue.project_id, host_id=rescue.host_id,
                      snapshot_id=rescue.snapshot_id, created_at=timestamp(rescue.created_at),
                      bytes_added=rescue.bytes_added, files_new=rescue.files_new, files_changed=rescue.files_changed)


def move_parameters(move: Move, first_attempt: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a StartMove asked for, as recorded (compared when a request_id comes again).
    ``first_attempt``: the data of the move's first "attempt" movelog entry, which holds
    ``force``/``force_target`` as the move was created with them (a retry may have changed the
    move's since); None before the first attempt, when the move's are those."""
    asked = first_attempt or {}
    return {"project_id": move.project_id, "target_host": move.target_host,
            "force": bool(asked.get("force", move.force)),
            "force_target": bool(asked.get("force_target", move.force_target)),
            "cross_region": move.cross_region}


def copy_parameters(copy: Copy) -> dict[str, Any]:
    return {"source_project": copy.source_project, "source_path": copy.source_path,
            "target_project": copy.target_project, "target_path": copy.target_path, "on_conflict": copy.on_conflict}
