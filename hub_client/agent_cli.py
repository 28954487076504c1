"""The operator commands that talk to one agent, shared by both command lines.

``buckets --agent ADDRESS COMMAND`` (hub side, hub_client/cli.py) and ``buckets-agent COMMAND``
(host side, agent/cli.py, the local agent's address taken from its config) build their agent
commands with :func:`add_agent_commands` and run them with :func:`run_agent_command`; only the
address and the way the examples are spelled differ. This module needs nothing but the client
(no store, no boto3), so ``buckets-agent`` stays light.

Output: text for people; with ``--json`` one JSON object per line (protobuf messages in the
proto3 JSON mapping, field names as in the proto, unset fields included; 64-bit integers are
strings there). Long operations draw a live progress bar when stdout is a terminal and print
plain progress lines otherwise (nothing but the final operation with ``--json``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import stat
import sys
import textwrap
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

import grpc
from google.protobuf.json_format import MessageToDict

from hub_client import connection_check
from hub_client.addresses import agent_address
from hub_client.snapshot_paths import PathFormError, home_path, snapshot_path
from hub_client.client import (
    OK_STATES, AgentClient, AgentError, ClientConfig, OperationHandle, RetryPolicy, TlsConfig, state_name,
)
from hub_client.progress import ProgressPrinter, human_bytes
from hub_client.proto.buckets.v1 import agent_pb2 as pb

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IN_PROGRESS = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C while following an operation: the operation itself goes on
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell shows for a tool its reader stopped


def quiet_on_closed_pipe(run: Callable[[], int]) -> int:
    """``run()``'s exit code; when the reader of stdout goes away (``buckets … | head``),
    :data:`EXIT_PIPE_CLOSED` without a traceback. stdout is pointed at /dev/null first, so the
    interpreter's own flush at exit does not raise again."""
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE_CLOSED

EXIT_CODES_HELP = """\
Exit codes (every command of buckets and buckets-agent):
  0  done; an operation ended SUCCEEDED, SUCCEEDED_WITH_WARNINGS or UP_TO_DATE
  1  failed: the operation, move, copy or drain ran and failed (or was cancelled or
     interrupted), or the agent refused it for the state of things (FAILED_PRECONDITION
     such as a frozen project or an existing copy target, RESOURCE_EXHAUSTED, DATA_LOSS);
     cat of a file larger than the agent's read limit (what was read is written)
  2  usage or call error: bad arguments, INVALID_ARGUMENT, an unknown project, snapshot,
     operation or move (NOT_FOUND), UNIMPLEMENTED, the agent or store cannot be reached
     or the caller is not allowed in (the message names the code)
  3  in progress / conflict: another move or copy of the project is active, or the agent
     answered ABORTED because another operation on the project conflicts
  130 interrupted while following an operation (the operation goes on: watch or cancel it)
  141 the reader of the output went away (e.g. `| head`): nothing more was printed"""

# gRPC codes of a refused call that mean "the call itself was wrong or could not be made" (2);
# ABORTED is a conflict (3); every other code refused the operation for the state of things (1).
_CALL_ERRORS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.CANCELLED,
})


def exit_code_of(error: AgentError) -> int:
    """The exit code of a call the agent refused (see EXIT_CODES_HELP)."""
    if error.code is grpc.StatusCode.ABORTED:
        return EXIT_IN_PROGRESS
    return EXIT_USAGE if error.code in _CALL_ERRORS else EXIT_FAILED

# On both CLIs; the host-side ones (HOST_COMMANDS) only on buckets-agent, where drain, delete,
# copy and move mean the local agent (on buckets they are hub commands of the same names).
AGENT_COMMANDS = ("status", "snapshots", "ls", "cat", "backup", "restore", "undo-restore", "verify", "forget",
                  "prune", "ensure", "freeze", "thaw", "operations", "watch", "cancel")
HOST_COMMANDS = ("drain", "delete", "copy", "move")

EXAMPLE_PROJECT = "6f1c2a9e-0b6f-4e2d-9a57-3c8d1e4f7b20"
_CONFLICT = {"fail": pb.FAIL, "overwrite": pb.OVERWRITE, "skip": pb.SKIP}
_ENSURE_MODES = {"none": pb.EnsureProjectRequest.NONE, "auto": pb.EnsureProjectRequest.AUTO,
                 "required": pb.EnsureProjectRequest.REQUIRED}
