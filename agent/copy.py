"""CopyFiles: a file or directory from one project to another (or within one) on this host,
without an engine.

``cp --reflink=auto -a`` (on btrfs the copy shares the source's extents; elsewhere it is a
plain copy) reads the source from the read-only snapshot a backup would read
(:meth:`agent.backends.base.Backend.backup_view`: a btrfs snapshot taken for this operation
and removed in every outcome; the live home on the directory backend, which has none) and
writes into staging the user cannot reach (:mod:`agent.placing`). It runs in a private mount
namespace where it sees only the source's parent directory (read-only, nosymfollow) and the
staging directory, each bound by the descriptor the agent opened without following symlinks;
:func:`agent.placing.staged_put` then puts the copy in place by the conflict policy. The argv
is built by :func:`cp_args` (pure) and run by the one executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from agent import errors, fsops, placing, project_paths, usertree
from agent.backends.base import remove_fd_view
from agent.executor import run_process
from agent.failure_rules import first_match
from agent.failure_rules import rule as _rule
from agent.jobs import Services
from agent.model import Summary
from agent.operations import OperationContext

CP_BINARY = "cp"
PROGRESS_INTERVAL = 0.5

# cp's stderr (GNU coreutils, LANG=C) → agent errors; the first match decides.
CP_FAILURES = (
    _rule(r"No space left on device", errors.ResourceExhausted, "no space left to copy into the target project"),
    _rule(r"Disk quota exceeded", errors.ResourceExhausted, "the target project's quota is full"),
    _rule(r"Read-only file system", errors.FailedPrecondition, "the target project is read-only (frozen?)"),
    _rule(r"No such file or directory", errors.NotFound, "the source path vanished during the copy"),
)


def cp_args(binary: str, source: str, target: str) -> list[str]:
    """``cp --reflink=auto -a --no-target-directory -- SOURCE TARGET``: ``target`` becomes a copy
    of ``source`` (a file, a symlink as a link, or a directory tree with modes, owners, times,
    links and xattrs), sharing extents where the filesystem can (btrfs), copying otherwise.

    Both paths must be absolute (so neither can be read as an option) and ``target`` must not
    exist (with ``--no-target-directory`` an existing directory is not descended into).
    Raises ValueError otherwise.
    """
    if not binary:
        raise ValueError("the cp binary must be named")
    for what, path in (("source", source), ("target", target)):
        if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
            raise ValueError(f"cp needs an absolute {what} path: {path!r}")
    return [binary, "--reflink=auto", "-a", "--no-target-directory", "--", source, target]


def classify_cp_failure(returncode: int, stderr_tail: str) -> errors.BucketsError:
    """The agent error for a failed cp run (its masked stderr tail is the detail)."""
    found = first_match(CP_FAILURES, stderr_tail)
    if found is not None:
        return found.error(found.message, detail=stderr_tail)
    return errors.Internal(f"cp exited with {returncode}", detail=stderr_tail)


async def copy_files(
    context: OperationContext,
    services: Services,
    *,
    source_project_id: str,
    source_path: str,
    target_path: str,
    on_conflict: placing.ConflictPolicy,
    timeout: float,
    kill_grace: float,
) -> Summary:
    """Copy ``source_path`` of ``source_project_id`` to ``target_path`` of this operation's
    project (paths already checked by the service; checked again here against the trees the
    copy reads and writes). Raises NotFound (a project or the source is missing),
    FailedPrecondition (frozen target; FAIL and the target exists), InvalidArgument, what cp's
    failure maps to (:func:`classify_cp_failure`), and what placing raises."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    for project in dict.fromkeys((source_project_id, project_id)):
        backend.require_real(project)
        if not backend.exists(project):
            raise errors.ProjectNotFound(f"project {project} does not exist on this host", project_id=project)
    if await backend.is_frozen(project_id):
        raise errors.ProjectFrozen(f"project {project_id} is frozen; thaw it before copying into it", project_id=project_id)
    context.progress("snapshot", message="preparing a read-only view of the source")
    async with backend.backup_view(source_project_id, context.operation_id) as view:
        if view.project is None:
            raise errors.ProjectNotFound(f"project {source_project_id} does not exist on this host", project_id=source_project_id)
        source_root = await asyncio.to_thread(usertree.open_root, view.project, what="source project's tree")
        try:
            await asyncio.to_thread(project_paths.source_at, source_root, source_path, field="source_path",
                                    check_link=False)
            parent_rel, _, name = source_path.rpartition("/")
            try:
                source_parent = await asyncio.to_thread(usertree.open_dir, source_root, parent_rel)
            except OSError as exc:
                raise usertree.os_error(exc, "source_path", source_path) from None
        finally:
            os.close(source_root)
        try:
            shown_source = os.path.join(usertree.fd_path(source_parent), name)
            total_bytes, total_entries = await asyncio.to_thread(placing.entry_size, shown_source)

            async def produce(staging: placing.Staging) -> None:
                context.progress("copy", bytes_total=total_bytes, files_total=total_entries,
                                 message=f"copying {source_path} to {target_path}")
                poller = asyncio.create_task(_report(context, staging.item_path(), total_bytes, total_entries))
                # cp sees two directories only, both bound by the descriptors the agent opened
                # without following symlinks: the source's parent (read-only, nosymfollow) and the
                # staging directory the user cannot reach.
                cp_view = backend.fd_view(context.operation_id, write={"dst": staging.item_dir},
                                          read={"src": source_parent})
                try:
                    result = await run_process(
                        [*cp_view.wrapper, *cp_args(CP_BINARY, str(cp_view.root / "src" / name),
                                                    str(cp_view.root / "dst" / staging.item_name))],
                        env={"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C"},
                        timeout=timeout, kill_grace=kill_grace,
                    )
                finally:
                    poller.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await poller
                    await asyncio.to_thread(remove_fd_view, cp_view)
                if result.returncode != 0:
                    raise classify_cp_failure(result.returncode, result.stderr_tail)

            placed, size, entries = await placing.staged_put(
                context, backend, project_id, target_path, on_conflict, kind="copy", produce=produce
            )
        finally:
            os.close(source_parent)
    context.progress("place", percent=100.0, bytes_done=size, bytes_total=size, files_done=entries,
                     files_total=entries, message=f"{source_path} copied to {target_path} ({placed.describe()})")
    return Summary(bytes_processed=size, files_processed=entries, duration_seconds=time.monotonic() - started)


async def _report(context: OperationContext, staged, total_bytes: int, total_entries: int) -> None:
    begun = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        done_bytes, done_entries = await asyncio.to_thread(fsops.tree_size, staged)
        elapsed = time.monotonic() - begun
        rate = done_bytes / elapsed if elapsed > 0 else 0.0
        context.progress(
            "copy", bytes_done=done_bytes, bytes_total=total_bytes, files_done=done_entries,
            files_total=total_entries, bytes_per_second=rate,
            percent=min(99.0, 100.0 * done_bytes / total_bytes) if total_bytes else 0.0,
            eta_seconds=(total_bytes - done_bytes) / rate if rate > 0 and total_bytes else -1.0,
        )
