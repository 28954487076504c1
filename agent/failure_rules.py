"""Tables that turn a failed program's stderr into an agent error: one shape for every driver.

Each driver (restic, rustic, btrfs) keeps its own ordered table of rows,
recorded from real output; the first row whose pattern is found decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent import errors


@dataclass(frozen=True)
class FailureRule:
    """``pattern`` found in the stderr tail → ``error`` with ``message``."""

    pattern: re.Pattern[str]
    error: type[errors.BucketsError]
    message: str


def rule(pattern: str, error: type[errors.BucketsError], message: str, flags: int = 0) -> FailureRule:
    return FailureRule(re.compile(pattern, flags), error, message)


def first_match(rules: Iterable[FailureRule], text: str) -> FailureRule | None:
    """The first rule whose pattern occurs in ``text``, or None."""
    for candidate in rules:
        if candidate.pattern.search(text):
            return candidate
    return None
