"""``buckets-agent``: run the daemon, check a config file, and operate the agent of this host.

The operator commands are those of ``buckets --agent ADDRESS`` (hub_client/agent_cli.py), aimed
at the local agent: its address comes from the config's [server] listen (with port 0 the port
file the agent writes), its bearer token (without --token or $BUCKETS_TOKEN) from the config's
[auth] tokens file, and with [server.tls] its certificate file is trusted (without --ca: enough
for a self-signed certificate or a chain that holds its CA). The config
is --config, else $BUCKETS_AGENT_CONFIG, else /etc/buckets/agent.toml when it exists, else the
embedded default; with --agent it is read only when --config names it.

Examples:
  buckets-agent serve                         # embedded default (local repository, directory projects)
  buckets-agent serve --config /etc/buckets/agent.toml
  buckets-agent check-config /etc/buckets/agent.toml
  buckets-agent status                        # this host; `status PROJECT` for one project
  buckets-agent backup 0b6f...-uuid           # live progress bar
  buckets-agent snapshots 0b6f...-uuid --json
  buckets-agent ls 0b6f...-uuid latest project
  buckets-agent cat 0b6f...-uuid latest project/notes.md > notes.md
  buckets-agent restore | verify | ensure | freeze | thaw ...
  buckets-agent drain --concurrency 4         # back up every dirty project of this host
  buckets-agent copy SRC:PATH DST:PATH        # between projects of this host
  buckets-agent delete 0b6f...-uuid --yes     # from this host only (the hub's records stay)
  buckets-agent move ...                      # a hub operation: prints the `buckets move` to run

Every operator command takes --json (one JSON object per line) and shows an example with --help.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path

import structlog

from hub_client import grpc_logging  # first: before anything starts gRPC's core

from agent import logs
from agent.config import AgentConfig, ConfigError, default_config, describe, load_config
from agent.startup_checks import host_problems
from hub_client.addresses import agent_address
from hub_client.agent_cli import (
    AGENT_COMMANDS, EXIT_CODES_HELP, EXIT_USAGE, HOST_COMMANDS, add_command, add_agent_commands,
    add_connection_options, client_config_from, quiet_on_closed_pipe, run_agent_command, share_options,
)
from hub_client.client import ClientConfig, TlsConfig

PROG = "buckets-agent"
SYSTEM_CONFIG = Path("/etc/buckets/agent.toml")
OPERATOR_COMMANDS = AGENT_COMMANDS + HOST_COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, epilog=EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="the agent's TOML config (default: $BUCKETS_AGENT_CONFIG, /etc/buckets/agent.toml "
                             "when it exists, else the embedded default)")
    parser.add_argument("--agent", default=None, type=agent_address,
                        help="the agent's address host:port (default: from the config's [server])")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of text")
    add_connection_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = add_command(commands, "serve", "run the agent daemon (its config: --config, else $BUCKETS_AGENT_CONFIG, "
                        "else /etc/buckets/agent.toml when it exists, else the embedded default)",
                        f"{PROG} serve --config /etc/buckets/agent.toml")
    serve.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                       help="TOML config file (default: $BUCKETS_AGENT_CONFIG, /etc/buckets/agent.toml when it "
                            "exists, else the embedded default)")
    check = add_command(commands, "check-config", "validate a config file against this host (binaries, "
                        "directories) and print it as JSON (secrets masked)",
                        f"{PROG} check-config /etc/buckets/agent.toml")
    check.add_argument("config", type=Path)
    check.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="accepted for symmetry: the output is always JSON")
    check.add_argument("--syntax-only", action="store_true",
                       help="check the file only, not this host (for a config meant for another host)")
    add_agent_commands(commands, invocation=PROG, host_side=True)
    share_options(parser, OPERATOR_COMMANDS, agent_help="the agent's address (as before the command)",
                  config_help="the agent's config (as before the command)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return quiet_on_closed_pipe(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in OPERATOR_COMMANDS:
        return _operate(args)
    path = args.config if args.command == "check-config" else config_path(args.config)
    try:
        config = load_config(path) if path is not None else default_config()
    except ConfigError as exc:
        print(f"{PROG}: invalid configuration{_named(path)}:\n{exc}", file=sys.stderr)
        return 2
    problems = [] if getattr(args, "syntax_only", False) else host_problems(config)
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems)
        print(f"{PROG}: the configuration{_named(path)} does not fit this host:\n{listed}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(describe(config), indent=2, sort_keys=True))
        return 0
    logs.configure(config.logging.level, config.logging.format)
    structlog.get_logger("agent.cli").info("config.loaded", path=str(path) if path else None,
                                      source="file" if path else "embedded default")
    try:
        return asyncio.run(_serve(config))
    except ConfigError as exc:  # a file the config names (TLS) changed since it was checked
        print(f"{PROG}: invalid configuration{_named(path)}:\n{exc}", file=sys.stderr)
        return 2


def _named(path: Path | None) -> str:
    return f" {path}" if path is not None else " (embedded default)"


async def _serve(config) -> int:
    from agent.server import serve

    return await serve(config)


# ---------------------------------------------------------------- operator commands


def _operate(args) -> int:
    """Run an operator command against the local agent (or --agent)."""
    config: AgentConfig | None = None
    if args.agent is None or args.config is not None:
        try:
            config = _operator_config(args.config)
            address = args.agent or local_address(config)
        except (ConfigError, LocalAgentError) as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        address = args.agent
    return run_agent_command(args, local_client_config(client_config_from(args)(address), config),
                             name=PROG, invocation=PROG)


class LocalAgentError(Exception):
    """The local agent's address cannot be found."""


