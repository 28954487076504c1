"""`make demo`: the main job end to end on the agent's embedded default.

Starts `buckets-agent serve` on the embedded default (local repository,
directory projects) under a scratch BUCKETS_HOME, with one change: a config
file of two lines makes it listen on a free loopback port (the default
127.0.0.1:50051 may be taken) and write that port to a file. Makes a sample
project, backs it up with live progress, damages it, restores it, proves the
restored tree equals the backed-up one, verifies the repository, prints a
summary and stops the agent with SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hub_client.client import AgentClient, ClientConfig
from hub_client.progress import ProgressPrinter, human_bytes
from hub_client.proto.buckets.v1 import agent_pb2 as pb

PORT_FILE_WAIT = 30.0


def write_config(base: Path) -> Path:
    """A config of the embedded default but for the listener: a free loopback port, written to
    ``agent.port`` beside it (relative paths in a config are relative to its file)."""
    path = base / "demo-agent.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:0"\nport_file = "agent.port"\n')
    return path


def wait_for_port(process: subprocess.Popen, port_file: Path, timeout: float = PORT_FILE_WAIT) -> str:
    """``127.0.0.1:PORT`` once the agent has written its port file; exits the demo when the agent
    dies or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"demo: the agent exited with code {process.returncode} (see its log)")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text.isdigit():
            return f"127.0.0.1:{text}"
        if time.monotonic() > deadline:
            raise SystemExit("demo: the agent did not start in time")
        time.sleep(0.1)


def make_sample_project(home: Path, persist: Path, files: int) -> int:
    """A few thousand files of mixed sizes in nested directories, a symlink, and a small persist/."""
    rng = random.Random(2026)
    total = 0
    for index in range(files):
        directory = home.joinpath(*[f"dir{rng.randrange(12)}" for _ in range(rng.randrange(4))])
        directory.mkdir(parents=True, exist_ok=True)
        size = rng.choice([200, 2_000, 8_000, 40_000])
        data = rng.randbytes(size) if index % 3 else (f"line {index}\n" * (size // 10)).encode()
        (directory / f"file{index:05d}.dat").write_bytes(data)
        total += len(data)
    (home / "README.md").write_text("# sample project\n")
    (home / "latest").symlink_to("README.md")
    persist.mkdir(parents=True, exist_ok=True)
    (persist / "app.sqlite").write_bytes(rng.randbytes(64_000))
    (persist / "settings.json").write_text('{"theme": "dark"}\n')
    return total


def manifest(root: Path) -> dict[str, tuple]:
    result = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            info = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                result[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[key] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
            else:
                result[key] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns,
                               hashlib.sha256(path.read_bytes()).hexdigest())
    return result


def wait_until_serving(process: subprocess.Popen, target: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise SystemExit(f"demo: the agent exited with code {process.returncode} (see its log)")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("demo: the agent did not start in time")
            time.sleep(0.1)


def run_operation(client: AgentClient, title: str, operation: pb.Operation) -> pb.Operation:
    print(f"\n== {title} (operation {operation.id})")
    printer = ProgressPrinter()
    for event in client.progress(operation.id):
        printer.show(event)
    final = client.get_operation(operation.id)
    if final.state not in (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS):
        raise SystemExit(f"demo: {title} ended {pb.OperationState.Name(final.state)}: {final.error.message}")
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="buckets-demo-"))
    env = dict(os.environ, BUCKETS_HOME=str(base))
    agent_log = base / "agent.log"
    print(f"demo: scratch directory {base}; agent log {agent_log}")
    config = write_config(base)
    with open(agent_log, "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--config", str(config)],
                                 env=env, stdout=log, stderr=log)
    try:
        target = wait_for_port(agent, base / "agent.port")
        wait_until_serving(agent, target)
        project_id = str(uuid.uuid4())
        home = base / "projects" / f"project-{project_id}"
        persist = base / "persist" / f"project-{project_id}"
        total = make_sample_project(home, persist, args.files)
        print(f"demo: agent serving on {target}; project {project_id}: {args.files} files, {human_bytes(total)}")

        with AgentClient(ClientConfig(target=target)) as client:
            caps = client.call("GetCapabilities", pb.GetCapabilitiesRequest())
            print(f"demo: engine {caps.engine} {caps.engine_version}, backend {caps.backend}")
            backed_up_home, backed_up_persist = manifest(home), manifest(persist)

            started = time.monotonic()
            backup = run_operation(client, "Backup", client.backup(project_id))
            backup_seconds = time.monotonic() - started
            snapshot_id = backup.summary.snapshot_id

            changed = deleted = 0
            for index, path in enumerate(sorted(home.rglob("*.dat"))):
                if index % 50 == 0:
                    path.write_bytes(b"overwritten by the demo\n")
                    changed += 1
                elif index % 50 == 1:
                    path.unlink()
                    deleted += 1
            (home / "stray-new-file.txt").write_text("not in the backup\n")
            (persist / "settings.json").write_text('{"theme": "light"}\n')
            print(f"\ndemo: changed {changed} files, deleted {deleted}, added 1, edited persist/settings.json")
            assert manifest(home) != backed_up_home

            started = time.monotonic()
            restore = run_operation(client, f"Restore of snapshot {snapshot_id}", client.restore(project_id, snapshot_id))
            restore_seconds = time.monotonic() - started
            home_ok = manifest(home) == backed_up_home
            persist_ok = manifest(persist) == backed_up_persist
            print(f"\ndemo: restored project/ equals the backup: {home_ok}; persist/ equals the backup: {persist_ok}")

            verify = run_operation(client, "Verify (repository check)", client.verify(project_id))
            snapshots = client.snapshots(project_id)

        print("\n== Summary")
        print(f"  snapshot          {snapshot_id} ({len(snapshots)} in the repository)")
        print(f"  backup            {backup.summary.files_processed} files, "
              f"{human_bytes(backup.summary.bytes_processed)} read, {human_bytes(backup.summary.bytes_added)} "
              f"stored, {backup_seconds:.1f} s")
        print(f"  restore           {restore.summary.files_processed} entries, "
              f"{human_bytes(restore.summary.bytes_processed)}, {restore_seconds:.1f} s, via staging + swap")
        print(f"  trees identical   project/ {home_ok}, persist/ {persist_ok} (bytes, modes, mtimes, symlinks)")
        print(f"  verify            {pb.OperationState.Name(verify.state)}")
        if not (home_ok and persist_ok):
            raise SystemExit("demo: FAILED: the restored tree differs from the backup")
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(timeout=30)
                print(f"  agent stopped     exit code {code} after SIGTERM")
            except subprocess.TimeoutExpired:
                agent.kill()
                print("demo: the agent did not stop in time and was killed", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("demo: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
