"""The CLIs' one form of a path in a snapshot (hub_client/snapshot_paths.py)."""

import pytest

from hub_client.snapshot_paths import PathFormError, home_path, snapshot_path


@pytest.mark.parametrize("given, expected", [
    ("", ""), ("/", ""), ("project", "project"), ("persist", "persist"),
    ("project/docs/a.md", "project/docs/a.md"), ("persist/app.db", "persist/app.db"),
    ("docs/a.md", "project/docs/a.md"), ("/docs/a.md/", "project/docs/a.md"),
    ("projects/x", "project/projects/x"), ("persistent", "project/persistent"),
])
def test_snapshot_path_takes_the_ls_form_and_the_home_relative_one(given, expected):
    assert snapshot_path(given) == expected


@pytest.mark.parametrize("given, expected", [
    ("project/docs/a.md", "docs/a.md"), ("docs/a.md", "docs/a.md"), ("project/project/x", "project/x"),
])
def test_home_path_gives_the_apis_home_relative_form(given, expected):
    assert home_path(given, option="--path") == expected


@pytest.mark.parametrize("given", ["persist/app.db", "persist", "project", "", "/"])
def test_home_path_refuses_persist_and_the_whole_home(given):
    with pytest.raises(PathFormError, match="--path"):
        home_path(given, option="--path")
