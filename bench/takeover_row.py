"""The takeover row of `make bench`: time from a hub process's death to its move resuming in another.

Two agents of their own ("takeover-a", "takeover-b", directory backend, one local repository root
and password shared), a hub store (a throwaway PostgreSQL cluster when this machine can run one,
as in production; else a SQLite file) and one ``buckets-hub work`` process on it, started once.
Each run moves a new small project (12 files of 256 bytes) with ``buckets move`` in a process of
its own, SIGKILLs that process once the move's ``final_backup`` step is recorded (after the
freeze), and measures from the kill to the worker's "lease" entry in the movelog (its claim, made
just before it resumes the move; both clocks are this machine's). The run then waits for the move
to complete and checks the target holds the project's tree. Both processes use the lease of
``--takeover-lease-seconds`` (default 15, the hub's default) with its default heartbeat (a third)
and scan interval (the heartbeat, at most 1 s). Target: lease + 5 s.

Run alone: ``.venv/bin/python bench/takeover_row.py --runs 3 [--lease-seconds 15]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if __name__ == "__main__":  # run alone: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub_client.client import ClientConfig  # noqa: E402
from hub_client.hub import Hub  # noqa: E402
from hub_client.move import ONLINE_STEPS  # noqa: E402
from hub_client.store import MoveStatus, open_store  # noqa: E402
from tests.harness import REPO_ROOT, AgentProcess, create_project, manifest  # noqa: E402

if TYPE_CHECKING:
    from bench.bench import Bench, Figure

REGION = "bench"
DEFAULT_LEASE_SECONDS = 15.0


def _store_url(scratch: Path):
    """(url, description, stop) of the bench's store: PostgreSQL when it can run here, else SQLite."""
    from tests.pgserver import PgServer, pg_unavailable_reason

    if pg_unavailable_reason() is None:
        server = PgServer()
        server.start()
        return server.create_database("takeover"), "PostgreSQL (throwaway cluster)", server.stop
    return f"sqlite://{scratch / 'takeover-hub.sqlite'}", "SQLite", lambda: None


def _agents(scratch: Path, password: str) -> list[AgentProcess]:
    password_file = scratch / "takeover-repo.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{scratch / "takeover-repos"}"\n'
             f'password_file = "{password_file}"\n')
    return [AgentProcess(base=scratch / f"takeover-{name}", extra=extra, host_id=f"takeover-{name}")
            for name in ("a", "b")]


def _wait(predicate, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"takeover row: {what} not reached in {timeout:.0f} s")


def takeover_seconds(hub: Hub, url: str, source: AgentProcess, lease: float, scratch: Path,
                     log=print) -> tuple[float, str, dict]:
    """One run: seconds from the SIGKILL of the hub process moving a new project to the worker's
    claim of the move (see the module's text), the project, and its tree before the move; raises
    RuntimeError when the move does not complete."""
    project_id = create_project(source, files=12, size=256)
    hub.add_project(project_id, "takeover-a", REGION)
    before = manifest(source.home(project_id))
    mover = subprocess.Popen(
        [sys.executable, "-m", "hub_client", "--store", url, "--retries", "3", "--lease-seconds", str(lease),
         "move", project_id, "--to", "takeover-b"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=(scratch / "takeover-mover.log").open("ab"),
        start_new_session=True)
    try:
        def frozen_step():
            move = hub.store.active_move(project_id)
            if move is None or move.step not in ONLINE_STEPS:
                return None
            return move if ONLINE_STEPS.index(move.step) >= ONLINE_STEPS.index("final_backup") else None

        move = _wait(frozen_step, "the move's final_backup step")
        os.killpg(mover.pid, signal.SIGKILL)
        killed = datetime.now(timezone.utc)
    finally:
        mover.kill()
        mover.wait()
    owner = [e.data["owner"] for e in hub.store.movelog(move.id) if e.kind == "lease"][0]
    claim = _wait(lambda: next((e for e in hub.store.movelog(move.id)
                                if e.kind == "lease" and e.data["owner"] != owner), None), "the worker's claim")
    seconds = (claim.time - killed).total_seconds()
    done = _wait(lambda: (m := hub.store.get_move(move.id)).status not in (MoveStatus.RUNNING, MoveStatus.PENDING)
                 and m, "the move's end")
    if done.status != MoveStatus.SUCCEEDED:
        raise RuntimeError(f"takeover row: move {move.id} ended {done.status}: {done.error}")
    log(f"  killed at step {move.step}; claimed by the worker {seconds:.3f} s later; move complete")
    return seconds, project_id, before


def measure_takeover(bench: "Bench", *, figure_type: type["Figure"], lease: float = DEFAULT_LEASE_SECONDS,
                     log_level: str = "info") -> list["Figure"]:
    figure = figure_type(
        "Hub process killed mid-move: death to resume in another", target=lease + 5.0, target_is_absolute=True,
        note=f"SIGKILL of `buckets move` after the freeze to the claim by a `buckets-hub work` process on the "
        f"same store (lease {lease:g} s, heartbeat {lease / 3:g} s, scan {min(1.0, lease / 3):g} s); target lease + 5 s",
    )
    agents = _agents(bench.scratch, bench.password)
    url, kind, stop_store = _store_url(bench.scratch)
    figure.note += f"; store: {kind}"
    worker = None
    try:
        for agent in agents:
            text = agent.config_path.read_text()
            agent.config_path.write_text(text.replace('level = "debug"', f'level = "{log_level}"'))
            agent.start()
        with Hub(open_store(url), client_config=lambda address: ClientConfig(target=address, deadline=60.0)) as hub:
            for agent in agents:
                hub.add_host(agent.config_path.parent.name, f"127.0.0.1:{agent.port}", REGION)
                hub.probe_host(agent.config_path.parent.name)
            worker = subprocess.Popen(
                [sys.executable, "-m", "hub_client.hub_service_cli", "work", "--store", url, "--retries", "3",
                 "--lease-seconds", str(lease)],
                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=(bench.scratch / "takeover-worker.log").open("ab"),
                start_new_session=True)
            for run in range(bench.runs):
                seconds, project_id, before = takeover_seconds(hub, url, agents[0], lease, bench.scratch,
                                                               log=bench.log)
                if manifest(agents[1].home(project_id)) != before:
                    figure.failed = f"the target's tree of {project_id} differs from the source's"
                figure.agent.append(seconds)
            hub.store.close()
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        for agent in agents:
            agent.stop()
        stop_store()
    return [figure]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lease-seconds", type=float, default=DEFAULT_LEASE_SECONDS)
    args = parser.parse_args()
    from bench import Figure  # bench/bench.py: this script's directory is sys.path[0]

    scratch = Path(tempfile.mkdtemp(prefix="buckets-bench-takeover-"))
    bench = SimpleNamespace(scratch=scratch, password="bench-takeover", runs=args.runs,
                            log=lambda text: print(text, file=sys.stderr, flush=True))
    [figure] = measure_takeover(bench, figure_type=Figure, lease=args.lease_seconds)
    samples = ", ".join(f"{s:.2f}" for s in figure.agent)
    print(f"{figure.name}: median {sorted(figure.agent)[len(figure.agent) // 2]:.2f} s (samples {samples}); "
          f"target ≤ {figure.target:g} s: {'met' if figure.meets_target else 'over'}"
          + (f"; FAILED: {figure.failed}" if figure.failed else ""))
    print(figure.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