def config_path(given: Path | None) -> Path | None:
    """The config file the daemon and the operator commands read: ``given`` (--config), else
    $BUCKETS_AGENT_CONFIG, else /etc/buckets/agent.toml when it exists; None: the embedded default."""
    if given is not None:
        return given
    if os.environ.get("BUCKETS_AGENT_CONFIG"):
        return Path(os.environ["BUCKETS_AGENT_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def _operator_config(path: Path | None) -> AgentConfig:
    path = config_path(path)
    return load_config(path) if path is not None else default_config()


def local_address(config: AgentConfig) -> str:
    """``host:port`` where the agent of ``config`` answers: its [server] listen, the port from
    the port file when it listens on port 0, a wildcard host replaced by the loopback address.
    Raises LocalAgentError when the port is 0 and the port file is missing or unreadable."""
    host, _, port = config.server.listen.rpartition(":")
    if port == "0":
        if not config.server.port_file:
            raise LocalAgentError(f"the agent listens on {config.server.listen} (a free port) and its config names "
                                  "no [server] port_file: pass --agent HOST:PORT")
        try:
            port = Path(config.server.port_file).read_text().strip()
        except OSError as exc:
            raise LocalAgentError(f"cannot read the agent's port file {config.server.port_file} "
                                  f"({exc.strerror or exc}); is the agent running?") from None
        if not port.isdigit():
            raise LocalAgentError(f"the agent's port file {config.server.port_file} holds no port: {port[:40]!r}")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def local_client_config(base: ClientConfig, config: AgentConfig | None) -> ClientConfig:
    """``base`` completed from the agent's own config where the options left it open: a token of
    its [auth] (operator first) and, with [server.tls], the certificates of its cert_file as the
    trusted roots (enough for a self-signed certificate or a chain that holds its CA; else
    --ca)."""
    if config is None:
        return base
    changes = {}
    if not base.token and config.auth.tokens:
        tokens = sorted(config.auth.tokens, key=lambda t: t.role != "operator")
        changes["token"] = tokens[0].token
    if base.tls is None and config.server.tls is not None:
        changes["tls"] = TlsConfig(ca_file=config.server.tls.cert_file)
    return dataclasses.replace(base, **changes) if changes else base


if __name__ == "__main__":
    sys.exit(main())
