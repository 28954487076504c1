"""A cross-region move: two agents whose repositories are in two buckets of the S3 test server,
standing for two regions; the hub copies the repository between them with boto3."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hub_client.hub import Hub
from hub_client.move import CROSS_REGION_STEPS, MoveRefused, MoveSettings
from hub_client.repository_copy import BucketConfig, copy_repository, delete_repository, listing
from hub_client.store import Cleanup, MoveStatus, open_store
from tests.conftest import requires_restic
from tests.harness import create_project, manifest
from tests.hubs import client_config

pytestmark = requires_restic

REGIONS = ("eu-west-1", "us-east-1")


def bucket_config(s3_server, region: str) -> BucketConfig:
    return BucketConfig(bucket=f"buckets-{region}", endpoint=s3_server.endpoint, signing_region=region,
                        access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)


@pytest.fixture
def regional_hub(agent_factory, s3_server, tmp_path: Path):
    """host-eu in eu-west-1 and host-us in us-east-1, each agent with its region's bucket (made
    here, as a region's bucket exists before any host uses it), one hub that reaches both."""
    password_file = tmp_path / "s3.password"
    password_file.write_text("cross-region-password\n")
    password_file.chmod(0o600)
    client = s3_server.client()
    existing = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    for region in REGIONS:
        if f"buckets-{region}" not in existing:
            settings = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            client.create_bucket(Bucket=f"buckets-{region}", **settings)
    agents = {}
    for host_id, region in zip(("host-eu", "host-us"), REGIONS):
        agents[host_id] = agent_factory(host_id, host_id=host_id,
                                        extra=s3_server.agent_repository_config(password_file, region=region))
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    settings = MoveSettings(buckets={region: bucket_config(s3_server, region) for region in REGIONS})
    hub = Hub(store, client_config=client_config, settings=settings)
    for (host_id, agent), region in zip(agents.items(), REGIONS):
        hub.add_host(host_id, f"127.0.0.1:{agent.port}", region)
        hub.probe_host(host_id)
    try:
        yield hub, agents
    finally:
        hub.close()
        store.close()


def keys(s3_server, region: str, project_id: str) -> set[str]:
    return set(listing(bucket_config(s3_server, region), f"rustic/project-{project_id}/"))


def test_cross_region_move_between_two_buckets(regional_hub, s3_server) -> None:
    hub, agents = regional_hub
    source, target = agents["host-eu"], agents["host-us"]
    project_id = create_project(source, files=400)
    hub.add_project(project_id, "host-eu", "eu-west-1")

    with pytest.raises(MoveRefused, match="cross-region"):
        hub.move(project_id, "host-us")  # the default stays in-region
    seen: dict[str, object] = {}

    def before_step(step: str) -> None:
        if step == "sync":
            seen["after_backup"] = keys(s3_server, "eu-west-1", project_id)
        if step == "freeze":
            (source.home(project_id) / "edited-after-the-bulk-copy.txt").write_text("late\n")
        if step == "restore":
            seen["frozen"] = manifest(source.home(project_id))
        if step == "finalize":  # the source region's repository is intact until finalize
            seen["at_finalize"] = keys(s3_server, "eu-west-1", project_id)

    entries = []
    move = hub.move(project_id, "host-us", cross_region=True, observer=entries.append, before_step=before_step)

    assert move.status == MoveStatus.SUCCEEDED and move.cross_region
    assert [e.message for e in entries if e.kind == "step"][-len(CROSS_REGION_STEPS):] == list(CROSS_REGION_STEPS)
    assert manifest(target.home(project_id)) == seen["frozen"]
    assert (target.home(project_id) / "edited-after-the-bulk-copy.txt").read_text() == "late\n"
    assert seen["after_backup"] and seen["after_backup"] <= seen["at_finalize"]
    # The bulk copy and the final one (pre-copy rounds copy what their backups added in between).
    syncs = [e for e in entries if e.kind == "sync" and e.data["step"] in ("sync", "final_sync")]
    assert [e.data["step"] for e in syncs] == ["sync", "final_sync"]
    assert syncs[0].data["copied"] == syncs[0].data["objects"] > 0
    assert all(e.data["step"] == "precopy" for e in entries if e.kind == "sync" and e not in syncs)
    assert restore_mode(entries) == "incremental"  # over the pre-copy made from the target region's copy
    assert 0 < syncs[1].data["copied"] < syncs[1].data["objects"]  # only what the catch-up backup added
    assert any(e.kind == "verify" and "repository check" in e.message for e in entries)
    project = hub.store.get_project(project_id)
    assert (project.host_id, project.region) == ("host-us", "us-east-1")
    # After completion: the source copy and the source region's repository are removed.
    assert hub.store.get_move(move.id).cleanup == Cleanup.DONE
    assert keys(s3_server, "eu-west-1", project_id) == set() and not source.home(project_id).exists()
    assert keys(s3_server, "us-east-1", project_id) >= {k for k in seen["at_finalize"] if not k.startswith("locks/")}
    # The moved project backs up in its new region.
    operation = target.wait(target.backup(project_id, force=True).id)
    assert operation.summary.snapshot_id
    # No secret in the movelog or in either agent's log.
    written = "\n".join(f"{e.message} {json.dumps(e.data)}" for e in hub.store.movelog(move.id))
    written += source.log_path.read_text() + target.log_path.read_text()
    for secret in (s3_server.secret_access_key, "cross-region-password"):
        assert secret not in written


