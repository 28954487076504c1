"""The production config shipped in systemd/ turns the backup scheduler on; the embedded
default leaves it off."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config, parse_config

SHIPPED = Path(__file__).resolve().parents[2] / "systemd" / "agent.toml"


def test_the_shipped_production_config_schedules_backups_and_the_embedded_default_does_not(tmp_path):
    production = load_config(SHIPPED)
    assert production.schedule.enabled and production.schedule.rpo == 3600
    assert production.schedule.jitter < production.schedule.rpo
    assert not parse_config({"host_id": "h"}, source="t", relative_to=tmp_path).schedule.enabled
