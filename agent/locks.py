"""Engine locks left by a dead agent: which repositories its interrupted operations used, and
their removal at the next start.

An engine run killed with its agent (PDEATHSIG) leaves its restic lock in the repository: a
shared one blocks ``check``, ``forget`` and ``prune`` (stock restic too) until someone runs
``restic unlock``. At start the agent unlocks every repository an interrupted operation used
(the journal keeps each operation's repository display, never its secrets). ``restic unlock``
removes stale locks only: a lock of a live process, on this host or another, stays.

The repository is opened again from the agent's configuration: the hub never sends a spec, so
the journaled display is the configured repository of the project. An operation whose request
named its own repository (credentials are never stored) is reopened only when it is a local
path the configured password opens; otherwise its note says that the locks may remain. Notes name
a repository as the API does (:attr:`agent.repository.Repository.label`), never by this host's
path of the configured one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from agent import errors
from agent.model import OperationKind, OperationRecord, OperationState
from agent.repository import Repository

log = structlog.get_logger("agent.locks")

# The kinds whose job runs the engine on ``params["repository"]`` (a drain runs none itself:
# its backups are operations of their own; a one-host copy uses reflinks).
ENGINE_KINDS = frozenset({OperationKind.BACKUP, OperationKind.RESTORE, OperationKind.VERIFY, OperationKind.ENSURE,
                          OperationKind.FORGET, OperationKind.DELETE, OperationKind.PRECOPY})
# At most this many unlocks at once, and this long for all of them: an unreachable bucket must
# not keep the agent from serving (what is not done by then is noted, and the next exclusive
# command or Verify unlocks it).
CONCURRENCY = 4
DEADLINE_SECONDS = 45.0


@dataclass(frozen=True)
class UsedRepository:
    """A repository interrupted operations used: its ``display`` as journaled, the project whose
    configured repository it should be, and the operations."""

    display: str
    project_id: str
    operation_ids: tuple[str, ...]


def repositories_used(records: Iterable[OperationRecord]) -> list[UsedRepository]:
    """The repositories that the engine runs of ``records`` (operations a previous agent left
    unfinished) may have locked, in first-seen order: those of operations that had started
    (RUNNING or CANCELLING; a PENDING one never ran) and name a repository. A restore from
    another project's repository names that project (``source_project_id``)."""
    found: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if record.state not in (OperationState.RUNNING, OperationState.CANCELLING):
            continue
        if record.kind not in ENGINE_KINDS or record.params.get("mode") == "sentinel":
            continue
        display = record.params.get("repository") or ""
        if not isinstance(display, str) or not display:
            continue
        project_id = record.params.get("source_project_id") or record.project_id
        found.setdefault((display, project_id), []).append(record.id)
    return [UsedRepository(display, project, tuple(ops)) for (display, project), ops in found.items()]


def _by_display(display: str, _project_id: str) -> str:
    return f"repository {display}"


async def remove_stale_locks(
    used: list[UsedRepository],
    *,
    open_repository: Callable[[str, str], Repository],
    unlock: Callable[[Repository], Awaitable[bool]],
    deadline: float = DEADLINE_SECONDS,
    concurrency: int = CONCURRENCY,
    label: Callable[[str, str], str] = _by_display,
) -> dict[str, str]:
    """Unlock each repository of ``used``: ``open_repository(display, project_id)`` opens it
    (raises a BucketsError when it cannot), ``unlock`` removes its stale locks (False: the
    engine keeps none). Returns a note per operation id for its record, naming the repository
    by ``label(display, project_id)``; never raises a BucketsError (each failure is logged and
    noted)."""
    notes: dict[str, str] = {}
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(entry: UsedRepository) -> None:
        shown = label(entry.display, entry.project_id)
        async with gate:
            try:
                repo = open_repository(entry.display, entry.project_id)
                if not await unlock(repo):
                    return
            except errors.NotFound:
                note = f"{shown} does not exist: no lock to remove"
            except errors.BucketsError as exc:
                note = f"stale locks may remain in {shown} ({exc.message}); `restic unlock` on it removes them"
                log.warning("recovery.unlock_failed", repository=entry.display, operations=list(entry.operation_ids),
                            error=exc.message)
            else:
                note = f"stale locks removed from {shown}"
                log.info("recovery.unlocked", repository=entry.display, operations=list(entry.operation_ids))
            for operation_id in entry.operation_ids:
                notes[operation_id] = note

    tasks = [asyncio.ensure_future(one(entry)) for entry in used]
    if not tasks:
        return notes
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for entry, task in zip(used, tasks):
        if task in pending:
            log.warning("recovery.unlock_timed_out", repository=entry.display, deadline=deadline)
            for operation_id in entry.operation_ids:
                notes.setdefault(operation_id, f"stale locks may remain in {label(entry.display, entry.project_id)} "
                                 f"(no answer within {deadline:g} s); `restic unlock` on it removes them")
        elif not task.cancelled() and task.exception() is not None:
            log.error("recovery.unlock_crashed", repository=entry.display, error=repr(task.exception()))
    return notes
