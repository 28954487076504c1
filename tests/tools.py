"""Where the pinned engine binaries built by ``scripts/tools.sh`` are, for the tests that ask.

The one place tests learn these paths: ``scripts/tools.sh --print`` (which builds nothing)
prints a ``name=path`` line per built tool. Nothing here changes PATH: tests that pin
``engine = "restic"`` keep running the restic on PATH (Debian's 0.14).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

TOOLS_SH = Path(__file__).resolve().parent.parent / "scripts" / "tools.sh"


@functools.cache
def built_tools() -> dict[str, str]:
    """{name: absolute binary path} of the tools built on this machine ({} when none or no script)."""
    try:
        out = subprocess.run([str(TOOLS_SH), "--print"], capture_output=True, text=True, timeout=60,
                             check=False).stdout
    except OSError:
        return {}
    found = {}
    for line in out.splitlines():
        name, sep, path = line.partition("=")
        if sep and Path(path).is_file():
            found[name.strip()] = path.strip()
    return found


def tool(name: str) -> str | None:
    """The binary of the pinned tool ``name`` ("rustic", "restic", "minio"), or None when not built."""
    return built_tools().get(name)


def require_tool(name: str) -> str:
    """The binary of ``name``; skips the calling test, saying why, when it is not built."""
    path = tool(name)
    if path is None:
        pytest.skip(f"the pinned {name} is not built on this machine (scripts/tools.sh builds it; "
                    f"make test runs it)")
    return path
