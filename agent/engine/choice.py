"""Which engine driver runs: config ``engine = "restic" | "rustic" | "auto"``.

``auto`` takes rustic when its binary is found (on PATH, or at the configured
path), else restic. The choice is made once, at agent start.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from agent.config import AgentConfig, EngineConfig
from agent.errors import BucketsError
from agent.engine.base import Engine
from agent.engine.restic import ResticEngine
from agent.engine.rustic import RusticEngine


def choose(engine: EngineConfig, which: Callable[[str], str | None] = shutil.which) -> tuple[str, str]:
    """Return (engine name, binary) for ``engine``; ``which`` finds a binary or returns None."""
    if engine.engine == "auto":
        if which(engine.rustic_binary):
            return "rustic", engine.rustic_binary
        return "restic", engine.restic_binary
    if engine.engine == "rustic":
        return "rustic", engine.rustic_binary
    return "restic", engine.restic_binary


def make_engine(
    config: AgentConfig,
    which: Callable[[str], str | None] = shutil.which,
    *,
    on_failure: Callable[[BucketsError], None] | None = None,
) -> Engine:
    """The configured driver; ``on_failure`` is told of every engine run that failed."""
    name, binary = choose(config.engine, which)
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
