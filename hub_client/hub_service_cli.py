"""``buckets-hub``: the hub as a long-running process.

  buckets-hub work --store postgresql://hub@db/hub            # take over moves/copies whose hub died
  buckets-hub work --store /var/lib/buckets/hub.sqlite --lease-seconds 15 --scan-seconds 5

``work`` runs only the worker loop (:class:`hub_client.worker.HubWorker`): every few seconds it
claims the moves and copies whose lease lapsed (the hub process that owned them died or stopped
renewing) and resumes each from its recorded step. Several of them may share one PostgreSQL
store; a SQLite store serves the processes of one host. SIGTERM or SIGINT: no more claims, the
jobs running here go on to their end, then exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from hub_client.agent_cli import EXIT_OK, EXIT_USAGE, client_config_from
from hub_client.hub import Hub
from hub_client.hub_cli import _positive_seconds, add_global_options, default_store, lease_settings_from
from hub_client.move import MoveSettings
from hub_client.repository_copy import load_buckets
from hub_client.store import StoreError, open_store
from hub_client.worker import DEFAULT_MAX_JOBS, HubWorker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buckets-hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    work = commands.add_parser("work", help="take over and resume moves and copies whose hub process died",
                               description="Take over and resume moves and copies whose lease lapsed.",
                               epilog="Example:\n  buckets-hub work --store postgresql://hub@db/hub",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_options(work)
    work.add_argument("--scan-seconds", type=_positive_seconds, default=None,
                      help="seconds between scans for lapsed leases (default the heartbeat, at most 1)")
    work.add_argument("--max-jobs", type=int, default=DEFAULT_MAX_JOBS,
                      help=f"taken-over jobs run at once (default {DEFAULT_MAX_JOBS})")
    work.add_argument("--owner", default=None, help="this process's lease owner id (default host:pid:random)")
    return parser


def run_work(args) -> int:
    try:
        leases = lease_settings_from(args)
        buckets = load_buckets(Path(args.buckets)) if args.buckets else {}
        settings = MoveSettings(buckets=buckets, precopy_rounds=int(args.precopy_rounds),
                                precopy_stop_bytes=int(args.precopy_stop_bytes))
        store = open_store(args.store or default_store())
    except (StoreError, ValueError, ImportError, OSError) as exc:
        print(f"buckets-hub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with Hub(store, client_config=client_config_from(args), settings=settings, leases=leases,
                 owner=args.owner) as hub:
            worker = HubWorker(hub, max_jobs=args.max_jobs)
            print(f"buckets-hub: worker {hub.owner} ready", file=sys.stderr, flush=True)
            worker.serve(stop)
    finally:
        store.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "work":
        return run_work(args)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
