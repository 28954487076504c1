"""The three engines the conformance tests run on, each named by its version.

rustic 0.11.4 and restic 0.18.x are the pinned builds of ``scripts/tools.sh`` (found through
``tests/tools.py``); restic 0.14 is Debian's, on PATH. A test that takes the ``engine_under_test``
fixture (tests/conftest.py) runs once per engine, with the engine in its id, e.g.
``test_backup[rustic-0.11.4]``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tools import TOOLS_SH, tool


def _pinned_version(name: str) -> str:
    """The version scripts/tools.sh pins for ``name`` (``RUSTIC_VERSION=0.11.4`` …)."""
    match = re.search(rf"^{name.upper()}_VERSION=(\S+)$", TOOLS_SH.read_text(), re.MULTILINE)
    return match.group(1) if match else "pinned"


@dataclass(frozen=True)
class EngineUnderTest:
    """One engine: ``driver`` is the agent's ``engine`` setting, ``tool`` the pinned build's name
    (None: the ``restic`` on PATH)."""

    id: str
    driver: str
    tool: str | None

    def binary(self) -> str:
        """The engine's binary; skips the calling test, saying why, when it is not on this machine."""
        if self.tool is not None:
            path = tool(self.tool)
            if path is None:
                pytest.skip(f"the pinned {self.tool} is not built on this machine (scripts/tools.sh "
                            f"builds it; make test runs it)")
            return path
        path = shutil.which("restic")
        if path is None:
            pytest.skip("the restic binary is not on PATH (make test installs it)")
        return path

    def engine_lines(self) -> str:
        """The agent config lines of this engine, for the harness's ``[engine]`` table (its
        ``extra``, before any other table header); pass ``engine=self.driver`` beside them."""
        return f'{self.driver}_binary = "{self.binary()}"\n'

    @property
    def stock(self) -> bool:
        """Debian's restic 0.14: the oldest engine, without the features newer versions probe for."""
        return self.tool is None


ENGINES = (
    EngineUnderTest(f"rustic-{_pinned_version('rustic')}", "rustic", "rustic"),
    EngineUnderTest(f"restic-{_pinned_version('restic')}", "restic", "restic"),
    EngineUnderTest("restic-0.14-debian", "restic", None),
)


def engine_ids() -> list[str]:
    return [engine.id for engine in ENGINES]
