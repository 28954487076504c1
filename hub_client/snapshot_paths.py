"""The one way the CLIs name a path in a project's snapshot: as ``ls`` shows it, below the
snapshot's two roots (``project/docs/a.md``, ``persist/app.db``). A path without either root is
taken as inside ``project/`` (``docs/a.md``), so the home-relative form works too; a snapshot has
no other top-level name, so the two forms cannot be confused. (A home directory that is itself
named ``project`` is written ``project/project/...``.)

``restore --path`` and ``--to`` send the API's home-relative ``subpath`` / ``target_path``.
"""

from __future__ import annotations

ROOTS = ("project", "persist")


class PathFormError(ValueError):
    """A path the command cannot take (the message says which form it wants)."""


def _root_of(path: str) -> str:
    return path.split("/", 1)[0]


def snapshot_path(path: str) -> str:
    """``path`` below the snapshot root: as given when it starts at ``project`` or ``persist``
    (or is empty: the root), else inside ``project/``."""
    path = path.strip("/") if path not in ("", "/") else ""
    if not path or _root_of(path) in ROOTS:
        return path
    return f"project/{path}"


def home_path(path: str, *, option: str) -> str:
    """``path`` relative to the project's home, for ``option`` (e.g. ``--path``): ``project/x``
    and ``x`` both give ``x``. Raises PathFormError for the home itself or a ``persist/`` path
    (restored only with the whole project)."""
    full = snapshot_path(path)
    root, _, rest = full.partition("/")
    if root == "persist":
        raise PathFormError(f"{option} {path!r}: persist/ is restored with the whole project (leave out {option})")
    if not rest:
        raise PathFormError(f"{option} {path!r} names the whole home: leave out {option} to restore the project")
    return rest
