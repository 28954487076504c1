"""An S3 server for tests: moto's server mode on 127.0.0.1, with IAM auth enforced.

Credentials are checked (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``): the first
few requests create an IAM user with full S3 access; from then on only that
user's keys are accepted, so wrong credentials fail as they would on R2 or S3.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

# Requests moto serves without auth: the three IAM calls of _bootstrap_user.
BOOTSTRAP_REQUESTS = 3
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A moto server process; ``endpoint``, ``access_key_id`` and ``secret_access_key`` once started."""

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "S3Server":
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(BOOTSTRAP_REQUESTS))
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=log, env=env, start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {self.log_path.read_text()[-2000:]}")
                time.sleep(0.1)
        self._bootstrap_user()
        return self

    def _bootstrap_user(self) -> None:
        iam = boto3.client(
            "iam", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="buckets-test")
        key = iam.create_access_key(UserName="buckets-test")["AccessKey"]
        iam.put_user_policy(UserName="buckets-test", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(retries={"max_attempts": 1}),
        )

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

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