def restore_mode(entries) -> str:
    return [e for e in entries if e.kind == "restore"][-1].data["restore_mode"]


def test_repository_copy_streams_between_accounts_and_copies_only_what_is_missing(regional_hub, s3_server) -> None:
    hub, agents = regional_hub
    source = agents["host-eu"]
    project_id = create_project(source, files=50)
    assert source.wait(source.backup(project_id).id).summary.snapshot_id
    eu, us = bucket_config(s3_server, "eu-west-1"), bucket_config(s3_server, "us-east-1")
    other_account = replace(us, endpoint=s3_server.endpoint + "/")  # another endpoint: streamed through the hub
    assert not eu.same_account(other_account)

    first = copy_repository(eu, other_account, project_id)
    assert first.copied == first.objects > 0 and first.copied_bytes == first.bytes
    assert keys(s3_server, "us-east-1", project_id) == keys(s3_server, "eu-west-1", project_id)
    again = copy_repository(eu, us, project_id)
    assert again.copied == 0 and again.objects == first.objects
    assert delete_repository(us, project_id) == first.objects and delete_repository(us, project_id) == 0


class StopBeforeFreeze(Exception):
    pass


def test_a_cancelled_cross_region_move_leaves_no_copy_in_the_target_bucket(regional_hub, s3_server) -> None:
    hub, agents = regional_hub
    source = agents["host-eu"]
    project_id = create_project(source, files=30)
    hub.add_project(project_id, "host-eu", "eu-west-1")
    before = manifest(source.home(project_id))

    def stop_at_freeze(step: str) -> None:
        if step == "freeze":  # the bulk copy is in the target region's bucket by now
            raise StopBeforeFreeze()

    with pytest.raises(StopBeforeFreeze):
        hub.move(project_id, "host-us", cross_region=True, before_step=stop_at_freeze)
    move = hub.store.active_move(project_id)
    copied = keys(s3_server, "us-east-1", project_id)
    assert move.status == MoveStatus.FAILED and copied
    source_keys = keys(s3_server, "eu-west-1", project_id)

    entries = []
    cancelled = hub.cancel(move.id, observer=entries.append)
    assert cancelled.status == MoveStatus.CANCELLED
    assert keys(s3_server, "us-east-1", project_id) == set()
    assert any(e.kind == "cleanup" and f"({len(copied)} objects)" in e.message for e in entries), entries
    assert keys(s3_server, "eu-west-1", project_id) == source_keys  # the source region's repository untouched
    project = hub.store.get_project(project_id)
    assert (project.host_id, project.region) == ("host-eu", "eu-west-1")
    assert manifest(source.home(project_id)) == before


def test_the_source_region_repository_waits_while_its_bucket_is_unknown(regional_hub, s3_server) -> None:
    """A completed cross-region move whose source region the hub has no bucket for keeps its
    cleanup pending (with a warning), and finishes it once the bucket is configured."""
    hub, agents = regional_hub
    source = agents["host-eu"]
    project_id = create_project(source, files=20)
    hub.add_project(project_id, "host-eu", "eu-west-1")
    move = hub.move(project_id, "host-us", cross_region=True, clean_now=False)
    assert move.status == MoveStatus.SUCCEEDED

    from hub_client.move import clean_source

    only_us = {"us-east-1": bucket_config(s3_server, "us-east-1")}
    waiting = clean_source(hub.store, hub.client, hub.store.get_move(move.id), buckets=only_us)
    assert waiting.cleanup == Cleanup.PENDING and keys(s3_server, "eu-west-1", project_id)
    warning = [e for e in hub.store.movelog(move.id) if e.kind == "warning"][-1]
    assert "no bucket configured for region eu-west-1" in warning.message

    done = clean_source(hub.store, hub.client, hub.store.get_move(move.id),
                        buckets={**only_us, "eu-west-1": bucket_config(s3_server, "eu-west-1")})
    assert done.cleanup == Cleanup.DONE and keys(s3_server, "eu-west-1", project_id) == set()
