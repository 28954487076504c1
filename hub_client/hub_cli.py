"""The ``buckets`` commands that work on the hub's store: hosts, projects and moves.

Examples:
  buckets hosts add host-a 10.0.0.1:50051 --region eu
  buckets hosts                                   # every host, probed: seen, projects, dirty
  buckets projects add 0b6f...-uuid --host host-a --region eu
  buckets projects --host host-a --json
  buckets move 0b6f...-uuid --to host-b           # live movelog; exit 0 when complete
  buckets move 0b6f...-uuid --to host-b --force   # source host down: move from the last backup
  buckets move 0b6f...-uuid --to host-c --to-draining   # the target is draining or silent
  buckets --buckets regions.toml move 0b6f...-uuid --to host-us --cross-region
  buckets moves --active                          # with each completed move's frozen window
  buckets --precopy-rounds 0 move 0b6f...-uuid --to host-b   # no pre-copy: restore whole after the freeze
  buckets movelog MOVE_ID --follow
  buckets metrics                                 # the hub's Prometheus metrics (frozen windows …)
  buckets resume MOVE_ID | retry MOVE_ID [--force] [--to-draining] | cancel-move MOVE_ID
  buckets cleanup                                 # remove source copies left by completed moves
                                                  # (each proved clean, or rescued into a snapshot, first)
  buckets refresh                                 # every host's projects: last backup / last change now
  buckets rescues --json                          # snapshots cleanups took of copies holding newer data
  buckets copy SRC_PROJECT:data DST_PROJECT:incoming/data --on-conflict skip
  buckets copies --active | copylog COPY_ID --follow | resume-copy COPY_ID | cancel-copy COPY_ID

The store is ``--store`` or $BUCKETS_STORE (a SQLite path or sqlite:///… URL, or a PostgreSQL
URI), else the store of the hub config file (``--config`` or $BUCKETS_HUB_CONFIG, the file
``buckets-hub serve`` reads; its [agents] tables say how to dial each host); by default
~/.local/state/buckets/hub.sqlite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from agent.errors import InvalidArgument
from hub_client.agent_cli import (
    EXIT_FAILED, EXIT_IN_PROGRESS, EXIT_OK, EXIT_USAGE, UsageError, add_connection_options, client_config_from,
    exit_code_of, over_rpo_lines, project_path, rpo_summary,
)
from hub_client.client import AgentError, state_name
from hub_client.hub import Hub
from hub_client.copying import CopyRefused
from hub_client.metrics import exposition
from hub_client.lease import DEFAULT_LEASE_SECONDS, LeaseSettings
from hub_client.move import DEFAULT_PRECOPY_ROUNDS, DEFAULT_PRECOPY_STOP_BYTES, MoveSettings, override_words
from hub_client.steps import JobError
from hub_client.progress import ProgressPrinter
from hub_client.rescue import changed_text
from hub_client.regions import order_regions
from hub_client.repository_copy import load_buckets
from hub_client.movelog_view import MovelogPrinter, entry_record, follow, follow_copy
from hub_client.store import (
    Conflict, CopyInProgress, CopyStatus, LeaseHeld, LeaseLost, MoveInProgress, MovelogEntry, NotFound, StoreError,
    open_store,
)

HUB_COMMANDS = ("hosts", "projects", "move", "moves", "movelog", "resume", "retry", "cancel-move", "cleanup",
                "refresh", "rescues", "metrics",
                "delete", "force-off", "regions", "drain", "copy", "copies", "copylog", "resume-copy", "cancel-copy", "clone")


def default_store() -> str:
    return os.environ.get("BUCKETS_STORE") or str(Path.home() / ".local/state/buckets/hub.sqlite")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The hub's options and how to call agents (:func:`agent_cli.add_connection_options`)."""
    add_connection_options(parser)
    parser.add_argument("--store", default=None, help="hub store URL or SQLite path (default $BUCKETS_STORE, "
                                                      "else the config file's store)")
    parser.add_argument("--config", default=os.environ.get("BUCKETS_HUB_CONFIG"),
                        help="the hub config file (default $BUCKETS_HUB_CONFIG): the store, and how to dial each "
                             "host's agent ([agents], per region and per host); --ca/--cert/--key/--token given "
                             "here apply to every agent instead")
    parser.add_argument("--buckets", type=Path, default=os.environ.get("BUCKETS_REGION_BUCKETS"),
                        help="TOML file of each region's bucket, for cross-region moves "
                             "(default $BUCKETS_REGION_BUCKETS)")
    parser.add_argument("--precopy-rounds", type=_not_negative,
                        default=os.environ.get("BUCKETS_PRECOPY_ROUNDS", DEFAULT_PRECOPY_ROUNDS),
                        help="a move's pre-copies at most before the freeze; 0: none, the target restores whole "
                             f"after the freeze (default $BUCKETS_PRECOPY_ROUNDS or {DEFAULT_PRECOPY_ROUNDS})")
    parser.add_argument("--precopy-stop-bytes", type=_not_negative,
                        default=os.environ.get("BUCKETS_PRECOPY_STOP_BYTES", DEFAULT_PRECOPY_STOP_BYTES),
                        help="a pre-copy round whose backup added at most this many bytes is the last "
                             f"(default $BUCKETS_PRECOPY_STOP_BYTES or {DEFAULT_PRECOPY_STOP_BYTES})")
    add_lease_options(parser)


