"""``buckets``: the operator's command line: one agent's operations, and the hub's hosts,
projects and moves (see hub_client/hub_cli.py).

Agent examples:
  buckets --agent 127.0.0.1:50051 backup 0b6f...-uuid          # back up, with a live progress bar
  buckets --agent 127.0.0.1:50051 restore 0b6f...-uuid 4488a640
  buckets --agent 127.0.0.1:50051 verify 0b6f...-uuid
  buckets --agent 127.0.0.1:50051 snapshots 0b6f...-uuid --json
  buckets --agent 127.0.0.1:50051 watch OPERATION_ID
  buckets --agent 127.0.0.1:50051 cancel OPERATION_ID

Hub examples (the store is --store or $BUCKETS_STORE):
  buckets hosts add host-a 10.0.0.1:50051 --region eu
  buckets projects add 0b6f...-uuid --host host-a --region eu
  buckets move 0b6f...-uuid --to host-b                # live movelog until complete
  buckets movelog MOVE_ID --follow
  buckets resume MOVE_ID

Exit codes: 0 success, 1 the operation or move failed, 2 usage or call error,
3 another move of the project is in progress.
"""

from __future__ import annotations

import argparse
import json
import sys

from google.protobuf.json_format import MessageToDict

from hub_client.client import OK_STATES, AgentClient, AgentError, OperationHandle
from hub_client.hub_cli import HUB_COMMANDS, add_global_options, add_hub_commands, client_config_from, run_hub_command
from hub_client.progress import ProgressPrinter
from hub_client.proto.buckets.v1 import agent_pb2 as pb


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buckets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default="127.0.0.1:50051", help="agent address host:port")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds per call")
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    add_hub_commands(commands)
    backup = commands.add_parser("backup", help="back up a project (buckets backup PROJECT)")
    backup.add_argument("project")
    backup.add_argument("--force", action="store_true")
    backup.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    restore = commands.add_parser("restore", help="restore a snapshot (buckets restore PROJECT SNAPSHOT|latest)")
    restore.add_argument("project")
    restore.add_argument("snapshot")
    restore.add_argument("--no-wait", action="store_true")
    verify = commands.add_parser("verify", help="check a project's repository (buckets verify PROJECT)")
    verify.add_argument("project")
    verify.add_argument("--read-data-subset", default="", help='e.g. "1/5" or "10%%"')
    verify.add_argument("--no-wait", action="store_true")
    snapshots = commands.add_parser("snapshots", help="list a project's snapshots (buckets snapshots PROJECT)")
    snapshots.add_argument("project")
    watch = commands.add_parser("watch", help="follow an operation (buckets watch OPERATION_ID)")
    watch.add_argument("operation")
    cancel = commands.add_parser("cancel", help="cancel an operation (buckets cancel OPERATION_ID)")
    cancel.add_argument("operation")
    return parser


def _print(message, as_json: bool) -> None:
    if as_json:
        print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), sort_keys=True))
    else:
        print(message)


def _follow(handle: OperationHandle, args) -> int:
    if getattr(args, "no_wait", False):
        _print(handle.operation, args.json)
        return 0
    printer = None if args.json else ProgressPrinter()
    for event in handle.progress():
        if printer:
            printer.show(event)
    final = handle.refresh()
    if args.json:
        _print(final, True)
    return 0 if final.state in OK_STATES else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in HUB_COMMANDS:
        return run_hub_command(args)
    try:
        with AgentClient(client_config_from(args)(args.agent)) as client:
            if args.command == "backup":
                return _follow(client.backup(args.project, force=args.force), args)
            if args.command == "restore":
                return _follow(client.restore(args.project, args.snapshot), args)
            if args.command == "verify":
                mode = pb.VerifyRequest.READ_DATA if args.read_data_subset else pb.VerifyRequest.REPOSITORY
                return _follow(client.verify(args.project, mode=mode, read_data_subset=args.read_data_subset), args)
            if args.command == "snapshots":
                for snapshot in client.snapshots(args.project):
                    if args.json:
                        _print(snapshot, True)
                    else:
                        print(f"{snapshot.short_id}  {snapshot.time.ToJsonString()}  {snapshot.purpose:<7} "
                              f"{' '.join(snapshot.tags)}")
                return 0
            if args.command == "watch":
                return _follow(client.operation(args.operation), args)
            if args.command == "cancel":
                _print(client.operation(args.operation).cancel(), args.json)
                return 0
    except AgentError as exc:
        print(f"buckets: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
