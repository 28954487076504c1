"""An S3 server for tests: the pinned MinIO (``tests/tools.py``) on 127.0.0.1, on disk.

The public interface (moto's old ``S3Server``, which this replaced: ``endpoint``, ``port``,
``access_key_id``, ``secret_access_key``, ``region``, ``log_path``, ``start``, ``stop``,
``client``, ``agent_repository_config``), plus what only a real server on disk can do:
:meth:`MinioServer.kill` (SIGKILL) and :meth:`MinioServer.restart` on the same data dir and the
same port, so agents configured with the endpoint keep it, and the objects written before the
kill are still there.

Credentials: the root user's keys are generated per server (``access_key_id`` /
``secret_access_key``, full access). :meth:`MinioServer.restricted_credentials` makes, through
MinIO's admin API (the ``minio`` package's ``MinioAdmin``, which speaks the API itself since
7.2 and needs no ``mc``), a user whose keys are valid but may only use one bucket;
:data:`UNKNOWN_CREDENTIALS` are keys no server knows.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

from tests.tools import tool

# Keys of a user that exists on no server (the "wrong credentials" case, as opposed to a known
# user without permission).
UNKNOWN_CREDENTIALS = ("UNKNOWNKEY0000000000", "unknown-secret-key-0000000000000000000000")

RESTRICTED_USER = "buckets-restricted"
# The one bucket the restricted user may use; any other bucket is AccessDenied for it, except
# LIST_ONLY_BUCKET, which it may list (HEAD bucket answers 200) but whose objects it may neither
# read nor write: the refusal then comes from the engine, not from a bucket check.
RESTRICTED_BUCKET = "restricted-only"
LIST_ONLY_BUCKET = "restricted-list-only"


def free_port() -> int:
    """A TCP port nothing listens on now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process that started it dies, so a
    killed test run leaves no MinIO behind on a shared machine (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG


def minio_binary() -> str:
    """The pinned MinIO binary; raises RuntimeError when it is not built (scripts/tools.sh builds it)."""
    path = tool("minio")
    if path is None:
        raise RuntimeError("the pinned minio is not built on this machine (scripts/tools.sh builds it; "
                           "make test runs it)")
    return path


@dataclass
class MinioServer:
    """A MinIO server process. ``data_dir`` and ``config_dir`` default to ``<stem>-data`` and
    ``<stem>-config`` beside ``log_path`` (``minio.log``: ``minio-data``); the port is chosen once
    and kept across :meth:`restart`."""

    log_path: Path
    port: int = field(default_factory=free_port)
    data_dir: Path | None = None
    config_dir: Path | None = None
    region: str = "us-east-1"  # the signing region of client()
    # The one region the server accepts in signatures; None: any (as R2's "auto"), so that the
    # buckets of several regions (cross-region moves) live on one server as they did on moto.
    enforced_region: str | None = None
    access_key_id: str = field(default_factory=lambda: "root" + secrets.token_hex(8))
    secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    process: subprocess.Popen | None = None
    _restricted: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        self.log_path = Path(self.log_path)
        self.data_dir = Path(self.data_dir or self.log_path.parent / f"{self.log_path.stem}-data")
        self.config_dir = Path(self.config_dir or self.log_path.parent / f"{self.log_path.stem}-config")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "MinioServer":
        """Start the server on ``data_dir`` and ``port`` (again after :meth:`kill` or :meth:`stop`)
        and return once ``/minio/health/ready`` answers 200; raises RuntimeError (with the log's
        tail) when the process exits or is not ready within ``timeout`` seconds."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("minio is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "certs").mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.config_dir),  # nothing of this server under /root/.minio
            "MINIO_ROOT_USER": self.access_key_id,
            "MINIO_ROOT_PASSWORD": self.secret_access_key,
            **({"MINIO_REGION": self.enforced_region} if self.enforced_region else {}),
            "MINIO_BROWSER": "off",  # no console
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            "MINIO_SCANNER_SPEED": "slowest",
            # The metrics without a token (loopback test servers only): s3_bytes_sent() reads them.
            "MINIO_PROMETHEUS_AUTH_TYPE": "public",
        }
        argv = [minio_binary(), "server", "--quiet", "--anonymous", "--address", f"127.0.0.1:{self.port}",
                "--certs-dir", str(self.config_dir / "certs"), str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"minio did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def s3_bytes_sent(self) -> int:
        """The bytes of every S3 response body and header this server has sent since it started
        (MinIO's ``minio_api_requests_traffic_sent_bytes`` from ``/minio/metrics/v3/api/requests``,
        counted as requests finish, not cached): what any client fetched, measured outside it."""
        with urllib.request.urlopen(f"{self.endpoint}/minio/metrics/v3/api/requests", timeout=10) as answer:
            text = answer.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("minio_api_requests_traffic_sent_bytes{") and 'type="s3"' in line]
        if not values:
            raise RuntimeError("this MinIO exposes no minio_api_requests_traffic_sent_bytes{type=\"s3\"}")
        return int(sum(values))

    def ready(self) -> bool:
        """Whether the server answers 200 on its readiness endpoint now."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def kill(self) -> None:
        """SIGKILL the server (no shutdown of any kind) and reap it; its data dir stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def restart(self, timeout: float = 30.0) -> "MinioServer":
        """Stop the server if it runs, then :meth:`start` it on the same data and port."""
        self.stop()
        return self.start(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM the server (SIGKILL after 10 s) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(retries={"max_attempts": 1}),
        )

    def restricted_credentials(self) -> tuple[str, str]:
        """(access key id, secret) of a user that exists and signs valid requests but may use only
        the bucket :data:`RESTRICTED_BUCKET` (and list :data:`LIST_ONLY_BUCKET`); made once through
        the admin API (kept in the data dir)."""
        if self._restricted is None:
            from minio import MinioAdmin
            from minio.credentials import StaticProvider

            admin = MinioAdmin(endpoint=f"127.0.0.1:{self.port}", credentials=StaticProvider(
                self.access_key_id, self.secret_access_key), secure=False, region=self.region)
            key, secret = "restricted" + secrets.token_hex(6), secrets.token_urlsafe(30)
            admin.user_add(key, secret)
            policy = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:*"],
                 "Resource": [f"arn:aws:s3:::{RESTRICTED_BUCKET}", f"arn:aws:s3:::{RESTRICTED_BUCKET}/*"]},
                {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                 "Resource": [f"arn:aws:s3:::{LIST_ONLY_BUCKET}"]},
            ]}
            admin.policy_add(RESTRICTED_USER, policy=policy)
            admin.attach_policy([RESTRICTED_USER], user=key)
            self._restricted = (key, secret)
        return self._restricted

    def agent_repository_config(self, password_file: Path, region: str = "us-east-1") -> str:
        """The agent config (TOML) of S3 repositories on this server: bucket ``buckets-<region>``,
        made by the agent if missing, the password in ``password_file``."""
        return f"""
[repository]
kind = "s3"

[repository.s3]
endpoint = "{self.endpoint}"
region = "{region}"
bucket_prefix = "buckets"
access_key_id = "{self.access_key_id}"
secret_access_key = "{self.secret_access_key}"
password_file = "{password_file}"
create_bucket = true
"""

