"""The hub config file (hub_client/service/config.py): defaults, per-region and per-host agent
credentials over the defaults, every problem reported with its key path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import ConfigError
from hub_client.service.config import client_config, config_path_from, load_hub_config, parse_hub_config


def parse(tmp_path: Path, text: str):
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return load_hub_config(path)


def test_defaults_and_store_relative_to_the_file(tmp_path: Path) -> None:
    config = parse(tmp_path, 'store = "state/hub.sqlite"\n')
    assert config.store == str(tmp_path / "state/hub.sqlite")
    assert config.server.listen == "127.0.0.1:50061" and config.server.tls is None
    assert config.freshness_interval == 60 and config.freshness_valid_for == timedelta(seconds=300)
    assert config.move_settings().freshness_valid_for == timedelta(seconds=300)
    assert parse(tmp_path, 'store = "postgresql://hub@db/buckets"\n').store == "postgresql://hub@db/buckets"


def test_agent_credentials_host_over_region_over_defaults(tmp_path: Path) -> None:
    for name in ("ca.pem", "eu-ca.pem", "default.token", "eu.token", "a.token"):
        (tmp_path / name).write_text(f"{name}\n")
    config = parse(tmp_path, """
[agents]
deadline = 12
ca_file = "ca.pem"
token_file = "default.token"
[agents.regions.eu]
ca_file = "eu-ca.pem"
token_file = "eu.token"
[agents.hosts.host-a]
token_file = "a.token"
retries = 2
""")
    a = client_config(config.agents.dial("host-a", "eu"), "10.0.0.1:50051")
    b = client_config(config.agents.dial("host-b", "eu"), "10.0.0.2:50051")
    c = client_config(config.agents.dial("host-c", "us"), "10.0.0.3:50051")
    assert (a.token, a.tls.ca_file, a.deadline, a.retry.attempts) == ("a.token", tmp_path / "eu-ca.pem", 12, 2)
    assert (b.token, b.tls.ca_file, b.retry.attempts) == ("eu.token", tmp_path / "eu-ca.pem", 5)
    assert (c.token, c.tls.ca_file) == ("default.token", tmp_path / "ca.pem")
    assert client_config(config.agents.dial(None, None), "x:1").target == "x:1"


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parse(tmp_path, """
freshness_interval = -1
workers = 0
stor = "x"
[server]
listen = "nowhere"
[agents]
ca_file = "missing.pem"
[agents.hosts.host-a]
deadline = "soon"
""")
    problems = "\n".join(error.value.problems)
    for expected in ("freshness_interval:", "workers:", "stor: unknown key (did you mean 'store'?)",
                     "server.listen:", "agents.ca_file: cannot read", "agents.hosts.host-a.deadline:"):
        assert expected in problems, problems
    with pytest.raises(ConfigError, match="freshness_bound: must be at least freshness_interval"):
        parse_hub_config({"freshness_interval": 60, "freshness_bound": 30}, source="x", relative_to=tmp_path)


def test_the_config_path_comes_from_the_option_or_the_environment(tmp_path: Path) -> None:
    assert config_path_from("a.toml", {"BUCKETS_HUB_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path_from(None, {"BUCKETS_HUB_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path_from(None, {}) is None


def test_every_hub_method_has_a_role() -> None:
    """A new Hub RPC is operator-only until classified; this fails so that someone classifies it."""
    from hub_client.proto.buckets.v1 import hub_pb2
    from hub_client.service.auth import HUB_METHOD_ROLES, required_role

    methods = set(hub_pb2.DESCRIPTOR.services_by_name["Hub"].methods_by_name)
    assert methods == set(HUB_METHOD_ROLES)
    assert required_role("/buckets.v1.Hub/StartMove") == "operator"
    assert required_role("/buckets.v1.Hub/FollowLog") == "read-only"
    assert required_role("/buckets.v1.Hub/NewMethod") == "operator"
    assert required_role("/grpc.health.v1.Health/Check") == "read-only"


def test_the_example_config_has_no_problem_but_its_absent_files() -> None:
    """systemd/hub.toml names files of a real installation; everything else in it must be valid."""
    example = Path(__file__).resolve().parents[2] / "systemd" / "hub.toml"
    with pytest.raises(ConfigError) as error:
        load_hub_config(example)
    for problem in error.value.problems:
        assert "cannot read" in problem or "No such file" in problem, problem
