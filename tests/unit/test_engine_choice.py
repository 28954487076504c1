"""Which engine the agent runs (agent/engine/choice.py): rustic when found, on PATH or beside the
agent's own Python (the venv's bin, where scripts/bootstrap.sh links the pinned rustic)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.config import EngineConfig, default_config
from agent.engine import choice
from agent.engine.restic import ResticEngine
from agent.engine.rustic import RusticEngine


def fake_which(found: dict[str, str]):
    """A ``shutil.which`` that knows only ``found`` (name → path)."""
    return lambda name: found.get(name)


def executable(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("configured", "on_path", "expected"),
    [
        ("auto", {"rustic": "/usr/bin/rustic", "restic": "/usr/bin/restic"}, ("rustic", "/usr/bin/rustic")),
        ("auto", {"restic": "/usr/bin/restic"}, ("restic", "/usr/bin/restic")),
        ("restic", {"rustic": "/usr/bin/rustic", "restic": "/usr/bin/restic"}, ("restic", "/usr/bin/restic")),
        # Named but missing: kept as configured, so the version probe says it is missing.
        ("rustic", {}, ("rustic", "rustic")),
        ("auto", {}, ("restic", "restic")),
    ],
)
def test_choice_from_path(configured, on_path, expected, tmp_path) -> None:
    assert choice.choose(EngineConfig(engine=configured), which=fake_which(on_path), beside=tmp_path) == expected


def test_auto_finds_rustic_beside_the_agents_python(tmp_path) -> None:
    rustic = executable(tmp_path, "rustic")
    found = choice.choose(EngineConfig(engine="auto"), which=fake_which({"restic": "/usr/bin/restic"}),
                          beside=tmp_path)
    assert found == ("rustic", str(rustic))


def test_path_wins_over_the_venv(tmp_path) -> None:
    executable(tmp_path, "rustic")
    found = choice.choose(EngineConfig(engine="auto"), which=fake_which({"rustic": "/opt/rustic"}), beside=tmp_path)
    assert found == ("rustic", "/opt/rustic")


def test_a_file_beside_that_is_not_executable_is_not_an_engine(tmp_path) -> None:
    (tmp_path / "rustic").write_text("not a program")
    found = choice.choose(EngineConfig(engine="auto"), which=fake_which({}), beside=tmp_path)
    assert found == ("restic", "restic")


def test_a_configured_path_is_not_looked_for_beside(tmp_path) -> None:
    executable(tmp_path, "rustic")
    config = EngineConfig(engine="auto", rustic_binary="/nowhere/rustic")
    assert choice.choose(config, which=fake_which({}), beside=tmp_path) == ("restic", "restic")


def test_beside_defaults_to_the_directory_of_sys_executable() -> None:
    assert choice.agent_bin_dir() == Path(sys.executable).parent


def test_make_engine_builds_the_chosen_driver(tmp_path) -> None:
    config = default_config({"BUCKETS_HOME": str(tmp_path)})
    empty = tmp_path / "bin"
    empty.mkdir()
    assert isinstance(choice.make_engine(config, which=fake_which({}), beside=empty), ResticEngine)
    chosen = choice.make_engine(config, which=fake_which({"rustic": "/usr/bin/rustic"}), beside=empty)
    assert isinstance(chosen, RusticEngine) and chosen.binary == "/usr/bin/rustic"
    executable(empty, "rustic")
    assert choice.make_engine(config, which=fake_which({}), beside=empty).binary == os.fspath(empty / "rustic")