def _count(value: str) -> int:
    """An argparse ``type``: a whole number 0..2**32-1 (a keep rule's uint32)."""
    if not value.isascii() or not value.isdigit() or int(value) >= 2**32:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number 0..4294967295")
    return int(value)


_KEEP_RULES = {
    "last": "keep the newest N snapshots",
    **{rule: f"keep the newest snapshot of each of the last N {unit}"
       for rule, unit in (("hourly", "hours"), ("daily", "days"), ("weekly", "weeks"), ("monthly", "months"))},
}
_FILE_TYPE = {pb.FileEntry.FILE: "-", pb.FileEntry.DIRECTORY: "d", pb.FileEntry.SYMLINK: "l",
              pb.FileEntry.OTHER: "?"}


class UsageError(Exception):
    """Arguments that parse but make no sense (exit 2)."""


# ---------------------------------------------------------------- options and parsers


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """How to call agents: deadline, bearer token, TLS / mTLS, retries of an unreachable agent."""
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds per call (default 30)")
    parser.add_argument("--token", default=os.environ.get("BUCKETS_TOKEN"),
                        help="bearer token for the agents (default $BUCKETS_TOKEN)")
    parser.add_argument("--ca", type=Path, help="PEM CA of the agents' certificates (enables TLS)")
    parser.add_argument("--cert", type=Path, help="client certificate for mTLS (with --key)")
    parser.add_argument("--key", type=Path, help="client key for mTLS")
    parser.add_argument("--retries", type=int, default=5, help="tries of a call to an unreachable agent")


def client_config_from(args) -> Callable[[str], ClientConfig]:
    """A ClientConfig for an agent address, from the options of :func:`add_connection_options`."""
    tls = TlsConfig(ca_file=args.ca, cert_file=args.cert, key_file=args.key) if (args.ca or args.cert) else None
    retry = RetryPolicy(attempts=max(1, args.retries))

    def config(address: str) -> ClientConfig:
        return ClientConfig(target=address, deadline=args.deadline, retry=retry, tls=tls, token=args.token)

    return config


