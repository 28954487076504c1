"""Tests of agent.config: defaults, parsing, validation, secrets, password file."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from agent import config as cfg
from agent.config import (
    AgentConfig,
    ConfigError,
    S3RepositoryConfig,
    default_config,
    describe,
    ensure_password_file,
    load_config,
    parse_config,
)
from agent.errors import FailedPrecondition, InvalidArgument

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"

FULL_TOML = f"""
host_id = "host-1.example"
backend = "btrfs"
base_dir = "/srv/buckets"

[server]
listen = "[::1]:0"
grace_period = 3
keepalive_interval = 0.5
port_file = "run/port"

[paths]
state_dir = "/var/lib/buckets"
projects_root = "/mnt/projects"
persist_root = "/mnt/persist"

[limits]
max_concurrent_operations = 4
max_queued_operations = 0
engine_timeout = 3600
kill_grace = 0
read_file_max_bytes = 1024
stall_timeout = 0

[engine]
engine = "rustic"
restic_binary = "/usr/bin/restic"
rustic_binary = "bin/rustic"

[repository]
kind = "s3"

[repository.local]
root = "/var/lib/buckets/repos"
password_file = "/etc/buckets/password"

[repository.s3]
endpoint = "http://127.0.0.1:9000"
region = "eu-west-1"
bucket_prefix = "acme-backups"
root_template = "rustic/project-{{project_id}}"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "{SECRET}"
password_file = "s3.password"
create_bucket = true

