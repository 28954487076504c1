"""The agent's control plane locked down: mTLS with the hub's CA, bearer tokens with roles,
and no secret in the agent's log.

One real agent for the module, with ``[server.tls]`` (its host certificate from a host CA,
client certificates required from the hub CA) and ``[auth]`` (an operator and a read-only
token). The hub side is :class:`hub_client.client.AgentClient` with its TlsConfig and token.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hub_client.client import AgentClient, AgentError, ClientConfig, RetryPolicy, TlsConfig
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.certs import Pki, write
from tests.harness import REPO_ROOT, AgentProcess, create_project

ONE_TRY = RetryPolicy(attempts=1)
PASSWORD = "repo-password-" + secrets.token_hex(8)


@dataclass
class Secured:
    agent: AgentProcess
    host_ca: Path
    hub_cert: tuple[Path, Path]
    rogue_cert: tuple[Path, Path]
    operator: str
    reader: str
    clients: list[AgentClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.agent.port}"

    def client(self, token: str | None, *, cert: str | None = "hub") -> AgentClient:
        """A hub client over TLS checking the agent against the host CA; ``cert``: "hub", "rogue" or None."""
        pair = {"hub": self.hub_cert, "rogue": self.rogue_cert, None: (None, None)}[cert]
        tls = TlsConfig(ca_file=self.host_ca, cert_file=pair[0], key_file=pair[1])
        client = AgentClient(ClientConfig(target=self.target, tls=tls, token=token, deadline=15, retry=ONE_TRY))
        self.clients.append(client)
        return client

    def channel(self, token: str | None) -> grpc.Channel:
        """A raw mTLS channel (hub certificate) sending ``token``, for services AgentClient has no facade for."""
        credentials = grpc.ssl_channel_credentials(self.host_ca.read_bytes(), self.hub_cert[1].read_bytes(),
                                                   self.hub_cert[0].read_bytes())
        if token is not None:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(self.target, credentials)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("cryptography")
    if shutil.which("restic") is None:
        pytest.skip("the restic binary is not on PATH (make test installs it)")
    pki_dir = tmp_path_factory.mktemp("pki")
    host_ca, hub_ca, rogue_ca = Pki.new("host CA"), Pki.new("hub CA"), Pki.new("rogue CA")

    def pair(ca: Pki, name: str, **names) -> tuple[Path, Path]:
        cert, key = ca.issue(name, **names)
        return write(pki_dir / f"{name}.pem", cert), write(pki_dir / f"{name}.key", key)

    host_cert, host_key = pair(host_ca, "agent-host", dns=("localhost",), ips=("127.0.0.1",))
    operator, reader = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = write(pki_dir / "tokens", f"# role token\noperator {operator}\nread-only {reader}\n".encode())
    extra = (f'[server.tls]\ncert_file = "{host_cert}"\nkey_file = "{host_key}"\n'
             f'client_ca_file = "{write(pki_dir / "hub-ca.pem", hub_ca.ca_cert)}"\n'
             f'[auth]\ntokens_file = "{tokens}"\n')
    hub_cert = pair(hub_ca, "hub", client=True)
    # The harness's own stub (create_project, wait, ...) is the hub with the operator token.
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(host_ca.ca_cert, hub_cert[1].read_bytes(), hub_cert[0].read_bytes()),
        grpc.access_token_call_credentials(operator),
    )
    agent = AgentProcess(base=tmp_path_factory.mktemp("secured-agent"), extra=extra, credentials=credentials)
    agent.start()
    running = Secured(agent, write(pki_dir / "host-ca.pem", host_ca.ca_cert), hub_cert,
                      pair(rogue_ca, "rogue-hub", client=True), operator, reader)
    yield running
    for client in running.clients:
        client.close()
    agent.stop()
    agent.kill()


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(AgentError) as caught:
        call()
    return caught.value.code


# ---------------------------------------------------------------- mTLS


def test_only_a_client_certificate_of_the_hub_ca_gets_in(secured):
    assert code_of(lambda: secured.client(secured.operator, cert=None).capabilities()) is grpc.StatusCode.UNAVAILABLE
    assert code_of(lambda: secured.client(secured.operator, cert="rogue").capabilities()) is grpc.StatusCode.UNAVAILABLE
    plaintext = AgentClient(ClientConfig(target=secured.target, token=secured.operator, deadline=15, retry=ONE_TRY))
    secured.clients.append(plaintext)
    assert code_of(plaintext.capabilities) is grpc.StatusCode.UNAVAILABLE
    capabilities = secured.client(secured.reader, cert="hub").capabilities()
    assert capabilities.host_id == "test-host"
    started = [e for e in secured.agent.log_events() if e.get("event") == "server.security"]
    assert started and started[-1]["transport"] == "mtls" and started[-1]["tokens"] == 2


# ---------------------------------------------------------------- tokens and roles


def test_no_token_or_a_wrong_one_is_unauthenticated_on_every_kind_of_call(secured):
    for token in (None, "not-a-token-of-this-agent-00"):
        client = secured.client(token)
        assert code_of(client.capabilities) is grpc.StatusCode.UNAUTHENTICATED  # unary
        assert code_of(lambda: list(client.progress("no-such-op"))) is grpc.StatusCode.UNAUTHENTICATED  # stream
        with pytest.raises(grpc.RpcError) as health:
            with secured.channel(token) as channel:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
        assert health.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with secured.channel(secured.reader) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_a_read_only_token_follows_a_backup_but_cannot_start_one(secured):
    project_id = create_project(secured.agent, files=3)
    reader, operator = secured.client(secured.reader), secured.client(secured.operator)

    with pytest.raises(AgentError) as denied:
        reader.backup(project_id)
    assert denied.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.message == "Backup needs the operator role; the token presented has the read-only role"
    assert code_of(lambda: reader.freeze(project_id)) is grpc.StatusCode.PERMISSION_DENIED
    assert reader.list_operations(project_id=project_id)[0].kind == pb.OPERATION_KIND_ENSURE  # the backup never began

    handle = operator.backup(project_id)
    events = list(reader.progress(handle.id))  # StreamProgress with the read-only token
    assert events[-1].terminal and events[-1].state == pb.SUCCEEDED, events[-1]
    status = reader.project_status(project_id)
    assert status.present and status.last_backup_snapshot_id == events[-1].summary.snapshot_id


# ---------------------------------------------------------------- secrets stay out of the log


def test_the_log_never_carries_a_password_an_s3_secret_or_a_token(secured, s3_server, tmp_path):
    agent, operator = secured.agent, secured.client(secured.operator)
    project_id = create_project(agent, files=3)
    local = pb.RepositorySpec(local=pb.LocalRepository(path=str(tmp_path / "repo")), password=PASSWORD)
    assert operator.backup(project_id, repository=local).wait(timeout=120).state == pb.SUCCEEDED
    bucket = f"sec-{project_id[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    s3 = pb.RepositorySpec(
        s3=pb.S3Repository(endpoint=s3_server.endpoint, region="us-east-1", bucket=bucket,
                           root=f"rustic/project-{project_id}", access_key_id=s3_server.access_key_id,
                           secret_access_key=s3_server.secret_access_key),
        password=PASSWORD,
    )
    done = operator.backup(project_id, repository=s3).wait(timeout=120)
    assert done.state == pb.SUCCEEDED, done.error
    wrong = "wrong-token-" + secrets.token_hex(8)
    assert code_of(secured.client(wrong).capabilities) is grpc.StatusCode.UNAUTHENTICATED

    events = agent.log_events()
    assert [e for e in events if e.get("event") == "process.start"]  # the engine runs were logged ...
    assert [e for e in events if e.get("event") == "rpc.refused"]  # ... and so was the refusal
    stored = b"".join(p.read_bytes() for p in agent.state_dir.glob("agent.sqlite*"))  # journal (+ WAL)
    assert project_id.encode() in stored  # the operations are in there ...
    log = agent.log_path.read_text(errors="replace")
    for secret in (PASSWORD, s3_server.secret_access_key, secured.operator, secured.reader, wrong):
        assert secret not in log
        assert secret.encode() not in stored


# ---------------------------------------------------------------- what the CLIs say when TLS is wrong


def _cli_status(*args: str, prog: str = "hub_client") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", prog, "--retries", "1", *args, "status"], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)


def _only_our_lines(result: subprocess.CompletedProcess, prog: str = "buckets") -> str:
    """stderr, asserted to hold no line but the CLI's own (no gRPC C-core log lines)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith(f"{prog}: ") for line in lines), result.stderr
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_the_cli_says_what_is_wrong_with_tls_instead_of_is_it_running(secured, tmp_path):
    hub_cert, hub_key = (str(p) for p in secured.hub_cert)
    rogue_cert, rogue_key = (str(p) for p in secured.rogue_cert)
    plaintext = _only_our_lines(_cli_status("--agent", secured.target))
    assert "speaks TLS" in plaintext and "--ca" in plaintext and "client certificate" in plaintext
    no_client_cert = _only_our_lines(_cli_status("--agent", secured.target, "--ca", str(secured.host_ca)))
    assert "requires a client certificate" in no_client_cert and "--cert" in no_client_cert
    rogue = _only_our_lines(_cli_status("--agent", secured.target, "--ca", str(secured.host_ca),
                                        "--cert", rogue_cert, "--key", rogue_key))
    assert "rejected the client certificate" in rogue and rogue_cert in rogue
    other_ca = write(tmp_path / "other-ca.pem", Pki.new("other CA").ca_cert)
    wrong_ca = _only_our_lines(_cli_status("--agent", secured.target, "--ca", str(other_ca),
                                           "--cert", hub_cert, "--key", hub_key))
    assert "not trusted by the CA in" in wrong_ca and str(other_ca) in wrong_ca
    # On the agent's host, with its config: the certificate file holds no CA and the agent wants
    # a client certificate; the CLI says that instead of asking whether the agent runs.
    host_side = _only_our_lines(_cli_status("--config", str(secured.agent.config_path), prog="agent"),
                                prog="buckets-agent")
    assert "is it running" not in host_side and ("not trusted" in host_side or "client certificate" in host_side)
    for said in (plaintext, no_client_cert, rogue, wrong_ca):
        assert "is it running" not in said
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    assert "nothing listens on" in _only_our_lines(_cli_status("--agent", closed))
