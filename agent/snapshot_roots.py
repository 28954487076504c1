"""A snapshot's recorded ``paths`` in the API's one form (pure functions).

Every layout-v2 snapshot holds the trees ``/project`` and ``/persist`` (or ``/project/<subpath>``
for a backup of one path), whatever an engine recorded as its ``paths``:

- rustic backs up the view root as ``/`` (both roots), a subpath as ``/project/<subpath>``;
  agents before that gave it the relative ``project`` and ``persist``;
- restic records absolute paths in the view root the engine ran in: the fixed root
  ``/run/buckets/view`` (:mod:`agent.backends.views`), or a per-project view under an agent's
  state dir, ``<state_dir>/views/project-<uuid>`` (unprivileged agents, and every snapshot an
  agent recorded before the fixed root).

ListSnapshots shows each as ``/project``, ``/persist`` or ``/project/<subpath>``; a path of none of
these layouts (a snapshot some other tool made) is shown as recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.backends.views import FIXED_ROOT

WHOLE = ("/project", "/persist")
_ROOT = r"(?:project|persist)"
# The first ".../views/project-<uuid>" followed by a root: a subpath (the user's names) comes
# after it, so a name like "views/project-<uuid>/project" inside the project cannot cut it short.
_STATE_VIEW = re.compile(
    r"^(?:/.*?)?/views/project-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(/" + _ROOT + r"(?:/.*)?)$"
)
_FIXED = re.compile("^" + re.escape(str(FIXED_ROOT)) + r"(/" + _ROOT + r"(?:/.*)?)$")
_RELATIVE = re.compile(r"^(?:\./)?(" + _ROOT + r"(?:/.*)?)$")


def api_path(recorded: str) -> tuple[str, ...]:
    """The API form of one recorded path: ``("/project", "/persist")`` for rustic's ``/``, the
    path below the view root for a path in a known view layout (trailing slashes dropped), else
    ``(recorded,)`` unchanged."""
    if recorded == "/":
        return WHOLE
    for pattern in (_FIXED, _STATE_VIEW):
        match = pattern.match(recorded)
        if match:
            return (match.group(1).rstrip("/") or "/",)
    match = _RELATIVE.match(recorded)
    if match:
        return ("/" + match.group(1).rstrip("/"),)
    return (recorded,)


def _order(path: str) -> tuple[int, str]:
    for rank, root in enumerate(WHOLE):
        if path == root or path.startswith(root + "/"):
            return rank, path
    return len(WHOLE), path


def api_paths(recorded: Iterable[str]) -> tuple[str, ...]:
    """Every recorded path in the API form (:func:`api_path`), without repeats, ``/project``'s
    first, then ``/persist``'s, then any other, each group sorted."""
    found: set[str] = set()
    for path in recorded:
        found.update(api_path(path))
    return tuple(sorted(found, key=_order))


def shown_path(recorded: str) -> str:
    """One path an engine names (a file of a backup's warning) in the API form when it has exactly
    one (:func:`api_path`), else as given."""
    shown = api_path(recorded)
    return shown[0] if len(shown) == 1 else recorded


def shown_in(text: str, recorded: str) -> str:
    """``text`` with every occurrence of the path ``recorded`` in its API form (:func:`shown_path`)."""
    return text.replace(recorded, shown_path(recorded)) if recorded else text