def add_command(commands, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with ``Example:`` and ``example``."""
    return commands.add_parser(name, help=help, description=textwrap.fill(help, 88, break_on_hyphens=False),
                               epilog=f"Example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{"hosts": ..., "hosts add": ...}``: every subcommand parser of ``parser``, nested ones too."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[name] = child
                found.update({f"{name} {sub}": grand for sub, grand in subcommands(child).items()})
    return found


def attach_examples(parser: argparse.ArgumentParser, examples: dict[str, str]) -> None:
    """Give the subcommands named in ``examples`` (``"hosts add"`` for a nested one) an
    ``Example:`` epilog, and their one-line help as description where they have none."""
    helps: dict[str, str] = {}

    def collect(owner: argparse.ArgumentParser, prefix: str) -> None:
        for action in owner._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    helps[prefix + choice.dest] = choice.help or ""
                for name, child in action.choices.items():
                    collect(child, f"{prefix}{name} ")

    collect(parser, "")
    for path, child in subcommands(parser).items():
        if path in examples:
            child.epilog = f"Example:\n  {examples[path]}"
            child.formatter_class = argparse.RawDescriptionHelpFormatter
            if child.description is None and helps.get(path):
                child.description = textwrap.fill(helps[path], 88, break_on_hyphens=False)


def share_options(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None, *, json: bool = True,
                  agent_help: str | None = None, config_help: str | None = None) -> None:
    """Let the global ``--json`` (and, when helps are given, ``--agent`` / ``--config``) be
    written after the subcommand too, on the subcommands in ``names`` (None: all, nested
    ones too). Their default is SUPPRESS, so the global value stands unless one is given."""
    for path, child in subcommands(parser).items():
        if names is not None and path.split()[0] not in names:
            continue
        if json:
            child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                               help="print one JSON object per line instead of text")
        if agent_help:
            child.add_argument("--agent", default=argparse.SUPPRESS, type=agent_address, help=agent_help)
        if config_help:
            child.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)


def add_agent_commands(commands, *, invocation: str, host_side: bool = False) -> None:
    """Add the agent commands (:data:`AGENT_COMMANDS`; with ``host_side`` also
    :data:`HOST_COMMANDS`) to ``commands``; ``invocation`` starts their examples
    ("buckets --agent 10.0.0.1:50051" or "buckets-agent")."""
    p = EXAMPLE_PROJECT

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return add_command(commands, name, help, f"{invocation} {name} {example}".rstrip())

    status = command("status", "a project's status (present, size, last backup, dirty, frozen, running "
                               "operation), or without PROJECT the host's", p)
    status.add_argument("project", nargs="?", help="project id; none: the host status")

    snapshots = command("snapshots", "list a project's snapshots, newest first", f"{p} --json")
    snapshots.add_argument("project")

    ls = command("ls", "list a path of a snapshot: type and mode, size, mtime, path "
                       "(paths are relative to the snapshot root: project/…, persist/…)", f"{p} latest project/src")
    ls.add_argument("project")
    ls.add_argument("snapshot", help='snapshot id (8+ hex digits) or "latest"')
    ls.add_argument("path", nargs="?", default="", help="project/PATH or persist/PATH as ls shows them (a path "
                                                      "without either is inside project/; default: the root)")
    ls.add_argument("--depth", type=int, default=1, help="levels to list (default 1: the direct children)")

    cat = command("cat", "write a file of a snapshot to stdout, byte for byte",
                  f"{p} 4488a640 project/src/main.py > main.py")
    cat.add_argument("project")
    cat.add_argument("snapshot", help='snapshot id (8+ hex digits) or "latest"')
    cat.add_argument("path", help="file path as ls shows it, e.g. project/src/main.py (src/main.py: the same)")
    cat.add_argument("--max-bytes", type=int, default=0,
                     help="read at most this many bytes (default: the agent's read limit; a larger file exits 1)")

    backup = command("backup", "back up a project, with a live progress bar", p)
    backup.add_argument("project")
    backup.add_argument("--force", action="store_true", help="run the engine even when nothing changed")
    backup.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    restore = command("restore", "restore a snapshot into a project (through staging), or one path of it",
                      f"{p} 4488a640")
    restore.add_argument("project")
    restore.add_argument("snapshot", help='snapshot id or "latest"')
    restore.add_argument("--path", dest="subpath", default="",
                         help="restore only this path of the project, as ls shows it (project/docs/a.md) or "
                              "relative to the home (docs/a.md)")
    restore.add_argument("--to", dest="target_path", default="",
                         help="with --path: where in the home, in either form (default: the same path)")
    restore.add_argument("--on-conflict", choices=sorted(_CONFLICT), default=None,
                         help="with --path, when the target exists (agent default: overwrite)")
    restore.add_argument("--force", action="store_true",
                         help="whole restore of a project with unsaved changes: restore without backing them "
                              "up first (the replaced tree is still kept for undo-restore)")
    restore.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    undo = command("undo-restore", "put back the tree a whole-project restore replaced (kept for the agent's "
                                   "[restore] keep_replaced); the tree it replaces is kept in turn",
                   f"{p} --operation 3f0c9a51-8e2d-4b7a-9c61-0d4e5f6a7b8c")
    undo.add_argument("project")
    undo.add_argument("--operation", default="",
                      help="the restore (or undo) to undo; default: the newest one still kept")
    undo.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    verify = command("verify", "check a project's repository (structure; --read-data-subset also reads data), "
                     "or with --tree/--counts that the live trees on the host equal a snapshot",
                     f"{p} --read-data-subset 10%")
    verify.add_argument("project")
    what = verify.add_mutually_exclusive_group()
    what.add_argument("--read-data-subset", default="", help='e.g. "1/5" or "10%%"')
    what.add_argument("--tree", metavar="SNAPSHOT", default="",
                      help="compare every entry of the live home and persist with this snapshot")
    what.add_argument("--counts", metavar="SNAPSHOT", default="",
                      help="compare the live trees' entry count and bytes with this snapshot's")
    verify.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    ensure = command("ensure", "make sure a project exists on the host: create it, restoring its newest "
                               "backup into a missing or empty home (mode auto)", f"{p} --mode required")
    ensure.add_argument("project")
    ensure.add_argument("--mode", choices=sorted(_ENSURE_MODES), default="auto",
                        help="none: create empty; auto (default): restore the newest backup if there is one; "
                             "required: fail without a backup")
    ensure.add_argument("--snapshot", default="", help="auto/required: restore exactly this snapshot")
    ensure.add_argument("--quota-bytes", type=int, default=0, help="qgroup limit of a new home (btrfs)")
    ensure.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    forget = command("forget", "forget snapshots of a project: those a keep policy does not keep, or exactly "
                               "the ones named; with --prune also remove the data only they used",
                     f"{p} --keep-daily 7 --keep-weekly 4 --prune --yes")
    forget.add_argument("project")
    forget.add_argument("snapshots", nargs="*", metavar="SNAPSHOT",
                        help="forget exactly these (full ids or prefixes of 8+ digits) instead of a policy")
    for rule in _KEEP_RULES:
        forget.add_argument(f"--keep-{rule}", type=_count, default=0, metavar="N",
                            help=_KEEP_RULES[rule])
    forget.add_argument("--protect", action="append", default=[], metavar="SNAPSHOT",
                        help="never forget this snapshot (repeatable; with a policy)")
    forget.add_argument("--prune", action="store_true", help="then remove the data no snapshot references")
    forget.add_argument("--yes", action="store_true", required=True,
                        help="confirm: forgotten snapshots cannot be restored")
    forget.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    prune = command("prune", "remove from a project's repository the data no snapshot references "
                             "(forgets nothing)", p)
    prune.add_argument("project")
    prune.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    freeze = command("freeze", "make a project read-only on the host (the move lock)", p)
    freeze.add_argument("project")
    thaw = command("thaw", "undo freeze: the project is writable again", p)
    thaw.add_argument("project")

    operations = command("operations", "list the agent's operations, newest first", f"--project {p} --active")
    operations.add_argument("--project", default="", help="only this project's")
    operations.add_argument("--active", action="store_true", help="only pending, running or cancelling ones")
    operations.add_argument("--limit", type=int, default=50, help="at most this many (0: all; default 50)")

    watch = command("watch", "follow an operation's progress to its end", "3f0c9a51-8e2d-4b7a-9c61-0d4e5f6a7b8c")
    watch.add_argument("operation")
    cancel = command("cancel", "cancel an operation", "3f0c9a51-8e2d-4b7a-9c61-0d4e5f6a7b8c")
    cancel.add_argument("operation")

    if not host_side:
        return
    drain = command("drain", "back up every dirty project of this host (the agent's Drain; the hub's "
                             "`buckets drain HOST` also marks the host draining)", "--concurrency 4")
    drain.add_argument("--concurrency", type=int, default=2, help="backups at once (default 2)")
    drain.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    delete = command("delete", "remove a project from this host: home, persist, local snapshots (and with "
                               "--delete-repository its backups). The hub's records are not changed: "
                               "prefer `buckets delete PROJECT --yes` on the hub", f"{p} --yes")
    delete.add_argument("project")
    delete.add_argument("--yes", action="store_true", required=True, help="confirm: this cannot be undone")
    delete.add_argument("--delete-repository", action="store_true",
                        help="also remove every object of the project's repository (its backups)")
    delete.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    copy = command("copy", "copy a file or directory between two projects of this host (CopyFiles, "
                           "reflinks on btrfs); across hosts use `buckets copy` on the hub",
                   f"{p}:data 0b6f3c1e-7d2a-4f51-9c8e-2a4b6d8f0e13:incoming/data --on-conflict skip")
    copy.add_argument("source", metavar="SOURCE_PROJECT:PATH")
    copy.add_argument("target", metavar="TARGET_PROJECT:PATH")
    copy.add_argument("--on-conflict", choices=sorted(_CONFLICT), default="fail",
                      help="when the target path exists: fail (default), overwrite it, or skip what exists")
    copy.add_argument("--no-wait", action="store_true", help="print the operation and return at once")

    move = command("move", "moving a project involves two hosts and the hub's records: this prints the hub "
                           "command to run (`buckets move`) and exits 2", f"{p} --to host-b")
    move.add_argument("project")
    move.add_argument("--to", required=True, dest="target", help="the target host's id in the hub")
    move.add_argument("--force", action="store_true")
    move.add_argument("--to-draining", action="store_true", dest="force_target")


# ---------------------------------------------------------------- running them


def run_agent_command(args, config: ClientConfig, *, name: str, invocation: str) -> int:
    """Run the agent command ``args.command`` against the agent of ``config``; returns the exit
    code. ``name`` prefixes error messages; ``invocation`` starts the commands suggested in them."""
    out = _Output(args, name, invocation)
    if args.command == "move":  # needs no agent
        return out.hub_only_move()
    try:
        with AgentClient(config) as client:
            return _RUNNERS[args.command](client, args, out)
    except AgentError as exc:
        where = ""
        if exc.code is grpc.StatusCode.UNAVAILABLE:
            tls = config.tls
            cause = connection_check.explain(
                config.target, tls_used=tls is not None, ca_file=tls and tls.ca_file, cert_file=tls and tls.cert_file,
                key_file=tls and tls.key_file, server_name=tls and tls.server_name)
            where = f"\n{name}: {cause}" if cause else f" (agent {config.target}; is it running?)"
        print(f"{name}: {exc}{where}", file=sys.stderr)
        running = exc.metadata.get("operation_id") if exc.reason == "OPERATION_CONFLICT" else None
        if running:  # from the ErrorInfo, not the message
            print(f"{name}: follow the running operation with `{invocation} watch {running}`", file=sys.stderr)
        return exit_code_of(exc)
    except UsageError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE


class _Output:
    """Where a command's results go: JSON lines or text on stdout, errors on stderr, and the
    following of an operation to its end."""

    def __init__(self, args, name: str, invocation: str) -> None:
        self.args = args
        self.json = bool(args.json)
        self.name = name
        self.invocation = invocation

    def record(self, record: dict[str, Any], text: str | None) -> None:
        if self.json:
            print(json.dumps(record, sort_keys=True, default=str), flush=True)
        elif text is not None:
            print(text, flush=True)

    def message(self, message, text: str | None) -> None:
        self.record(message_dict(message), text)

    def error(self, text: str) -> None:
        print(f"{self.name}: {text}", file=sys.stderr, flush=True)

    @staticmethod
    def _final(handle: OperationHandle) -> pb.Operation:
        """The ended operation as the agent has it now; as its terminal event told when the agent
        cannot be asked any more (e.g. it was stopped right after interrupting the operation)."""
        try:
            return handle.refresh()
        except AgentError:
            return handle.operation

    def follow(self, handle: OperationHandle) -> int:
        """Follow ``handle`` to its end (a live bar, or plain lines off a terminal; with --json
        only the final Operation); 0 when it ended OK, 1 otherwise. With --no-wait: print the
        operation as it is and return 0."""
        if getattr(self.args, "no_wait", False):
            self.message(handle.operation, operation_line(handle.operation))
            return EXIT_OK
        printer = None if self.json else ProgressPrinter()

        def connection_lost(attempt: int, why: str) -> None:
            if attempt == 1:  # said at once; the reopenings go on quietly
                if printer:
                    printer.end_line()
                self.error(f"lost the connection to the agent ({why}); operation {handle.id} may still be "
                           f"running there. Reconnecting (Ctrl-C stops waiting, not the operation)...")

        try:
            try:
                for event in handle.progress(on_reconnect=connection_lost):
                    if printer:
                        printer.show(event)
            except AgentError as exc:
                if printer:
                    printer.end_line()
                raise AgentError(exc.code, f"{exc.message}; operation {handle.id} may still be running: follow it "
                                           f"with `{self.invocation} watch {handle.id}`", exc.info) from None
            final = self._final(handle)
        except KeyboardInterrupt:
            if printer:
                printer.end_line()
            self.error(f"interrupted; operation {handle.id} goes on without us: follow it with "
                       f"`{self.invocation} watch {handle.id}`, stop it with `{self.invocation} cancel {handle.id}`")
            return EXIT_INTERRUPTED
        self.message(final, None)
        if not self.json:
            for line in summary_lines(final):
                print(line, flush=True)
        if final.state in OK_STATES:
            return EXIT_OK
        self.error(f"{kind_name(final.kind).lower()} {final.id} {state_name(final.state)}"
                   + (f": {final.error.code} {final.error.message}".rstrip() if final.error.code else ""))
        return EXIT_FAILED

    def hub_only_move(self) -> int:
        args = self.args
        hub = (["buckets", "move", args.project, "--to", args.target] + (["--force"] if args.force else [])
               + (["--to-draining"] if args.force_target else []))
        command = shlex.join(hub)
        self.record({"project_id": args.project, "target": args.target, "hub_command": command}, None)
        self.error("a move involves two hosts and the hub's records (placement, move lock, movelog), so only the "
                   f"hub runs it. On the hub, run:\n  {command}")
        return EXIT_USAGE


def _status(client: AgentClient, args, out: _Output) -> int:
    if args.project:
        status = client.project_status(args.project)
        out.message(status, project_status_text(status))
    else:
        status = client.host_status()
        out.message(status, host_status_text(status))
    return EXIT_OK


def _snapshots(client: AgentClient, args, out: _Output) -> int:
    for snapshot in client.snapshots(args.project):
        size = f"{human_bytes(snapshot.size_bytes):>10}" if snapshot.size_bytes else f"{'-':>10}"
        out.message(snapshot, f"{snapshot.short_id}  {_when(snapshot.time)}  {snapshot.purpose:<7} {size}  "
                              f"{' '.join(snapshot.tags)}")
    return EXIT_OK


def _ls(client: AgentClient, args, out: _Output) -> int:
    if args.depth < 1:
        raise UsageError("--depth must be at least 1")
    for entry in client.list_files(args.project, args.snapshot, snapshot_path(args.path), depth=args.depth):
        out.message(entry, file_line(entry))
    return EXIT_OK


def _cat(client: AgentClient, args, out: _Output) -> int:
    if args.max_bytes < 0:
        raise UsageError("--max-bytes must not be negative")
    # ReadFile has no offset: one call returns the first max_bytes (at most the agent's
    # read_file_max_bytes) and says whether the file goes on.
    result = client.read_file(args.project, args.snapshot, snapshot_path(args.path), max_bytes=args.max_bytes)
    if out.json:
        record = {"project_id": args.project, "snapshot_id": args.snapshot, "path": args.path,
                  "size": result.size, "truncated": result.truncated, "binary": result.binary,
                  "content_base64": base64.b64encode(result.content).decode("ascii")}
        if not result.binary:
            record["content"] = result.content.decode("utf-8", errors="replace")
        out.record(record, None)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(result.content)
        sys.stdout.buffer.flush()
    if result.truncated and not args.max_bytes:
        out.error(f"{args.path}: only the first {len(result.content)} of {result.size} bytes were read (the agent's "
                  f"read limit); restore the file instead: {out.invocation} restore {args.project} {args.snapshot} "
                  f"--path PATH-IN-HOME")
        return EXIT_FAILED
    return EXIT_OK


def _backup(client: AgentClient, args, out: _Output) -> int:
    return out.follow(client.backup(args.project, force=args.force))


def _restore(client: AgentClient, args, out: _Output) -> int:
    fields: dict[str, Any] = {}
    try:
        if args.subpath:
            fields["subpath"] = home_path(args.subpath, option="--path")
        if args.target_path:
            fields["target_path"] = home_path(args.target_path, option="--to")
    except PathFormError as exc:
        raise UsageError(str(exc)) from None
    if args.on_conflict:
        fields["on_conflict"] = _CONFLICT[args.on_conflict]
    if args.force:
        fields["force"] = True
    return out.follow(client.restore(args.project, args.snapshot, **fields))


def _undo_restore(client: AgentClient, args, out: _Output) -> int:
    return out.follow(client.undo_restore(args.project, args.operation))


def _verify(client: AgentClient, args, out: _Output) -> int:
    if args.tree or args.counts:
        mode = pb.VerifyRequest.SNAPSHOT_TREE if args.tree else pb.VerifyRequest.COUNTS
        return out.follow(client.verify(args.project, mode=mode, snapshot_id=args.tree or args.counts))
    mode = pb.VerifyRequest.READ_DATA if args.read_data_subset else pb.VerifyRequest.REPOSITORY
    return out.follow(client.verify(args.project, mode=mode, read_data_subset=args.read_data_subset))


def _forget(client: AgentClient, args, out: _Output) -> int:
    keep = {f"keep_{rule}": getattr(args, f"keep_{rule}") for rule in _KEEP_RULES}
    if args.snapshots:
        if any(keep.values()) or args.protect:
            raise UsageError("name snapshots or give a keep policy (--keep-*, --protect), not both")
        return out.follow(client.forget(args.project, snapshot_ids=args.snapshots, prune=args.prune))
    if not any(keep.values()):
        raise UsageError("forget needs snapshots to forget or at least one --keep-* rule above 0 "
                         "(to only remove unreferenced data: prune)")
    return out.follow(client.forget(args.project, prune=args.prune, protected_snapshot_ids=args.protect, **keep))


def _prune(client: AgentClient, args, out: _Output) -> int:
    return out.follow(client.forget(args.project, prune=True))


def _ensure(client: AgentClient, args, out: _Output) -> int:
    return out.follow(client.ensure_project(args.project, mode=_ENSURE_MODES[args.mode],
                                            snapshot_id=args.snapshot, quota_bytes=args.quota_bytes))


def _freeze(client: AgentClient, args, out: _Output) -> int:
    answer = client.freeze(args.project)
    stopped = [{"pid": s.pid, "uid": s.uid, "command": s.command, "action": s.action, "paths": list(s.paths)}
               for s in answer.stopped]
    lines = "".join(f"\n  {s['action']}: pid {s['pid']} {s['command'][:80]}" for s in stopped)
    out.record({"project_id": args.project, "frozen": answer.frozen, "stopped": stopped, "cgroup": answer.cgroup},
               f"project {args.project} {'frozen (read-only)' if answer.frozen else 'NOT frozen'}{lines}")
    return EXIT_OK if answer.frozen else EXIT_FAILED


def _thaw(client: AgentClient, args, out: _Output) -> int:
    frozen = client.thaw(args.project)
    out.record({"project_id": args.project, "frozen": frozen},
               f"project {args.project} {'still frozen' if frozen else 'thawed (writable)'}")
    return EXIT_FAILED if frozen else EXIT_OK


def _operations(client: AgentClient, args, out: _Output) -> int:
    fields: dict[str, Any] = {"project_id": args.project}
    if args.active:
        fields["states"] = [pb.PENDING, pb.RUNNING, pb.CANCELLING]
    operations = client.list_operations(**fields)
    for operation in operations[:args.limit] if args.limit > 0 else operations:
        out.message(operation, operation_line(operation))
    return EXIT_OK


def _watch(client: AgentClient, args, out: _Output) -> int:
    return out.follow(client.operation(args.operation))


def _cancel(client: AgentClient, args, out: _Output) -> int:
    operation = client.operation(args.operation).cancel()
    out.message(operation, operation_line(operation))
    return EXIT_OK


def _drain(client: AgentClient, args, out: _Output) -> int:
    if args.concurrency < 0:
        raise UsageError("--concurrency must not be negative")
    return out.follow(client.drain(concurrency=args.concurrency))


def _delete(client: AgentClient, args, out: _Output) -> int:
    return out.follow(client.delete_project(args.project, delete_repository=args.delete_repository))


def _copy(client: AgentClient, args, out: _Output) -> int:
    (source, source_path), (target, target_path) = project_path(args.source), project_path(args.target)
    return out.follow(client.copy_files(source, source_path, target, target_path,
                                        on_conflict=_CONFLICT[args.on_conflict]))


_RUNNERS: dict[str, Callable[[AgentClient, Any, _Output], int]] = {
    "status": _status, "snapshots": _snapshots, "ls": _ls, "cat": _cat, "backup": _backup, "restore": _restore,
    "undo-restore": _undo_restore,
    "verify": _verify, "forget": _forget, "prune": _prune, "ensure": _ensure, "freeze": _freeze, "thaw": _thaw, "operations": _operations,
    "watch": _watch, "cancel": _cancel, "drain": _drain, "delete": _delete, "copy": _copy,
}


# ---------------------------------------------------------------- rendering (pure)


def message_dict(message) -> dict[str, Any]:
    """A protobuf message as JSON-ready data: proto field names, unset scalars included."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def project_path(value: str) -> tuple[str, str]:
    """``PROJECT:PATH`` → (project, path); raises UsageError."""
    project, sep, path = value.partition(":")
    if not sep or not project:
        raise UsageError(f"{value!r} is not PROJECT:PATH")
    return project, path


def kind_name(kind: int) -> str:
    try:
        return pb.OperationKind.Name(kind).removeprefix("OPERATION_KIND_")
    except ValueError:
        return str(kind)


def _when(stamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def operation_line(operation: pb.Operation) -> str:
    line = (f"{operation.id}  {kind_name(operation.kind):<7} {operation.project_id or '-':<36}  "
            f"{state_name(operation.state):<23} created {_when(operation.created_at)}")
    if operation.error.code:
        line += f"  error: {operation.error.code} {operation.error.message}"
    return line


def summary_lines(operation: pb.Operation) -> list[str]:
    """What a finished operation's summary says, for people (empty when there is nothing)."""
    summary = operation.summary
    lines = []
    parts = []
    if summary.snapshot_id:
        parts.append(f"snapshot {summary.snapshot_id[:8]}")
    if summary.bytes_added:
        parts.append(f"{human_bytes(summary.bytes_added)} added")
    if summary.files_processed:
        parts.append(f"{summary.files_processed} files")
    if summary.duration_seconds:
        parts.append(f"{summary.duration_seconds:.1f}s")
    if parts:
        lines.append("  ".join(parts))
    for outcome in summary.projects:
        detail = outcome.snapshot_id[:8] or f"{outcome.error.code} {outcome.error.message}".strip()
        lines.append(f"{outcome.project_id}  {state_name(outcome.state):<12} {detail}")
    lines.extend(f"warning: {warning}" for warning in summary.warnings)
    return lines


def file_line(entry: pb.FileEntry) -> str:
    """``drwxr-xr-x       4096 2024-05-01 12:00:00 project/src`` (``-> target`` for a symlink)."""
    mode = _FILE_TYPE.get(entry.type, "?") + stat.filemode(entry.mode & 0o7777)[1:]
    size = "-" if entry.type == pb.FileEntry.DIRECTORY else str(entry.size)
    line = f"{mode} {size:>12} {_when(entry.mtime)}  {entry.path}"
    return line + (f" -> {entry.link_target}" if entry.link_target else "")


def project_status_text(status: pb.ProjectStatus) -> str:
    def yes(value: bool) -> str:
        return "yes" if value else "no"

    lines = [f"project     {status.project_id}",
             f"present     {yes(status.present)}" + (f"  ({human_bytes(status.size_bytes)})" if status.present else ""),
             f"dirty       {yes(status.dirty)}",
             f"frozen      {yes(status.frozen)}",
             f"last backup {_when(status.last_backup)}"
             + (f"  snapshot {status.last_backup_snapshot_id[:8]}" if status.last_backup_snapshot_id else ""),
             f"last change {_when(status.last_change)}",
             f"unprotected {human_age(status.unprotected_age_seconds)}"
             + (f"  since {_when(status.unprotected_since)}" if status.HasField("unprotected_since") else "")
             + (f"  OVER RPO: {status.over_rpo_reason.replace('_', ' ')}" if status.over_rpo else "")]
    if status.last_restore.snapshot_id:
        lines.append(f"restored    {_when(status.last_restore.time)}  snapshot {status.last_restore.snapshot_id[:8]}")
    if status.running_operation.id:
        lines.append(f"running     {operation_line(status.running_operation)}")
    if status.last_error.code:
        lines.append(f"last error  {_when(status.last_error_time)}  {status.last_error.code} {status.last_error.message}")
    if status.repository_location:
        lines.append(f"repository  {status.repository_location}")
    return "\n".join(lines)


def human_age(seconds: float) -> str:
    """``0 s``, ``45 s``, ``12 min``, ``3.2 h``, ``2.1 d``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def rpo_summary(status: pb.HostStatus) -> str:
    """``RPO 1.0 h: max age 12 min, p99 3 min, 2 over`` (``RPO none: ...`` when none is set)."""
    target = human_age(status.rpo_seconds) if status.rpo_seconds else "none"
    return (f"RPO {target}: max age {human_age(status.max_unprotected_age_seconds)}, "
            f"p99 {human_age(status.p99_unprotected_age_seconds)}, {status.over_rpo_count} over")


def over_rpo_lines(status: pb.HostStatus) -> list[str]:
    """One line per project over the RPO: id, age, reason; and how many are not listed."""
    lines = [f"  {item.project_id}  unprotected {human_age(item.unprotected_age_seconds):>8}  "
             f"{item.reason.replace('_', ' ')}" for item in status.over_rpo]
    if status.over_rpo_count > len(status.over_rpo):
        lines.append(f"  ... and {status.over_rpo_count - len(status.over_rpo)} more")
    return lines


def host_status_text(status: pb.HostStatus) -> str:
    return "\n".join([
        f"host        {status.host_id}  (engine {status.engine}, backend {status.backend})",
        f"projects    {status.projects}: dirty {status.dirty}, up to date {status.up_to_date}, "
        f"never backed up {status.never_backed_up}",
        f"rpo         {rpo_summary(status)}",
        *over_rpo_lines(status),
        f"operations  running {status.running_operations}, queued {status.queued_operations}",
        f"disk        {human_bytes(status.disk_free_bytes)} free of {human_bytes(status.disk_total_bytes)}",
        f"memory      {human_bytes(status.memory_available_bytes)} available of "
        f"{human_bytes(status.memory_total_bytes)}",
    ])
