"""What the hub knows of a project's freshness, and what it cannot vouch for.

Agents report each project's last backup and last change (GetProjectStatus for one project,
ListProjects for all of a host); the hub records every report with the time it got it
(:func:`record_status`, :func:`record_host_report`). A move whose source host is down decides
from that record alone: a report older than the configured bound proves nothing about what
happened since, so the freshness is *unknown* and the time since the hub last knew the project's
state is a window no one can vouch for (:func:`offline_window`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.rescue import same_snapshot
from hub_client.store import Host, Project, Store
from hub_client.store.models import utcnow


def timestamp_or_none(message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=timezone.utc)


def record_status(store: Store, host: Host, project_id: str, status: pb.ProjectStatus | pb.ProjectFreshness,
                  reported_at: datetime | None = None) -> Project | None:
    """Record the freshness ``host``'s agent reported for the project (a ProjectStatus or a
    ListProjects entry), as of ``reported_at`` (default: now). Only the placement's report counts
    (see Store.record_freshness); returns the project as stored, or None when it did not count."""
    return store.record_freshness(
        project_id, host.id, last_backup=timestamp_or_none(status, "last_backup"),
        last_backup_snapshot=status.last_backup_snapshot_id, last_edited=timestamp_or_none(status, "last_change"),
        reported_at=reported_at or utcnow(),
    )


def record_host_report(store: Store, host: Host, report: pb.ListProjectsResponse) -> list[Project]:
    """Record every project of a ListProjects answer placed on ``host``; returns those recorded.
    The time of the report is the hub's (the agents' clocks may differ from it)."""
    now = utcnow()
    recorded = []
    for entry in report.projects:
        project = record_status(store, host, entry.project_id, entry, now)
        if project is not None:
            recorded.append(project)
    return recorded


def _iso(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if value else "never"


@dataclass(frozen=True)
class Window:
    """Changes of a project that the backup being moved may lack: from ``since`` (the last time
    the hub knew the backup held everything) to ``until``. ``known`` is False when the hub has no
    fresh report (the freshness is unknown); ``last_edited`` is the last recorded edit when one
    after the backup is recorded."""

    since: datetime
    until: datetime
    known: bool
    reported_at: datetime | None
    last_edited: datetime | None

    @property
    def minutes(self) -> int:
        """Whole minutes, rounded up, at least 1."""
        return max(1, math.ceil((self.until - self.since).total_seconds() / 60))

    def describe(self, valid_for: timedelta) -> str:
        edits = f"; an edit at {_iso(self.last_edited)} is recorded after the backup" if self.last_edited else ""
        if self.known:
            return (f"its last backup ({_iso(self.since)}) is older than its last recorded edit "
                    f"({_iso(self.last_edited)}): up to {self.minutes} minutes of changes would be lost")
        report = (f"the hub's last report of the project is from {_iso(self.reported_at)}"
                  if self.reported_at else "the hub has no report of the project from its agent")
        return (f"its freshness is UNKNOWN: {report}, older than the {valid_for} a report is trusted for{edits}; "
                f"changes from {_iso(self.since)} to {_iso(self.until)} cannot be vouched for: up to "
                f"{self.minutes} minutes of changes would be lost")

    def as_data(self) -> dict:
        return {"freshness": "known" if self.known else "unknown", "window_from": self.since.isoformat(),
                "window_to": self.until.isoformat(), "loss_minutes": self.minutes,
                "reported_at": self.reported_at.isoformat() if self.reported_at else None}


def offline_window(project: Project, snapshot_id: str, snapshot_time: datetime, now: datetime,
                   valid_for: timedelta) -> Window | None:
    """The window of changes a move from the backup ``snapshot_id`` (taken at ``snapshot_time``)
    cannot vouch for, when the project's source is down; None when a report fresher than
    ``valid_for`` says the project changed after no backup it knows of (the move loses nothing
    the hub could know of).

    Unknown freshness is never clean: without a fresh report the window runs from the last time
    the hub knew the project's state (its last report, or the backup) to now, or to the last
    recorded edit when that is later. A recorded last backup newer than the moved one (a
    snapshot the target cannot see) vouches for nothing the move takes: the window then starts
    at the moved backup."""
    newer_backup = (project.last_backup is not None and project.last_backup > snapshot_time
                    and not same_snapshot(project.last_backup_snapshot, snapshot_id))
    backed_up = snapshot_time if newer_backup else max(filter(None, (project.last_backup, snapshot_time)))
    if newer_backup:  # what changed between the two backups is an edit the move does not take
        edited = max(filter(None, (project.last_edited, project.last_backup)))
    else:
        edited = project.last_edited if project.last_edited is not None and project.last_edited > backed_up else None
    known = project.reported_at is not None and now - project.reported_at <= valid_for
    if known:
        return None if edited is None else Window(backed_up, edited, True, project.reported_at, edited)
    since = backed_up if edited is not None else max(backed_up, project.reported_at or backed_up)
    return Window(since, max(now, edited or now), False, project.reported_at, edited)
