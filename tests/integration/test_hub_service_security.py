"""The hub service's own listener: TLS with client certificates (mTLS) and bearer tokens with
roles, as the agent's (a real buckets-hub process, no agent needed)."""

from __future__ import annotations

import secrets

import grpc
import pytest

from hub_client.proto.buckets.v1 import hub_pb2 as hpb
from hub_client.proto.buckets.v1 import hub_pb2_grpc
from tests.certs import Pki, write
from tests.hub_process import HubProcess


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    pytest.importorskip("cryptography")
    pki = tmp_path_factory.mktemp("hub-pki")
    server_ca, client_ca, rogue_ca = Pki.new("hub server CA"), Pki.new("platform CA"), Pki.new("rogue CA")

    def pair(ca: Pki, name: str, **names) -> tuple[bytes, bytes, object, object]:
        cert, key = ca.issue(name, **names)
        return cert, key, write(pki / f"{name}.pem", cert), write(pki / f"{name}.key", key)

    _, _, server_cert, server_key = pair(server_ca, "hub", dns=("localhost",), ips=("127.0.0.1",))
    client_cert, client_key, _, _ = pair(client_ca, "platform", client=True)
    rogue_cert, rogue_key, _, _ = pair(rogue_ca, "rogue", client=True)
    operator, reader = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = write(pki / "tokens", f"operator {operator}\nread-only {reader}\n".encode())
    extra = (f'[server.tls]\ncert_file = "{server_cert}"\nkey_file = "{server_key}"\n'
             f'client_ca_file = "{write(pki / "platform-ca.pem", client_ca.ca_cert)}"\n'
             f'[auth]\ntokens_file = "{tokens}"\n')

    def credentials(token: str | None, cert: bytes | None = client_cert, key: bytes | None = client_key):
        tls = grpc.ssl_channel_credentials(server_ca.ca_cert, key, cert)
        return tls if token is None else grpc.composite_channel_credentials(
            tls, grpc.access_token_call_credentials(token))

    hub = HubProcess(tmp_path_factory.mktemp("secured-hub"), extra=extra, credentials=credentials(operator))
    hub.start()
    channels = []

    def stub(token: str | None, **certs) -> hub_pb2_grpc.HubStub:
        channel = grpc.secure_channel(hub.address, credentials(token, **certs))
        channels.append(channel)
        return hub_pb2_grpc.HubStub(channel)

    yield hub, stub, {"operator": operator, "reader": reader, "rogue": (rogue_cert, rogue_key)}
    for channel in channels:
        channel.close()
    hub.stop()


def code_of(call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, timeout=10)
    return refused.value.code()


def test_tokens_and_roles(secured) -> None:
    hub, stub, tokens = secured
    add = hpb.AddHostRequest(host_id="host-a", address="127.0.0.1:50051", region="eu")
    assert code_of(stub(None).ListHosts, hpb.ListHostsRequest()) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(stub("not-a-token").ListHosts, hpb.ListHostsRequest()) == grpc.StatusCode.UNAUTHENTICATED
    reader = stub(tokens["reader"])
    assert list(reader.ListHosts(hpb.ListHostsRequest(), timeout=10).hosts) == []
    assert code_of(reader.AddHost, add) == grpc.StatusCode.PERMISSION_DENIED
    assert list(reader.ListHosts(hpb.ListHostsRequest(), timeout=10).hosts) == []  # nothing was added
    assert stub(tokens["operator"]).AddHost(add, timeout=10).id == "host-a"
    assert [h.id for h in reader.ListHosts(hpb.ListHostsRequest(), timeout=10).hosts] == ["host-a"]


def test_a_client_without_a_certificate_of_the_configured_ca_gets_nowhere(secured) -> None:
    hub, stub, tokens = secured
    rogue_cert, rogue_key = tokens["rogue"]
    for client in (stub(tokens["operator"], cert=None, key=None),
                   stub(tokens["operator"], cert=rogue_cert, key=rogue_key)):
        assert code_of(client.ListHosts, hpb.ListHostsRequest()) == grpc.StatusCode.UNAVAILABLE
    plaintext = grpc.insecure_channel(hub.address)
    try:
        assert code_of(hub_pb2_grpc.HubStub(plaintext).ListHosts, hpb.ListHostsRequest()) == \
            grpc.StatusCode.UNAVAILABLE
    finally:
        plaintext.close()
