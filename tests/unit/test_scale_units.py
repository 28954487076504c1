"""Pure parts of the flat-cost change detection: the btrfs ioctl structs, inotify event
decoding, and the journal's one-query freshness and indices."""

from __future__ import annotations

import struct

import pytest

from agent.backends import btrfs_ioctl, dirwatch
from agent.journal import Journal
from agent.model import OperationState


def _put(buffer: bytearray, offset: int, value: int) -> None:
    buffer[offset:offset + 8] = value.to_bytes(8, "little")


def test_subvolume_info_is_decoded_at_the_kernels_offsets():
    # Offsets of struct btrfs_ioctl_get_subvol_info_args (uapi linux/btrfs.h), counted by hand.
    buffer = bytearray(504)
    _put(buffer, 0, 257)  # treeid
    buffer[8:8 + 11] = b"project-abc"  # name[256]
    _put(buffer, 264, 5)  # parent_id
    _put(buffer, 272, 300)  # dirid
    _put(buffer, 280, 4711)  # generation
    _put(buffer, 288, 1)  # flags (BTRFS_ROOT_SUBVOL_RDONLY)
    buffer[296:312] = b"U" * 16  # uuid; parent_uuid at 312, received_uuid at 328
    _put(buffer, 344, 4700)  # ctransid
    _put(buffer, 352, 42)  # otransid
    _put(buffer, 376, 1_700_000_000)  # ctime.sec (timespecs 16 bytes each from 376)
    _put(buffer, 440, 0xFFFF_FFFF_FFFF_FFFF)  # reserved[0]: must not leak into any field
    info = btrfs_ioctl.parse_subvol_info(bytes(buffer))
    assert (info.id, info.parent_id, info.generation, info.flags, info.otransid) == (257, 5, 4711, 1, 42)


def test_ioctl_numbers_are_the_kernels():
    # _IOR(0x94, 60, 504), _IOR(0x94, 31, 1024), _IOW(0x94, 14, 4096) as the kernel headers give them.
    assert btrfs_ioctl.SUBVOL_INFO_SIZE == 504
    assert btrfs_ioctl.BTRFS_IOC_GET_SUBVOL_INFO == 0x81F8943C
    assert btrfs_ioctl.BTRFS_IOC_FS_INFO == 0x8400941F
    assert btrfs_ioctl.BTRFS_IOC_SUBVOL_CREATE == 0x5000940E


def test_a_buffer_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError):
        btrfs_ioctl.parse_subvol_info(bytes(503))
    with pytest.raises(ValueError):
        btrfs_ioctl.parse_fsid(bytes(16))
    assert btrfs_ioctl.parse_fsid(bytes(16) + b"F" * 16 + bytes(992)) == b"F" * 16


def test_inotify_events_are_split_with_their_padded_names():
    def event(wd, mask, name=b""):
        padded = name + b"\0" * (16 - len(name)) if name else b""
        return struct.pack("iIII", wd, mask, 0, len(padded)) + padded

    buffer = event(3, dirwatch.IN_CREATE | dirwatch.IN_ISDIR, b"sub") + event(-1, dirwatch.IN_Q_OVERFLOW) + event(
        7, dirwatch.IN_MODIFY, b"f.txt")
    assert dirwatch.parse_events(buffer) == [
        dirwatch.Event(3, dirwatch.IN_CREATE | dirwatch.IN_ISDIR, "sub"),
        dirwatch.Event(-1, dirwatch.IN_Q_OVERFLOW, ""),
        dirwatch.Event(7, dirwatch.IN_MODIFY, "f.txt"),
    ]


def test_freshness_of_every_project_in_one_query_and_batched_writes(tmp_path):
    changed = []
    journal = Journal(tmp_path / "j.sqlite", on_freshness_change=changed.append)
    with journal.batch():
        journal.mark_changed("a", 10.0)
        journal.set_seen_generation("b", "1/1")
        journal.mark_changed("b", 5.0)
    journal.record_backup("a", time=20.0, snapshot_id="s1", operation_id="o1", generation="2/2")
    every = journal.freshness_all()
    assert every == {"a": journal.freshness("a"), "b": journal.freshness("b")}
    assert every["a"]["last_backup_time"] == 20.0 and every["b"]["seen_generation"] == "1/1"
    assert changed[:2] == ["a", "b"]
    journal.close()
    # Committed, not only visible on the connection that wrote it.
    again = Journal(tmp_path / "j.sqlite")
    assert again.freshness("b")["last_change_time"] == 5.0


def test_a_projects_last_failure_is_found_through_an_index(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    plan = journal._db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM operations WHERE project_id=? AND state IN (?)"
        " ORDER BY created_at DESC, id DESC LIMIT 1", ("p", OperationState.FAILED.value)).fetchall()
    assert any("operations_project_state" in row[-1] for row in plan), plan


def test_a_change_is_stamped_after_the_read_that_saw_it(tmp_path):
    """A backup that captured after the stamp snapshotted after the read, so it holds the write:
    stamping before the read could call a project clean whose write the backup missed."""
    import asyncio

    from agent import freshness as fresh
    from agent.backends.base import Generation

    read_done = []

    class SlowReader:  # the read itself is the real thing elsewhere; here only its timing matters
        async def generations(self, project_ids):
            await asyncio.sleep(0.05)
            read_done.append(__import__("time").time())
            return {project_id: Generation(7, 1) for project_id in project_ids}

        async def changes(self, project_ids):
            return {}

    journal = Journal(tmp_path / "j.sqlite")
    observed = asyncio.run(fresh.observe_all(journal, SlowReader(), ["p"]))
    assert observed.changed == ("p",)
    assert journal.freshness("p")["last_change_time"] >= read_done[0]
