"""`make bench`: agent vs raw restic wall times (Backup, Restore, a hub move) on the same data; agent load figures.

For one generated tree (default 200 MB in 2,000 files of incompressible bytes,
nested directories, plus a small persist/ location) this prints, per operation,
the median (min-max) wall time through the agent, the same for the raw
``restic`` commands, and their ratio (agent / raw) next to the target (for
the unchanged btrfs backup row: the speed-up raw / agent against a minimum).
Nothing is asserted about timings: the script prints figures and writes them as JSON to
``bench/results/latest.json`` (gitignored) so later work can compare or extend.

What is timed
-------------

Every measured backup (except the unchanged btrfs row below) is a FULL backup
into a NEW, empty repository, on both sides, so no run profits from an earlier
one. The rows come twice: with local
directory repositories, and with S3 repositories on a MinIO server on 127.0.0.1
(``tests/minio_server.py``; a new root in one bucket per run, ``--no-s3`` to skip):

* agent Backup: from sending the ``Backup`` RPC (with a per-run
  ``RepositorySpec``: local path or S3 location, + password) until
  ``StreamProgress`` delivers the terminal event. The agent initialises a missing repository inside its
  backup, so this includes repository initialisation.
* raw backup: ``restic init`` + ``restic backup --json --host H -- projects/project-<id>
  persist/project-<id>`` run with cwd = the agent's base directory. These are
  the very directories the agent backs up (the agent reads them through a
  private bind-mount view named ``project/`` and ``persist/``; raw restic reads
  them by their real relative paths), so both read the same bytes and inodes.
  ``init`` is inside the raw timing to match the agent.
* agent Restore: from sending the ``Restore`` RPC for the snapshot just made
  until the terminal event; the agent restores into staging and swaps the
  staged trees into the project before it ends. It removes the old trees after
  answering, in the background; every timed step waits for that to end first
  (``settle``), so their removal does not land in the next step's timing.
* raw restore: ``restic restore --target EMPTYDIR -- SNAP`` of the raw snapshot.

These four rows run once per engine (``--engines``, default all of ``tests/engines.py``
``ENGINES``: rustic 0.11.4, restic 0.18.1, Debian's restic 0.14): the agent is restarted with
``engine = "<driver>"`` and that binary, and the raw side runs the same binary's CLI
(``bench/raw_engines.py``: for rustic ``backup --init --json`` in one process, as the agent's
rustic does, and ``restore -- SNAP TARGET``; an S3 repository through a profile, rustic having
no command-line options for it). Under the table the fastest engine of each row is named.

Two more rows run on a btrfs filesystem on a loop device (``tests/btrfsfs.py``:
one :class:`LoopBtrfs` per invocation, stopped at exit; skipped with the reason
printed when this machine cannot make one, or with ``--no-btrfs``). A second
agent runs there with ``backend = "btrfs"`` and its base directory on the
mount; its project is made with ``EnsureProject`` (two subvolumes) and filled
with the same generated tree. Raw restic reads the same subvolumes by their
paths relative to that agent's base directory, as above.

* Backup, unchanged btrfs project: the agent's ``Backup`` RPC WITHOUT force on
  a project already backed up into the same repository and not changed since.
  The agent compares the subvolume generations with the ones recorded at that
  backup and answers ``UP_TO_DATE`` without running restic (the bench checks
  the state, the snapshot id and that no restic process started). Raw side:
  ``restic backup --json`` (no init) of the same unchanged tree into a
  repository that already holds a backup of it, so restic scans with a parent
  (the bench checks that it found every file unmodified). The two repositories
  are made once per invocation (untimed) and reused by every run of this row;
  ``--unchanged-runs`` runs. The figure is the speed-up raw / agent; its target
  is a minimum (``≥ 50×``), not the usual maximum ratio.
* Restore (btrfs, staging + swap): per run a new local repository and an
  untimed full backup on each side, then the timed agent ``Restore`` (fresh
  staging subvolumes, swap; the old subvolumes deleted after it answered) vs the timed ``restic
  restore --target EMPTYDIR`` with EMPTYDIR on the same btrfs filesystem.

One more row moves a project between two agents through the hub (``bench/move_row.py``: a new
project with a copy of the same tree per run, moved from one agent to another that shares its
repository root) against raw ``restic init`` + ``backup`` + ``restore`` of the same tree; its
target is a ratio of 1.2 (``--no-move`` to skip).

The load rows (``bench/load_rows.py``, ``--no-load`` to skip) come last in the same table. They
are figures of the agent alone, with no raw side and no target, each the median (min-max) of
``--load-runs`` runs: Drain throughput (projects per second) with concurrency 1, 2 and 4 over
``--load-projects`` small projects (default 200, ``--quick`` 40), 100 concurrent StreamProgress
watchers on one backup (whether each got every event, and the time from the terminal event to
the last watcher), the GetProjectStatus rate from 1 and 8 client threads, and the agent process's
RSS and CPU when idle and under those loads. Two more agents run for them.

Both sides use a restic cache directory of their own (the agent its state dir's
``cache/``, raw restic one under the scratch dir, for the btrfs rows one on the
btrfs mount) and the same restic binary. Repositories are always local
directories in the scratch dir (or S3). As root the scratch dir is a journaled ext4 on a loop
device made for the run (``--scratch-fs``): an ext4 without a journal, as some machines' /tmp is,
makes file creation after mass deletions several times dearer (tests/btrfsfs.LoopExt4).
Page cache is not dropped; instead the order (agent first / raw first)
alternates per run, and min and max are reported next to the median. Before
every timed step ``sync`` writes back what earlier steps left dirty (untimed;
``--no-sync`` to skip), so one step's writeback does not land in the next
step's time. One unmeasured warm-up round runs first (``--warmup``).

Measurements are a list of functions (:data:`MEASUREMENTS`), each taking the
:class:`Bench` context and returning :class:`Figure` rows (samples of both
sides); add a function there to add figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hub_client.proto.buckets.v1 import agent_pb2 as pb  # noqa: E402
from tests.btrfsfs import LoopBtrfs, LoopExt4, btrfs_unavailable_reason, ext4_unavailable_reason  # noqa: E402
from tests.harness import AgentProcess, config_text, new_id  # noqa: E402

try:  # bench/ is sys.path[0] when this file runs as a script (make bench)
    import raw_engines as rawe  # noqa: E402
except ImportError:  # imported from the repository root (tests)
    from bench import raw_engines as rawe  # noqa: E402

if TYPE_CHECKING:
    from tests.minio_server import MinioServer as S3Server


def s3_server_class():
    """THE one place that names the bench's S3 server: switching servers is this import.
    Any class with the interface of ``tests.minio_server.MinioServer`` (``endpoint``, ``access_key_id``,
    ``secret_access_key``, ``region``, ``start()``, ``stop()``, ``client()``, a ``log_path`` keyword)."""
    from tests.minio_server import MinioServer as server  # MinIO and boto3 only when the S3 rows run

    return server

TARGET_RATIO = 1.05
# The engine of the rows that do not run once per engine (move, btrfs, load: their agents run
# `engine = "restic"` with the restic on PATH) and of the raw side by default: tests/engines.py's id.
DEFAULT_ENGINE_ID = "restic-0.14-debian"
# The unchanged-btrfs-project backup row: a minimum speed-up (raw / agent), not a maximum ratio.
TARGET_UNCHANGED_SPEEDUP = 50.0
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "latest.json"
RPC_TIMEOUT = 3600.0
SUCCESS = (pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS)
S3_BUCKET = "buckets-bench"


# --------------------------------------------------------------------------
# Figures and the bench context
# --------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table: samples (seconds) of the agent and of raw restic for one operation."""

    name: str
    agent: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    target: float | None = TARGET_RATIO
    note: str = ""
    # Further per-run samples worth keeping in the JSON (e.g. the agent's own job duration).
    extra: dict[str, list[float]] = field(default_factory=dict)
    # False: ``target`` is a maximum of agent / raw (the usual rows). True: ``target`` is a
    # minimum of the speed-up raw / agent (rows where the agent must be much faster than restic).
    target_is_speedup: bool = False
    # True: ``target`` is a maximum of the agent median itself, in ``unit`` (the frozen-window
    # rows: seconds frozen, or a growth factor); the raw column is then only for comparison.
    target_is_absolute: bool = False
    # What the agent samples are: "s" (seconds, the agent-vs-raw rows) or the unit of a load row
    # (bench/load_rows.py: "projects/s", "calls/s", "events", "MiB", "%"), which has no raw side.
    unit: str = "s"
    # The engine this row ran on (an id of tests/engines.py ENGINES, e.g. "rustic-0.11.4").
    engine: str = ""
    # Set when the measurement found a fault it reports rather than raises (e.g. a progress watcher
    # that missed events): the table shows "FAILED: <this>" instead of the figure.
    failed: str = ""
    # Text for the agent column instead of "median (min–max)" (e.g. the fan-out's event counts).
    cell: str = ""

    @property
    def ratio(self) -> float | None:
        """agent / raw of the medians."""
        if not self.agent or not self.raw:
            return None
        raw = statistics.median(self.raw)
        return statistics.median(self.agent) / raw if raw > 0 else None

    @property
    def speedup(self) -> float | None:
        """raw / agent of the medians."""
        if not self.agent or not self.raw:
            return None
        agent = statistics.median(self.agent)
        return statistics.median(self.raw) / agent if agent > 0 else None

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        if self.target_is_speedup:
            speedup = self.speedup
            return None if speedup is None else speedup >= self.target
        if self.target_is_absolute:
            return statistics.median(self.agent) <= self.target if self.agent else None
        ratio = self.ratio
        return None if ratio is None else ratio <= self.target

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "engine": self.engine or None,
            "agent": _stats(self.agent),
            "raw": _stats(self.raw),
            "ratio": self.ratio,
            "speedup": self.speedup,
            "target": self.target,
            # "max_ratio": target is a maximum of agent/raw; "min_speedup": a minimum of raw/agent.
            "target_kind": None if self.target is None else "min_speedup" if self.target_is_speedup
            else "max_agent" if self.target_is_absolute else "max_ratio",
            "meets_target": self.meets_target,
            "unit": self.unit,
            "failed": self.failed or None,
            "cell": self.cell or None,
            "note": self.note,
            "extra": {key: _stats(values) for key, values in self.extra.items()},
        }


