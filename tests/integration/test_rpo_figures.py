"""Must-show 3 of issue 19: GetHostStatus, GetProjectStatus, ListProjects and /metrics give the
right unprotected ages, against the moments of the test's own writes (real agent process,
directory backend and btrfs), and the right projects over the RPO with their reasons (never
backed up; a backup that fails for real on a broken repository; waiting).

Every moment is bounded by the test's own clock readings around the event, never by a tolerance:
a lower bound is the mtime of a file the test writes just before (the kernel's coarse clock,
which file times and the agent's fine clock are never behind of), an upper bound time.time()
just after. On btrfs the moment of a write is not known to the agent (a generation moved between
two looks): it counts from the look before, which the test makes right before each write.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import REPO_ROOT, catch_engine, create_project

pytestmark = requires_restic

RPO = 1.0
# [schedule] rpo sets the RPO the figures are measured against. Quiet windows over the whole day:
# no scheduled backup starts, so the backups of this test are the ones it asks for.
CONFIG = (f'[metrics]\nlisten = "127.0.0.1:0"\nport_file = "metrics.port"\n'
          f'[schedule]\nrpo = {RPO}\nquiet_windows = ["00:00-12:00", "12:00-00:00"]\n')


@dataclass
class Window:
    """The test's bounds of a moment: ``lo`` <= the moment <= ``hi``."""

    lo: float
    hi: float


class Clock:
    def __init__(self, directory: Path) -> None:
        self._marker = directory / "clock-marker"

    def lo(self) -> float:
        """A lower bound of anything timed after this call: the mtime of a file written now (the
        coarse clock file times use, which is never ahead of time.time())."""
        self._marker.write_bytes(uuid.uuid4().bytes)
        return min(self._marker.stat().st_mtime, time.time())


@pytest.fixture(params=["directory", "btrfs"])
def agent(request, agent_factory):
    # reconcile_interval = 0: the agent looks at a project only when GetProjectStatus asks (or an
    # operation does), so the test knows the look before each write.
    if request.param == "btrfs":
        filesystem = request.getfixturevalue("btrfs_fs")
        base = filesystem.mountpoint / f"rpo-{uuid.uuid4().hex[:8]}"
        return agent_factory(base.name, backend="btrfs", base=base, limits="reconcile_interval = 0", extra=CONFIG)
    return agent_factory("rpo", limits="reconcile_interval = 0", extra=CONFIG)


def status(agent, project_id: str) -> pb.ProjectStatus:
    return agent.stub.GetProjectStatus(pb.GetProjectStatusRequest(project_id=project_id), timeout=30)


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def write(agent, clock: Clock, project_id: str, name: str) -> Window:
    """Look at the project (GetProjectStatus), write one file into it, look again; the bounds of
    the moment the agent may give the change (on btrfs: the look before the write)."""
    lo = clock.lo()
    status(agent, project_id)
    (agent.home(project_id) / name).write_text(f"{name} {uuid.uuid4()}\n")
    hi = time.time()
    status(agent, project_id)
    return Window(lo, hi)


def assert_age(age: float, since: Window, asked: Window) -> None:
    """An age read between ``asked.lo`` and ``asked.hi`` of a change made within ``since``."""
    assert asked.lo - since.hi <= age <= asked.hi - since.lo, (age, since, asked)


