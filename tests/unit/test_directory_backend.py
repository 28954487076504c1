"""Tests of the directory backend and agent.fsops on real directories.

The bind-mount test runs agent/backends/bindexec.py for real: as root it only
needs a private mount namespace; otherwise an unprivileged user namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
from pathlib import Path

import pytest

from agent import errors, fsops
from agent.backends import views
from agent.backends.directory import DirectoryBackend, Staging
from agent.fsops import tree_size
from agent.ids import project_dir_name

PROJECT = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"


class Blocking:
    """The backend with its coroutines run to completion, so these tests read as plain steps."""

    def __init__(self, inner: DirectoryBackend) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name == "backup_view":
            return lambda *args, **kwargs: _blocking_context(attr(*args, **kwargs))
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: asyncio.run(attr(*args, **kwargs))
        return attr


@contextlib.contextmanager
def _blocking_context(manager):
    value = asyncio.run(manager.__aenter__())
    try:
        yield value
    except BaseException as exc:
        if not asyncio.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
            raise
    else:
        asyncio.run(manager.__aexit__(None, None, None))


@pytest.fixture
def backend(tmp_path: Path) -> Blocking:
    return Blocking(DirectoryBackend(
        projects_root=tmp_path / "projects", persist_root=tmp_path / "persist", state_dir=tmp_path / "state"
    ))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    return [line for line in Path("/proc/mounts").read_text().splitlines() if prefix in line]


def listing(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------- layout and staging


def test_layout(backend, tmp_path):
    assert backend.home(PROJECT) == tmp_path / "projects" / f"project-{PROJECT}"
    assert backend.persist(PROJECT) == tmp_path / "persist" / f"project-{PROJECT}"
    assert not backend.exists(PROJECT)
    backend.home(PROJECT).mkdir()
    assert backend.exists(PROJECT)


def test_prepare_staging_creates_empty_trees(backend, tmp_path):
    staging = backend.prepare_staging(PROJECT, "op-1")
    assert isinstance(staging, Staging)
    assert staging.project.is_dir() and list(staging.project.iterdir()) == []
    assert staging.persist.is_dir() and list(staging.persist.iterdir()) == []
    # same filesystem parents as the live trees, so the swap can be an atomic exchange
    assert staging.project.is_relative_to(tmp_path / "projects")
    assert staging.persist.is_relative_to(tmp_path / "persist")
    assert staging.project.stat().st_dev == backend.projects_root.stat().st_dev
    assert (staging.view.root / "project").is_dir() and (staging.view.root / "persist").is_dir()
    assert staging.view.wrapper[-1] == "--"
    assert str(staging.project) in staging.view.wrapper and str(staging.persist) in staging.view.wrapper
    # a second prepare for the same operation must not reuse (and mix into) existing trees
    with pytest.raises(FileExistsError):
        backend.prepare_staging(PROJECT, "op-1")


def _restore_setup(backend: DirectoryBackend, *, with_live: bool) -> Staging:
    if with_live:
        write(backend.home(PROJECT) / "old.txt", "old project")
        write(backend.persist(PROJECT) / "old-persist.txt", "old persist")
    staging = backend.prepare_staging(PROJECT, "op-1")
    write(staging.project / "src" / "new.txt", "new project")
    write(staging.persist / "new-persist.txt", "new persist")
    return staging


def test_swap_in_exchanges_both_trees_and_discard_removes_old(backend):
    staging = _restore_setup(backend, with_live=True)
    plan = backend.swap_plan(PROJECT, staging)
    assert {step["live"] for step in plan} == {str(backend.home(PROJECT)), str(backend.persist(PROJECT))}
    staged_inode = staging.project.stat().st_ino
    old_home_inode = backend.home(PROJECT).stat().st_ino

    backend.swap_in(plan)

    assert listing(backend.home(PROJECT)) == {"src/new.txt": "new project"}
    assert listing(backend.persist(PROJECT)) == {"new-persist.txt": "new persist"}
    assert backend.home(PROJECT).stat().st_ino == staged_inode
    # the old trees now sit where the staged ones were
    assert listing(staging.project) == {"old.txt": "old project"}
    assert listing(staging.persist) == {"old-persist.txt": "old persist"}
    assert staging.project.stat().st_ino == old_home_inode

    backend.discard_staging("op-1")
    assert not staging.project.exists() and not staging.persist.exists()
    assert not staging.project.parent.exists()
    assert not staging.view.root.exists()
    assert listing(backend.home(PROJECT)) == {"src/new.txt": "new project"}
    assert listing(backend.persist(PROJECT)) == {"new-persist.txt": "new persist"}
    backend.discard_staging("op-1")  # nothing left: no error


def test_swap_in_twice_is_a_no_op_the_second_time(backend):
    staging = _restore_setup(backend, with_live=True)
    plan = backend.swap_plan(PROJECT, staging)
    backend.swap_in(plan)
    backend.swap_in(plan)  # e.g. recovery re-running the swap after a crash
    assert listing(backend.home(PROJECT)) == {"src/new.txt": "new project"}
    assert listing(backend.persist(PROJECT)) == {"new-persist.txt": "new persist"}
    assert listing(staging.project) == {"old.txt": "old project"}


def test_swap_in_after_a_crash_between_the_two_steps(backend):
    staging = _restore_setup(backend, with_live=True)
    plan = backend.swap_plan(PROJECT, staging)
    backend.swap_in(plan[:1])  # only the first exchange happened before the "crash"
    done_first = Path(plan[0]["live"])
    assert listing(done_first) != {} and Path(plan[0]["staged"]).stat().st_ino != plan[0]["inode"]
    backend.swap_in(plan)  # recovery runs the whole plan
    assert listing(backend.home(PROJECT)) == {"src/new.txt": "new project"}
    assert listing(backend.persist(PROJECT)) == {"new-persist.txt": "new persist"}
    assert listing(staging.project) == {"old.txt": "old project"}
    assert listing(staging.persist) == {"old-persist.txt": "old persist"}


def test_swap_in_without_live_tree_renames(backend):
    staging = _restore_setup(backend, with_live=False)
    plan = backend.swap_plan(PROJECT, staging)
    staged_inode = staging.project.stat().st_ino
    backend.swap_in(plan)
    assert listing(backend.home(PROJECT)) == {"src/new.txt": "new project"}
    assert listing(backend.persist(PROJECT)) == {"new-persist.txt": "new persist"}
    assert backend.home(PROJECT).stat().st_ino == staged_inode
    assert not staging.project.exists() and not staging.persist.exists()
    backend.swap_in(plan)  # re-run: the staged paths are gone, nothing happens
    assert listing(backend.home(PROJECT)) == {"src/new.txt": "new project"}
    backend.discard_staging("op-1")
    assert backend.exists(PROJECT)


def test_remove_stale_keeps_listed_operations(backend, tmp_path):
    kept = backend.prepare_staging(PROJECT, "op-keep")
    stale = backend.prepare_staging(OTHER, "op-stale")
    write(stale.project / "f", "x")
    write(kept.project / "f", "y")
    with backend.backup_view(PROJECT, "op-backup") as view:
        backup_view_root = view.root

    removed = backend.remove_stale(keep=frozenset({"op-keep"}))

    assert set(removed) == {
        tmp_path / "projects" / ".staging" / "op-stale",
        tmp_path / "persist" / ".staging" / "op-stale",
        stale.view.root,
    }
    assert not stale.project.exists() and not stale.persist.exists() and not stale.view.root.exists()
    assert listing(kept.project) == {"f": "y"}
    assert kept.persist.is_dir() and kept.view.root.is_dir()
    assert backup_view_root.is_dir()  # the backup view root is stable and kept
    assert backend.remove_stale(keep=frozenset({"op-keep"})) == []
    assert len(backend.remove_stale()) == 3
    assert not kept.project.exists()


# ---------------------------------------------------------------- backup view


def test_backup_view_shows_project_files_through_bind_mount(backend, tmp_path):
    write(backend.home(PROJECT) / "hello.txt", "hi")
    write(backend.home(PROJECT) / "sub" / "deep.txt", "deep")
    write(backend.persist(PROJECT) / "persisted.txt", "p")
    with backend.backup_view(PROJECT, "op-1") as view:
        # The same path on every host (as root; a view per project under the state dir otherwise).
        assert view.root == (views.FIXED_ROOT if os.geteuid() == 0
                             else tmp_path / "state" / "views" / project_dir_name(PROJECT))
        # outside the child's namespace nothing is mounted: the mount points are empty
        assert list((view.root / "project").iterdir()) == []
        result = subprocess.run(
            [*view.wrapper, "ls", "-1", str(view.root / "project"), str(view.root / "persist")],
            cwd=view.root, capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "hello.txt" in result.stdout and "sub" in result.stdout
        assert "persisted.txt" in result.stdout
        relative = subprocess.run(
            [*view.wrapper, "cat", "project/sub/deep.txt"],
            cwd=view.root, capture_output=True, text=True, timeout=30,
        )
        assert relative.returncode == 0, relative.stderr
        assert relative.stdout == "deep"
        assert list((view.root / "project").iterdir()) == []
    assert mounts_under(tmp_path) == []
    assert list((view.root / "project").iterdir()) == []


def test_backup_view_without_persist_tree(backend, tmp_path):
    write(backend.home(PROJECT) / "only.txt", "1")
    with backend.backup_view(PROJECT, "op-1") as view:
        result = subprocess.run(
            [*view.wrapper, "find", ".", "-type", "f"], cwd=view.root, capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["./project/only.txt"]
    assert str(backend.persist(PROJECT)) not in view.wrapper
    assert mounts_under(tmp_path) == []


def test_restore_view_writes_land_in_staging(backend, tmp_path):
    staging = backend.prepare_staging(PROJECT, "op-1")
    result = subprocess.run(
        [*staging.view.wrapper, "sh", "-c", "echo restored > project/r.txt && echo kept > persist/k.txt"],
        cwd=staging.view.root, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert listing(staging.project) == {"r.txt": "restored\n"}
    assert listing(staging.persist) == {"k.txt": "kept\n"}
    assert list((staging.view.root / "project").iterdir()) == []
    assert mounts_under(tmp_path) == []


def test_bindexec_reports_a_bad_bind(tmp_path):
    from agent.backends.directory import bind_wrapper

    wrapper = bind_wrapper([(tmp_path / "missing", tmp_path)])
    result = subprocess.run([*wrapper, "true"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 126
    assert "bindexec" in result.stderr


# ---------------------------------------------------------------- sizes


def test_tree_size_counts_bytes_of_files_and_every_entry(tmp_path):
    # (bytes of regular files, entries): files, directories and links each count
    # as one entry, as in the engine's restore size; links are not followed.
    root = tmp_path / "tree"
    write(root / "a.bin", "x" * 100)
    write(root / "d" / "b.bin", "y" * 23)
    write(root / "d" / "e" / "f" / "c.bin", "")
    (root / "empty-dir").mkdir()
    os.symlink(root / "a.bin", root / "link-to-file")
    os.symlink(root / "d", root / "link-to-dir")
    # a.bin, d, d/b.bin, d/e, d/e/f, d/e/f/c.bin, empty-dir and the two links
    assert tree_size(root) == (123, 9)
    assert tree_size(root / "d") == (23, 4)
    assert tree_size(tmp_path / "missing") == (0, 0)
    assert tree_size(root / "a.bin") == (0, 0)


# ---------------------------------------------------------------- fsops


def test_exchange_swaps_two_paths(tmp_path):
    a = write(tmp_path / "a" / "file", "A").parent
    b = write(tmp_path / "b" / "file", "B").parent
    inode_a = a.stat().st_ino
    fsops.exchange(a, b)
    assert (a / "file").read_text() == "B"
    assert (b / "file").read_text() == "A"
    assert b.stat().st_ino == inode_a
    # files and directories can be exchanged too
    f = write(tmp_path / "plain", "plain")
    fsops.exchange(f, a)
    assert (f / "file").read_text() == "B"
    assert a.read_text() == "plain"


def test_exchange_needs_both_paths(tmp_path):
    a = write(tmp_path / "a", "A")
    with pytest.raises(FileNotFoundError):
        fsops.exchange(a, tmp_path / "missing")
    assert a.read_text() == "A"


def test_rename_noreplace(tmp_path):
    source = write(tmp_path / "src", "S")
    target = write(tmp_path / "dst", "D")
    with pytest.raises(FileExistsError):
        fsops.rename_noreplace(source, target)
    assert source.read_text() == "S" and target.read_text() == "D"

    target_dir = tmp_path / "dir"
    target_dir.mkdir()
    with pytest.raises(FileExistsError):
        fsops.rename_noreplace(source, target_dir)

    free = tmp_path / "free"
    fsops.rename_noreplace(source, free)
    assert free.read_text() == "S" and not source.exists()
    with pytest.raises(FileNotFoundError):
        fsops.rename_noreplace(tmp_path / "missing", tmp_path / "elsewhere")


def test_put_in_place_maps_errors(tmp_path):
    live = tmp_path / "live"
    with pytest.raises(errors.Internal):
        fsops.put_in_place(tmp_path / "no-such-staged", live)
    staged = write(tmp_path / "staged" / "f", "new").parent
    fsops.put_in_place(staged, tmp_path / "deeper" / "live")  # missing parents are created
    assert (tmp_path / "deeper" / "live" / "f").read_text() == "new"


def test_remove_tree_handles_read_only_and_missing(tmp_path):
    root = tmp_path / "ro"
    write(root / "sub" / "f", "x")
    os.chmod(root / "sub", 0o500)
    os.chmod(root, 0o500)
    fsops.remove_tree(root)
    assert not root.exists()
    fsops.remove_tree(root)  # already gone
    single = write(tmp_path / "single", "x")
    fsops.remove_tree(single)
    assert not single.exists()


# ---------------------------------------------------------------- life cycle and advisory freeze


def test_create_delete_and_freeze_markers(backend):
    assert backend.create(PROJECT, quota_bytes=None) is True
    assert backend.home(PROJECT).is_dir() and backend.persist(PROJECT).is_dir()
    assert backend.create(PROJECT, quota_bytes=None) is False
    assert backend.generation(PROJECT) is None  # no generation number: never skips a backup
    assert backend.is_frozen(PROJECT) is False
    backend.freeze(PROJECT)
    backend.freeze(PROJECT)
    assert backend.is_frozen(PROJECT) is True
    backend.thaw(PROJECT)
    backend.thaw(PROJECT)
    assert backend.is_frozen(PROJECT) is False
    backend.freeze(PROJECT)
    assert backend.delete(PROJECT) is True
    assert not backend.home(PROJECT).exists() and not backend.persist(PROJECT).exists()
    assert backend.is_frozen(PROJECT) is False
    assert backend.delete(PROJECT) is False
    with pytest.raises(errors.NotFound):
        backend.freeze(PROJECT)
