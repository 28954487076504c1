"""Typed reads of fields from engine JSON objects; shared by the restic and rustic parsers.

Each raises TypeError when the field has the wrong type. A missing field reads
as zero or empty (both engines omit fields they have no value for); a null one
too where ``allow_null`` (rustic writes null for unknown figures; restic never
does, so there a null means garbage).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

# Terminal escape sequences an engine may put around its lines.
ANSI_CSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def json_object_line(line: str) -> dict[str, Any] | None:
    """The JSON object on one output line (escape sequences and surrounding blanks ignored), or
    None when the line holds anything else (plain text, a truncated object, a list); never raises."""
    text = ANSI_CSI.sub("", line).strip()
    if not text.startswith("{"):
        return None
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return msg if isinstance(msg, dict) else None


def json_objects(stdout: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of an engine's NDJSON output, one per non-blank line, in order, for
    output that must be nothing else: raises ValueError (not JSON) or TypeError (JSON but not an
    object) at the first line that is not one."""
    for line in stdout.splitlines():
        if not line.strip():
            continue
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise TypeError("line is not a JSON object")
        yield msg


def int_field(obj: dict[str, Any], key: str, *, allow_null: bool = False) -> int:
    value = obj.get(key, 0)
    if value is None and allow_null:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is not a number")
    return int(value)


def float_field(obj: dict[str, Any], key: str, *, allow_null: bool = False) -> float:
    value = obj.get(key, 0)
    if value is None and allow_null:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is not a number")
    return float(value)


def str_field(obj: dict[str, Any], key: str, *, allow_null: bool = False) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def strs_field(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} is not a list of strings")
    return tuple(value)
