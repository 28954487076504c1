"""tests/btrfsfs.LoopBtrfs on a real loop device, and btrfs_cli's argv against that filesystem.

Root only: every test skips with btrfs_unavailable_reason() otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import errors
from agent.backends import btrfs_cli as bc
from tests.btrfsfs import LoopBtrfs, btrfs_unavailable_reason, leftover_loop_devices, mounts_at

REASON = btrfs_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

BTRFS = shutil.which("btrfs") or "btrfs"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def ok(argv: list[str]) -> str:
    done = run(argv)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


def fail(argv: list[str], action: str) -> errors.BucketsError:
    done = run(argv)
    assert done.returncode != 0, (argv, done.stdout)
    return bc.classify_failure(done.returncode, done.stderr, action)


def assert_gone(fs: LoopBtrfs) -> None:
    assert mounts_at(fs.mountpoint) == []
    assert leftover_loop_devices(fs.image) == []
    assert not fs.image.exists()
    assert fs.device == ""


def test_start_makes_a_quota_enabled_btrfs_and_stop_removes_everything(tmp_path: Path) -> None:
    fs = LoopBtrfs(tmp_path / "fs", size_mb=256).start()
    try:
        assert fs.device.startswith("/dev/loop")
        assert mounts_at(fs.mountpoint) == [fs.device]
        assert leftover_loop_devices(fs.image) == [fs.device]
        assert fs.image.stat().st_blocks * 512 < 256 * 1024 * 1024  # sparse
        home = str(fs.mountpoint / "project-1")
        ok(bc.subvolume_create_args(BTRFS, home))
        info = bc.parse_subvolume_show(ok(bc.subvolume_show_args(BTRFS, home)))
        assert info.subvolume_id >= 256 and info.path == "project-1"
        # quotas are on: the subvolume has its own qgroup, in both show and qgroup show
        assert info.quota_group == bc.qgroupid_of(info.subvolume_id)
        qgroup = bc.parse_qgroup_show(ok(bc.qgroup_show_args(BTRFS, home)), subvolume_id=info.subvolume_id)
        assert qgroup.max_referenced is None
    finally:
        fs.stop()
    assert_gone(fs)
    fs.stop()  # idempotent
    assert_gone(fs)


def test_stop_kills_processes_holding_the_mount(tmp_path: Path) -> None:
    with LoopBtrfs(tmp_path / "fs", size_mb=256) as fs:
        held = open(fs.mountpoint / "held.log", "w")
        try:
            in_cwd = subprocess.Popen(["sleep", "300"], cwd=fs.mountpoint)
            with_file = subprocess.Popen(["sleep", "300"], stdout=held)
        finally:
            held.close()  # only the child keeps it open now
        try:
            assert in_cwd.poll() is None and with_file.poll() is None
            fs.stop()
            assert in_cwd.wait(timeout=10) == -9
            assert with_file.wait(timeout=10) == -9
        finally:
            for proc in (in_cwd, with_file):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert_gone(fs)


def test_a_failed_start_cleans_up(tmp_path: Path) -> None:
    fs = LoopBtrfs(tmp_path / "fs", size_mb=16)  # too small for mkfs.btrfs
    with pytest.raises(RuntimeError, match="mkfs.btrfs"):
        fs.start()
    assert_gone(fs)


def test_btrfs_cli_against_a_real_filesystem(tmp_path: Path) -> None:
    """Every builder's argv runs on btrfs-progs as it is installed, and the parsers read the result."""
    with LoopBtrfs(tmp_path / "fs", size_mb=512) as fs:
        mnt = str(fs.mountpoint)
        home = f"{mnt}/project-1"
        snap = f"{mnt}/project-1.snap"
        ok(bc.subvolume_create_args(BTRFS, home))
        Path(home, "data").write_bytes(os.urandom(1 << 20))
        ok(bc.filesystem_sync_args(BTRFS, mnt))
        assert bc.parse_version(ok(bc.version_args(BTRFS)))[0] >= 5

        ok(bc.snapshot_args(BTRFS, home, snap))
        snap_info = bc.parse_subvolume_show(ok(bc.subvolume_show_args(BTRFS, snap)))
        home_info = bc.parse_subvolume_show(ok(bc.subvolume_show_args(BTRFS, home)))
        assert snap_info.readonly and snap_info.parent_uuid == home_info.uuid
        assert home_info.snapshots == ("project-1.snap",)
        assert bc.parse_property_ro(ok(bc.property_get_ro_args(BTRFS, snap))) is True
        ok(bc.property_set_ro_args(BTRFS, home, True))
        assert bc.parse_property_ro(ok(bc.property_get_ro_args(BTRFS, home))) is True
        assert type(fail(bc.subvolume_create_args(BTRFS, f"{home}/x"), "subvolume create")) is errors.FailedPrecondition
        ok(bc.property_set_ro_args(BTRFS, home, False))
        assert type(fail(bc.subvolume_create_args(BTRFS, home), "subvolume create")) is errors.AlreadyExists
        # an existing DEST is a directory to snapshot *into*: here a read-only one
        existing = fail(bc.snapshot_args(BTRFS, home, snap), "subvolume snapshot")
        assert type(existing) is errors.FailedPrecondition

        # quota: the limit shows up in both commands; an over-quota subvolume's limit can be
        # raised only by qgroup id from outside it
        ok(bc.qgroup_limit_args(BTRFS, home, 512 * 1024))
        qgroup = bc.parse_qgroup_show(ok(bc.qgroup_show_args(BTRFS, home, sync=True)))
        assert (qgroup.qgroupid, qgroup.max_referenced) == (home_info.quota_group, 512 * 1024)
        assert qgroup.referenced > 512 * 1024
        over = fail(bc.qgroup_limit_args(BTRFS, home, 4 << 20), "qgroup limit")
        assert type(over) is errors.ResourceExhausted
        ok(bc.qgroup_limit_args(BTRFS, mnt, None, qgroupid=bc.qgroupid_of(home_info.subvolume_id)))
        assert bc.parse_subvolume_show(ok(bc.subvolume_show_args(BTRFS, home))).limit_referenced is None

        # nested subvolumes, deleted deepest first in one call
        for sub in ("a", "a/b", "a/b/c"):
            ok(bc.subvolume_create_args(BTRFS, f"{home}/{sub}"))
        os.mkdir(f"{home}/dir")
        ok(bc.subvolume_create_args(BTRFS, f"{home}/dir/d e"))
        assert type(fail(bc.subvolume_delete_args(BTRFS, [home]), "subvolume delete")) is errors.FailedPrecondition
        entries = bc.parse_subvolume_list(ok(bc.subvolume_list_below_args(BTRFS, home)))
        nested = bc.nested_paths(home, home_info, entries)
        assert nested == [f"{home}/a/b/c", f"{home}/a/b", f"{home}/a", f"{home}/dir/d e"]
        ok(bc.subvolume_delete_args(BTRFS, [*nested, home, snap], commit=True))
        assert bc.parse_subvolume_list(ok(bc.subvolume_list_below_args(BTRFS, mnt))) == []
        missing = fail(bc.subvolume_show_args(BTRFS, home), "subvolume show")
        assert type(missing) is errors.NotFound
