"""Tables that tests print after the run (the fuzzer's cases, the fault table), also when the
suite runs in pytest-xdist workers.

A test module registers a *producer*: a function returning ``(title, lines)`` or None, called
when its process's session ends. In an xdist worker the lines travel to the controller in the
worker's ``workeroutput``; the controller (or a plain run) prints every section in
``pytest_terminal_summary`` (see tests/conftest.py). CI does not use ``pytest -s``, so printing
from inside a test would be lost.
"""

from __future__ import annotations

import json
from typing import Callable

Producer = Callable[[], "tuple[str, list[str]] | None"]

_PRODUCERS: list[Producer] = []
_SECTIONS: dict[str, list[str]] = {}
WORKER_KEY = "buckets_summary_sections"


def register(producer: Producer) -> None:
    if producer not in _PRODUCERS:
        _PRODUCERS.append(producer)


def collect() -> dict[str, list[str]]:
    """This process's sections (from its producers) merged into those received from workers."""
    for producer in _PRODUCERS:
        made = producer()
        if made:
            _merge(*made)
    _PRODUCERS.clear()
    return _SECTIONS


def _merge(title: str, lines: list[str]) -> None:
    """Add ``lines`` under ``title``; a section from another worker with the same first line
    (a table header) adds only its rows."""
    section = _SECTIONS.setdefault(title, [])
    if section and lines and lines[0] == section[0]:
        lines = lines[1:]
    section.extend(lines)


def to_worker_output(workeroutput: dict) -> None:
    workeroutput[WORKER_KEY] = json.dumps(collect())


def from_worker_output(workeroutput: dict) -> None:
    for title, lines in json.loads(workeroutput.get(WORKER_KEY, "{}")).items():
        _merge(title, lines)
