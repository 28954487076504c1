"""A snapshot's recorded paths in the API's one form (agent/snapshot_roots.py)."""

import pytest

from agent.backends.views import FIXED_ROOT
from agent.snapshot_roots import api_path, api_paths

UUID = "0b5f3a1e-8c2d-4e6f-9a7b-1c2d3e4f5a6b"
STATE_VIEW = f"/var/lib/buckets/state/views/project-{UUID}"


@pytest.mark.parametrize("recorded, expected", [
    # rustic: the view root as "/", a subpath as itself, older agents' relative roots
    ("/", ("/project", "/persist")),
    ("/project/docs/a.md", ("/project/docs/a.md",)),
    ("project", ("/project",)), ("persist", ("/persist",)), ("project/docs", ("/project/docs",)),
    # restic: the fixed view root, and a per-project view under any state dir
    (f"{FIXED_ROOT}/project", ("/project",)), (f"{FIXED_ROOT}/persist", ("/persist",)),
    (f"{FIXED_ROOT}/project/docs/a.md", ("/project/docs/a.md",)),
    (f"{STATE_VIEW}/project", ("/project",)), (f"{STATE_VIEW}/persist/", ("/persist",)),
    (f"/views/project-{UUID}/project", ("/project",)),
    (f"/tmp/pytest-1/test_x0/agent/state/views/project-{UUID}/project/src", ("/project/src",)),
    # a user's names inside the project never cut the view root short
    (f"{STATE_VIEW}/project/views/project-{UUID}/project/x", (f"/project/views/project-{UUID}/project/x",)),
    (f"{FIXED_ROOT}/project/run/buckets/view/persist", ("/project/run/buckets/view/persist",)),
    # anything else (another tool's snapshot) as recorded
    ("/home/alice/work", ("/home/alice/work",)), (f"{FIXED_ROOT}/other", (f"{FIXED_ROOT}/other",)),
    (f"/srv/views/project-{UUID}/cache", (f"/srv/views/project-{UUID}/cache",)),
    (f"/srv/views/project-{UUID}", (f"/srv/views/project-{UUID}",)),
    ("projects/x", ("projects/x",)), ("persistent", ("persistent",)),
])
def test_api_path_strips_every_known_view_root(recorded, expected):
    assert api_path(recorded) == expected


@pytest.mark.parametrize("recorded", [
    ["/"], ["persist", "project"], [f"{FIXED_ROOT}/persist", f"{FIXED_ROOT}/project"],
    [f"{STATE_VIEW}/persist", f"{STATE_VIEW}/project"], [f"{STATE_VIEW}/project", "/", "project"],
])
def test_api_paths_of_a_whole_backup_are_project_then_persist_on_every_engine(recorded):
    assert api_paths(recorded) == ("/project", "/persist")


def test_api_paths_keep_subpaths_and_foreign_paths_in_a_stable_order():
    assert api_paths(["/srv/x", f"{STATE_VIEW}/persist/b", f"{FIXED_ROOT}/project/z", "/project/a"]) == (
        "/project/a", "/project/z", "/persist/b", "/srv/x")
    assert api_paths([]) == ()


def test_a_backup_warning_names_the_file_as_the_api_does():
    from agent.engine import restic_args as ra
    from agent.engine.restic import item_warning

    # restic 0.18.1, recorded: the item and its message name the file in the view root it ran in
    view_file = f"{STATE_VIEW}/project/secret"
    error = ra.BackupItemError(item=view_file, during="archival",
                               message=f"{view_file}: open project/secret: permission denied")
    assert item_warning(error) == "/project/secret: /project/secret: open project/secret: permission denied"
    fixed = ra.BackupItemError(item=f"{FIXED_ROOT}/persist/db", during="archival", message="open persist/db: EIO")
    assert item_warning(fixed) == "/persist/db: open persist/db: EIO"
    assert item_warning(ra.BackupItemError(item="", during="scan", message="boom")) == ": boom"
