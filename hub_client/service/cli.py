"""``buckets-hub``: the hub service's command line.

  buckets-hub serve --config /etc/buckets/hub.toml     # the buckets.v1.Hub service
  buckets-hub check-config --config /etc/buckets/hub.toml
  buckets-hub work --store postgresql://hub@db/hub      # only take over jobs whose hub died (no API)

The config file is ``--config`` or $BUCKETS_HUB_CONFIG (see hub_client/service/config.py and
systemd/hub.toml). Exit codes: 0 stopped cleanly / config valid, 1 failed to serve, 2 config error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent import logs
from agent.config import ConfigError
from hub_client.service.config import ENVIRONMENT, config_path_from, load_hub_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buckets-hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"the hub config file (default ${ENVIRONMENT})")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="json", choices=("json", "console"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the buckets.v1.Hub gRPC service")
    commands.add_parser("check-config", help="read the config file and report every problem")
    commands.add_parser("work", help="only take over and resume moves and copies whose hub process died "
                                     "(no API; see buckets-hub work --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["work"]:  # the worker alone has options of its own (hub_client/hub_service_cli.py)
        from hub_client.hub_service_cli import main as work

        return work(given)
    args = build_parser().parse_args(argv)
    path = config_path_from(args.config)
    if path is None:
        print(f"buckets-hub: no config file: give --config or set ${ENVIRONMENT}", file=sys.stderr)
        return 2
    try:
        config = load_hub_config(path)
    except ConfigError as exc:
        print(f"buckets-hub: {path}:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{path}: valid")
        return 0
    logs.configure(args.log_level, args.log_format)
    from hub_client.service.server import serve

    try:
        return asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"buckets-hub: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
