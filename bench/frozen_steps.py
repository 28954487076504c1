"""The frozen window per step, new flow only: a throwaway-sized companion of the frozen-window
rows (bench/frozen_rows.py) for before/after comparisons of one change.

Same set-up as those rows (two agents "frozen-a" → "frozen-b", directory backend, rustic, one
local repository root, a hub on SQLite; ~1 MB files unless ``--files`` says otherwise; 1% of
the bytes rewritten right before the freeze, taken out of the window), but: the new flow only,
no raw side, sizes and file counts given, and per run a line of the movelog's step seconds and
of the agents' engine runs inside the window (from their logs). The tree under test is the one
this script is run from (``PYTHONPATH`` and the working directory), so one copy of it measures
two checkouts side by side:

    cd CHECKOUT && PYTHONPATH=CHECKOUT .venv/bin/python bench/frozen_steps.py \
        --sizes 100,4000 --runs 3 --scratch /tmp/x [--trees /tmp/trees]

Prints one JSON object per run on stdout (``label``, size, files, window, steps, engine runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path[0] = os.getcwd()  # the checkout under test, not bench/ (whose bench.py would shadow the package)

from bench.bench import generate_tree  # noqa: E402
from bench.frozen_rows import FROZEN_STEPS, _move_once, files_for  # noqa: E402
from bench.move_row import frozen_window, step_seconds  # noqa: E402,F401
from hub_client.client import ClientConfig  # noqa: E402
from hub_client.hub import Hub  # noqa: E402
from hub_client.store import open_store  # noqa: E402
from tests import tools  # noqa: E402
from tests.harness import AgentProcess  # noqa: E402

REGION = "frozen"


class _Quiet:
    """What _move_once needs of a Bench: log and settle."""

    def __init__(self, agents: list[AgentProcess]) -> None:
        self._agents = agents

    def log(self, message: str) -> None:
        print(f"[frozen_steps {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def settle(self) -> None:
        for agent in self._agents:
            left = agent.staging_after_cleanup(timeout=120)
            if left:
                raise RuntimeError(f"the agent did not remove its restore staging: {left}")
        os.sync()


def _engine_runs(agent: AgentProcess, start: datetime, end: datetime) -> list[dict]:
    """The agent's engine processes (argv's action, seconds) that started inside [start, end],
    its operations and calls (but progress streams and GetOperation) that ended inside it (their
    seconds); each with ``at``, the seconds from ``start`` to its end."""
    runs = []
    started: dict[int, tuple[float, str]] = {}
    for event in agent.log_events():
        stamp = event.get("timestamp") or event.get("time") or ""
        try:
            moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            continue
        if moment.tzinfo is None and start.tzinfo is not None:
            moment = moment.replace(tzinfo=start.tzinfo)
        if not (start <= moment <= end):
            continue
        at = round((moment - start).total_seconds(), 3)
        if event.get("event") == "process.start":
            argv = event.get("argv") or []
            words = [a for a in argv[1:] if not str(a).startswith("-") and "/" not in str(a)]
            started[event.get("pid")] = (moment.timestamp(), " ".join(str(w) for w in words[:2]))
        elif event.get("event") == "operation.finished":
            runs.append({"what": f"op {event.get('kind')}", "seconds": event.get("duration"), "at": at})
        elif event.get("event") == "rpc" and event.get("method") not in ("StreamProgress", "GetOperation"):
            runs.append({"what": f"rpc {event.get('method')}", "seconds": event.get("duration"), "at": at})
        elif event.get("event") == "process.exit" and event.get("pid") in started:
            began, what = started.pop(event.get("pid"))
            runs.append({"what": what, "seconds": round(moment.timestamp() - began, 3), "at": at})
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,4000", help="project sizes in MB, comma-separated")
    parser.add_argument("--files", default="", help="file counts per size (default ~1 MB files)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--whole", action="store_true",
                        help="every step of the move and the engine runs from its start, not the frozen window's only")
    parser.add_argument("--label", default=os.path.basename(os.getcwd()))
    parser.add_argument("--scratch", required=True, help="agents, repository, hub (removed at the end)")
    parser.add_argument("--trees", default="", help="where the generated trees are kept between invocations "
                        "(default: in the scratch dir, removed with it)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(c) for c in args.files.split(",")] if args.files else [files_for(s) for s in sizes]
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    password_file = scratch / "repo.password"
    password_file.write_text("bench-password\n")
    password_file.chmod(0o600)
    extra = (f'rustic_binary = "{tools.require_tool("rustic")}"\n[repository]\nkind = "local"\n[repository.local]\n'
             f'root = "{scratch / "repos"}"\npassword_file = "{password_file}"\n')
    agents = [AgentProcess(base=scratch / f"frozen-{name}", extra=extra, host_id=f"frozen-{name}", engine="rustic")
              for name in ("a", "b")]
    for agent in agents:
        agent.config_path.write_text(agent.config_path.read_text().replace('level = "debug"', 'level = "info"'))
    store = open_store(f"sqlite://{scratch / 'hub.sqlite'}")
    quiet = _Quiet(agents)
    try:
        for agent in agents:
            agent.start()
        source, target = agents
        with Hub(store, client_config=lambda address: ClientConfig(target=address, deadline=120.0)) as hub:
            for agent in agents:
                hub.add_host(agent.config_path.parent.name, f"127.0.0.1:{agent.port}", REGION)
                hub.probe_host(agent.config_path.parent.name)
            for size_mb, files in zip(sizes, counts):
                template = Path(args.trees or scratch) / f"tree-{size_mb}-{files}"
                if not template.exists():
                    quiet.log(f"generating {size_mb} MB in {files} files")
                    generate_tree(template, total_bytes=size_mb * 1_000_000, files=files)
                for run in range(args.runs):
                    seconds, frozen, caught_up, changed, steps = _move_once(quiet, hub, store, source, target,
                                                                             template)
                    window = {s: round(v, 3) for s, v in steps.items()
                              if args.whole or s in FROZEN_STEPS}
                    move = store.list_moves()[0]
                    entries = store.movelog(move.id)
                    freeze = (entries[0].time if args.whole and entries else
                              next((e.time for e in entries if e.kind == "step" and e.message == "freeze"), None))
                    done = next((e.time for e in entries if e.kind == "complete"), None)
                    runs = {}
                    if freeze is not None and done is not None:
                        runs = {agent.config_path.parent.name: _engine_runs(agent, freeze, done) for agent in agents}
                    print(json.dumps({"label": args.label, "size_mb": size_mb, "files": files, "run": run + 1,
                                      "move": round(seconds, 3), "window": round(frozen, 3), "steps": window,
                                      "caught_up_mb": round(caught_up / 1e6, 2), "changed_mb": round(changed / 1e6, 2),
                                      "engine_runs": runs}), flush=True)
                if not args.trees:
                    shutil.rmtree(template, ignore_errors=True)
    finally:
        for agent in agents:
            agent.stop()
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
