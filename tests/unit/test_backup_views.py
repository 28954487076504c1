"""The backup view root (agent/backends/views.py): one fixed path as root, a view per project
under the state dir otherwise, and nothing but empty, root-owned mount points in it."""

import os
from pathlib import Path

import pytest

from agent.backends import views

UUID = "0b5f3a1e-8c2d-4e6f-9a7b-1c2d3e4f5a6b"


def test_the_fixed_root_is_the_same_path_everywhere_and_outside_any_engine_directory():
    assert views.FIXED_ROOT == Path("/run/buckets/view")


def test_an_agent_that_is_not_root_keeps_a_view_per_project_and_says_so(tmp_path):
    fixed, limitation = views.backup_roots(tmp_path / "views", privileged=False)
    assert fixed is None and "state dir" in limitation
    root = views.backup_view_root(fixed, tmp_path / "views", UUID)
    assert root == tmp_path / "views" / f"project-{UUID}"
    assert sorted(p.name for p in root.iterdir()) == ["persist", "project"]


def test_with_a_fixed_root_every_project_backs_up_from_it(tmp_path):
    fixed = tmp_path / "run" / "view"
    assert views.backup_view_root(fixed, tmp_path / "views", UUID) == fixed
    assert views.backup_view_root(fixed, tmp_path / "views", "1" + UUID[1:]) == fixed
    assert not (tmp_path / "views").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the fixed root must be owned by root")
def test_prepare_makes_empty_private_mount_points_and_keeps_what_is_there(tmp_path):
    root = tmp_path / "buckets" / "view"
    views.prepare_fixed_root(root)
    views.prepare_fixed_root(root)  # again: kept as it is
    assert root.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in root.iterdir()) == ["persist", "project"]
    assert all(not any((root / name).iterdir()) for name in views.ROOT_NAMES)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fixed root must be owned by root")
def test_prepare_refuses_a_mount_point_with_files_a_symlink_or_another_owner(tmp_path):
    root = tmp_path / "buckets" / "view"
    views.prepare_fixed_root(root)
    (root / "persist" / "stray").write_text("would be backed up as a project's persist tree")
    with pytest.raises(OSError, match="not empty"):
        views.prepare_fixed_root(root)
    (root / "persist" / "stray").unlink()

    (root / "project").rmdir()
    (root / "project").symlink_to(tmp_path)
    with pytest.raises(OSError, match="not a directory owned by root"):
        views.prepare_fixed_root(root)
    (root / "project").unlink()

    os.chown(root, 1000, 1000)
    with pytest.raises(OSError, match="not a directory owned by root"):
        views.prepare_fixed_root(root)