def seconds(stamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def test_unprotected_ages_and_over_rpo_reasons_against_the_writes(agent, tmp_path: Path) -> None:
    clock = Clock(tmp_path)
    metrics_port = int((agent.base / "metrics.port").read_text())
    a, b, c, f = (create_project(agent, files=3) for _ in range(4))
    for project_id in (a, b, c, f):
        backup = agent.wait(agent.backup(project_id).id)
        assert backup.state == pb.SUCCEEDED, backup.error
    first_seen = Window(clock.lo(), 0.0)
    never = create_project(agent, files=3)
    status(agent, never)
    first_seen.hi = time.time()
    assert status(agent, c).unprotected_age_seconds == 0 and not status(agent, c).HasField("unprotected_since")

    written = {a: write(agent, clock, a, "t1.txt")}
    write(agent, clock, b, "t2.txt")
    backup = agent.wait(agent.backup(b).id)
    assert backup.state == pb.SUCCEEDED, backup.error
    after_backup = status(agent, b)
    assert not after_backup.dirty and after_backup.unprotected_age_seconds == 0
    assert not after_backup.HasField("unprotected_since")

    # F's repository breaks for real: its keys are gone, so no engine can open it (and the agent
    # does not initialise a repository whose config is there).
    keys = agent.repository(f) / "keys"
    shutil.rmtree(keys)
    keys.mkdir()
    written[f] = write(agent, clock, f, "tf.txt")
    failed = agent.wait(agent.backup(f).id)
    assert failed.state == pb.FAILED
    written[b] = write(agent, clock, b, "t3.txt")
    written[never] = first_seen

    time.sleep(max(0.0, written[b].hi + RPO - time.time()) + 0.05)  # every change is now older than the RPO

    asked = Window(time.time(), 0.0)
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=30)
    asked.hi = time.time()
    now = seconds(host.observed_at)
    assert asked.lo <= now <= asked.hi
    assert host.rpo_seconds == RPO and host.projects == 5
    expected = {never: "never_backed_up", a: "queue_too_long", f: "failing_backups", b: "queue_too_long"}
    # Oldest unprotected change first: the order of the test's writes.
    assert [(item.project_id, item.reason) for item in host.over_rpo] == list(expected.items())
    assert host.over_rpo_count == 4
    for item in host.over_rpo:
        since = seconds(item.unprotected_since)
        window = written[item.project_id]
        assert window.lo <= since <= window.hi, (item, window)
        assert_age(item.unprotected_age_seconds, window, asked)
    assert host.max_unprotected_age_seconds == host.over_rpo[0].unprotected_age_seconds  # the never backed up
    assert host.p99_unprotected_age_seconds == host.max_unprotected_age_seconds  # 5 projects: p99 is the max

    for project_id, window in written.items():
        asked = Window(time.time(), 0.0)
        project = status(agent, project_id)
        asked.hi = time.time()
        assert_age(project.unprotected_age_seconds, window, asked)
        assert window.lo <= seconds(project.unprotected_since) <= window.hi
        assert project.over_rpo and project.over_rpo_reason == expected[project_id]
    clean = status(agent, c)
    assert (clean.unprotected_age_seconds, clean.over_rpo, clean.over_rpo_reason) == (0, False, "")

    # ListProjects carries the same figures for every project, read at its observed_at.
    asked = Window(time.time(), 0.0)
    listed = agent.stub.ListProjects(pb.ListProjectsRequest(), timeout=30)
    asked.hi = time.time()
    assert asked.lo <= seconds(listed.observed_at) <= asked.hi
    by_id = {item.project_id: item for item in listed.projects}
    assert set(by_id) == {a, b, c, f, never}
    for project_id, window in written.items():
        item = by_id[project_id]
        assert window.lo <= seconds(item.unprotected_since) <= window.hi, (item, window)
        assert_age(item.unprotected_age_seconds, window, asked)
        assert item.over_rpo and item.over_rpo_reason == expected[project_id]
    item = by_id[c]
    assert (item.unprotected_age_seconds, item.over_rpo, item.over_rpo_reason) == (0, False, "")
    assert not item.HasField("unprotected_since")

    # The metrics endpoint: ages at the scrape (they grow with no event in between).
    for _ in range(2):
        asked = Window(time.time(), 0.0)
        samples = scrape(metrics_port)
        asked.hi = time.time()
        for project_id, window in written.items():
            age = samples[("buckets_project_unprotected_age_seconds", frozenset({("project", project_id)}))]
            assert_age(age, window, asked)
        assert samples[("buckets_project_unprotected_age_seconds", frozenset({("project", c)}))] == 0
        assert samples[("buckets_projects_over_rpo", frozenset())] == 4
        assert samples[("buckets_unprotected_age_seconds_count", frozenset())] == 5
        assert samples[("buckets_unprotected_age_seconds_bucket", frozenset({("le", "0.0")}))] == 1
        time.sleep(0.2)

    # The figures are the journal's: a restart keeps them.
    agent.stop()
    agent.start()
    restarted = agent.stub.GetHostStatus(pb.GetHostStatusRequest(over_rpo_limit=2), timeout=30)
    assert [item.project_id for item in restarted.over_rpo] == list(expected)[:2]
    assert restarted.over_rpo_count == 4
    assert [seconds(item.unprotected_since) for item in restarted.over_rpo] == [
        seconds(item.unprotected_since) for item in host.over_rpo[:2]]


