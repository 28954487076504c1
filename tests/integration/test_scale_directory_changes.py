"""The directory backend's change scan at a flat cost: inotify watches, and the full scans that
stand in wherever the watches cannot vouch for a project. Real inotify on a real tree, a real
journal; the outcome checked is the journal's dirty state after a write made after the backup."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from agent import freshness as fresh
from agent import fsops
from agent.backends.directory import DirectoryBackend
from agent.journal import Journal
from tests.harness import new_id


@pytest.fixture
def setup(tmp_path):
    made = []

    def make(**kwargs):
        backend = DirectoryBackend(projects_root=tmp_path / "projects", persist_root=tmp_path / "persist",
                                   state_dir=tmp_path / "state", **kwargs)
        journal = Journal(tmp_path / "state" / "agent.sqlite")
        made.append((backend, journal))
        return backend, journal
    yield make
    for backend, journal in made:
        journal.close()
        if backend.watcher is not None:
            backend.watcher.close()  # inotify instances are shared by every test on the machine


def cycle(journal, backend, projects):
    return asyncio.run(fresh.observe_all(journal, backend, projects))


def make_project(backend, project_id: str, dirs: int = 0) -> None:
    asyncio.run(backend.create(project_id, quota_bytes=None))
    deep = backend.home(project_id) / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "old.txt").write_text("old")
    for n in range(dirs):
        (backend.home(project_id) / f"d{n}").mkdir()


def backed_up(journal, project_id: str) -> None:
    """As a backup that captured everything up to now would record it."""
    time.sleep(0.02)  # a later instant than every write so far on any clock granularity
    journal.record_backup(project_id, time=time.time(), snapshot_id="s", operation_id="o")
    time.sleep(0.02)


def dirty(journal, project_id: str) -> bool:
    return fresh.freshness(journal, project_id).dirty


def test_a_write_deep_in_a_tree_and_in_a_directory_made_while_watching_is_seen_by_the_next_cycle(setup):
    backend, journal = setup()
    one, other = new_id(), new_id()
    for project_id in (one, other):
        make_project(backend, project_id)
    cycle(journal, backend, [one, other])  # the first cycle scans and watches
    for project_id in (one, other):
        backed_up(journal, project_id)
    assert cycle(journal, backend, [one, other]).changed == ()
    (backend.home(one) / "a" / "b" / "c" / "old.txt").write_text("new")
    assert cycle(journal, backend, [one, other]).changed == (one,)
    assert dirty(journal, one) and not dirty(journal, other)

    # A tree made at once (mkdir -p): the inner directories exist before any watch on them.
    backed_up(journal, one)
    (backend.home(one) / "x" / "y" / "z").mkdir(parents=True)
    cycle(journal, backend, [one, other])
    backed_up(journal, one)
    assert not dirty(journal, one)
    (backend.home(one) / "x" / "y" / "z" / "f.txt").write_text("deep")
    cycle(journal, backend, [one, other])
    assert dirty(journal, one) and not dirty(journal, other)


def test_events_lost_to_a_queue_overflow_still_mark_the_project_dirty(setup):
    backend, journal = setup()
    noisy, quiet = new_id(), new_id()
    for project_id in (noisy, quiet):
        make_project(backend, project_id)
    cycle(journal, backend, [noisy, quiet])
    for project_id in (noisy, quiet):
        backed_up(journal, project_id)
    # More events than the kernel queues (one IN_CREATE each), then the one write that matters:
    # its event is lost, only the overflow says so.
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    spam = backend.home(noisy) / "a"  # watched since the first cycle
    for n in range(limit + 10):
        os.close(os.open(spam / str(n), os.O_CREAT | os.O_WRONLY, 0o600))
    (backend.home(quiet) / "a" / "b" / "c" / "old.txt").write_text("changed while the queue was full")
    cycle(journal, backend, [noisy, quiet])
    assert backend.watcher.stats.overflows >= 1
    assert dirty(journal, quiet) and dirty(journal, noisy)
    # The rescan watched again: the next write is an event again.
    backed_up(journal, quiet)
    cycle(journal, backend, [noisy, quiet])
    assert not dirty(journal, quiet)
    (backend.home(quiet) / "later.txt").write_text("later")
    assert quiet in cycle(journal, backend, [noisy, quiet]).changed


def test_a_project_over_the_watch_budget_is_scanned_every_cycle_and_said_so(setup):
    backend, journal = setup(max_watches=20)
    small, big = new_id(), new_id()
    make_project(backend, small)
    make_project(backend, big, dirs=30)
    cycle(journal, backend, [small, big])
    assert backend.watcher.unwatched == {big}
    assert any("could not be watched" in text for text in backend.limitations)
    for project_id in (small, big):
        backed_up(journal, project_id)
    cycle(journal, backend, [small, big])
    assert not dirty(journal, big)
    (backend.home(big) / "d29" / "f.txt").write_text("in an unwatched tree")
    cycle(journal, backend, [small, big])
    assert dirty(journal, big) and not dirty(journal, small)


def test_projects_made_deleted_and_swapped_while_watching(setup):
    backend, journal = setup()
    first = new_id()
    make_project(backend, first)
    cycle(journal, backend, [first])
    backed_up(journal, first)

    later = new_id()
    make_project(backend, later)
    assert later in cycle(journal, backend, [first, later]).changed
    assert dirty(journal, later) and not dirty(journal, first)

    watches = backend.watcher.watches
    asyncio.run(backend.delete(later))
    cycle(journal, backend, [first])
    assert backend.watcher.watches < watches and later not in backend.watcher._projects

    # A restore swaps a new tree in by an exchange: the old tree's watches go, the new one's come.
    staged = backend.projects_root / ".staging" / "op" / "project"
    (staged / "restored").mkdir(parents=True)
    (staged / "restored" / "f.txt").write_text("restored")
    fsops.exchange(staged, backend.home(first))
    cycle(journal, backend, [first])
    backed_up(journal, first)
    (staged / "old-tree-write.txt").write_text("the swapped-out tree is no longer the project")
    cycle(journal, backend, [first])
    assert not dirty(journal, first)
    (backend.home(first) / "restored" / "f.txt").write_text("a write into the restored tree")
    cycle(journal, backend, [first])
    assert dirty(journal, first)