def process_cpu(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of process ``pid`` in seconds, from /proc/PID/stat: its own
    CPU time and that of the children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    # After the ")" the fields start at field 3 (state): utime..cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(value) / tick for value in fields[11:15])
    return utime + stime, cutime + cstime


def children_cpu() -> float:
    """CPU seconds (user + sys) of this process's waited-for children so far (the raw engines)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stats(samples: list[float]) -> dict:
    if not samples:
        return {"samples": []}
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


@dataclass
class BtrfsSide:
    """The btrfs part of an invocation: the loop-device filesystem, an agent with ``backend = "btrfs"``
    whose base dir is on it, and that agent's project (subvolumes made by EnsureProject, same tree)."""

    filesystem: LoopBtrfs
    agent: AgentProcess
    project_id: str


@dataclass
class Bench:
    """What a measurement gets: a running agent with one generated project, a scratch dir, the settings."""

    agent: AgentProcess
    project_id: str
    scratch: Path
    runs: int
    warmup: int
    restic: str
    password: str
    tree_bytes: int
    tree_files: int

    sync: bool = True
    # The S3 server of this invocation (MinIO on 127.0.0.1, bucket S3_BUCKET made), None with --no-s3.
    s3: S3Server | None = None
    # Raw restic's cache dir and where raw restores go; None: in the scratch dir (see on_btrfs()).
    raw_cache: Path | None = None
    restore_root: Path | None = None
    # The btrfs side (None when skipped; btrfs_skipped then says why) and the runs of the
    # unchanged-backup row (its agent side takes milliseconds, so it gets more runs).
    btrfs: BtrfsSide | None = None
    btrfs_skipped: str = ""
    unchanged_runs: int = 10
    move: bool = True
    # The takeover row (bench/takeover_row.py): the lease of its hub processes; None with --no-takeover.
    takeover_lease: float | None = 15.0
    # The hub API rows (bench/hub_api_rows.py); False with --no-hub-api.
    hub_api: bool = True
    # The frozen-window rows' project sizes in MB (bench/frozen_rows.py; empty with --no-frozen) and runs.
    frozen_sizes: tuple[int, ...] = ()
    frozen_runs: int = 1
    agent_log_level: str = "info"
    # The load rows' scale (bench/load_rows.py LoadSettings); None with --no-load.
    load: object | None = None
    # The scale rows' settings (bench/scale_rows.py ScaleSettings); None with --no-scale.
    scale: object | None = None
    # The engine of the raw side (and of the agent, see switch_engine); None: restic at ``restic``.
    engine: rawe.RawEngine | None = None
    # The engines of the backup/restore rows (--engines), and the wanted ones not on this machine.
    engines: list[rawe.RawEngine] = field(default_factory=list)
    engines_skipped: list[str] = field(default_factory=list)

    @property
    def raw_engine(self) -> rawe.RawEngine:
        return self.engine or rawe.RawEngine(DEFAULT_ENGINE_ID, rawe.RESTIC, self.restic)

    def on_btrfs(self) -> Bench:
        """This bench with the btrfs agent and project; raw restic's cache and restore targets on the
        btrfs mount too (repositories stay local directories in the scratch dir)."""
        if self.btrfs is None:
            raise RuntimeError(f"no btrfs in this bench ({self.btrfs_skipped or 'not set up'})")
        mount = self.btrfs.filesystem.mountpoint
        return dataclasses.replace(
            self,
            agent=self.btrfs.agent,
            project_id=self.btrfs.project_id,
            raw_cache=mount / "raw-cache",
            restore_root=mount / "raw-restore",
        )

    def settle(self) -> None:
        """Before each timed step: let the agent end its background removal of a restore's old
        trees, and write back what earlier steps left dirty (``sync``), so that neither lands in
        the next step's timing. Caches stay warm."""
        left = self.agent.staging_after_cleanup(timeout=120)
        if left:
            raise RuntimeError(f"the agent did not remove its restore staging: {left}")
        if self.sync:
            os.sync()

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def fresh_dir(self, prefix: str) -> Path:
        """A path under the scratch dir that does not exist yet."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch)) / "d"

    def fresh_restore_dir(self) -> Path:
        """A path that does not exist yet for a raw restore: under ``restore_root`` (e.g. on the
        btrfs mount) or else under the scratch dir. Remove its parent afterwards."""
        if self.restore_root is None:
            return self.fresh_dir("raw-restore-")
        self.restore_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="raw-restore-", dir=self.restore_root)) / "d"

    # ------------------------------------------------------------ agent side

    def repository_spec(self, path: Path) -> pb.RepositorySpec:
        return pb.RepositorySpec(local=pb.LocalRepository(path=str(path)), password=self.password)

    def s3_repository_spec(self, root: str) -> pb.RepositorySpec:
        """The agent's spec of the repository under ``root`` in the bench bucket (the raw side: :meth:`s3_url`)."""
        s3 = self._s3()
        return pb.RepositorySpec(
            s3=pb.S3Repository(
                endpoint=s3.endpoint,
                region=s3.region,
                bucket=S3_BUCKET,
                root=root,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key,
            ),
            password=self.password,
        )

    def run_operation(
        self, start: Callable[[], pb.Operation], *, accept: tuple[int, ...] = SUCCESS
    ) -> tuple[float, pb.Operation]:
        """Send an op RPC and consume its progress stream; return (seconds until the terminal event, final op).

        Raises unless the operation ended in one of the ``accept`` states."""
        stub = self.agent.stub
        self.settle()
        began = time.perf_counter()
        operation = start()
        ended = None
        stream = stub.StreamProgress(
            pb.StreamProgressRequest(operation_id=operation.id, from_seq=0), timeout=RPC_TIMEOUT
        )
        for update in stream:
            if update.HasField("event") and update.event.terminal and ended is None:
                ended = time.perf_counter()
        if ended is None:
            raise RuntimeError(f"the progress stream of {operation.id} ended without a terminal event")
        final = stub.GetOperation(pb.GetOperationRequest(operation_id=operation.id), timeout=30)
        if final.state not in accept:
            expected = " or ".join(pb.OperationState.Name(state) for state in accept)
            raise RuntimeError(
                f"operation {operation.id} ended {pb.OperationState.Name(final.state)}, expected {expected}: "
                f"{final.error.code} {final.error.message}\n{self.agent.log_tail()}"
            )
        return ended - began, final

    def _spec(self, repository: Path | pb.RepositorySpec) -> pb.RepositorySpec:
        return repository if isinstance(repository, pb.RepositorySpec) else self.repository_spec(repository)

    def agent_backup(
        self, repository: Path | pb.RepositorySpec, *, force: bool = True, accept: tuple[int, ...] = SUCCESS
    ) -> tuple[float, pb.Operation]:
        """``repository``: a local path or a full spec (e.g. :meth:`s3_repository_spec`). ``force=False``
        lets the agent skip an unchanged project (then pass ``accept=(pb.UP_TO_DATE,)``)."""
        spec = self._spec(repository)
        return self.run_operation(
            lambda: self.agent.stub.Backup(
                pb.BackupRequest(request_id=new_id(), project_id=self.project_id, repository=spec, force=force),
                timeout=60,
            ),
            accept=accept,
        )

    def agent_cpu(self, since: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
        """(CPU seconds of the agent process itself, of its children it has reaped: the engines),
        user + sys from /proc, minus ``since``."""
        own, children = process_cpu(self.agent.process.pid)
        return own - since[0], children - since[1]

    def agent_engine_starts(self) -> int:
        """How many restic processes the agent has started so far, from its log (``process.start``)."""
        return sum(1 for argv in self.agent.started_argvs() if any(a.endswith("restic") for a in argv))

    def agent_restore(self, repository: Path | pb.RepositorySpec, snapshot_id: str) -> tuple[float, pb.Operation]:
        spec = self._spec(repository)
        return self.run_operation(
            lambda: self.agent.stub.Restore(
                pb.RestoreRequest(
                    request_id=new_id(), project_id=self.project_id, repository=spec, snapshot_id=snapshot_id
                ),
                timeout=60,
            )
        )

    # ------------------------------------------------------------ raw side

    def raw_env(self, repository: rawe.RawRepository | str | None = None) -> dict[str, str]:
        """The raw engine's environment: a minimal base plus the password (and for restic and S3 the
        keys and region). ``repository`` as a string: a restic ``s3:`` URL of the bench's server."""
        home = self.scratch / "raw-home"
        tmp = self.scratch / "raw-tmp"
        home.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
        }
        if isinstance(repository, str) and repository.startswith("s3:"):
            repository = self.s3_location("-")  # only its keys and region are used
        elif isinstance(repository, str) or repository is None:
            repository = Path(repository or ".")
        return rawe.environment(self.raw_engine, repository, self.password, base)

    @property
    def raw_cache_dir(self) -> Path:
        return self.raw_cache or self.scratch / "raw-cache"

    def raw_argv(self, repository: Path | str, *args: str) -> list[str]:
        """restic's argv (the raw side of the restic engines), e.g. for one-off commands."""
        return [self.restic, "-r", str(repository), "--cache-dir", str(self.raw_cache_dir), *args]

    def raw_profile(self, repository: rawe.RawRepository) -> Path | None:
        """For rustic and an S3 repository: the profile a user would write (rustic takes S3 settings
        from a profile only), written now, untimed; None otherwise."""
        if self.raw_engine.driver != rawe.RUSTIC or not isinstance(repository, rawe.S3Location):
            return None
        profiles = self.scratch / "raw-profiles"
        profiles.mkdir(mode=0o700, exist_ok=True)
        path = profiles / f"{repository.root.replace('/', '_')}.toml"
        path.write_text(rawe.rustic_s3_profile(repository))
        return path

    def raw_run(
        self, argv: list[str], *, cwd: Path | None = None, repository: rawe.RawRepository | str | None = None,
        master_key: str | None = None,
    ) -> str:
        """Run one raw command; returns its stdout. Raises on a non-zero exit. ``repository``
        picks the environment (default: the ``-r`` value of ``argv``); ``master_key`` (rustic):
        in ``RUSTIC_KEY``, which rustic takes instead of the password."""
        return self._raw_process(argv, cwd=cwd, repository=repository, master_key=master_key).stdout

    def _raw_process(
        self, argv: list[str], *, cwd: Path | None = None, repository: rawe.RawRepository | str | None = None,
        master_key: str | None = None,
    ) -> subprocess.CompletedProcess:
        if repository is None and "-r" in argv:
            repository = argv[argv.index("-r") + 1]
        env = self.raw_env(repository)
        if master_key is not None:
            env["RUSTIC_KEY"] = master_key
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr[-2000:]}")
        return result

    @property
    def raw_paths(self) -> list[str]:
        """The agent's two roots of the project, relative to the agent's base directory."""
        base = self.agent.base
        return [
            str(self.agent.home(self.project_id).relative_to(base)),
            str(self.agent.persist(self.project_id).relative_to(base)),
        ]

    def raw_backup(self, repository: rawe.RawRepository | str) -> tuple[float, float, str]:
        """A backup into a new repository (restic: ``init`` + ``backup --json``; rustic: ``backup
        --init --json``), all timed; returns (seconds, init seconds, snapshot id).

        ``repository``: a local path or an :class:`raw_engines.S3Location` (a restic ``s3:`` URL too)."""
        seconds, init_seconds, summary = self.raw_backup_summary(repository, init=True)
        return seconds, init_seconds, summary["snapshot_id"]

    def _raw_repository(self, repository: rawe.RawRepository | str) -> rawe.RawRepository:
        if isinstance(repository, str):
            if repository.startswith("s3:"):
                prefix = f"s3:{self._s3().endpoint.rstrip('/')}/{S3_BUCKET}/"
                if not repository.startswith(prefix):
                    raise ValueError(f"not a repository of the bench's bucket: {repository}")
                return self.s3_location(repository[len(prefix):])
            return Path(repository)
        return repository

    def raw_master_key(self, repository: rawe.RawRepository | str) -> str:
        """rustic's master key of ``repository`` (``cat masterkey``, untimed) for
        :meth:`raw_backup_summary`'s ``master_key``."""
        repository = self._raw_repository(repository)
        argv = rawe.masterkey_argv(self.raw_engine, repository, self.raw_cache_dir, self.raw_profile(repository))
        return self.raw_run(argv, repository=repository).strip()

    def raw_backup_summary(self, repository: rawe.RawRepository | str, *, init: bool,
                           master_key: str | None = None) -> tuple[float, float, dict]:
        """[init +] backup with ``--json`` (timed); returns (seconds, init seconds, the summary: restic's
        summary object or rustic's snapshot summary, ``snapshot_id`` in both). Without ``init`` the
        repository must exist; the engine then picks the latest snapshot of the same host and paths
        as the parent (an incremental scan). rustic initialises inside its backup (init seconds 0).
        ``master_key`` (rustic, :meth:`raw_master_key`): the backup skips the password's KDF."""
        repository = self._raw_repository(repository)
        engine = self.raw_engine
        profile = self.raw_profile(repository)
        cache = self.raw_cache_dir
        self.settle()
        began = time.perf_counter()
        if init:
            for argv in rawe.init_argvs(engine, repository, cache, profile):
                self.raw_run(argv, repository=repository)
        init_seconds = time.perf_counter() - began
        stdout = self.raw_run(
            rawe.backup_argv(engine, repository, cache, host=f"project-{self.project_id}", paths=self.raw_paths,
                             init=init, profile=profile),
            cwd=self.agent.base,
            repository=repository,
            master_key=master_key,
        )
        seconds = time.perf_counter() - began
        try:
            summary = rawe.backup_summary(engine, stdout)
        except ValueError as exc:
            raise RuntimeError(f"raw {engine.id} backup: {exc}") from exc
        return seconds, init_seconds, summary

    def raw_restore(self, repository: rawe.RawRepository | str, snapshot_id: str, target: Path, *,
                    over: bool = False, master_key: str | None = None) -> float:
        """A timed restore of ``snapshot_id`` into ``target``; ``over`` and ``master_key`` as
        :func:`raw_engines.restore_argv` and :meth:`raw_run` take them."""
        repository = self._raw_repository(repository)
        engine = self.raw_engine
        profile = self.raw_profile(repository)
        argv = rawe.restore_argv(engine, repository, self.raw_cache_dir, snapshot_id=snapshot_id, target=target,
                                 profile=profile, over=over)
        self.settle()
        began = time.perf_counter()
        result = self._raw_process(argv, repository=repository, master_key=master_key)
        seconds = time.perf_counter() - began
        if not rawe.restore_done(engine, result.stdout, result.stderr):
            raise RuntimeError(f"raw {engine.id} restore did not say it finished:\n{result.stderr[-2000:]}")
        return seconds

    # ------------------------------------------------------------ S3 (never timed)

    def _s3(self) -> S3Server:
        if self.s3 is None:
            raise RuntimeError("no S3 server in this bench (--no-s3)")
        return self.s3

    def s3_url(self, root: str) -> str:
        """restic's name of the repository under ``root`` in the bench bucket (the same the agent builds)."""
        return rawe.restic_location(self.s3_location(root))

    def s3_location(self, root: str) -> rawe.S3Location:
        """The repository under ``root`` in the bench bucket, for the raw side of any engine."""
        s3 = self._s3()
        return rawe.S3Location(
            endpoint=s3.endpoint, region=s3.region, bucket=S3_BUCKET, root=root,
            access_key_id=s3.access_key_id, secret_access_key=s3.secret_access_key,
        )

    def s3_delete(self, root: str) -> int:
        """Remove every object under ``root`` in the bench bucket (keeps the server's disk flat); returns the count."""
        client = self._s3().client()
        deleted = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=root + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):
                client.delete_objects(Bucket=S3_BUCKET, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
            deleted += len(keys)
        return deleted

    # ------------------------------------------------------------ checks (never timed)

    def check_tree(self, what: str, *roots: Path) -> None:
        total_bytes = total_files = 0
        for root in roots:
            size, files = tree_size(root)
            total_bytes += size
            total_files += files
        if (total_bytes, total_files) != (self.tree_bytes, self.tree_files):
            raise RuntimeError(
                f"{what}: found {total_files} files / {total_bytes} bytes, "
                f"expected {self.tree_files} / {self.tree_bytes}"
            )


Measurement = Callable[[Bench], list[Figure]]


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


# A new, empty repository for one round: (what agent_*/raw_* take, untimed cleanup afterwards).
NewRepository = Callable[[], tuple[object, Callable[[], None]]]


def full_backup_and_restore_rounds(
    bench: Bench,
    *,
    kind: str,
    name_suffix: str,
    new_agent_repository: NewRepository,
    new_raw_repository: NewRepository,
) -> list[Figure]:
    """Warm-up + measured rounds of: full backup into a new repository, then restore of that snapshot,
    through the agent and with raw restic (order alternating per round). ``kind`` names the repositories
    in the notes, ``name_suffix`` goes into the row names ("Backup{suffix} (full, new repo)")."""
    engine = bench.raw_engine
    raw_backup = (
        "rustic backup --init --json (init in the same process, as the agent's rustic does)"
        if engine.driver == rawe.RUSTIC else "restic init + restic backup --json"
    )
    backup = Figure(
        f"Backup{name_suffix} (full, new repo)",
        note=f"agent: Backup RPC until the terminal progress event (repository init included); "
        f"raw: {raw_backup}; a new {kind} repository per run",
        engine=engine.id,
    )
    restore = Figure(
        f"Restore{name_suffix} (full)",
        note="agent: Restore RPC until the terminal event (staging, swap; the old tree is removed after it); "
        f"raw: {engine.driver} restore into an empty directory; from the {kind} repository just written",
        engine=engine.id,
    )
    for figure in (backup, restore):
        figure.extra["agent_job_seconds"] = []  # the operation's own duration, as the agent reports it
        # CPU seconds (user + sys) of the engine processes of each side, and of the agent itself:
        # figures a loaded machine inflates far less than wall times (what the engine did, not
        # how long it waited for a core).
        figure.extra["agent_engine_cpu_seconds"] = []
        figure.extra["agent_own_cpu_seconds"] = []
        figure.extra["raw_engine_cpu_seconds"] = []
    if engine.driver == rawe.RESTIC:
        backup.extra["raw_init_seconds"] = []  # the `restic init` part of the raw backup
    home, persist = bench.agent.home(bench.project_id), bench.agent.persist(bench.project_id)

    def agent_round(measured: bool) -> None:
        repository, cleanup = new_agent_repository()
        bench.settle()
        cpu = bench.agent_cpu()
        seconds, operation = bench.agent_backup(repository)
        backup_cpu = bench.agent_cpu(since=cpu)
        bench.log(f"  agent backup  {seconds:8.3f} s  snapshot {operation.summary.snapshot_id}")
        if operation.summary.files_processed != bench.tree_files:
            raise RuntimeError(f"agent backup processed {operation.summary.files_processed} files")
        if measured:
            backup.agent.append(seconds)
            backup.extra["agent_job_seconds"].append(operation.summary.duration_seconds)
            backup.extra["agent_own_cpu_seconds"].append(backup_cpu[0])
            backup.extra["agent_engine_cpu_seconds"].append(backup_cpu[1])
        bench.settle()
        cpu = bench.agent_cpu()
        seconds, restored = bench.agent_restore(repository, operation.summary.snapshot_id)
        restore_cpu = bench.agent_cpu(since=cpu)
        bench.log(f"  agent restore {seconds:8.3f} s")
        bench.check_tree("agent restore", home, persist)
        if measured:
            restore.agent.append(seconds)
            restore.extra["agent_job_seconds"].append(restored.summary.duration_seconds)
            restore.extra["agent_own_cpu_seconds"].append(restore_cpu[0])
            restore.extra["agent_engine_cpu_seconds"].append(restore_cpu[1])
        cleanup()

    def raw_round(measured: bool) -> None:
        repository, cleanup = new_raw_repository()
        cpu = children_cpu()
        seconds, init_seconds, snapshot_id = bench.raw_backup(repository)
        backup_cpu = children_cpu() - cpu
        bench.log(f"  raw backup    {seconds:8.3f} s  snapshot {snapshot_id} (init {init_seconds:.3f} s)")
        if measured:
            backup.raw.append(seconds)
            backup.extra["raw_engine_cpu_seconds"].append(backup_cpu)
            if "raw_init_seconds" in backup.extra:
                backup.extra["raw_init_seconds"].append(init_seconds)
        target = bench.fresh_restore_dir()
        cpu = children_cpu()
        seconds = bench.raw_restore(repository, snapshot_id, target)
        restore_cpu = children_cpu() - cpu
        bench.log(f"  raw restore   {seconds:8.3f} s")
        bench.check_tree("raw restore", *(target / p for p in bench.raw_paths))
        if measured:
            restore.raw.append(seconds)
            restore.extra["raw_engine_cpu_seconds"].append(restore_cpu)
        shutil.rmtree(target.parent)
        cleanup()

    _alternating(bench, bench.runs, agent_round, raw_round)
    return [backup, restore]


def measure_full_backup_and_restore(bench: Bench) -> list[Figure]:
    """Full backup into a new local directory repository, then restore of that snapshot; agent vs raw restic."""

    def new_local(prefix: str) -> NewRepository:
        def make() -> tuple[Path, Callable[[], None]]:
            repository = bench.fresh_dir(prefix)
            return repository, lambda: shutil.rmtree(repository.parent)

        return make

    return full_backup_and_restore_rounds(
        bench,
        kind="local directory",
        name_suffix="",
        new_agent_repository=new_local("agent-repo-"),
        new_raw_repository=new_local("raw-repo-"),
    )


def measure_s3_full_backup_and_restore(bench: Bench) -> list[Figure]:
    """The same against the bench's S3 endpoint: each run a new root (prefix) in one bucket, on both sides.
    Skipped (no rows) with --no-s3."""
    if bench.s3 is None:
        bench.log("  skipped (--no-s3)")
        return []

    def remove(root: str) -> None:
        # Untimed; also checks that the side really wrote its repository into the bucket.
        if not bench.s3_delete(root):
            raise RuntimeError(f"no objects under {S3_BUCKET}/{root} after the round")

    def new_agent() -> tuple[pb.RepositorySpec, Callable[[], None]]:
        root = f"bench/agent-{new_id()}"
        return bench.s3_repository_spec(root), lambda: remove(root)

    def new_raw() -> tuple[rawe.S3Location, Callable[[], None]]:
        root = f"bench/raw-{new_id()}"
        return bench.s3_location(root), lambda: remove(root)

    return full_backup_and_restore_rounds(
        bench,
        kind="S3",
        name_suffix=" S3",
        new_agent_repository=new_agent,
        new_raw_repository=new_raw,
    )


def switch_engine(bench: Bench, engine: rawe.RawEngine) -> Bench:
    """Restart the bench's agent with ``engine`` (``engine = DRIVER`` and its binary, the bench's log
    level; same base dir, same project) and return the bench with that engine on the raw side too
    (and a raw cache dir of that engine's own)."""
    agent = bench.agent
    agent.stop()
    agent.engine = engine.driver
    agent.extra = engine.agent_config_lines()
    agent.config_path.write_text(
        config_text(agent.base, port_file=agent.port_file, limits=agent.limits, extra=agent.extra,
                    engine=agent.engine, backend=agent.backend, host_id=agent.host_id,
                    grace_period=agent.grace_period)
    )
    _configure_log_level(agent, bench.agent_log_level)
    agent.start()
    bench.log(f"agent restarted with engine {engine.id} ({engine.binary})")
    return dataclasses.replace(bench, engine=engine, raw_cache=bench.scratch / f"raw-cache-{engine.id}")


def measure_engines(bench: Bench) -> list[Figure]:
    """The full backup and restore rows, local and S3, once per engine of ``--engines`` (the agent
    restarted with that engine, the raw side that engine's CLI), rows grouped by operation in
    engine order. The agent is given its first configuration back afterwards."""
    original = bench.agent.config_path.read_text()
    original_engine, original_extra = bench.agent.engine, bench.agent.extra
    figures: list[Figure] = []
    try:
        for engine in bench.engines:
            bench.log(f"engine {engine.id}")
            on_engine = switch_engine(bench, engine)
            figures += measure_full_backup_and_restore(on_engine)
            figures += measure_s3_full_backup_and_restore(on_engine)
    finally:
        bench.agent.stop()
        bench.agent.engine, bench.agent.extra = original_engine, original_extra
        bench.agent.config_path.write_text(original)
        bench.agent.start()
    order = {engine.id: index for index, engine in enumerate(bench.engines)}
    names = list(dict.fromkeys(figure.name for figure in figures))
    return sorted(figures, key=lambda figure: (names.index(figure.name), order[figure.engine]))


def fastest_engines(figures: list[Figure]) -> list[dict]:
    """Per operation measured on more than one engine: the engine with the lowest agent median and
    the one with the lowest raw median (rows without samples left out)."""
    by_name: dict[str, list[Figure]] = {}
    for figure in figures:
        if figure.engine and figure.agent and figure.raw and figure.unit == "s":
            by_name.setdefault(figure.name, []).append(figure)
    out = []
    for name, rows in by_name.items():
        if len({row.engine for row in rows}) < 2:
            continue
        agent = min(rows, key=lambda row: statistics.median(row.agent))
        raw = min(rows, key=lambda row: statistics.median(row.raw))
        out.append({
            "operation": name,
            "agent": agent.engine, "agent_median": statistics.median(agent.agent),
            "raw": raw.engine, "raw_median": statistics.median(raw.raw),
        })
    return out


def _alternating(bench: Bench, runs: int, agent_run: Callable[[bool], None], raw_run: Callable[[bool], None]) -> None:
    """``bench.warmup`` unmeasured + ``runs`` measured rounds of both sides, agent first / raw first alternating."""
    total = bench.warmup + runs
    for index in range(total):
        measured = index >= bench.warmup
        label = f"run {index - bench.warmup + 1}/{runs}" if measured else f"warm-up {index + 1}/{bench.warmup}"
        sides = [agent_run, raw_run] if index % 2 == 0 else [raw_run, agent_run]
        bench.log(f"{label} ({'agent' if sides[0] is agent_run else 'raw'} first)")
        for side in sides:
            side(measured)


def measure_btrfs_unchanged_backup(bench: Bench) -> list[Figure]:
    """Backup of an unchanged btrfs project: the agent's generation check (UP_TO_DATE, no restic)
    vs raw restic's incremental scan with a parent. One repository per side for all runs."""
    if bench.btrfs is None:
        bench.log(f"  skipped ({bench.btrfs_skipped})")
        return []
    bench = bench.on_btrfs()
    runs = bench.unchanged_runs
    figure = Figure(
        "Backup, unchanged btrfs project",
        target=TARGET_UNCHANGED_SPEEDUP,
        target_is_speedup=True,
        note=f"speed-up = raw / agent, target a minimum; median of {runs} runs. "
        "agent: Backup RPC without force until the terminal event, answered UP_TO_DATE from the "
        "subvolume generations (checked: state, snapshot id, no restic started); "
        "raw: restic backup --json (no init) with the parent found by restic (checked: every file "
        "unmodified); one local repository per side, made and filled once, reused by every run",
    )
    figure.extra["agent_job_seconds"] = []
    repositories = [bench.fresh_dir("agent-repo-unchanged-"), bench.fresh_dir("raw-repo-unchanged-")]
    agent_repository, raw_repository = repositories
    try:
        # Untimed set-up. Raw restic first: its full backup reads the files and directories of the
        # tree itself, which sets their atime once (relatime) and so changes the subvolume's
        # generation; the agent reads a read-only snapshot, so its backup changes nothing, and the
        # generation it records stays valid. Unchanged scans later only stat and list the tree.
        bench.log("  set-up: a full backup on each side (untimed)")
        seconds, _init, raw_first = bench.raw_backup(raw_repository)
        bench.log(f"  raw backup    {seconds:8.3f} s  snapshot {raw_first} (set-up)")
        seconds, first = bench.agent_backup(agent_repository, force=False)
        if first.state != pb.SUCCEEDED or first.summary.files_processed != bench.tree_files:
            raise RuntimeError(
                f"the set-up agent backup ended {pb.OperationState.Name(first.state)} "
                f"with {first.summary.files_processed} files, expected SUCCEEDED and {bench.tree_files}"
            )
        snapshot_id = first.summary.snapshot_id
        bench.log(f"  agent backup  {seconds:8.3f} s  snapshot {snapshot_id} (set-up)")

        def agent_run(measured: bool) -> None:
            starts = bench.agent_engine_starts()
            seconds, operation = bench.agent_backup(agent_repository, force=False, accept=(pb.UP_TO_DATE,))
            bench.log(f"  agent backup  {seconds:8.3f} s  {pb.OperationState.Name(operation.state)}")
            # run_operation accepted only UP_TO_DATE; also the same snapshot and no engine process.
            if operation.summary.snapshot_id != snapshot_id:
                raise RuntimeError(
                    f"UP_TO_DATE names snapshot {operation.summary.snapshot_id}, the set-up made {snapshot_id}"
                )
            if bench.agent_engine_starts() != starts:
                raise RuntimeError("the agent started restic for an unchanged project")
            if measured:
                figure.agent.append(seconds)
                figure.extra["agent_job_seconds"].append(operation.summary.duration_seconds)

        def raw_run(measured: bool) -> None:
            seconds, _init, summary = bench.raw_backup_summary(raw_repository, init=False)
            bench.log(f"  raw backup    {seconds:8.3f} s  snapshot {summary['snapshot_id']}")
            counts = {key: summary.get(key) for key in ("files_new", "files_changed", "files_unmodified")}
            if counts != {"files_new": 0, "files_changed": 0, "files_unmodified": bench.tree_files}:
                raise RuntimeError(f"raw restic did not scan an unchanged tree with a parent: {counts}")
            if measured:
                figure.raw.append(seconds)

        _alternating(bench, runs, agent_run, raw_run)
    finally:
        for repository in repositories:
            shutil.rmtree(repository.parent, ignore_errors=True)
    return [figure]


def measure_btrfs_restore(bench: Bench) -> list[Figure]:
    """Restore on btrfs: the agent's staging subvolumes + swap vs raw restic into an empty directory
    on the same filesystem. Per run a new repository and an untimed full backup on each side."""
    if bench.btrfs is None:
        bench.log(f"  skipped ({bench.btrfs_skipped})")
        return []
    bench = bench.on_btrfs()
    figure = Figure(
        "Restore (btrfs, staging + swap)",
        note="agent: Restore RPC until the terminal event (new staging subvolumes, restore, swap; the old "
        "subvolumes are deleted after it); raw: restic restore into an empty directory on the same btrfs filesystem; "
        "per run a new local repository with one untimed full backup on each side",
    )
    figure.extra["agent_job_seconds"] = []
    home, persist = bench.agent.home(bench.project_id), bench.agent.persist(bench.project_id)

    def agent_run(measured: bool) -> None:
        repository = bench.fresh_dir("agent-repo-btrfs-")
        try:
            _seconds, backup = bench.agent_backup(repository)
            if backup.summary.files_processed != bench.tree_files:
                raise RuntimeError(f"agent backup processed {backup.summary.files_processed} files")
            seconds, restored = bench.agent_restore(repository, backup.summary.snapshot_id)
            bench.log(f"  agent restore {seconds:8.3f} s  (snapshot {backup.summary.snapshot_id})")
            bench.check_tree("agent restore", home, persist)
            for root in (home, persist):
                if root.stat().st_ino != 256:  # the root inode of a btrfs subvolume
                    raise RuntimeError(f"{root} is no subvolume after the agent's restore")
            if measured:
                figure.agent.append(seconds)
                figure.extra["agent_job_seconds"].append(restored.summary.duration_seconds)
        finally:
            shutil.rmtree(repository.parent, ignore_errors=True)

    def raw_run(measured: bool) -> None:
        repository = bench.fresh_dir("raw-repo-btrfs-")
        target = bench.fresh_restore_dir()
        try:
            _seconds, _init, snapshot_id = bench.raw_backup(repository)
            seconds = bench.raw_restore(repository, snapshot_id, target)
            bench.log(f"  raw restore   {seconds:8.3f} s  (snapshot {snapshot_id})")
            bench.check_tree("raw restore", *(target / p for p in bench.raw_paths))
            if measured:
                figure.raw.append(seconds)
        finally:
            shutil.rmtree(target.parent, ignore_errors=True)
            shutil.rmtree(repository.parent, ignore_errors=True)

    _alternating(bench, bench.runs, agent_run, raw_run)
    return [figure]


def measure_move(bench: Bench) -> list[Figure]:
    """A hub move between two agents vs raw restic backup + restore (bench/move_row.py)."""
    if not bench.move:
        bench.log("  skipped (--no-move)")
        return []
    # bench/ is sys.path[0] when this file runs as a script (make bench).
    from move_row import measure_move as measure

    return measure(bench, figure_type=Figure, alternating=_alternating, log_level=bench.agent_log_level)


def measure_takeover(bench: Bench) -> list[Figure]:
    """Time from a hub process's death mid-move to the move resuming in another (bench/takeover_row.py)."""
    if bench.takeover_lease is None:
        bench.log("  skipped (--no-takeover)")
        return []
    try:
        import takeover_row
    except ImportError:
        from bench import takeover_row
    return takeover_row.measure_takeover(bench, figure_type=Figure, lease=bench.takeover_lease,
                                         log_level=bench.agent_log_level)


def measure_frozen(bench: Bench) -> list[Figure]:
    """Frozen window of a move, old flow vs new flow, at several sizes (bench/frozen_rows.py)."""
    if not bench.frozen_sizes:
        bench.log("  skipped (--no-frozen)")
        return []
    from frozen_rows import measure_frozen as measure

    return measure(bench, figure_type=Figure, generate=generate_tree, log_level=bench.agent_log_level,
                   sizes_mb=bench.frozen_sizes, runs=bench.frozen_runs)


def _load_rows():
    """bench/load_rows.py: ``load_rows`` when this file runs as a script (bench/ is sys.path[0]),
    ``bench.load_rows`` when it is imported from the repository root."""
    try:
        import load_rows
    except ImportError:
        from bench import load_rows
    return load_rows


def measure_load(bench: Bench) -> list[Figure]:
    """Drain throughput, progress fan-out, GetProjectStatus rate, agent RSS/CPU (bench/load_rows.py):
    agent-only rows with agents of their own."""
    if bench.load is None:
        bench.log("  skipped (--no-load)")
        return []
    return _load_rows().measure_load(bench, figure_type=Figure, settings=bench.load)


def _scale_rows():
    """bench/scale_rows.py, imported as :func:`_load_rows` does."""
    try:
        import scale_rows
    except ImportError:
        from bench import scale_rows
    return scale_rows


def measure_scale(bench: Bench) -> list[Figure]:
    """Reconcile cycle cost, GetHostStatus latency and agent RSS at 1,000 and 10,000 projects on btrfs
    and directory (bench/scale_rows.py): agent-only rows with agents of their own."""
    if bench.scale is None:
        bench.log("  skipped (--no-scale)")
        return []
    return _scale_rows().measure_scale(bench, figure_type=Figure, settings=bench.scale)


def measure_hub_api(bench: Bench) -> list[Figure]:
    """Unary call rate and latency of a buckets-hub process with 10,000 projects (bench/hub_api_rows.py)."""
    if not bench.hub_api:
        bench.log("  skipped (--no-hub-api)")
        return []
    try:
        import hub_api_rows
    except ImportError:
        from bench import hub_api_rows
    settings = hub_api_rows.HubApiSettings(runs=max(1, min(bench.runs, 3)))
    return hub_api_rows.figures(hub_api_rows.measure(bench.scratch, settings, log=bench.log), Figure)


MEASUREMENTS: list[Measurement] = [
    # Local and S3 backup/restore, once per engine.
    measure_engines,
    measure_move,
    measure_takeover,
    measure_hub_api,
    measure_frozen,
    # Unchanged first: the agent's restores replace the project's subvolumes.
    measure_btrfs_unchanged_backup,
    measure_btrfs_restore,
    # Last: the longest, and with agents of their own.
    measure_load,
    measure_scale,
]


# --------------------------------------------------------------------------
# Data, machine, output
# --------------------------------------------------------------------------


def generate_tree(root: Path, *, total_bytes: int, files: int, seed: int = 2026) -> None:
    """``files`` files of incompressible bytes totalling exactly ``total_bytes``, in nested directories."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.2, 1.8) for _ in range(files)]
    scale = total_bytes / sum(weights)
    sizes = [int(w * scale) for w in weights]
    sizes[-1] += total_bytes - sum(sizes)
    root.mkdir(parents=True, exist_ok=True)
    for index, size in enumerate(sizes):
        parts = [f"dir{rng.randrange(10)}" for _ in range(rng.randrange(5))]
        directory = root.joinpath(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"file{index:05d}.bin").write_bytes(os.urandom(size))


def generate_persist(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.sqlite").write_bytes(os.urandom(64_000))
    (root / "settings.json").write_text('{"theme": "dark"}\n')
    (root / "state").mkdir(exist_ok=True)
    (root / "state" / "counter").write_text("42\n")


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``path``."""
    total_bytes = total_files = 0
    for directory, _dirnames, filenames in os.walk(path):
        for name in filenames:
            info = os.lstat(os.path.join(directory, name))
            if not os.path.islink(os.path.join(directory, name)):
                total_bytes += info.st_size
                total_files += 1
    return total_bytes, total_files


def machine_info(restic: str, scratch: Path) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        restic_version = subprocess.run(
            [restic, "version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        restic_version = f"unknown ({exc})"
    return {
        "cpu": cpu or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": memory,
        "kernel": platform.release(),
        "filesystem": filesystem_of(scratch),
        "restic": restic_version,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else [],
    }


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), e.g. "ext4"."""
    best, fstype = "", "unknown"
    try:
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3:
                mount = fields[1]
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def s3_server_description(server: object) -> str:
    """What served S3 in this run, for the JSON params and the table's heading."""
    module = type(server).__module__
    if module.endswith("minio_server"):
        from tests.tools import tool
        return f"MinIO ({tool('minio')}) on 127.0.0.1"
    return f"{type(server).__name__} ({module}) on 127.0.0.1"


def _version_of(distribution: str) -> str:
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:
        return "unknown"


def _number(value: float) -> str:
    size = abs(value)
    return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}"


def _span(samples: list[float], unit: str = "s") -> str:
    if not samples:
        return "-"
    if unit != "s":
        median = statistics.median(samples)
        if all(float(sample).is_integer() for sample in samples):  # counts
            return f"{median:g} {unit} ({min(samples):g}–{max(samples):g})"
        return f"{_number(median)} {unit} ({_number(min(samples))}–{_number(max(samples))})"
    if max(samples) < 0.1:  # e.g. the agent's UP_TO_DATE answer: milliseconds
        return f"{statistics.median(samples) * 1000:.1f} ms ({min(samples) * 1000:.1f}–{max(samples) * 1000:.1f})"
    return f"{statistics.median(samples):.2f} s ({min(samples):.2f}–{max(samples):.2f})"


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 0.1 else f"{value:.2f} s"


def _ratio_cells(figure: Figure) -> tuple[str, str]:
    """The ratio and target cells: agent/raw against a maximum, or the speed-up against a minimum."""
    met = figure.meets_target
    verdict = "" if met is None else " (met)" if met else (" (under)" if figure.target_is_speedup else " (over)")
    if figure.target_is_speedup:
        speedup = figure.speedup
        value = f"speed-up {speedup:.1f}×{verdict}" if speedup is not None else "-"
        target = f"speed-up ≥ {figure.target:g}×" if figure.target is not None else "-"
        return value, target
    ratio = figure.ratio
    value = f"{ratio:.3f}{verdict}" if ratio is not None else "-"
    if figure.target_is_absolute:
        unit = "" if figure.unit == "×" else f" {figure.unit}"
        return (f"{ratio:.3f}" if ratio is not None else "-"), f"agent ≤ {figure.target:g}{unit}{verdict}"
    return value, f"≤ {figure.target:.2f}" if figure.target is not None else "-"


def _load_average(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def render(figures: list[Figure], machine: dict, params: dict) -> str:
    header = ["operation", "engine", "agent median (min–max)", "raw median (min–max)", "ratio (agent/raw)",
              "target"]
    rows = []
    for figure in figures:
        agent = f"FAILED: {figure.failed}" if figure.failed else figure.cell or _span(figure.agent, figure.unit)
        rows.append([figure.name, figure.engine or "-", agent, _span(figure.raw), *_ratio_cells(figure)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    btrfs = params.get("btrfs") or {}
    unchanged = (
        f" (the unchanged-backup row: {params['unchanged_runs']} runs, one repository per side for all runs)"
        if not btrfs.get("skipped")
        else ""
    )
    out = [
        f"buckets bench: {params['size_mb']} MB in {params['files']} files (+ {params['persist_files']} persist files), "
        f"incompressible; median of {params['runs']} runs (+ {params['warmup']} warm-up), "
        f"order agent/raw alternating{', sync before each step' if params['sync_before_each_step'] else ''}; "
        f"{' and '.join(params['repository_kinds'])} repositories, a new one per run{unchanged}",
        "",
        line(header),
        "-+-".join("-" * w for w in widths),
        *(line(r) for r in rows),
        "",
    ]
    fastest = params.get("fastest") or []
    if fastest:
        out.append("fastest engine per row (lowest median; through the agent / raw CLI):")
        width = max(len(row["operation"]) for row in fastest)
        for row in fastest:
            out.append(f"  {row['operation'].ljust(width)}  agent: {row['agent']} ({_seconds(row['agent_median'])}), "
                       f"raw: {row['raw']} ({_seconds(row['raw_median'])})")
        out.append("")
    engines = params.get("engines") or {}
    if engines.get("skipped"):
        out += [f"engines not measured: {'; '.join(engines['skipped'])}", ""]
    if engines.get("other_rows"):
        out += [f"rows without a per-engine run (move, btrfs, load) use {engines['other_rows']}", ""]
    if any(figure.target_is_speedup for figure in figures):
        out += ["speed-up = raw median / agent median (higher is better; its target is a minimum)", ""]
    if btrfs.get("skipped"):
        out += [f"btrfs rows skipped: {btrfs['skipped']}", ""]
    elif btrfs:
        out += [f"btrfs rows: {btrfs['filesystem']}", ""]
    load = params.get("load") or {}
    if load.get("skipped"):
        out += [f"load rows skipped: {load['skipped']}", ""]
    elif load:
        out += [
            f"load rows (agent only, no raw side, no target): median (min–max) of {load['runs']} runs; drain of "
            f"{load['projects']} projects of {load['files_per_project']} files ({load['dirty_per_run']} dirty + "
            f"{load['fresh_per_run']} never backed up per run), {load['watchers']} watchers, "
            f"GetProjectStatus for {load['rpc_seconds']:g} s per run",
            "",
        ]
    for figure in figures:
        per_engine = figure.engine and figure.engine != DEFAULT_ENGINE_ID
        label = f"{figure.name} [{figure.engine}]" if per_engine else figure.name
        if figure.note:
            out.append(f"  {label}: {figure.note}")
        elif any(figure.extra.values()):
            out.append(f"  {label}:")
        for key, samples in figure.extra.items():
            if samples:
                unit = "s" if key.endswith("seconds") else "MB" if key.endswith("_mb") else figure.unit
                out.append(f"    {key.replace('_', ' ')}: {_span(samples, unit)}")
    gib = machine["memory_bytes"] / 2**30
    out += [
        "",
        f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{gib:.1f} GiB RAM, kernel {machine['kernel']}, scratch on "
        f"{params.get('scratch_filesystem') or machine['filesystem']}",
        f"         {machine['restic']}; Python {machine['python']}; {machine['date']}",
    ]
    if machine.get("load_average"):
        start = params.get("load_average_start")
        out.append(
            "         load average (1, 5, 15 min): "
            + (f"{_load_average(start)} at the start, " if start else "")
            + f"{_load_average(machine['load_average'])} at the end"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run: 20 MB / 200 files / 3 runs")
    parser.add_argument("--runs", type=int, default=None, help="measured runs per side (default 5, quick 3)")
    parser.add_argument(
        "--unchanged-runs",
        type=int,
        default=None,
        help="measured runs per side of the unchanged btrfs backup row (default: max(10, 2 × runs))",
    )
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--size-mb", type=int, default=None, help="tree size in MB (default 200, quick 20)")
    parser.add_argument("--files", type=int, default=None, help="number of files (default 2000, quick 200)")
    parser.add_argument(
        "--restic", default=shutil.which("restic") or "restic",
        help="the restic of the restic-0.14 engine and of the move, btrfs and load rows (default: on PATH)",
    )
    parser.add_argument(
        "--engines", default="all",
        help="engines of the backup/restore rows, comma-separated ids or prefixes of tests/engines.py "
        "(rustic-0.11.4, restic-0.18.1, restic-0.14-debian; e.g. 'rustic,restic-0.18'); default: all",
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the scratch dir goes (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, default=RESULTS_PATH, help=f"JSON output (default {RESULTS_PATH})")
    parser.add_argument(
        "--agent-log-level", default="info", help="the agent's log level (default info, as in production)"
    )
    parser.add_argument(
        "--no-sync", action="store_true", help="do not sync(2) before each timed step (default: sync)"
    )
    parser.add_argument(
        "--no-s3", action="store_true", help="skip the S3 rows (no MinIO server is started)"
    )
    parser.add_argument(
        "--no-btrfs", action="store_true", help="skip the btrfs rows (no loop-device btrfs is made)"
    )
    parser.add_argument("--no-move", action="store_true", help="skip the move row (two more agents)")
    parser.add_argument("--no-takeover", action="store_true",
                        help="skip the takeover row (a hub process killed mid-move, resumed by another)")
    parser.add_argument("--takeover-lease-seconds", type=float, default=15.0,
                        help="the lease of the takeover row's hub processes (default 15, the hub's default)")
    parser.add_argument("--no-hub-api", action="store_true",
                        help="skip the hub API rows (a buckets-hub process with 10,000 projects)")
    parser.add_argument(
        "--frozen-sizes", default=None,
        help="project sizes in MB of the frozen-window rows, comma-separated (default 100,1000,4000; quick 20,50,100)",
    )
    parser.add_argument("--frozen-runs", type=int, default=1, help="runs per size of the frozen-window rows (default 1)")
    parser.add_argument("--no-frozen", action="store_true", help="skip the frozen-window rows (two more agents)")
    parser.add_argument(
        "--no-load", action="store_true",
        help="skip the load rows (drain throughput, progress fan-out, GetProjectStatus rate, agent RSS/CPU)",
    )
    parser.add_argument(
        "--load-projects", type=int, default=None, help="projects of the drain rows (default 200, quick 40)"
    )
    parser.add_argument("--load-runs", type=int, default=3, help="runs of each load row (default 3)")
    parser.add_argument(
        "--scale-projects", default=None,
        help="project counts of the scale rows, comma-separated (default 1000,10000; quick 100,1000)",
    )
    parser.add_argument("--scale-backends", default="btrfs,directory",
                        help="backends of the scale rows, comma-separated (default btrfs,directory)")
    parser.add_argument("--no-scale", action="store_true",
                        help="skip the scale rows (reconcile cycle cost, GetHostStatus latency, RSS at many projects)")
    parser.add_argument("--scale-schedule-projects", type=int, default=0,
                        help="projects of the scheduler rows (backups per second, worst unprotected age under a "
                             "write load; each backed up once first); default: the smallest of --scale-projects")
    parser.add_argument("--scale-load-seconds", type=float, default=None,
                        help="length of the scheduler's write-load run (default 120, quick 60; 0: no load row)")
    parser.add_argument("--no-scale-schedule", action="store_true",
                        help="skip the scheduler rows of the scale rows")
    parser.add_argument("--scale-only", action="store_true",
                        help="run only the scale rows (the other rows' set-up still runs: pair with --quick)")
    parser.add_argument("--keep-scratch", action="store_true", help="do not remove the scratch dir (debugging)")
    parser.add_argument(
        "--scratch-fs", choices=("loop-ext4", "tmpdir"), default="loop-ext4",
        help="where the agents, trees and repositories live: a journaled ext4 on a loop device made for this "
        "run (default, as root; image under --tmpdir) or the --tmpdir filesystem itself",
    )
    args = parser.parse_args(argv)
    quick = (20, 200, 3) if args.quick else (200, 2000, 5)
    args.size_mb = args.size_mb if args.size_mb is not None else quick[0]
    args.files = args.files if args.files is not None else quick[1]
    args.runs = args.runs if args.runs is not None else quick[2]
    if args.frozen_sizes is None:
        args.frozen_sizes = "20,50,100" if args.quick else "100,1000,4000"
    args.frozen_sizes = tuple(int(size) for size in args.frozen_sizes.split(",") if size.strip())
    args.unchanged_runs = args.unchanged_runs if args.unchanged_runs is not None else max(10, 2 * args.runs)
    args.load_projects = args.load_projects if args.load_projects is not None else (40 if args.quick else 200)
    if args.runs < 1 or args.unchanged_runs < 1 or args.files < 1 or args.size_mb < 1 or args.warmup < 0:
        parser.error("--runs, --unchanged-runs, --files and --size-mb must be positive, --warmup not negative")
    if args.scale_projects is None:
        args.scale_projects = "100,1000" if args.quick else "1000,10000"
    args.scale_projects = tuple(int(n) for n in args.scale_projects.split(",") if n.strip())
    args.scale_backends = tuple(b.strip() for b in args.scale_backends.split(",") if b.strip())
    if any(n < 1 for n in args.scale_projects) or not set(args.scale_backends) <= {"btrfs", "directory"}:
        parser.error("--scale-projects must be positive counts, --scale-backends btrfs and/or directory")
    if args.scale_load_seconds is None:
        args.scale_load_seconds = 60.0 if args.quick else 120.0
    if args.scale_schedule_projects < 0 or args.scale_load_seconds < 0:
        parser.error("--scale-schedule-projects and --scale-load-seconds must not be negative")
    if args.scale_only and args.no_scale:
        parser.error("--scale-only and --no-scale exclude each other")
    if args.load_projects < 1 or args.load_runs < 1:
        parser.error("--load-projects and --load-runs must be positive")
    return args


def available_engines(restic: str) -> list[tuple[str, str, str | None]]:
    """(id, driver, binary or None) of every engine of tests/engines.py on this machine: the pinned
    builds through tests/tools.py, the stock restic at ``restic``."""
    from tests.engines import ENGINES
    from tests.tools import tool

    return [(engine.id, engine.driver, tool(engine.tool) if engine.tool else rawe.found_binary(restic))
            for engine in ENGINES]


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def _configure_log_level(agent: AgentProcess, level: str) -> None:
    """Production-like logging (the harness writes debug)."""
    text = agent.config_path.read_text()
    agent.config_path.write_text(text.replace('level = "debug"', f'level = "{level}"'))


def loop_btrfs_size_mb(size_mb: int) -> int:
    """MiB of the loop-device btrfs: the tree, the agent's staging copy during a restore (the old
    subvolume is deleted afterwards, asynchronously), a raw restore, one more tree of slack; plus
    room for metadata (DUP), the btrfs agent's state and restic's cache."""
    return 4 * size_mb + 512


def scratch_filesystem_size_mb(args: argparse.Namespace, engines: int) -> int:
    """MiB of the scratch filesystem (sparse; deleted blocks are given back): the tree, every agent
    restore's replaced tree (kept, ``[restore] keep_replaced``), repositories and raw restores of
    the engine rows; the frozen rows' largest size eight times (template, source, repository,
    target, staging, the raw side's copy, repository and restore); room for the other rows."""
    restores = (args.warmup + args.runs) * max(1, engines) * (1 if args.no_s3 else 2)
    frozen = 0 if args.no_frozen or args.scale_only else 8 * max(args.frozen_sizes, default=0)
    return args.size_mb * (restores + 8) + frozen + 4096


def start_scratch_filesystem(
    args: argparse.Namespace, outer: Path, engines: int, log: Callable[[str], None]
) -> tuple[LoopExt4 | None, str]:
    """The scratch filesystem by ``--scratch-fs``: a journaled ext4 on a loop device (image in
    ``outer``), or None to work in ``outer`` itself; and a line saying which and why."""
    if args.scratch_fs == "tmpdir":
        return None, f"{filesystem_of(outer)} of {outer} (--scratch-fs tmpdir)"
    reason = ext4_unavailable_reason()
    size_mb = scratch_filesystem_size_mb(args, engines)
    free_mb = shutil.disk_usage(outer).free // (1024 * 1024)
    if reason is None and size_mb > free_mb:
        reason = f"it would need up to {size_mb} MiB and {outer} has {free_mb} MiB free"
    if reason is not None:
        log(f"scratch: NOT on a loop-device ext4 ({reason}); figures depend on {outer}'s filesystem state")
        return None, f"{filesystem_of(outer)} of {outer} (no loop-device ext4: {reason})"
    filesystem = LoopExt4(outer / "scratch-fs", size_mb=size_mb)
    log(f"scratch: making a {size_mb} MiB ext4 (journal) on a loop device, image {filesystem.image} (sparse)")
    filesystem.start()
    return filesystem, f"{size_mb} MiB ext4 with a journal on a loop device made for this run (image on " \
        f"{filesystem_of(outer)})"


def make_btrfs_project(
    bench: Bench, filesystem: LoopBtrfs, agent: AgentProcess, *, size_mb: int, files: int
) -> BtrfsSide:
    """With the btrfs agent running: make a project with EnsureProject and write the same generated
    tree into its subvolumes (untimed)."""
    side = BtrfsSide(filesystem=filesystem, agent=agent, project_id=new_id())
    ensure = agent.stub.EnsureProject(
        pb.EnsureProjectRequest(request_id=new_id(), project_id=side.project_id), timeout=60
    )
    final = agent.wait(ensure.id)
    if final.state != pb.SUCCEEDED:
        raise RuntimeError(
            f"EnsureProject ended {pb.OperationState.Name(final.state)}: {final.error.code} {final.error.message}"
        )
    home, persist = agent.home(side.project_id), agent.persist(side.project_id)
    for root in (home, persist):
        if root.stat().st_ino != 256:
            raise RuntimeError(f"EnsureProject made {root}, but it is no btrfs subvolume")
    bench.log("generating the same tree in the btrfs project")
    generate_tree(home, total_bytes=size_mb * 1_000_000, files=files)
    generate_persist(persist)
    size = tree_size(home), tree_size(persist)
    if (size[0][0] + size[1][0], size[0][1] + size[1][1]) != (bench.tree_bytes, bench.tree_files):
        raise RuntimeError(f"the btrfs project's tree differs from the other one: {size}")
    return side


def load_settings(args: argparse.Namespace):
    """The load rows' LoadSettings for these arguments, or None with --no-load."""
    if args.no_load:
        return None
    load_rows = _load_rows()
    settings = load_rows.LoadSettings.quick(args.load_projects) if args.quick else load_rows.LoadSettings(
        projects=args.load_projects)
    return dataclasses.replace(settings, runs=args.load_runs)


def scale_settings(args: argparse.Namespace):
    """The scale rows' ScaleSettings for these arguments, or None with --no-scale."""
    if args.no_scale:
        return None
    return _scale_rows().ScaleSettings(projects=args.scale_projects, backends=args.scale_backends,
                                       schedule=not args.no_scale_schedule,
                                       schedule_projects=args.scale_schedule_projects,
                                       load_seconds=args.scale_load_seconds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_average_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []
    signal.signal(signal.SIGTERM, _terminate)
    if not shutil.which(args.restic):
        print(f"bench: restic binary {args.restic!r} not found", file=sys.stderr)
        return 2
    try:
        resolved = rawe.resolve_engines(args.engines, available_engines(args.restic))
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    outer = Path(tempfile.mkdtemp(prefix="buckets-bench-", dir=args.tmpdir))
    try:
        scratch_fs, scratch_description = start_scratch_filesystem(
            args, outer, sum(isinstance(engine, rawe.RawEngine) for engine in resolved),
            lambda message: print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True))
    except BaseException:
        shutil.rmtree(outer, ignore_errors=True)
        raise
    scratch = outer if scratch_fs is None else scratch_fs.mountpoint
    agent = AgentProcess(base=scratch / "agent")
    s3: S3Server | None = None
    filesystem: LoopBtrfs | None = None
    btrfs_agent: AgentProcess | None = None
    try:
        _configure_log_level(agent, args.agent_log_level)
        project_id = new_id()
        home, persist = agent.home(project_id), agent.persist(project_id)
        bench = Bench(
            agent=agent,
            project_id=project_id,
            scratch=scratch,
            runs=args.runs,
            warmup=args.warmup,
            restic=shutil.which(args.restic),
            password="bench-" + new_id(),
            tree_bytes=0,
            tree_files=0,
            sync=not args.no_sync,
            unchanged_runs=args.unchanged_runs,
            move=not args.no_move,
            takeover_lease=None if args.no_takeover else args.takeover_lease_seconds,
            hub_api=not args.no_hub_api,
            frozen_sizes=() if args.no_frozen else args.frozen_sizes,
            frozen_runs=args.frozen_runs,
            agent_log_level=args.agent_log_level,
            load=None if args.scale_only else load_settings(args),
            scale=scale_settings(args),
            engines=[engine for engine in resolved if isinstance(engine, rawe.RawEngine)],
            engines_skipped=[engine for engine in resolved if isinstance(engine, str)],
        )
        for skipped in bench.engines_skipped:
            bench.log(f"engine skipped: {skipped} (scripts/tools.sh builds the pinned ones)")
        bench.log(f"generating {args.size_mb} MB in {args.files} files under {scratch}")
        generate_tree(home, total_bytes=args.size_mb * 1_000_000, files=args.files)
        generate_persist(persist)
        home_size, persist_size = tree_size(home), tree_size(persist)
        bench.tree_bytes = home_size[0] + persist_size[0]
        bench.tree_files = home_size[1] + persist_size[1]
        bench.log("starting the agent")
        agent.start()
        if not args.no_s3:
            server_class = s3_server_class()
            bench.log(f"starting the S3 server ({server_class.__module__}.{server_class.__name__}, 127.0.0.1)")
            s3 = server_class(log_path=scratch / "s3server.log")
            s3.start()
            # The agent checks the bucket in every backup; its config does not let it create one.
            s3.client().create_bucket(Bucket=S3_BUCKET)
            bench.s3 = s3
        bench.btrfs_skipped = "--no-btrfs" if args.no_btrfs else (btrfs_unavailable_reason() or "")
        if bench.btrfs_skipped:
            bench.log(f"btrfs rows skipped: {bench.btrfs_skipped}")
        else:
            filesystem = LoopBtrfs(outer / "btrfs", size_mb=loop_btrfs_size_mb(args.size_mb))
            bench.log(f"making a {filesystem.size_mb} MiB btrfs on a loop device ({filesystem.image})")
            filesystem.start()
            bench.log(f"loop device {filesystem.device} mounted on {filesystem.mountpoint}")
            btrfs_agent = AgentProcess(base=filesystem.mountpoint / "agent", backend="btrfs")
            _configure_log_level(btrfs_agent, args.agent_log_level)
            bench.log(f"starting the btrfs agent (base {btrfs_agent.base})")
            btrfs_agent.start()
            bench.btrfs = make_btrfs_project(bench, filesystem, btrfs_agent, size_mb=args.size_mb, files=args.files)

        figures: list[Figure] = []
        for measurement in [measure_scale] if args.scale_only else MEASUREMENTS:
            bench.log(f"measurement: {measurement.__name__}")
            figures += measurement(bench)

        for figure in figures:  # the rows with agents of their own (move, btrfs, load) run restic 0.14
            figure.engine = figure.engine or DEFAULT_ENGINE_ID
        machine = machine_info(bench.restic, scratch)
        params = {
            "size_mb": args.size_mb,
            "files": args.files,
            "persist_files": persist_size[1],
            "tree_bytes": bench.tree_bytes,
            "tree_files": bench.tree_files,
            "runs": args.runs,
            "warmup": args.warmup,
            "agent_log_level": args.agent_log_level,
            "repository_kinds": ["local"] + ([] if s3 is None else ["S3"]),
            "s3_server": None if s3 is None else s3_server_description(s3),
            "engines": {
                "measured": [dataclasses.asdict(engine) for engine in bench.engines],
                "skipped": bench.engines_skipped,
                "other_rows": f"{DEFAULT_ENGINE_ID} ({bench.restic})",
            },
            "fastest": fastest_engines(figures),
            "scratch_filesystem": scratch_description,
            "sync_before_each_step": bench.sync,
            "unchanged_runs": args.unchanged_runs,
            "btrfs": (
                {"skipped": bench.btrfs_skipped}
                if filesystem is None
                else {
                    "skipped": None,
                    "filesystem": f"{filesystem.size_mb} MiB btrfs (quotas on) on a loop device, image on "
                    f"{filesystem_of(outer)}; agent backend btrfs, base dir on it",
                    "size_mib": filesystem.size_mb,
                }
            ),
            "load": {"skipped": "--no-load"} if bench.load is None else {"skipped": None, **bench.load.to_json()},
            "scale": {"skipped": "--no-scale"} if bench.scale is None else {"skipped": None,
                                                                           **bench.scale.to_json()},
            "load_average_start": load_average_start,
        }
        print(render(figures, machine, params))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"params": params, "machine": machine, "figures": [f.to_json() for f in figures]}, indent=2
            )
            + "\n"
        )
        print(f"\nwritten: {args.json}")
        return 0
    except Exception:
        tail = agent.log_tail()
        if tail:
            print(f"--- agent log tail ---\n{tail}", file=sys.stderr)
        tail = btrfs_agent.log_tail() if btrfs_agent is not None else ""
        if tail:
            print(f"--- btrfs agent log tail ---\n{tail}", file=sys.stderr)
        if s3 is not None and s3.log_path.exists():
            print(f"--- S3 server log tail ---\n{s3.log_path.read_text()[-2000:]}", file=sys.stderr)
        raise
    finally:
        agent.stop()
        if btrfs_agent is not None:
            btrfs_agent.stop()
        if s3 is not None:
            s3.stop()
        cleanup_error: BaseException | None = None
        if filesystem is not None:
            # Unmount, detach the loop device, delete the image; raises if any of it is left.
            try:
                filesystem.stop()
            except BaseException as exc:  # noqa: BLE001 - reported (and raised) below
                cleanup_error = exc
                print(f"bench: cleaning up the loop-device btrfs failed: {exc}", file=sys.stderr)
        if scratch_fs is not None and not args.keep_scratch and cleanup_error is None:
            try:
                scratch_fs.stop()
            except BaseException as exc:  # noqa: BLE001 - reported (and raised) below
                cleanup_error = exc
                print(f"bench: cleaning up the loop-device scratch ext4 failed: {exc}", file=sys.stderr)
        if args.keep_scratch or cleanup_error is not None:
            print(f"scratch kept: {outer}" + ("" if scratch_fs is None or cleanup_error is not None
                                              else f" (ext4 still mounted on {scratch_fs.mountpoint})"),
                  file=sys.stderr)
        else:
            shutil.rmtree(outer, ignore_errors=True)
        if cleanup_error is not None:
            raise cleanup_error


if __name__ == "__main__":
    sys.exit(main())