def test_a_write_during_a_backup_stays_unprotected_after_it(agent, tmp_path: Path) -> None:
    """The capture-time rule in a real agent: a change made (and seen) after the backup captured
    the project, before the backup ended, is still unprotected when the backup succeeded, since
    the change (the project was clean before it). On btrfs the look during the backup also sees
    the generation the backup's own read-only snapshot moved, which it cannot tell from a write:
    there the change counts from the capture (no later than the write)."""
    clock = Clock(tmp_path)
    project_id = create_project(agent, files=20)
    first = agent.wait(agent.backup(project_id).id)
    assert first.state == pb.SUCCEEDED, first.error
    asked_backup = clock.lo()  # the capture is after this
    operation = agent.backup(project_id, force=True)
    engine = catch_engine(agent, "backup", moved_first=1)  # running: the capture was taken before
    try:
        window = write(agent, clock, project_id, "during.txt")
    finally:
        engine.resume()
    done = agent.wait(operation.id)
    assert done.state == pb.SUCCEEDED, done.error
    if agent.backend == "btrfs":
        window = Window(asked_backup, window.hi)
    # GetHostStatus reads the journal as the backup left it (no new look that would see the
    # write again): the one project is dirty, its age that of the write.
    asked = Window(time.time(), 0.0)
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=30)
    asked.hi = time.time()
    assert (host.projects, host.dirty) == (1, 1)
    assert_age(host.max_unprotected_age_seconds, window, asked)
    asked = Window(time.time(), 0.0)
    after = status(agent, project_id)
    asked.hi = time.time()
    assert after.dirty and after.last_backup_snapshot_id == done.summary.snapshot_id
    assert window.lo <= seconds(after.unprotected_since) <= window.hi
    assert_age(after.unprotected_age_seconds, window, asked)


def test_status_commands_show_the_rpo_figures(agent_factory, tmp_path: Path) -> None:
    """`buckets-agent status` and the hub's `buckets hosts` show the RPO, the ages and the
    projects over the RPO (directory backend: the figures are the same RPC's)."""
    agent = agent_factory("rpo-cli", limits="reconcile_interval = 0", extra=CONFIG)
    never = create_project(agent, files=2)  # unprotected since its creation by EnsureProject
    created = time.time()
    time.sleep(max(0.0, created + RPO + 0.05 - time.time()))

    local = subprocess.run([sys.executable, "-m", "agent", "--config", str(agent.config_path), "status"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    assert "rpo         RPO 1 s: max age" in local.stdout and "1 over" in local.stdout
    assert f"  {never}  unprotected" in local.stdout and "never backed up" in local.stdout

    store = f"sqlite://{tmp_path / 'hub.sqlite'}"

    def buckets(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "hub_client", "--store", store, "--retries", "2", *argv],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    buckets("hosts", "add", "host-a", f"127.0.0.1:{agent.port}", "--region", "eu")
    [row] = [json.loads(line) for line in buckets("--json", "hosts").stdout.splitlines() if line.strip()]
    assert (row["rpo_seconds"], row["over_rpo_count"]) == (RPO, 1)
    assert [(item["project_id"], item["reason"]) for item in row["over_rpo"]] == [(never, "never_backed_up")]
    assert row["max_unprotected_age_seconds"] > RPO
    text = buckets("hosts").stdout
    assert "RPO 1 s: max age" in text and f"  {never}  unprotected" in text


def test_a_backup_that_finds_the_data_unchanged_protects_it(agent) -> None:
    """A look during a backup may record a change it cannot place (on btrfs: the generation the
    backup's own snapshot moved; on any backend: a change made then): the project stays
    unprotected after that backup. The next backup that finds the generation still the one
    backed up (UP_TO_DATE, no engine run) makes it protected; where nothing tells (the directory
    backend) the next backup is a real one and does the same."""
    project_id = create_project(agent, files=20)
    first = agent.wait(agent.backup(project_id).id)
    assert first.state == pb.SUCCEEDED, first.error
    operation = agent.backup(project_id, force=True)
    engine = catch_engine(agent, "backup", moved_first=1)
    try:
        status(agent, project_id)  # a look during the backup
        agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=project_id), timeout=10)  # a change it cannot place
    finally:
        engine.resume()
    assert agent.wait(operation.id).state == pb.SUCCEEDED
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=30)
    assert host.dirty == 1 and host.max_unprotected_age_seconds > 0

    again = agent.wait(agent.backup(project_id).id)
    expected = pb.UP_TO_DATE if agent.backend == "btrfs" else pb.SUCCEEDED
    assert again.state == expected, again
    host = agent.stub.GetHostStatus(pb.GetHostStatusRequest(), timeout=30)
    assert (host.dirty, host.up_to_date, host.max_unprotected_age_seconds) == (0, 1, 0)
    clean = status(agent, project_id)
    assert not clean.dirty and clean.unprotected_age_seconds == 0 and not clean.HasField("unprotected_since")
