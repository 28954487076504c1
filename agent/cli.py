"""``buckets-agent``: run the daemon or check a config file.

Examples:
  buckets-agent serve                         # embedded default (local repository, directory projects)
  buckets-agent serve --config /etc/buckets/agent.toml
  buckets-agent check-config /etc/buckets/agent.toml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from agent import logs
from agent.config import ConfigError, default_config, describe, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buckets-agent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the agent daemon (example: buckets-agent serve --config agent.toml)")
    serve.add_argument("--config", type=Path, help="TOML config file (default: the embedded default)")
    check = commands.add_parser(
        "check-config", help="validate a config file and print it (example: buckets-agent check-config agent.toml)"
    )
    check.add_argument("config", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(f"buckets-agent: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(describe(config), indent=2, sort_keys=True))
        return 0
    logs.configure(config.logging.level, config.logging.format)
    try:
        return asyncio.run(_serve(config))
    except ConfigError as exc:  # a file the config names (TLS) changed since it was checked
        print(f"buckets-agent: invalid configuration:\n{exc}", file=sys.stderr)
        return 2


async def _serve(config) -> int:
    from agent.server import serve

    return await serve(config)


if __name__ == "__main__":
    sys.exit(main())
