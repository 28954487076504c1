"""Rescues: a copy of a project that is not its placement is removed only once it is proved to
hold nothing that is not in a snapshot.

A move's source copy (left behind when the move completed, perhaps while its host was down) may
hold edits newer than the snapshot the move took: written after the last backup of a host that
went down, or after its last report to the hub. Before the copy is removed the hub

1. freezes it (writers stopped: nothing can change between the check and the deletion; it is
   not the placement any more, so nobody may write there);
2. asks its agent for a Backup with purpose "rescue", tagged with the move, not forced: the
   agent answers UP_TO_DATE when nothing changed since the copy's last backup;
3. when the copy's last backup is then the moved snapshot (or a rescue already recorded for the
   move), the copy held nothing newer; otherwise the snapshot the agent answered with holds what
   the copy had (the new rescue snapshot, or a backup the move did not take) and is recorded as
   the move's rescue, in the store and in the movelog, before anything is removed.

Any failure raises :class:`RescueFailed` (or AgentError): the caller keeps the cleanup pending
and removes nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from hub_client.client import OK_STATES, AgentClient, new_request_id, state_name
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Host, Move, Rescue, Store
from hub_client.store.models import utcnow

PURPOSE = "rescue"

Log = Callable[[str, str, dict[str, Any]], None]


class RescueFailed(Exception):
    """The copy could not be proved clean nor rescued; it must not be removed."""


def same_snapshot(left: str, right: str) -> bool:
    """Whether two snapshot ids name the same snapshot: restic reports 8-digit short ids after a
    backup and full ids elsewhere, so one may be a prefix of the other."""
    shorter, longer = sorted((left, right), key=len)
    return len(shorter) >= 8 and longer.startswith(shorter)


def holds_changes(rescue: Rescue) -> bool:
    """Whether the rescue's backup found new or changed files against its parent snapshot."""
    return bool(rescue.bytes_added or rescue.files_new or rescue.files_changed)


def changed_text(rescue: Rescue) -> str:
    """What a rescue holds beyond its parent, for the operator."""
    if holds_changes(rescue):
        return (f"{rescue.files_new} new and {rescue.files_changed} changed files, "
                f"{rescue.bytes_added} bytes added")
    if rescue.files_processed:
        # A new snapshot whose engine found nothing new: what the directory backend gives, which
        # cannot tell "unchanged" without a backup. Kept all the same: its parent may not be
        # the moved snapshot.
        return "no new or changed file against its parent snapshot"
    return "an earlier backup of the copy, not the moved snapshot"


def secure_source_copy(store: Store, client: AgentClient, move: Move, host: Host, log: Log, *,
                       timeout: float | None = None) -> Rescue | None:
    """Freeze ``move``'s copy of its project on ``host`` and prove it holds nothing newer than the
    moved snapshot, or rescue it: returns the rescue recorded for it (None when the copy held
    nothing newer or is not there). Raises RescueFailed or AgentError: then nothing may be removed."""
    project_id = move.project_id
    status = client.project_status(project_id)
    if not status.present:
        return None
    client.freeze(project_id)
    log("freeze", f"copy on {host.id} read-only for the cleanup (writers stopped); it is not the placement",
        {"host": host.id})
    operation = client.backup(project_id, request_id=new_request_id(), purpose=PURPOSE, tags=[f"move={move.id}"],
                              force=False).wait(timeout)
    if operation.state == pb.SUCCEEDED_WITH_WARNINGS:
        # An incomplete snapshot (files the engine could not read) does not hold the whole copy.
        raise RescueFailed(f"the rescue backup on {host.id} is incomplete: {'; '.join(operation.summary.warnings)[:500]}")
    if operation.state not in OK_STATES:
        raise RescueFailed(f"the rescue backup on {host.id} ended {state_name(operation.state)}: "
                           f"{operation.error.code} {operation.error.message}")
    if operation.state == pb.UP_TO_DATE:
        last = client.project_status(project_id).last_backup_snapshot_id or operation.summary.snapshot_id
        if not last:
            raise RescueFailed(f"the agent on {host.id} answered UP_TO_DATE without naming the copy's last backup")
        if same_snapshot(last, move.snapshot_id or ""):
            log("cleanup", f"copy on {host.id} holds nothing newer than the moved snapshot {last[:8]}",
                {"host": host.id, "snapshot_id": last})
            return None
        known = [r for r in store.list_rescues(move_id=move.id) if same_snapshot(r.snapshot_id, last)]
        if known:
            return known[0]  # rescued by an earlier cleanup run whose deletion did not happen
        return _record(store, move, host, last, pb.OperationSummary(), log)
    snapshot_id = operation.summary.snapshot_id
    if not snapshot_id:
        raise RescueFailed(f"the rescue backup on {host.id} reported no snapshot")
    return _record(store, move, host, snapshot_id, operation.summary, log)


def _record(store: Store, move: Move, host: Host, snapshot_id: str, summary: pb.OperationSummary,
            log: Log) -> Rescue:
    rescue = store.record_rescue(Rescue(
        move.id, move.project_id, host.id, snapshot_id, utcnow(), bytes_added=summary.bytes_added,
        files_new=summary.files_new, files_changed=summary.files_changed,
        bytes_processed=summary.bytes_processed, files_processed=summary.files_processed))
    moved = (move.snapshot_id or "")[:8] or "none"
    if holds_changes(rescue):
        text = (f"copy on {host.id} held changes newer than the moved snapshot {moved}: rescued as snapshot "
                f"{snapshot_id[:8]} ({changed_text(rescue)}) before its removal")
    else:
        text = (f"copy on {host.id} kept as rescue snapshot {snapshot_id[:8]} before its removal "
                f"({changed_text(rescue)}; the moved snapshot is {moved})")
    log("rescue", text,
        {"host": host.id, "snapshot_id": snapshot_id, "moved_snapshot_id": move.snapshot_id,
         "bytes_added": rescue.bytes_added, "files_new": rescue.files_new, "files_changed": rescue.files_changed})
    return rescue
