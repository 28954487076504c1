"""The hub config file (TOML), read by ``buckets-hub serve`` and by the ``buckets`` hub commands
(``--config`` / ``$BUCKETS_HUB_CONFIG``)::

    store = "/var/lib/buckets-hub/hub.sqlite"     # or "postgresql://hub@db/buckets"
    freshness_interval = 60    # seconds between polls of every agent's projects (0: only on Refresh)
    freshness_bound = 300      # a project's figures older than this are stale (moves trust them no longer)
    workers = 4                # moves and copies run at once by this process
    lease_seconds = 15         # a job's lease: a dead hub's moves and copies are taken over after it
    keepalive_interval = 10    # seconds of quiet before FollowLog sends a keep-alive
    buckets = "regions.toml"   # each region's bucket, for cross-region moves (optional)

    [server]                   # the hub's own listener, as the agent's
    listen = "127.0.0.1:50061"
    grace_period = 10
    [server.tls]               # cert_file, key_file, client_ca_file (mTLS)
    [auth]                     # tokens_file: lines "<role> <token>" (read-only / operator)

    [moves]
    precopy_rounds = 3
    precopy_stop_bytes = 16777216
    operation_timeout = 0      # seconds per agent operation; 0: no limit

    [agents]                   # how to dial every agent ...
    deadline = 30
    retries = 5
    ca_file = "ca.pem"
    cert_file = "hub.pem"
    key_file = "hub.key"
    token_file = "agent.token"
    [agents.regions.eu]        # ... the agents of one region (overrides [agents])
    [agents.hosts.host-a]      # ... one host (overrides its region's and [agents])

Relative paths are taken against the file's directory. Every problem is reported at once, each
with its key path (:class:`agent.config.ConfigError`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from agent.config import (
    AuthConfig, ConfigError, ServerConfig, ServerTlsConfig, _parse_auth, _parse_server_tls, _Table, integer,
    listen_address, nonempty_string, number,
)
from hub_client.client import ClientConfig, RetryPolicy, TlsConfig
from hub_client.lease import DEFAULT_LEASE_SECONDS
from hub_client.move import DEFAULT_PRECOPY_ROUNDS, DEFAULT_PRECOPY_STOP_BYTES, MoveSettings

DEFAULT_LISTEN = "127.0.0.1:50061"
ENVIRONMENT = "BUCKETS_HUB_CONFIG"
_DIAL_KEYS = ("deadline", "retries", "ca_file", "cert_file", "key_file", "server_name", "token_file")


@dataclass(frozen=True, kw_only=True)
class DialConfig:
    """How to dial agents (one level of ``[agents]``): None keys are inherited from the level above."""

    deadline: float | None = None
    retries: int | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    token_file: Path | None = None

    def over(self, base: "DialConfig") -> "DialConfig":
        """This level's keys, the missing ones from ``base``."""
        return replace(base, **{key: getattr(self, key) for key in _DIAL_KEYS if getattr(self, key) is not None})


@dataclass(frozen=True, kw_only=True)
class AgentsConfig:
    defaults: DialConfig = DialConfig()
    regions: Mapping[str, DialConfig] = field(default_factory=dict)
    hosts: Mapping[str, DialConfig] = field(default_factory=dict)

    def dial(self, host_id: str | None, region: str | None) -> DialConfig:
        """The settings for one host: its own over its region's over the defaults."""
        merged = self.defaults
        if region in self.regions:
            merged = self.regions[region].over(merged)
        if host_id in self.hosts:
            merged = self.hosts[host_id].over(merged)
        return merged


@dataclass(frozen=True, kw_only=True)
class HubConfig:
    store: str | None = None
    freshness_interval: float = 60.0
    freshness_bound: float = 300.0
    workers: int = 4
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    keepalive_interval: float = 10.0
    buckets: Path | None = None
    server: ServerConfig = ServerConfig(listen=DEFAULT_LISTEN)
    auth: AuthConfig = AuthConfig()
    precopy_rounds: int = DEFAULT_PRECOPY_ROUNDS
    precopy_stop_bytes: int = DEFAULT_PRECOPY_STOP_BYTES
    operation_timeout: float | None = None
    agents: AgentsConfig = AgentsConfig()

    @property
    def freshness_valid_for(self) -> timedelta:
        return timedelta(seconds=self.freshness_bound)

    def move_settings(self, buckets: Mapping[str, Any] | None = None) -> MoveSettings:
        return MoveSettings(freshness_valid_for=self.freshness_valid_for, operation_timeout=self.operation_timeout,
                            precopy_rounds=self.precopy_rounds, precopy_stop_bytes=self.precopy_stop_bytes,
                            buckets=buckets or {})


def client_config(dial: DialConfig, address: str) -> ClientConfig:
    """The AgentClient settings for the agent at ``address`` from its merged dial settings.

    Raises ConfigError when the token file cannot be read (it is read when the agent is first
    called, so a rotated token is picked up by a restart)."""
    tls = None
    if dial.ca_file or dial.cert_file:
        tls = TlsConfig(ca_file=dial.ca_file, cert_file=dial.cert_file, key_file=dial.key_file,
                        server_name=dial.server_name)
    token = None
    if dial.token_file is not None:
        try:
            token = dial.token_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError([f"agents: token_file {dial.token_file}: {exc.strerror or exc}"]) from None
    return ClientConfig(target=address, deadline=dial.deadline or 30.0,
                        retry=RetryPolicy(attempts=max(1, dial.retries or 5)), tls=tls, token=token)


