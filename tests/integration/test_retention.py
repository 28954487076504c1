"""Forget with a keep policy and prune, on a repository with a known history of snapshots."""

from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import new_id, write_tree

pytestmark = requires_restic

# (day of January 2026, hour): the history the policy is applied to, oldest first.
HISTORY = [(1, 10), (2, 10), (3, 10), (3, 15), (4, 10), (4, 12), (4, 18)]


def make_history(agent, project_id: str) -> dict[tuple[int, int], str]:
    """Snapshots of the project's host at the HISTORY times (stock restic `backup --time`). Keep
    policies go by host and time only, so these need no layout-v2 roots."""
    write_tree(agent.home(project_id), files=5)
    write_tree(agent.persist(project_id), files=1, depth=0)
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED  # creates the repository
    repo = str(agent.repository(project_id))
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(agent.state_dir / "repository.password")}
    ids = {}
    for day, hour in HISTORY:
        (agent.home(project_id) / "version.txt").write_text(f"{day} {hour}")
        out = subprocess.run(
            ["restic", "-r", repo, "--no-cache", "backup", "--json", "--host", f"project-{project_id}",
             "--time", f"2026-01-{day:02d} {hour:02d}:00:00", f"project-{project_id}"],
            cwd=agent.projects_root, env=env, check=True, capture_output=True, text=True, timeout=120,
        ).stdout
        ids[(day, hour)] = [line for line in out.splitlines() if '"summary"' in line][0].split('"snapshot_id":"')[1][:8]
    return ids


def snapshot_times(agent, project_id: str) -> set[str]:
    listing = agent.stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=project_id), timeout=60)
    return {s.short_id for s in listing.snapshots}


def test_keep_policy_keeps_exactly_what_it_says_protects_and_prunes_clean(shared_agent, project_id):
    agent = shared_agent
    ids = make_history(agent, project_id)
    first_real = snapshot_times(agent, project_id) - set(ids.values())
    protected = ids[(1, 10)]
    operation = agent.stub.Forget(pb.ForgetRequest(
        request_id=new_id(), project_id=project_id, keep_last=2, keep_daily=3, prune=True,
        protected_snapshot_ids=[protected],
    ), timeout=30)
    final = agent.wait(operation.id, timeout=300)
    assert final.state == pb.SUCCEEDED, final.error
    # keep_last=2: the agent's own backup (made today, the newest) and 01-04 18:00;
    # keep_daily=3: the newest of today, of 01-04 (18:00) and of 01-03 (15:00).
    expected = first_real | {ids[(4, 18)], ids[(3, 15)], protected}
    assert snapshot_times(agent, project_id) == expected
    verify = agent.wait(agent.verify(project_id).id, timeout=300)
    assert verify.state == pb.SUCCEEDED, verify.error


@pytest.mark.parametrize(
    ("fields", "word"),
    [({}, "at least one rule"), ({"keep_last": 1, "protected_snapshot_ids": ["latest"]}, "snapshot_id")],
)
def test_a_policy_that_would_forget_everything_is_refused(shared_agent, project_id, fields, word):
    with pytest.raises(grpc.RpcError) as info:
        shared_agent.stub.Forget(pb.ForgetRequest(request_id=new_id(), project_id=project_id, **fields), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and word in info.value.details()


def test_the_configured_schedule_applies_the_policy_and_spares_the_restore_receipt(agent_factory, project_id):
    import time

    from tests.harness import config_text

    agent = agent_factory("retained")
    write_tree(agent.home(project_id), files=3)
    snapshots = []
    for index in range(3):
        (agent.home(project_id) / "round.txt").write_text(str(index))
        operation = agent.wait(agent.backup(project_id).id)
        assert operation.state == pb.SUCCEEDED, operation.error
        snapshots.append(operation.summary.snapshot_id)
    restored = agent.wait(agent.restore(project_id, snapshots[0]).id)  # the receipt names the oldest
    assert restored.state == pb.SUCCEEDED, restored.error

    agent.stop()  # the same agent, now with a schedule
    agent.config_path.write_text(config_text(
        agent.base, port_file=agent.port_file, extra="[retention]\ninterval = 0.5\nkeep_last = 1\n",
    ))
    agent.start()
    expected = {snapshots[0][:8], snapshots[2][:8]}  # the newest, and the one the restore receipt names
    deadline = time.monotonic() + 60
    while snapshot_times(agent, project_id) != expected:
        assert time.monotonic() < deadline, (snapshot_times(agent, project_id), expected)
        time.sleep(0.5)