[logging]
level = "debug"
format = "console"
"""


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(data: dict, tmp_path: Path) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="test.toml", relative_to=tmp_path)
    return info.value.problems


# --------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------


def test_default_config_puts_everything_under_base_dir(tmp_path: Path) -> None:
    config = default_config(tmp_path)

    assert config.paths.state_dir == tmp_path / "state"
    assert config.paths.projects_root == tmp_path / "projects"
    assert config.paths.persist_root == tmp_path / "persist"
    assert config.repository.kind == "local"
    assert config.repository.local.root == tmp_path / "state" / "repos"
    assert config.repository.local.password_file == tmp_path / "state" / "repository.password"
    assert config.repository.s3 is None
    assert config.backend == "directory"
    assert config.server.listen == "127.0.0.1:50051"
    assert config.server.port_file is None
    assert config.limits == cfg.LimitsConfig()
    assert config.engine == cfg.EngineConfig()
    assert config.logging == cfg.LoggingConfig()
    assert cfg.HOST_ID_RE.match(config.host_id)


def test_default_base_dir_comes_from_buckets_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUCKETS_HOME", str(tmp_path / "home"))
    assert default_config().paths.state_dir == tmp_path / "home" / "state"

    monkeypatch.delenv("BUCKETS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config().paths.state_dir == tmp_path / ".local/share/buckets/state"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, f'base_dir = "{tmp_path}"\n')
    assert load_config(path) == default_config(tmp_path)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = default_config(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.backend = "btrfs"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limits.max_concurrent_operations = 9  # type: ignore[misc]


def test_host_id_defaults_to_the_host_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cfg.socket, "gethostname", lambda: "node-7.dc1.example.com")
    assert default_config(tmp_path).host_id == "node-7.dc1.example.com"

    # A name too long for a host id falls back to its first label.
    monkeypatch.setattr(cfg.socket, "gethostname", lambda: "node-7." + "x" * 70)
    assert default_config(tmp_path).host_id == "node-7"

    monkeypatch.setattr(cfg.socket, "gethostname", lambda: "-bad")
    with pytest.raises(ConfigError) as info:
        default_config(tmp_path)
    assert info.value.problems[0].startswith("host_id: not set")


# --------------------------------------------------------------------------
# a full valid file
# --------------------------------------------------------------------------


def test_full_valid_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_TOML))

    assert isinstance(config, AgentConfig)
    assert config.host_id == "host-1.example"
    assert config.backend == "btrfs"
    assert config.server == cfg.ServerConfig(
        listen="[::1]:0",
        grace_period=3.0,
        keepalive_interval=0.5,
        port_file=str(tmp_path / "run" / "port"),
    )
    assert isinstance(config.server.grace_period, float)
    assert config.paths == cfg.PathsConfig(
        state_dir=Path("/var/lib/buckets"),
        projects_root=Path("/mnt/projects"),
        persist_root=Path("/mnt/persist"),
    )
    assert config.limits == cfg.LimitsConfig(
        max_concurrent_operations=4,
        max_queued_operations=0,
        engine_timeout=3600.0,
        kill_grace=0.0,
        read_file_max_bytes=1024,
        stall_timeout=0.0,
    )
    assert config.engine == cfg.EngineConfig(
        engine="rustic",
        restic_binary="/usr/bin/restic",
        rustic_binary=str(tmp_path / "bin" / "rustic"),
    )
    assert config.repository.kind == "s3"
    assert config.repository.local == cfg.LocalRepositoryConfig(
        root=Path("/var/lib/buckets/repos"), password_file=Path("/etc/buckets/password")
    )
    assert config.repository.s3 == S3RepositoryConfig(
        endpoint="http://127.0.0.1:9000",
        region="eu-west-1",
        bucket_prefix="acme-backups",
        root_template="rustic/project-{project_id}",
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
        password_file=tmp_path / "s3.password",
        create_bucket=True,
    )
    assert config.repository.s3.bucket_name() == "acme-backups-eu-west-1"
    assert config.repository.s3.repository_root("abc") == "rustic/project-abc"
    assert config.logging == cfg.LoggingConfig(level="debug", format="console")


def test_defaulted_paths_follow_configured_state_dir(tmp_path: Path) -> None:
    config = parse_config(
        {"base_dir": "/b", "paths": {"state_dir": "/s"}}, source="t", relative_to=tmp_path
    )
    assert config.paths.state_dir == Path("/s")
    assert config.paths.projects_root == Path("/b/projects")
    assert config.repository.local.root == Path("/s/repos")
    assert config.repository.local.password_file == Path("/s/repository.password")


def test_s3_section_defaults(tmp_path: Path) -> None:
    config = parse_config(
        {"base_dir": "/b", "repository": {"kind": "s3", "s3": {}}},
        source="t",
        relative_to=tmp_path,
    )
    assert config.repository.s3 == S3RepositoryConfig()
    assert config.repository.s3.bucket_name() == "buckets-us-east-1"


# --------------------------------------------------------------------------
# problems: all reported at once, each with its key path
# --------------------------------------------------------------------------


def test_several_problems_are_all_reported_with_their_key_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
host_id = "-not valid"
backend = "zfs"

[server]
listen = "localhost:70000"
keepalive_interval = 0

[limits]
max_concurrent_operations = 0
max_queued_operations = true
engine_timeout = "1h"

[engine]
engine = "borg"

[repository]
kind = "s3"

[logging]
level = "verbose"
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value

    assert isinstance(error, InvalidArgument)
    assert error.source == str(path)
    assert error.problems == (
        "host_id: must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
        'or digit, got "-not valid"',
        'backend: must be one of "directory", "btrfs", got "zfs"',
        'server.listen: must be "host:port" with a port in 0..65535, got "localhost:70000"',
        "server.keepalive_interval: must be a number > 0, got 0",
        "limits.max_concurrent_operations: must be an integer >= 1, got 0",
        "limits.max_queued_operations: must be an integer >= 0, got true",
        'limits.engine_timeout: must be a number > 0, got "1h"',
        'engine.engine: must be one of "restic", "rustic", "auto", got "borg"',
        'repository.s3: required when repository.kind is "s3"',
        'logging.level: must be one of "debug", "info", "warning", "error", got "verbose"',
    )
    assert str(error) == "\n".join(error.problems)
    assert error.message == str(error)


def test_unknown_keys_are_problems_with_their_paths(tmp_path: Path) -> None:
    problems = problems_of(
        {
            "hostid": "x",
            "server": {"listen": "127.0.0.1:1", "grace": 1},
            "repository": {"local": {"rooot": "/r"}, "s3": {"a.b": 1}},
            "extra": {},
        },
        tmp_path,
    )
    assert problems == (
        "server.grace: unknown key (did you mean 'grace_period'?)",
        "repository.local.rooot: unknown key (did you mean 'root'?)",
        'repository.s3."a.b": unknown key',
        "hostid: unknown key (did you mean 'host_id'?)",
        "extra: unknown key (did you mean 'metrics'?)",
    )


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert problems_of({"limits": 5, "repository": {"local": "x"}}, tmp_path) == (
        "limits: must be a table, got 5",
        'repository.local: must be a table, got "x"',
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"server": {"listen": "127.0.0.1"}}, "server.listen: must be"),
        ({"server": {"listen": ":50051"}}, "server.listen: must be"),
        ({"server": {"listen": "::1:50051"}}, "server.listen: must be"),
        ({"server": {"listen": "h:-1"}}, "server.listen: must be"),
        ({"server": {"grace_period": -1}}, "server.grace_period: must be a number >= 0, got -1"),
        ({"server": {"port_file": ""}}, 'server.port_file: must be a non-empty string, got ""'),
        ({"limits": {"kill_grace": float("nan")}}, "limits.kill_grace: must be a number >= 0"),
        ({"limits": {"stall_timeout": -1}}, "limits.stall_timeout: must be a number >= 0, got -1"),
        ({"retention": {"interval": 3600}}, "retention: an interval needs at least one keep_*"),
        ({"retention": {"keep_daily": -2}}, "retention.keep_daily: must be an "),
        ({"retention": {"prune": "yes"}}, "retention.prune: must be true or false"),
        ({"restore": {"dirty": "overwrite"}}, 'restore.dirty: must be one of "snapshot", "refuse"'),
        ({"restore": {"keep_replaced": 0}}, "restore.keep_replaced: must be a number > 0, got 0"),
        ({"restore": {"keep": 3600}}, "restore.keep: unknown key"),
        ({"precopy": {"max_age": 0}}, "precopy.max_age: must be a number > 0, got 0"),
        ({"precopy": {"keep": 1}}, "precopy.keep: unknown key"),
        ({"limits": {"read_file_max_bytes": 1.5}}, "limits.read_file_max_bytes: must be an "),
        ({"limits": {"max_concurrent_operations": True}}, "got true"),
        ({"engine": {"restic_binary": ""}}, "engine.restic_binary: must be a non-empty string"),
        ({"paths": {"state_dir": 3}}, "paths.state_dir: must be a non-empty string, got 3"),
        ({"repository": {"kind": "b2"}}, 'repository.kind: must be one of "local", "s3"'),
        ({"logging": {"format": "text"}}, 'logging.format: must be one of "json", "console"'),
        ({"repository": {"s3": {"endpoint": "127.0.0.1:9000"}}}, "repository.s3.endpoint: must"),
        ({"repository": {"s3": {"endpoint": "ftp://h"}}}, "repository.s3.endpoint: must"),
        ({"repository": {"s3": {"endpoint": "http://h:99999"}}}, "repository.s3.endpoint: must"),
        ({"repository": {"s3": {"region": "EU West"}}}, "repository.s3.region: must"),
        ({"repository": {"s3": {"bucket_prefix": "Bad_Name"}}}, "not a valid S3 bucket name"),
        ({"repository": {"s3": {"root_template": "fixed"}}}, "repository.s3.root_template"),
        ({"repository": {"s3": {"root_template": "{project_id}/{x}"}}}, "root_template: must"),
        ({"repository": {"s3": {"create_bucket": "yes"}}}, "create_bucket: must be true or false"),
        (
            {"repository": {"s3": {"access_key_id": "AKIA"}}},
            "repository.s3: access_key_id and secret_access_key must be set together",
        ),
        (
            {"paths": {"projects_root": "/x", "persist_root": "/x"}},
            "paths.persist_root: must differ from paths.projects_root",
        ),
    ],
)
def test_single_problems(data: dict, problem: str, tmp_path: Path) -> None:
    problems = problems_of(data, tmp_path)
    assert len(problems) == 1, problems
    assert problem in problems[0]


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:65535", "agent.local:50051"])
def test_valid_listen_addresses(listen: str, tmp_path: Path) -> None:
    config = parse_config({"server": {"listen": listen}}, source="t", relative_to=tmp_path)
    assert config.server.listen == listen


def test_empty_optional_string_means_unset(tmp_path: Path) -> None:
    config = parse_config(
        {"repository": {"s3": {"endpoint": "", "access_key_id": "", "secret_access_key": ""}}},
        source="t",
        relative_to=tmp_path,
    )
    assert config.repository.s3 is not None
    assert config.repository.s3.endpoint is None
    assert config.repository.s3.secret_access_key is None


# --------------------------------------------------------------------------
# file-level problems
# --------------------------------------------------------------------------


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1"\ngrace_period = = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in problem


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == (f"{path}: config file not found",)


# --------------------------------------------------------------------------
# relative paths
# --------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write(
        etc,
        """