def load_hub_config(path: Path | str) -> HubConfig:
    """Read and check the hub config file; raises ConfigError naming every problem."""
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{source}: config file not found"], source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read: {exc}"], source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"], source=source) from None
    return parse_hub_config(data, source=source, relative_to=path.parent.absolute())


def _store_url(value: str, relative_to: Path) -> str:
    if "://" in value:
        return value
    return str((relative_to / Path(value).expanduser()).resolve())


def parse_hub_config(data: Mapping[str, Any], *, source: str, relative_to: Path) -> HubConfig:
    problems: list[str] = []
    top = _Table(data, "", problems)
    store = top.take("store", nonempty_string, None)
    interval = float(top.take("freshness_interval", number(0), 60.0))
    bound = float(top.take("freshness_bound", number(0, exclusive=True), 300.0))
    workers = top.take("workers", integer(1), 4)
    lease = float(top.take("lease_seconds", number(0, exclusive=True), DEFAULT_LEASE_SECONDS))
    keepalive = float(top.take("keepalive_interval", number(0, exclusive=True), 10.0))
    buckets = top.take_path("buckets", None, relative_to)
    server = _parse_server(top.table("server"), relative_to)
    auth = _parse_auth(top.table("auth"), relative_to)
    moves = top.table("moves")
    rounds, stop_bytes, timeout = DEFAULT_PRECOPY_ROUNDS, DEFAULT_PRECOPY_STOP_BYTES, None
    if moves is not None:
        rounds = moves.take("precopy_rounds", integer(0), rounds)
        stop_bytes = moves.take("precopy_stop_bytes", integer(0), stop_bytes)
        timeout = float(moves.take("operation_timeout", number(0), 0)) or None
        moves.finish()
    agents = _parse_agents(top.table("agents"), relative_to)
    top.finish()
    if interval and bound < interval:
        problems.append(f"freshness_bound: must be at least freshness_interval ({interval:g} s), got {bound:g}: "
                        "every figure would be stale between two polls")
    if problems:
        raise ConfigError(problems, source=source)
    return HubConfig(store=None if store is None else _store_url(store, relative_to), freshness_interval=interval,
                     freshness_bound=bound, workers=workers, lease_seconds=lease, keepalive_interval=keepalive, buckets=buckets,
                     server=server, auth=auth, precopy_rounds=rounds, precopy_stop_bytes=stop_bytes,
                     operation_timeout=timeout, agents=agents)


def _parse_server(table: _Table | None, relative_to: Path) -> ServerConfig:
    if table is None:
        return ServerConfig(listen=DEFAULT_LISTEN)
    port_file = table.take_path("port_file", None, relative_to)
    config = ServerConfig(
        listen=table.take("listen", listen_address, DEFAULT_LISTEN),
        grace_period=float(table.take("grace_period", number(0), 10.0)),
        port_file=None if port_file is None else str(port_file),
        tls=_parse_server_tls(table.table("tls"), relative_to),
    )
    table.finish()
    return config


def _parse_dial(table: _Table, relative_to: Path, *, nested: tuple[str, ...] = ()) -> DialConfig:
    deadline = table.take("deadline", number(0, exclusive=True), None)
    dial = DialConfig(
        deadline=None if deadline is None else float(deadline),
        retries=table.take("retries", integer(1), None),
        ca_file=table.take_path("ca_file", None, relative_to),
        cert_file=table.take_path("cert_file", None, relative_to),
        key_file=table.take_path("key_file", None, relative_to),
        server_name=table.take("server_name", nonempty_string, None),
        token_file=table.take_path("token_file", None, relative_to),
    )
    for key in nested:
        table.raw(key)  # read by the caller
    table.finish()
    for path_key in ("ca_file", "cert_file", "key_file", "token_file"):
        path = getattr(dial, path_key)
        if path is not None and not os.access(path, os.R_OK):
            table.problem(path_key, f"cannot read {path}")
    return dial


def _parse_agents(table: _Table | None, relative_to: Path) -> AgentsConfig:
    if table is None:
        return AgentsConfig()
    levels: dict[str, dict[str, DialConfig]] = {"regions": {}, "hosts": {}}
    for kind in levels:
        group = table.table(kind)
        if group is None:
            continue
        for key in list(group.data):
            sub = group.table(key)
            if sub is not None:
                levels[kind][key] = _parse_dial(sub, relative_to)
        group.finish()
    defaults = _parse_dial(table, relative_to, nested=("regions", "hosts"))
    return AgentsConfig(defaults=defaults, regions=levels["regions"], hosts=levels["hosts"])


def config_path_from(explicit: str | Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``--config`` when given, else ``$BUCKETS_HUB_CONFIG``, else None (no file)."""
    env = os.environ if environ is None else environ
    value = explicit or env.get(ENVIRONMENT)
    return Path(value) if value else None


__all__ = ["AgentsConfig", "ConfigError", "DialConfig", "HubConfig", "ServerTlsConfig", "client_config",
           "config_path_from", "load_hub_config", "parse_hub_config"]
