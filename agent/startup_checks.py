"""What a config needs of this host before the agent can serve it: the engine (and btrfs) binary
exists and runs, and every directory the agent keeps is a directory or can be created.

``check-config`` prints these problems and ``serve`` refuses to start on them (exit 2, no
traceback): a parse-valid config that names a missing binary or a root that cannot be created
must fail where the operator looks, not as a stack trace from deep inside the start-up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from agent.config import AgentConfig
from agent.engine.choice import choose, find_binary


def host_problems(config: AgentConfig) -> list[str]:
    """One sentence per thing this host lacks for ``config``, naming the config key; [] when none.

    Creates nothing that stays: a missing directory is judged by making (and at once removing) a
    probe directory in its nearest existing ancestor, since only an attempt tells (root passes
    every access() test, yet cannot mkdir under /proc or on a read-only mount)."""
    problems = [*_binary_problems(config)]
    for key, path in _directories(config):
        problem = _directory_problem(path)
        if problem:
            problems.append(f"{key} = {str(path)!r}: {problem}")
    return problems


def _binary_problems(config: AgentConfig) -> list[str]:
    engine = config.engine
    name, binary = choose(engine)
    if find_binary(binary) is None:
        key = f"engine.{name}_binary"
        configured = getattr(engine, f"{name}_binary")
        if engine.engine == "auto":
            return [f"engine = \"auto\": neither engine.rustic_binary = {engine.rustic_binary!r} nor "
                    f"engine.restic_binary = {engine.restic_binary!r} is found on PATH or beside the agent's Python"]
        return [f"{key} = {configured!r}: not found or not executable (engine = {engine.engine!r})"]
    problems = []
    if config.backend == "btrfs" and find_binary(config.btrfs.binary) is None:
        problems.append(f"btrfs.binary = {config.btrfs.binary!r}: not found or not executable (backend = \"btrfs\")")
    return problems


def _directories(config: AgentConfig) -> list[tuple[str, Path]]:
    found = [
        ("paths.state_dir", config.paths.state_dir),
        ("paths.projects_root", config.paths.projects_root),
        ("paths.persist_root", config.paths.persist_root),
    ]
    if config.repository.kind == "local":
        found.append(("repository.local.root", config.repository.local.root))
    return found


def _directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a directory of the agent; None when it can."""
    if path.is_dir():
        return None
    if path.exists() or path.is_symlink():
        return "exists and is not a directory"
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            return "no existing ancestor directory"
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is not a directory"
    try:
        probe = tempfile.mkdtemp(prefix=".buckets-check-", dir=ancestor)
    except OSError as exc:
        return f"cannot be created under {ancestor}: {exc.strerror or exc}"
    os.rmdir(probe)
    return None