base_dir = "../data"
[paths]
state_dir = "state-here"
[repository.local]
password_file = "./secret/pw"
[engine]
restic_binary = "../bin/restic"
rustic_binary = "rustic"
""",
    )

    # A relative path to the config file itself works too.
    config = load_config(Path("../etc/agent.toml"))

    assert config.paths.state_dir == etc / "state-here"
    assert config.paths.projects_root == tmp_path / "data" / "projects"
    assert config.paths.persist_root == tmp_path / "data" / "persist"
    assert config.repository.local.root == etc / "state-here" / "repos"
    assert config.repository.local.password_file == etc / "secret" / "pw"
    assert config.engine.restic_binary == str(tmp_path / "bin" / "restic")
    assert config.engine.rustic_binary == "rustic"  # a bare name is looked up on PATH


def test_parse_config_resolves_against_relative_to(tmp_path: Path) -> None:
    config = parse_config(
        {"paths": {"state_dir": "s", "projects_root": "/abs/p", "persist_root": "~/p"}},
        source="t",
        relative_to=tmp_path,
    )
    assert config.paths.state_dir == tmp_path / "s"
    assert config.paths.projects_root == Path("/abs/p")
    assert config.paths.persist_root == Path.home() / "p"


# --------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------


def test_secret_is_not_in_repr_or_describe(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_TOML))
    assert config.repository.s3 is not None
    assert config.repository.s3.secret_access_key == SECRET

    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    view = describe(config)
    dumped = json.dumps(view)  # JSON-able
    assert SECRET not in dumped
    assert view["repository"]["s3"]["secret_access_key"] == "***"
    assert view["repository"]["s3"]["access_key_id"] == "AKIAEXAMPLE"
    assert view["repository"]["local"]["password_file"] == "/etc/buckets/password"
    assert view["limits"]["max_queued_operations"] == 0


def test_describe_leaves_an_unset_secret_unset(tmp_path: Path) -> None:
    view = describe(S3RepositoryConfig())
    assert view["secret_access_key"] is None


def test_secret_value_is_not_echoed_in_problems(tmp_path: Path) -> None:
    problems = problems_of(
        {"repository": {"s3": {"access_key_id": "AKIA", "secret_access_key": 12345678}}},
        tmp_path,
    )
    assert problems == (
        "repository.s3.secret_access_key: must be a non-empty string, got an integer",
        "repository.s3: access_key_id and secret_access_key must be set together",
    )


def test_describe_of_defaults_round_trips_through_json(tmp_path: Path) -> None:
    view = describe(default_config(tmp_path))
    assert json.loads(json.dumps(view)) == view
    assert view["paths"]["state_dir"] == str(tmp_path / "state")
    assert view["repository"]["s3"] is None


# --------------------------------------------------------------------------
# ensure_password_file
# --------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ensure_password_file_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "repository.password"
    old_umask = os.umask(0o022)
    try:
        ensure_password_file(path)
    finally:
        os.umask(old_umask)

    assert mode_of(path) == 0o600
    assert mode_of(tmp_path / "a") == 0o700
    assert mode_of(tmp_path / "a" / "b") == 0o700
    password = path.read_text()
    assert len(password) >= 40
    assert password.strip() == password
    assert [p.name for p in path.parent.iterdir()] == ["repository.password"]  # no temp left


def test_ensure_password_file_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    ensure_password_file(path)
    first = path.read_text()
    ensure_password_file(path)
    assert path.read_text() == first

    other = tmp_path / "other"
    ensure_password_file(other)
    assert other.read_text() != first


def test_ensure_password_file_refuses_a_group_or_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("hunter2")
    os.chmod(path, 0o644)
    with pytest.raises(FailedPrecondition) as info:
        ensure_password_file(path)
    assert "0644" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert path.read_text() == "hunter2"
    assert mode_of(path) == 0o644  # not silently "fixed"

    os.chmod(path, 0o640)
    with pytest.raises(FailedPrecondition):
        ensure_password_file(path)


def test_ensure_password_file_refuses_an_empty_file_and_a_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    with pytest.raises(FailedPrecondition, match="empty"):
        ensure_password_file(empty)

    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(FailedPrecondition, match="not a regular file"):
        ensure_password_file(directory)


def test_freeze_section(tmp_path):
    data = {"host_id": "h", "freeze": {"writers": "refuse", "grace": 2, "cgroup": "/sys/fs/cgroup/p/project-{project_id}"}}
    config = parse_config(data, source="test.toml", relative_to=tmp_path)
    assert (config.freeze.writers, config.freeze.grace) == ("refuse", 2.0)
    assert config.freeze.cgroup_of("abc") == Path("/sys/fs/cgroup/p/project-abc")
    assert parse_config({"host_id": "h"}, source="t", relative_to=tmp_path).freeze.cgroup_of("abc") is None
    assert parse_config({"host_id": "h"}, source="t", relative_to=tmp_path).freeze.writers == "stop"


@pytest.mark.parametrize("freeze, problem", [
    ({"writers": "kill"}, 'freeze.writers: must be one of "stop", "refuse"'),
    ({"grace": -1}, "freeze.grace: must be a number >= 0"),
    ({"cgroup": "relative/{project_id}"}, "freeze.cgroup: must be an absolute path"),
    ({"cgroup": "/sys/fs/cgroup/fixed"}, "freeze.cgroup: must contain {project_id}"),
    ({"cgroup": "/sys/fs/cgroup/{host}/{project_id}"}, "freeze.cgroup: must contain {project_id} and no other"),
    ({"cgroup": "/sys/fs/cgroup/../{project_id}"}, "freeze.cgroup: must not contain . or .."),
    ({"colour": 1}, "freeze.colour"),
])
def test_freeze_section_problems(tmp_path, freeze, problem):
    with pytest.raises(ConfigError) as info:
        parse_config({"host_id": "h", "freeze": freeze}, source="test.toml", relative_to=tmp_path)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_restore_section_defaults_and_values(tmp_path: Path) -> None:
    from agent.config import RestoreConfig, parse_config

    default = parse_config({"host_id": "h"}, source="t", relative_to=tmp_path).restore
    assert default == RestoreConfig(dirty="snapshot", keep_replaced=86400.0)
    given = parse_config({"host_id": "h", "restore": {"dirty": "refuse", "keep_replaced": 90}}, source="t",
                         relative_to=tmp_path).restore
    assert given == RestoreConfig(dirty="refuse", keep_replaced=90.0)


def test_precopy_section_defaults_and_values(tmp_path: Path) -> None:
    from agent.config import PrecopyConfig, parse_config

    assert parse_config({"host_id": "h"}, source="t", relative_to=tmp_path).precopy == PrecopyConfig(max_age=86400.0)
    given = parse_config({"host_id": "h", "precopy": {"max_age": 60}}, source="t", relative_to=tmp_path).precopy
    assert given == PrecopyConfig(max_age=60.0)


def test_schedule_section_defaults_values_and_problems(tmp_path: Path) -> None:
    from agent.config import ConfigError, ScheduleConfig, parse_config

    default = parse_config({"host_id": "h"}, source="t", relative_to=tmp_path).schedule
    assert default == ScheduleConfig() and not default.enabled
    given = parse_config({"host_id": "h", "schedule": {"rpo": 3600, "concurrency": 2, "jitter": 30,
                                                       "quiet_windows": ["22:30-06:00", "12:00-13:00"]}},
                         source="t", relative_to=tmp_path).schedule
    assert given == ScheduleConfig(rpo=3600.0, concurrency=2, jitter=30.0,
                                   quiet_windows=("22:30-06:00", "12:00-13:00"))
    assert given.enabled and given.quiet_minutes() == [(22 * 60 + 30, 6 * 60), (12 * 60, 13 * 60)]
    with pytest.raises(ConfigError) as raised:
        parse_config({"host_id": "h", "schedule": {"rpo": 60, "jitter": 60, "concurrency": 0,
                                                   "quiet_windows": ["24:00-01:00", "10:00-10:00"]}},
                     source="t", relative_to=tmp_path)
    text = str(raised.value)
    assert "schedule.concurrency: must be an integer >= 1" in text
    assert '"24:00-01:00" is not a window' in text and '"10:00-10:00" is not a window' in text
    assert "schedule.jitter: must be below schedule.rpo" in text
