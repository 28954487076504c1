"""Cross-engine interop: a repository the AGENT wrote on one engine is listed, checked
(``check --read-data``) and restored by the stock CLI of each other engine, byte-equal to the
tree it was written from — all six ordered pairs of rustic 0.11.4, restic 0.18 and Debian's
restic 0.14, on a local repository with the agent's own password file.

Each writer's repository is made once (two snapshots: a first backup and one after changes, so
the second is written against a parent) and every reader works on it read-only but for its locks.
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import stock_cli
from tests.engines import ENGINES, EngineUnderTest
from tests.harness import AgentProcess, manifest, new_id, unmount_below
from tests.integration.test_engine_conformance import ground_truth

PAIRS = [(writer, reader) for writer, reader in itertools.permutations(ENGINES, 2)]


@dataclass(frozen=True)
class Written:
    """One writer engine's repository: its path and password file, and for each snapshot the
    manifests (home, persist) of the tree it was taken from."""

    repository: Path
    password_file: Path
    snapshots: dict[str, tuple[dict, dict]]


def write_repository(writer: EngineUnderTest, base: Path) -> Written:
    """An agent on ``writer`` backs up one project twice into its local repository (initialised
    by the writer: its key file is read by the others too), then stops."""
    agent = AgentProcess(base=base, engine=writer.driver, extra=writer.engine_lines(), make_repositories=False)
    agent.start()
    try:
        project_id = new_id()
        ground_truth(agent, project_id, files=25, seed=7)
        snapshots = {}
        for round_ in range(2):
            if round_:
                home = agent.home(project_id)
                shutil.rmtree(home / "docs" / "sub")
                (home / "d1").mkdir(exist_ok=True)
                (home / "d1" / "added.bin").write_bytes(os.urandom(300_000))
                (home / "empty" / "now-a-file.txt").write_text("second round\n")
            truth = manifest(agent.home(project_id)), manifest(agent.persist(project_id))
            final = agent.wait(agent.backup(project_id).id, timeout=300)
            assert final.state == pb.SUCCEEDED, (writer.id, final.error)
            snapshots[final.summary.snapshot_id] = truth
        return Written(agent.repository(project_id), agent.state_dir / "repository.password", snapshots)
    finally:
        agent.stop()
        agent.kill()
        unmount_below(agent.base)


@pytest.fixture(scope="module")
def repository_of(tmp_path_factory):
    """``repository_of(writer)``: that writer's repository, made on first use."""
    made: dict[str, Written] = {}

    def get(writer: EngineUnderTest) -> Written:
        if writer.id not in made:
            made[writer.id] = write_repository(writer, tmp_path_factory.mktemp(f"written-by-{writer.id}"))
        return made[writer.id]

    return get


@pytest.mark.parametrize(("writer", "reader"), PAIRS, ids=[f"{w.id}-read-by-{r.id}" for w, r in PAIRS])
def test_stock_cli_lists_checks_and_restores_what_the_agent_wrote(repository_of, writer, reader, tmp_path):
    written = repository_of(writer)
    scratch = tmp_path / "stock"
    assert stock_cli.snapshot_ids(reader, written.repository, written.password_file, scratch=scratch) \
        == set(written.snapshots)
    check = stock_cli.check(reader, written.repository, written.password_file, scratch=scratch, read_data=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for index, (snapshot_id, (home, persist)) in enumerate(written.snapshots.items()):
        target = tmp_path / f"restored-{index}"
        result = stock_cli.restore(reader, written.repository, written.password_file, snapshot_id, target,
                                   scratch=scratch)
        assert stock_cli.restored(reader, result), result.stdout + result.stderr
        assert manifest(target / "project") == home, snapshot_id
        assert manifest(target / "persist") == persist, snapshot_id
