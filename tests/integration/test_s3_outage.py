"""The S3 server killed mid-backup and started again on the same data, on every engine.

The test owns its MinIO (``own_s3_server``: ~0.5 s to start) because it SIGKILLs it. "Mid-backup"
is seen, not slept for: the repository's ``data/`` objects in the bucket (pack files the engine
has finished uploading) appear while the operation still runs. Then:

- the backup ends FAILED with the error code UNAVAILABLE (the agent's stall watch bounds an
  engine that would retry the endpoint for minutes), never SUCCEEDED, and no snapshot is written;
- MinIO starts again on the same data dir and port: every object listed before the kill is still
  there;
- a retried backup SUCCEEDS (stale locks of the killed run are the agent's to handle), a Verify
  reading all the data is clean, and a restore of the retried snapshot over a damaged tree gives
  a byte-equal manifest of the tree that was backed up.
"""

from __future__ import annotations

import os
import time

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.harness import TERMINAL_STATES, manifest

PASSWORD = "s3-outage-password-7d1a"
MIB = 1024 * 1024
# Incompressible, in files of 4 MiB: several pack files on every engine, so the first ones are in
# the bucket well before the backup can end (restic's packs are 11-16 MiB here; rustic 0.11.4
# wrote 75 of its data objects before the kill at 64 MiB).
PROJECT_MIB = 48
# restic retries a refused endpoint for up to 15 minutes and rustic for some; the agent stops an
# engine that does (almost) no I/O for this long, which is what ends the operation here. restic
# 0.18 was seen to go on with I/O for ~25 s after the kill (retries while its backoff is short,
# and the rest of the tree) before it stalls.
STALL_TIMEOUT = 5
# A stalled engine stopped with its server killed spends any grace after SIGTERM retrying (the
# removal of its lock) and is SIGKILLed after it: a short one, as in the fault suite.
KILL_GRACE = 0.5


def keys_under(server, prefix: str) -> set[str]:
    client = server.client()
    found = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="buckets-us-east-1", Prefix=prefix):
        found.update(item["Key"] for item in page.get("Contents", []))
    return found


def bucket_exists(server) -> bool:
    return any(b["Name"] == "buckets-us-east-1" for b in server.client().list_buckets().get("Buckets", []))


def trees(agent, project_id: str) -> tuple[dict, dict]:
    return manifest(agent.home(project_id)), manifest(agent.persist(project_id))


def test_s3_server_killed_mid_backup_then_back_on_the_same_data(
    engine_under_test, agent_factory, own_s3_server, tmp_path, project_id
):
    server = own_s3_server
    password_file = tmp_path / "s3.password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    agent = agent_factory(
        "outage", engine=engine_under_test.driver,
        extra=engine_under_test.engine_lines() + server.agent_repository_config(password_file),
        limits=f"stall_timeout = {STALL_TIMEOUT}\nkill_grace = {KILL_GRACE}",
    )
    home, persist = agent.home(project_id), agent.persist(project_id)
    home.mkdir(parents=True)
    persist.mkdir(parents=True)
    for index in range(PROJECT_MIB // 4):
        (home / f"blob-{index:02d}.bin").write_bytes(os.urandom(4 * MIB))
    (home / "notes.txt").write_text("written before the outage\n")
    (persist / "state.db").write_bytes(os.urandom(4096))
    before = trees(agent, project_id)
    root = f"rustic/project-{project_id}/"

    operation = agent.backup(project_id)
    written: set[str] = set()
    while True:
        state = agent.stub.GetOperation(pb.GetOperationRequest(operation_id=operation.id), timeout=10).state
        assert state not in TERMINAL_STATES, (
            f"the backup ended {pb.OperationState.Name(state)} before any pack reached the bucket")
        if bucket_exists(server):
            written = keys_under(server, root)
            if any(key.startswith(root + "data/") for key in written):
                break
        time.sleep(0.02)  # a poll interval, not a wait for a moment: the loop ends on what it sees
    server.kill()

    failed = agent.wait(operation.id, timeout=180)
    assert (failed.state, failed.error.code) == (pb.FAILED, "UNAVAILABLE"), failed.error
    assert trees(agent, project_id) == before

    server.start()
    after = keys_under(server, root)
    assert written <= after, f"lost in the restart: {sorted(written - after)}"
    # (rustic's S3 layer also writes empty "directory" objects such as ``snapshots/``.)
    assert not [key for key in after if key.startswith(root + "snapshots/") and not key.endswith("/")], \
        "the killed backup wrote a snapshot"

    retry = agent.wait(agent.backup(project_id).id, timeout=300)
    assert retry.state == pb.SUCCEEDED, retry.error
    verify = agent.wait(agent.verify(project_id, mode=pb.VerifyRequest.READ_DATA).id, timeout=300)
    assert verify.state == pb.SUCCEEDED, verify.error

    (home / "blob-00.bin").unlink()
    (home / "notes.txt").write_text("damaged after the backup\n")
    restore = agent.wait(agent.restore(project_id, retry.summary.snapshot_id).id, timeout=300)
    # Over unsaved changes the agent first takes a pre-restore snapshot (a warning naming it).
    assert restore.state in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS), restore.error
    assert trees(agent, project_id) == before