def add_lease_options(parser: argparse.ArgumentParser) -> None:
    """How long this process's lease of a move or copy holds, and how often it is renewed."""
    parser.add_argument("--lease-seconds", type=_positive_seconds,
                        default=os.environ.get("BUCKETS_LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
                        help="a move's or copy's lease: when this process dies, another hub process takes the job "
                             f"over once it lapses (default $BUCKETS_LEASE_SECONDS or {DEFAULT_LEASE_SECONDS:g})")
    parser.add_argument("--heartbeat-seconds", type=_positive_seconds,
                        default=os.environ.get("BUCKETS_LEASE_HEARTBEAT_SECONDS"),
                        help="seconds between renewals of a held lease (default a third of the lease)")


def lease_settings_from(args) -> LeaseSettings:
    """The LeaseSettings of :func:`add_lease_options` (``scan_seconds`` where the command has it);
    raises ValueError for a heartbeat not shorter than the lease."""
    return LeaseSettings(seconds=float(args.lease_seconds),
                         heartbeat=None if args.heartbeat_seconds is None else float(args.heartbeat_seconds),
                         scan=getattr(args, "scan_seconds", None))


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _not_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def add_hub_commands(commands) -> None:
    hosts = commands.add_parser("hosts", help="list hosts, probing each (buckets hosts [add ID ADDRESS --region R])")
    hosts_actions = hosts.add_subparsers(dest="action")
    add = hosts_actions.add_parser("add", help="register or update a host")
    add.add_argument("id")
    add.add_argument("address", help="the agent's host:port")
    add.add_argument("--region", required=True)
    add.add_argument("--status", default="running", help="running, draining, stopped …")
    remove = hosts_actions.add_parser("remove", help="forget a host (refused while a project, move or copy names it)")
    remove.add_argument("id")
    undrain = hosts_actions.add_parser("undrain", help="put a drained (or draining) host back in service")
    undrain.add_argument("id")
    hosts.add_argument("--no-probe", action="store_true", help="do not call the agents")

    projects = commands.add_parser("projects", help="list project placement (buckets projects [add|refresh …])")
    projects.add_argument("--host", help="only the projects on this host")
    projects_actions = projects.add_subparsers(dest="action")
    add = projects_actions.add_parser("add", help="register a project where it lives")
    add.add_argument("id")
    add.add_argument("--host", dest="placement", required=True)
    add.add_argument("--region", required=True)
    add.add_argument("--repository", default="")
    refresh = projects_actions.add_parser("refresh", help="copy last backup / last change from its agent")
    refresh.add_argument("id")
    remove = projects_actions.add_parser("remove", help="forget a project's record only (files and backups stay; "
                                                        "`buckets delete` removes those); refused while it moves "
                                                        "or is copied")
    remove.add_argument("id")

    move = commands.add_parser("move", help="move a project to another host (buckets move PROJECT --to HOST)")
    move.add_argument("project")
    move.add_argument("--to", required=True, dest="target")
    move.add_argument("--force", action="store_true",
                      help="move although the source host is down and edits newer than its last backup may be lost")
    move.add_argument("--to-draining", action="store_true", dest="force_target",
                      help="move to a target host that is draining or has not reported recently")
    move.add_argument("--cross-region", action="store_true",
                      help="move to a host of another region: the repository is copied into that region's bucket "
                           "(needs --buckets)")
    moves = commands.add_parser("moves", help="list moves, newest first")
    moves.add_argument("--project")
    moves.add_argument("--active", action="store_true")
    movelog = commands.add_parser("movelog", help="a move's events (buckets movelog MOVE [--follow])")
    movelog.add_argument("move")
    movelog.add_argument("--follow", action="store_true", help="wait for new events until the move stops")
    for name, text in (("resume", "continue a stopped or failed move where it stopped"),
                       ("retry", "run a failed move again from preflight"),
                       ("cancel-move", "abandon a move; the project stays on its source")):
        command = commands.add_parser(name, help=f"{text} (buckets {name} MOVE)")
        command.add_argument("move")
        if name == "retry":
            command.add_argument("--force", action="store_true",
                                 help="accept the loss of edits newer than the last backup (source host down)")
            command.add_argument("--to-draining", action="store_true", dest="force_target",
                                 help="move to a target host that is draining or has not reported recently")
    commands.add_parser("cleanup", help="remove source copies that completed moves left behind (each frozen and "
                                        "proved to hold nothing newer than the moved snapshot, or rescued first)")
    commands.add_parser("refresh", help="record every host's projects' last backup and last change as their agents "
                                        "report them now")
    commands.add_parser("metrics", help="print the hub's Prometheus metrics (moves' frozen windows, bytes caught "
                                        "up after the freeze, moves by status) in the text format")
    rescues = commands.add_parser("rescues", help="snapshots taken of source copies that held changes newer than "
                                                  "their move's snapshot, before the copies were removed")
    rescues.add_argument("--project", help="only this project's rescues")
    rescues.add_argument("--move", help="only this move's rescues")
    delete = commands.add_parser("delete", help="delete a project everywhere: files, backups, records "
                                                "(buckets delete PROJECT --yes)")
    delete.add_argument("project")
    delete.add_argument("--yes", action="store_true", required=True, help="confirm: this cannot be undone")
    drain = commands.add_parser("drain", help="back up every dirty project of a host before it is turned off "
                                              "(buckets drain HOST [--concurrency N])")
    drain.add_argument("host")
    drain.add_argument("--concurrency", type=int, default=2)
    force_off = commands.add_parser("force-off", help="take a host out of service without a drain, recording "
                                                      "what may be lost (buckets force-off HOST)")
    force_off.add_argument("host")
    copy = commands.add_parser("copy", help="copy a file or directory between projects, on one host or across "
                                            "hosts (buckets copy SRC:PATH DST:PATH [--on-conflict RULE])")
    copy.add_argument("source", metavar="SOURCE_PROJECT:PATH")
    copy.add_argument("target", metavar="TARGET_PROJECT:PATH")
    copy.add_argument("--on-conflict", choices=sorted(Conflict.ALL), default=Conflict.FAIL,
                      help="when the target path exists: fail (default), overwrite it, or skip what exists")
    clone = commands.add_parser("clone", help="a new project copied from another, in its region and bucket "
                                              "(buckets clone PROJECT [--to HOST] [--id NEW_ID])")
    clone.add_argument("project")
    clone.add_argument("--to", dest="target", help="host of the clone (default: the project's host)")
    clone.add_argument("--id", dest="clone_id", help="the new project's id (default: a new uuid)")
    copies = commands.add_parser("copies", help="list copies, newest first")
    copies.add_argument("--project", help="only copies from or into this project")
    copies.add_argument("--active", action="store_true", help="only pending or running copies")
    copylog = commands.add_parser("copylog", help="a copy's events (buckets copylog COPY [--follow])")
    copylog.add_argument("copy")
    copylog.add_argument("--follow", action="store_true", help="wait for new events until the copy stops")
    for name, text in (("resume-copy", "continue a stopped or failed copy"),
                       ("cancel-copy", "abandon a copy, forgetting its temporary snapshot")):
        commands.add_parser(name, help=f"{text} (buckets {name} COPY)").add_argument("copy")
    regions = commands.add_parser("regions", help="backup regions nearest first (buckets regions DE | 48.1,11.6)")
    regions.add_argument("location", help="ISO country code or lat,lon")


def _hub_config(args):
    """The hub config file named by --config / $BUCKETS_HUB_CONFIG, or None; raises UsageError."""
    if not args.config:
        return None
    from agent.config import ConfigError
    from hub_client.service.config import load_hub_config

    try:
        return load_hub_config(args.config)
    except ConfigError as exc:
        raise UsageError(f"{args.config}: " + "; ".join(exc.problems)) from None


def _client_config(args, config, store):
    """How to dial agents: the command line's TLS/token options when given, else the config
    file's [agents] settings for each host, else plaintext."""
    if config is None or args.ca or args.cert or args.token:
        return client_config_from(args)
    from hub_client.service.server import agent_settings

    return agent_settings(config, store)


def run_hub_command(args) -> int:
    try:
        config = _hub_config(args)
    except UsageError as exc:
        print(f"buckets: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = args.store or os.environ.get("BUCKETS_STORE") or (config.store if config and config.store else None) \
        or default_store()
    try:
        if "://" not in url:
            Path(url).expanduser().parent.mkdir(parents=True, exist_ok=True)
        store = open_store(url)
    except (StoreError, ValueError, ImportError, OSError) as exc:
        print(f"buckets: cannot open the store: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        buckets = load_buckets(Path(args.buckets)) if args.buckets else {}
    except ValueError as exc:
        store.close()
        print(f"buckets: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = MoveSettings(buckets=buckets, precopy_rounds=int(args.precopy_rounds),
                                precopy_stop_bytes=int(args.precopy_stop_bytes))
        if config is not None:
            settings = config.move_settings(buckets)
        leases = lease_settings_from(args)
    except ValueError as exc:
        store.close()
        print(f"buckets: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Hub(store, client_config=_client_config(args, config, store), settings=settings, leases=leases) as hub:
            return _dispatch(hub, args)
    except (MoveInProgress, CopyInProgress, LeaseHeld, LeaseLost) as exc:
        print(f"buckets: {exc}", file=sys.stderr)
        return EXIT_IN_PROGRESS
    except CopyRefused as exc:
        print(f"buckets: copy refused ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.code == "INVALID_ARGUMENT" else EXIT_FAILED
    except JobError as exc:
        print(f"buckets: {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (NotFound, StoreError, UsageError, InvalidArgument) as exc:
        print(f"buckets: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as exc:  # a call outside any move or copy, e.g. projects refresh
        print(f"buckets: {args.command}: agent call failed: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    finally:
        store.close()


def _emit(args, record: dict[str, Any], text: str) -> None:
    print(json.dumps(record, sort_keys=True, default=str) if args.json else text, flush=True)


def _observer(args, key: str = "move_id") -> Callable[[MovelogEntry], None]:
    if args.json:
        return lambda entry: _emit(args, entry_record(entry, key), "")
    return MovelogPrinter().show


def _rpo_record(status) -> dict:
    """The RPO fields of a host's JSON row from its agent's HostStatus (none when not probed)."""
    if status is None:
        return {}
    return {"rpo_seconds": status.rpo_seconds, "max_unprotected_age_seconds": status.max_unprotected_age_seconds,
            "p99_unprotected_age_seconds": status.p99_unprotected_age_seconds,
            "over_rpo_count": status.over_rpo_count,
            "over_rpo": [{"project_id": item.project_id, "unprotected_age_seconds": item.unprotected_age_seconds,
                          "reason": item.reason} for item in status.over_rpo]}


PROBE_DEADLINE = 3.0  # seconds for each host's answer when `buckets hosts` probes them all at once


def probe_hosts(hub: Hub, host_ids: list[str]) -> dict[str, tuple]:
    """``{host_id: (backup status or None, the agent's HostStatus or None)}`` for every host,
    probed in parallel (:meth:`Hub.refresh_host` with one short deadline and no retries)."""
    if not host_ids:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(host_ids)), thread_name_prefix="probe") as pool:
        futures = {host_id: pool.submit(hub.refresh_host, host_id, deadline=PROBE_DEADLINE) for host_id in host_ids}
        return {host_id: future.result() for host_id, future in futures.items()}


def _dispatch(hub: Hub, args) -> int:
    command = args.command
    if command == "hosts":
        if args.action == "add":
            host = hub.add_host(args.id, args.address, args.region, args.status)
            _emit(args, _row(host), f"{host.id} {host.address} {host.region} {host.status}")
            return EXIT_OK
        if args.action == "remove":
            hub.store.get_host(args.id)  # NotFound for an unknown host
            hub.remove_host(args.id)
            _emit(args, {"id": args.id, "removed": True}, f"host {args.id} removed")
            return EXIT_OK
        if args.action == "undrain":
            host = hub.set_host_status(args.id, "running")
            _emit(args, _row(host), f"{host.id} {host.status}")
            return EXIT_OK
        hosts = hub.store.list_hosts()
        # All probes at once, each with one short deadline: an unreachable host costs that
        # deadline once, not once per host.
        probed = {} if args.no_probe else probe_hosts(hub, [h.id for h in hosts])
        for host in hosts:
            backups, answer = probed.get(host.id, (None, None))
            reachable = None if args.no_probe else backups is not None
            backups = backups or hub.store.host_backup_status(host.id)
            host = hub.store.get_host(host.id)
            counts = ({"projects": backups.projects, "dirty": backups.dirty, "up_to_date": backups.up_to_date,
                       "never_backed_up": backups.never_backed_up, "failing": backups.failing,
                       "checked_at": backups.checked_at.isoformat()} if backups is not None else {})
            reach = {None: "", True: "up", False: "UNREACHABLE"}[reachable]
            seen = host.last_seen.strftime("%Y-%m-%d %H:%M:%S") if host.last_seen else "never"
            text = (f"{host.id:<16} {host.address:<22} {host.region:<8} {host.status:<9} {reach:<11} seen {seen}"
                    + (f"  projects {backups.projects}: dirty {backups.dirty}, up to date {backups.up_to_date},"
                       f" failing {backups.failing}" if backups is not None else "")
                    # The RPO figures of the agent's answer now (not stored: none with --no-probe).
                    + (f"  {rpo_summary(answer)}" if answer is not None else "")
                    + "".join(f"\n{line}" for line in (over_rpo_lines(answer) if answer is not None else [])))
            _emit(args, {**_row(host), "reachable": reachable, **counts, **_rpo_record(answer)}, text)
        return EXIT_OK
    if command == "projects":
        if args.action == "add":
            project = hub.add_project(args.id, args.placement, args.region, args.repository)
            _emit(args, _row(project), f"{project.id} on {project.host_id}")
            return EXIT_OK
        if args.action == "refresh":
            project = hub.refresh_project(args.id)
            _emit(args, _row(project), _project_line(project))
            return EXIT_OK
        if args.action == "remove":
            hub.store.get_project(args.id)  # NotFound for an unknown project
            hub.remove_project(args.id)
            _emit(args, {"id": args.id, "removed": True},
                  f"project {args.id} forgotten by the hub (its files and backups are untouched)")
            return EXIT_OK
        for project in hub.store.list_projects(host_id=args.host):
            _emit(args, _row(project), _project_line(project))
        return EXIT_OK
    if command == "move":
        move = hub.move(args.project, args.target, force=args.force, observer=_observer(args),
                        cross_region=args.cross_region, force_target=args.force_target)
        return EXIT_OK if move.status == "succeeded" else EXIT_FAILED
    if command == "moves":
        for move in hub.store.list_moves(project_id=args.project, active=True if args.active else None):
            _emit(args, {**_row(move), "frozen_seconds": move.frozen_seconds},
                  f"{move.id}  {move.project_id}  {move.source_host} → {move.target_host}  "
                  f"{move.status:<9} step {move.step:<12} attempts {move.attempts}" + _frozen_text(move)
                  + (f"  {override_words(move)}" if override_words(move) else "")
                  + (f"  error: {move.error}" if move.error else ""))
        return EXIT_OK
    if command == "metrics":
        sys.stdout.write(exposition(hub.store))
        return EXIT_OK
    if command == "movelog":
        hub.store.get_move(args.move)  # NotFound for an unknown move
        show = _observer(args)
        for entry in follow(hub.store, args.move) if args.follow else hub.store.movelog(args.move):
            show(entry)
        return EXIT_OK
    if command in ("resume", "retry", "cancel-move"):
        observer = _observer(args)
        if command == "resume":
            move = hub.resume(args.move, observer=observer)
        elif command == "retry":
            move = hub.retry(args.move, force=True if args.force else None,
                             force_target=True if args.force_target else None, observer=observer)
        else:
            move = hub.cancel(args.move, observer=observer)
        return EXIT_OK if move.status in ("succeeded", "cancelled") else EXIT_FAILED
    if command == "delete":
        deleted = hub.delete_project(args.project, observer=lambda text: None if args.json else print(text))
        _emit(args, {"project_id": args.project, "deleted": deleted},
              f"project {args.project} deleted" if deleted else f"project {args.project} was already gone")
        return EXIT_OK
    if command == "drain":
        printer = None if args.json else ProgressPrinter()
        report = hub.drain(args.host, concurrency=args.concurrency, observer=printer.show if printer else None)
        for outcome in report.outcomes:
            record = {"host_id": report.host_id, "project_id": outcome.project_id,
                      "state": state_name(outcome.state), "snapshot_id": outcome.snapshot_id,
                      "error": f"{outcome.error.code} {outcome.error.message}".strip()}
            _emit(args, record, f"{outcome.project_id}  {record['state']:<12} "
                                f"{outcome.snapshot_id[:8] or record['error']}")
        if not args.json:
            print(f"{len(report.backed_up)} backed up, {len(report.up_to_date)} up to date, "
                  f"{len(report.failed)} failed")
        return EXIT_OK if not report.failed else EXIT_FAILED
    if command == "force-off":
        losses = hub.force_off(args.host)
        for loss in losses:
            minutes = "never backed up" if loss.loss_minutes is None else f"up to {loss.loss_minutes} min of changes"
            _emit(args, _row(loss), f"{loss.project_id}: {minutes} not backed up")
        if not args.json:  # the JSON lines are the losses only
            placed = len(hub.store.list_projects(host_id=args.host))
            print(f"host {args.host} is off: {placed} project(s) on it, {len(losses)} with changes that may be lost"
                  + ("" if losses else " (every project was backed up after its last change)"), flush=True)
        return EXIT_OK
    if command == "copy":
        (source, source_path), (target, target_path) = project_path(args.source), project_path(args.target)
        copy = hub.copy(source, source_path, target, target_path, on_conflict=args.on_conflict,
                        observer=_observer(args, "copy_id"))
        return EXIT_OK if copy.status == CopyStatus.SUCCEEDED else EXIT_FAILED
    if command == "clone":
        clone = hub.clone(args.project, clone_id=args.clone_id, host_id=args.target,
                          observer=None if args.json else print)
        _emit(args, _row(clone), f"clone {clone.id} of {args.project} on {clone.host_id} ({clone.region})")
        return EXIT_OK
    if command == "copies":
        for copy in hub.store.list_copies(project_id=args.project, blocking=True if args.active else None):
            _emit(args, _row(copy), f"{copy.id}  {copy.source_project}:{copy.source_path} ({copy.source_host}) → "
                                    f"{copy.target_project}:{copy.target_path} ({copy.target_host})  "
                                    f"{copy.status:<9} step {copy.step:<9} attempts {copy.attempts}"
                                    + (f"  error: {copy.error}" if copy.error else ""))
        return EXIT_OK
    if command == "copylog":
        hub.store.get_copy(args.copy)  # NotFound for an unknown copy
        show = _observer(args, "copy_id")
        for entry in follow_copy(hub.store, args.copy) if args.follow else hub.store.copylog(args.copy):
            show(entry)
        return EXIT_OK
    if command in ("resume-copy", "cancel-copy"):
        observer = _observer(args, "copy_id")
        run = hub.resume_copy if command == "resume-copy" else hub.cancel_copy
        copy = run(args.copy, observer=observer)
        return EXIT_OK if copy.status in (CopyStatus.SUCCEEDED, CopyStatus.CANCELLED) else EXIT_FAILED
    if command == "regions":
        try:
            order = order_regions(args.location)
        except ValueError as exc:
            print(f"buckets: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _emit(args, {"location": args.location, "regions": order}, " ".join(order))
        return EXIT_OK
    if command == "refresh":
        answered = hub.refresh_hosts()
        for host_id, up in answered.items():
            reported = [p for p in hub.store.list_projects(host_id=host_id)]
            _emit(args, {"host_id": host_id, "reachable": up, "projects": len(reported)},
                  f"{host_id:<16} {'up' if up else 'UNREACHABLE':<11} {len(reported)} projects placed")
        return EXIT_OK if all(answered.values()) else EXIT_FAILED
    if command == "rescues":
        for rescue in hub.store.list_rescues(project_id=args.project, move_id=args.move):
            _emit(args, {**_row(rescue), "changed": changed_text(rescue)},
                  f"{rescue.created_at.strftime('%Y-%m-%d %H:%M:%S')}  {rescue.project_id}  move {rescue.move_id}  "
                  f"on {rescue.host_id}  snapshot {rescue.snapshot_id[:8]}  {changed_text(rescue)}")
        return EXIT_OK
    if command == "cleanup":
        pending = hub.run_cleanups(observer=_observer(args))
        for move in pending:
            _emit(args, _row(move), f"still pending: {move.id} ({move.project_id} on {move.source_host})")
        return EXIT_OK if not pending else EXIT_FAILED
    return EXIT_USAGE


def _frozen_text(move) -> str:
    """``  frozen 1.23 s, 10485760 B caught up`` for a placed move that froze its source, else ""."""
    seconds = move.frozen_seconds
    if seconds is None:
        return ""
    caught = "" if move.caught_up_bytes is None else f", {move.caught_up_bytes} B caught up"
    return f"  frozen {seconds:.2f} s{caught}"


def _row(item) -> dict[str, Any]:
    return {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in asdict(item).items()}


def _project_line(project) -> str:
    def when(value):
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"

    return (f"{project.id}  on {project.host_id or '-':<16} {project.region:<8} "
            f"last backup {when(project.last_backup)}  last edit {when(project.last_edited)}  "
            f"reported {when(project.reported_at)}")
