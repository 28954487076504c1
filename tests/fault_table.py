"""The fault suite's table: per kind of fault, how many were injected, how many lost data (must
be 0) and how many operations were recovered (a retry or resume that succeeded).

Fault tests call :func:`record` once per injected fault; the table is printed after the run
through :mod:`tests.summaries` (also from pytest-xdist workers). ``iterations()`` is how many
faults of each kind a test injects: 10 by default (what CI runs), more with
``BUCKETS_FAULT_ITERATIONS``.
"""

from __future__ import annotations

import os
from collections import defaultdict

from tests import summaries

DEFAULT_ITERATIONS = 10
KIND_WIDTH = 34
_ROWS: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])


def iterations() -> int:
    return max(1, int(os.environ.get("BUCKETS_FAULT_ITERATIONS", DEFAULT_ITERATIONS)))


def record(kind: str, *, data_lost: bool, recovered: bool) -> None:
    """One injected fault of ``kind``: whether any data was lost, whether the retry or resume
    afterwards succeeded."""
    row = _ROWS[kind]
    row[0] += 1
    row[1] += int(data_lost)
    row[2] += int(recovered)


def _section() -> tuple[str, list[str]] | None:
    if not _ROWS:
        return None
    # One fixed width: every xdist worker sends the same header line, which is printed once.
    width = max([KIND_WIDTH, *(len(kind) for kind in _ROWS)])
    lines = [f"  {'fault':<{width}}  injected  data lost  recovered"]
    for kind, (injected, lost, recovered) in sorted(_ROWS.items()):
        lines.append(f"  {kind:<{width}}  {injected:>8}  {lost:>9}  {recovered:>9}")
    return "Fault suite (faults injected, data lost, operations recovered)", lines


summaries.register(_section)
