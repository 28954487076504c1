"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl on 127.0.0.1 with a random port.

:class:`PgServer` makes a cluster in a fresh temporary directory (unix socket inside it, trust
auth, fsync off), starts it, and :meth:`PgServer.stop` stops it with ``pg_ctl stop -m immediate``
and removes the directory. PostgreSQL refuses to run as root, so as root the cluster runs as an
unprivileged user (``postgres`` if it exists, else ``nobody``) through ``runuser``; the temporary
directory is made in /tmp (not under pytest's root-only 0700 tree) and chowned to that user.
:func:`pg_unavailable_reason` says why such tests must skip (or None when they can run).
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

_COMMAND_TIMEOUT = 120.0
SUPERUSER = "buckets"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as_user() -> str | None:
    """The unprivileged user to run the cluster as when we are root (None when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def pg_unavailable_reason() -> str | None:
    """None when a throwaway cluster can be started here; otherwise why not, for ``pytest.skip``."""
    missing = [tool for tool in ("initdb", "pg_ctl", "postgres") if shutil.which(tool) is None]
    if missing:
        return f"PostgreSQL tests need {', '.join(missing)} on PATH (postgresql server package)"
    try:
        importlib.import_module("psycopg")
    except ImportError as exc:
        return f"PostgreSQL tests need psycopg (pip install -e '.[dev]'): {exc}"
    if os.geteuid() == 0:
        if _run_as_user() is None:
            return "running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser (util-linux) is not on PATH to drop privileges for PostgreSQL"
    return None


@dataclass
class PgServer:
    """A PostgreSQL cluster; ``conninfo`` (superuser ``buckets``, trust auth) once started."""

    port: int = field(default_factory=free_port)
    base: Path | None = None
    user: str | None = field(default_factory=_run_as_user)
    started: bool = False

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None
        return self.base / "sock"

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "postgres.log"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _argv(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        return ["runuser", "-u", self.user, "--", *argv]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                self._argv(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT,
                cwd=self.base, env=dict(os.environ, LC_ALL="C", LANG="C"),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{' '.join(argv)}: {exc}") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    def start(self) -> "PgServer":
        """initdb, start, and wait until it accepts connections; RuntimeError (with the server
        log's tail) if it does not. Call :meth:`stop` in a ``finally`` either way."""
        self.base = Path(tempfile.mkdtemp(prefix="buckets-pg-"))
        self.socket_dir.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.base, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run([
            shutil.which("initdb") or "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        ])
        self.started = True  # from here on stop() must run pg_ctl
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        try:
            self._run([
                shutil.which("pg_ctl") or "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                "-o", options, "-w", "-t", "60", "start",
            ])
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- postgres.log ---\n{self.log_tail()}") from exc
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.conninfo(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its conninfo."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def stop(self) -> None:
        """Stop the cluster immediately (if it was started) and remove its directory."""
        if self.base is None:
            return
        try:
            if self.started:
                try:
                    self._run([shutil.which("pg_ctl") or "pg_ctl", "-D", str(self.data_dir), "-m", "immediate",
                               "-w", "stop"])
                except RuntimeError:
                    self._kill_postmaster()
                self.started = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def _kill_postmaster(self) -> None:
        # pg_ctl failed: kill the postmaster by its pid file so no server outlives the session.
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 9)
        except (OSError, ValueError, IndexError):
            pass
