"""The Prometheus endpoint of a real agent process: what a backup, an edit and a deletion of a
project show on GET /metrics."""

from __future__ import annotations

import time
import urllib.request

import pytest

from prometheus_client.parser import text_string_to_metric_families

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.harness import create_project, new_id

# A relative port_file is taken against the config file's directory: the agent's base.
METRICS = '[metrics]\nlisten = "127.0.0.1:0"\nport_file = "metrics.port"\n'


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the agent's /metrics, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def project_series(samples: dict, project_id: str) -> list[str]:
    return [name for name, labels in samples if ("project", project_id) in labels]


@requires_restic
def test_backup_edit_and_delete_show_on_the_metrics_endpoint(agent_factory) -> None:
    agent = agent_factory(extra=METRICS)
    port = int((agent.base / "metrics.port").read_text())
    assert any(e.get("event") == "metrics.listening" and e.get("port") == port for e in agent.log_events())

    project_id = create_project(agent, files=10)
    # Created by EnsureProject, never backed up: dirty at once, and no backup time.
    before = scrape(port)
    assert sample(before, "buckets_project_dirty", project=project_id) == 1
    assert sample(before, "buckets_project_last_backup_timestamp_seconds", project=project_id) is None

    started = time.time()
    assert agent.wait(agent.backup(project_id).id).state == pb.SUCCEEDED
    after_backup = scrape(port)
    last_backup = sample(after_backup, "buckets_project_last_backup_timestamp_seconds", project=project_id)
    assert started - 1 <= last_backup <= time.time()
    assert sample(after_backup, "buckets_project_dirty", project=project_id) == 0
    assert sample(after_backup, "buckets_operation_duration_seconds_count", kind="backup", outcome="succeeded") == 1
    assert sample(after_backup, "buckets_operation_duration_seconds_count", kind="ensure", outcome="succeeded") == 1
    assert sample(after_backup, "buckets_bytes_backed_up_total") > 0
    assert sample(after_backup, "buckets_bytes_added_total") > 0
    assert sample(after_backup, "buckets_operations", state="running") == 0

    (agent.home(project_id) / "new.txt").write_text("an edit after the backup\n")
    agent.stub.MarkEdited(pb.MarkEditedRequest(project_id=project_id), timeout=10)
    assert sample(scrape(port), "buckets_project_dirty", project=project_id) == 1

    deleted = agent.stub.DeleteProject(pb.DeleteProjectRequest(request_id=new_id(), project_id=project_id),
                                       timeout=30)
    assert agent.wait(deleted.id).state == pb.SUCCEEDED
    after_delete = scrape(port)
    assert project_series(after_delete, project_id) == []
    assert sample(after_delete, "buckets_operation_duration_seconds_count", kind="delete", outcome="succeeded") == 1


@requires_restic
@pytest.mark.parametrize("engine", ["restic", "rustic"])
def test_ensuring_a_new_project_is_not_an_engine_failure_but_a_missing_repository_on_restore_is(agent_factory, engine):
    agent = agent_factory(extra=METRICS, make_repositories=False, engine=engine)
    port = int((agent.base / "metrics.port").read_text())
    for mode in (pb.EnsureProjectRequest.AUTO, pb.EnsureProjectRequest.NONE):
        project_id = new_id()
        ensured = agent.stub.EnsureProject(
            pb.EnsureProjectRequest(request_id=new_id(), project_id=project_id, mode=mode), timeout=30)
        assert agent.wait(ensured.id).state == pb.SUCCEEDED
    # Asking whether a new project has a repository yet ran the engine and got "no" for an answer.
    assert any("snapshots" in argv for argv in agent.started_argvs()), agent.started_argvs()
    assert sample(scrape(port), "buckets_engine_failures_total", **{"class": "not_found"}) in (None, 0)
    # A restore from a repository that is not there is a failure, and counts.
    restore = agent.restore(project_id, "latest")
    assert agent.wait(restore.id).state == pb.FAILED
    assert sample(scrape(port), "buckets_engine_failures_total", **{"class": "not_found"}) >= 1
