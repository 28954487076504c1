"""Which engine driver runs: config ``engine = "restic" | "rustic" | "auto"``.

``auto`` takes rustic when its binary is found, else restic. A binary is
found on PATH (or at the configured path), or beside the agent's own Python
(the venv's ``bin``, where ``scripts/bootstrap.sh`` links the pinned rustic):
so an agent started from the venv runs the production engine without a PATH
of its own. The choice is made once, at agent start, and logged with the
binary it found.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import structlog

from agent.config import AgentConfig, EngineConfig
from agent.errors import BucketsError
from agent.engine.base import Engine
from agent.engine.restic import ResticEngine
from agent.engine.rustic import RusticEngine

log = structlog.get_logger("agent.engine.choice")

Which = Callable[[str], "str | None"]


def agent_bin_dir() -> Path:
    """The directory of the agent's own Python (not resolved: a venv's ``bin`` holds a link)."""
    return Path(sys.executable).parent


def find_binary(binary: str, which: Which = shutil.which, beside: Path | None = None) -> str | None:
    """Where ``binary`` is: what ``which`` finds (PATH, or the path itself when it has a '/'),
    else ``beside/<binary>`` when that is an executable file and ``binary`` is a bare name;
    None when neither. ``beside`` defaults to :func:`agent_bin_dir`."""
    found = which(binary)
    if found:
        return found
    if "/" in binary:
        return None
    candidate = (beside if beside is not None else agent_bin_dir()) / binary
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


def choose(engine: EngineConfig, which: Which = shutil.which, beside: Path | None = None) -> tuple[str, str]:
    """Return (engine name, binary) for ``engine``: the binary where :func:`find_binary` found it,
    else as configured (its version probe then says it is missing)."""
    rustic = find_binary(engine.rustic_binary, which, beside)
    if engine.engine == "rustic" or (engine.engine == "auto" and rustic):
        return "rustic", rustic or engine.rustic_binary
    return "restic", find_binary(engine.restic_binary, which, beside) or engine.restic_binary


def make_engine(
    config: AgentConfig,
    which: Which = shutil.which,
    *,
    beside: Path | None = None,
    on_failure: Callable[[BucketsError], None] | None = None,
) -> Engine:
    """The configured driver; ``on_failure`` is told of every engine run that failed."""
    name, binary = choose(config.engine, which, beside)
    # The venv's rustic is a link to the pinned build: the log names both.
    log.info("engine.chosen", configured=config.engine.engine, engine=name, binary=binary,
             resolved=os.path.realpath(binary) if os.path.isabs(binary) else binary)
    driver = RusticEngine if name == "rustic" else ResticEngine
    return driver(
        binary=binary,
        state_dir=config.paths.state_dir,
        timeout=config.limits.engine_timeout,
        kill_grace=config.limits.kill_grace,
        upload_limit_kib=config.limits.upload_limit_kib,
        download_limit_kib=config.limits.download_limit_kib,
        stall_timeout=config.limits.stall_timeout,
        on_failure=on_failure,
    )
