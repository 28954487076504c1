"""agent.writers parsing, and the /proc walk against real processes of this test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from agent import cgroup_freeze, writers
from agent.backends import mounts


def test_fdinfo_flags_parses_octal():
    text = "pos:\t12\nflags:\t0100002\nmnt_id:\t27\nino:\t5\n"
    assert writers.fdinfo_flags(text) == 0o100002
    assert writers.flags_write(0o100002)  # O_RDWR | O_LARGEFILE
    assert writers.flags_write(0o102001)  # O_WRONLY | O_APPEND
    assert not writers.flags_write(0o100000)  # O_RDONLY
    assert writers.fdinfo_flags("pos:\t0\n") is None
    assert writers.fdinfo_flags("flags:\tzz\n") is None


def test_maps_line_writable_shared():
    line = "7f2a1c000000-7f2a1c001000 rw-s 00000000 00:2d 1234    /srv/p/project-a/data file.db\n"
    mapping = writers.parse_maps_line(line)
    assert mapping == writers.Mapping(writable_shared=True, device=os.makedev(0, 0x2d), inode=1234,
                                      path="/srv/p/project-a/data file.db")
    assert not writers.parse_maps_line("7f-80 rw-p 00000000 00:2d 1 /x").writable_shared
    assert not writers.parse_maps_line("7f-80 r--s 00000000 00:2d 1 /x").writable_shared
    assert writers.parse_maps_line("7f-80 rw-p 00000000 00:00 0").path == ""
    assert writers.parse_maps_line("garbage") is None
    assert writers.parse_maps_line("7f-80 rw-s 0 zz:2d 1 /x") is None


def test_parse_stat_with_parentheses_in_name():
    text = "42 (a) b (c)) S 7 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 98765 0 0\n"
    assert writers.parse_stat(text) == (7, 98765, "S")
    assert writers.parse_stat("nonsense") is None


def test_inside_and_deleted():
    roots = ["/srv/projects/project-a"]
    assert writers.inside("/srv/projects/project-a", roots)
    assert writers.inside("/srv/projects/project-a/x/y", roots)
    assert writers.inside("/srv/projects/project-a/log (deleted)", roots)
    assert not writers.inside("/srv/projects/project-ab/x", roots)
    assert not writers.inside("/srv/projects", roots)


def test_command_line_and_descendants():
    assert writers.command_line(b"python\0-c\0x\0", "py") == "python -c x"
    assert writers.command_line(b"", "kworker") == "kworker"
    assert len(writers.command_line(b"a" * 1000, "x").encode()) == writers.MAX_COMMAND
    assert writers.descendants(1, {2: 1, 3: 2, 4: 9, 5: 3}) == {1, 2, 3, 5}


def test_cgroup_events_and_mountinfo():
    assert cgroup_freeze.parse_events("populated 1\nfrozen 1\nbad\n") == {"populated": 1, "frozen": 1}
    text = ("36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n"
            "37 36 98:0 /x /srv/p ro,relatime - ext4 /dev/vda rw\n")
    assert mounts.parse_mountinfo(text) == [mounts.Mount("/mnt/with space", False), mounts.Mount("/srv/p", True)]


NOBODY = -1  # spare no process tree: the writers below are this test's own children


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "p").mkdir()
    return tmp_path / "p"


def _spawn(code: str, tree) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", code, str(tree)], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


def test_scan_finds_write_fds_and_shared_maps_not_readers(tree):
    (tree / "m").write_bytes(b"\0" * 4096)
    (tree / "r").write_text("r")
    writer = _spawn("import sys,time; f=open(sys.argv[1]+'/w','a'); print('ready',flush=True); time.sleep(60)", tree)
    mapper = _spawn("import sys,time,mmap,os; fd=os.open(sys.argv[1]+'/m',os.O_RDWR); "
                    "m=mmap.mmap(fd,4096,mmap.MAP_SHARED); os.close(fd); print('ready',flush=True); time.sleep(60)", tree)
    reader = _spawn("import sys,time,os; f=open(sys.argv[1]+'/r'); os.chdir(sys.argv[1]); "
                    "print('ready',flush=True); time.sleep(60)", tree)
    try:
        found = {w.pid: w for w in writers.scan(writers.scope_for([tree]), spare=NOBODY)}
        assert writer.pid in found and found[writer.pid].paths == (str(tree / "w"),)
        assert mapper.pid in found and str(tree / "m") in found[mapper.pid].paths
        assert reader.pid not in found
        # The directory backend counts every open file and working directory.
        anything = {w.pid for w in writers.scan(writers.scope_for([tree], any_open=True), spare=NOBODY)}
        assert {writer.pid, reader.pid} <= anything
        assert not {writer.pid, reader.pid} & {w.pid for w in writers.scan(writers.scope_for([tree], any_open=True))}
    finally:
        for child in (writer, mapper, reader):
            child.kill()
            child.wait()


def test_stop_all_terminates_then_kills(tree):
    polite = _spawn("import sys,time; f=open(sys.argv[1]+'/a','a'); print('ready',flush=True); time.sleep(60)", tree)
    stubborn = _spawn("import sys,time,signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "f=open(sys.argv[1]+'/b','a'); print('ready',flush=True); time.sleep(60)", tree)
    try:
        scope = writers.scope_for([tree])
        stopped = {s.pid: s.action for s in asyncio.run(writers.stop_all(scope, grace=0.5, spare=NOBODY))}
        assert stopped == {polite.pid: "terminated", stubborn.pid: "killed"}
        assert writers.scan(scope, spare=NOBODY) == []
    finally:
        for child in (polite, stubborn):
            child.kill()
            child.wait()
