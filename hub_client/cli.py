"""``buckets``: the operator's command line: one agent's operations (--agent ADDRESS), and the
hub's hosts, projects, moves, copies, drains and deletions over the hub store (see
hub_client/hub_cli.py). The same agent commands, aimed at the local agent, are on the project
host as ``buckets-agent COMMAND``.

One agent (--agent ADDRESS, default 127.0.0.1:50051):
  buckets --agent 10.0.0.1:50051 status [PROJECT]                # project or host status
  buckets --agent 10.0.0.1:50051 backup 0b6f...-uuid             # back up, with a live progress bar
  buckets --agent 10.0.0.1:50051 snapshots 0b6f...-uuid --json
  buckets --agent 10.0.0.1:50051 ls 0b6f...-uuid latest project/src
  buckets --agent 10.0.0.1:50051 cat 0b6f...-uuid 4488a640 project/notes.md > notes.md
  buckets --agent 10.0.0.1:50051 restore 0b6f...-uuid 4488a640
  buckets --agent 10.0.0.1:50051 verify | ensure | freeze | thaw 0b6f...-uuid
  buckets --agent 10.0.0.1:50051 operations --active | watch OPERATION_ID | cancel OPERATION_ID

The hub (the store is --store or $BUCKETS_STORE):
  buckets hosts add host-a 10.0.0.1:50051 --region eu
  buckets projects add 0b6f...-uuid --host host-a --region eu
  buckets move 0b6f...-uuid --to host-b                # live movelog until complete
  buckets copy SRC_PROJECT:data DST_PROJECT:incoming/data
  buckets drain host-a | force-off host-a | delete 0b6f...-uuid --yes
  buckets movelog MOVE_ID --follow | resume MOVE_ID

Every command takes --json (one JSON object per line) and shows an example with --help.
"""

from __future__ import annotations

import argparse
import sys

from hub_client import grpc_logging  # first: before anything starts gRPC's core

from hub_client.agent_cli import (
    AGENT_COMMANDS, EXAMPLE_PROJECT, EXIT_CODES_HELP, EXIT_USAGE, add_agent_commands, attach_examples,
    client_config_from, quiet_on_closed_pipe, run_agent_command, share_options,
)
from hub_client.addresses import agent_address
from hub_client.hub_cli import HUB_COMMANDS, add_global_options, add_hub_commands, run_hub_command

_P = EXAMPLE_PROJECT
_MOVE = "3c9e7b1a-52f4-4d0e-8a6b-1f2e3d4c5b6a"
_COPY = "8d2f4a6c-1b3e-4f5a-9c7d-0e1f2a3b4c5d"
# The hub commands' examples (shown by `buckets COMMAND --help`; a unit test wants one for every
# subcommand, nested ones such as "hosts add" too).
HUB_EXAMPLES = {
    "hosts": "buckets hosts --json",
    "hosts add": "buckets hosts add host-a 10.0.0.1:50051 --region eu",
    "hosts remove": "buckets hosts remove host-old",
    "hosts undrain": "buckets hosts undrain host-a",
    "projects": "buckets projects --host host-a",
    "projects add": f"buckets projects add {_P} --host host-a --region eu",
    "projects refresh": f"buckets projects refresh {_P}",
    "projects remove": f"buckets projects remove {_P}",
    "move": f"buckets move {_P} --to host-b",
    "moves": f"buckets moves --project {_P} --active",
    "movelog": f"buckets movelog {_MOVE} --follow",
    "resume": f"buckets resume {_MOVE}",
    "retry": f"buckets retry {_MOVE} --force",
    "cancel-move": f"buckets cancel-move {_MOVE}",
    "cleanup": "buckets cleanup",
    "refresh": "buckets refresh --json",
    "rescues": f"buckets rescues --project {_P} --json",
    "metrics": "buckets metrics",
    "delete": f"buckets delete {_P} --yes",
    "force-off": "buckets force-off host-a",
    "regions": "buckets regions DE",
    "drain": "buckets drain host-a --concurrency 4",
    "copy": f"buckets copy {_P}:data 0b6f3c1e-7d2a-4f51-9c8e-2a4b6d8f0e13:incoming/data --on-conflict skip",
    "clone": f"buckets clone {_P} --to host-b",
    "copies": "buckets copies --active",
    "copylog": f"buckets copylog {_COPY} --follow",
    "resume-copy": f"buckets resume-copy {_COPY}",
    "cancel-copy": f"buckets cancel-copy {_COPY}",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buckets", description=__doc__, epilog=EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default="127.0.0.1:50051", type=agent_address,
                        help="the agent's address host:port, for the agent commands (default 127.0.0.1:50051)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of text")
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_hub_commands(commands)
    attach_examples(parser, HUB_EXAMPLES)
    add_agent_commands(commands, invocation="buckets --agent 10.0.0.1:50051")
    share_options(parser)  # --json after any command too
    share_options(parser, AGENT_COMMANDS, json=False, agent_help="the agent's address (as before the command)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return quiet_on_closed_pipe(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in HUB_COMMANDS:
        return run_hub_command(args)
    if args.command in AGENT_COMMANDS:
        return run_agent_command(args, client_config_from(args)(args.agent), name="buckets",
                                 invocation=f"buckets --agent {args.agent}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
