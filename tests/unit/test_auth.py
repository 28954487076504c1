"""The call-authorisation decisions of agent/auth.py and the listener rules of agent/tls.py.

Pure functions only; the interceptor and the TLS listener are exercised against a real agent
in tests/integration/test_agent_security.py.
"""

from __future__ import annotations

import hmac

import pytest

from agent import auth, errors, logs, tls
from agent.config import AuthConfig, AuthToken, ServerTlsConfig
from hub_client.proto.buckets.v1 import agent_pb2 as pb

OPERATOR_TOKEN = "op-7d1f0c9e2b4a6f88"
READ_TOKEN = "ro-31c5a9e07b2d4f16"
TOKENS = (AuthToken(role="read-only", token=READ_TOKEN), AuthToken(role="operator", token=OPERATOR_TOKEN))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("user-agent", "test"), ("authorization", f"Bearer {token}"))


# ---------------------------------------------------------------- the method table


def test_every_rpc_of_the_agent_service_is_classified_and_nothing_else():
    """Fails when an RPC is added to (or removed from) agent.proto without updating
    auth.AGENT_METHOD_ROLES: a new RPC must be classified on purpose."""
    service = pb.DESCRIPTOR.services_by_name["Agent"]
    assert service.full_name == auth.AGENT_SERVICE
    assert set(auth.AGENT_METHOD_ROLES) == {method.name for method in service.methods}
    assert set(auth.AGENT_METHOD_ROLES.values()) <= {auth.READ_ONLY, auth.OPERATOR}


@pytest.mark.parametrize("method", [
    "Backup", "Restore", "Verify", "EnsureProject", "PreCopy", "Drain", "DeleteProject", "Forget", "CopyFiles",
    "CancelOperation", "Freeze", "Thaw", "MarkEdited",
])
def test_every_rpc_that_changes_something_needs_the_operator_role(method):
    assert auth.required_role(f"/buckets.v1.Agent/{method}") == auth.OPERATOR


@pytest.mark.parametrize("full_method", [
    "/buckets.v1.Agent/GetCapabilities", "/buckets.v1.Agent/GetProjectStatus", "/buckets.v1.Agent/GetHostStatus",
    "/buckets.v1.Agent/ListSnapshots", "/buckets.v1.Agent/ListFiles", "/buckets.v1.Agent/ReadFile",
    "/buckets.v1.Agent/GetOperation", "/buckets.v1.Agent/ListOperations", "/buckets.v1.Agent/StreamProgress",
    "/buckets.v1.Agent/CheckCopyTarget",
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
])
def test_looking_needs_only_the_read_only_role(full_method):
    assert auth.required_role(full_method) == auth.READ_ONLY


@pytest.mark.parametrize("full_method", [
    "/buckets.v1.Agent/SomethingNew", "/other.v1.Service/Get", "garbage", "",
])
def test_an_unknown_method_needs_the_operator_role(full_method):
    assert auth.required_role(full_method) == auth.OPERATOR


def test_operator_may_do_everything_read_only_only_look():
    assert auth.allows(auth.OPERATOR, auth.OPERATOR) and auth.allows(auth.OPERATOR, auth.READ_ONLY)
    assert auth.allows(auth.READ_ONLY, auth.READ_ONLY)
    assert not auth.allows(auth.READ_ONLY, auth.OPERATOR)


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize("metadata, expected", [
    ((("authorization", "Bearer abc"),), "abc"),
    ((("authorization", "bearer abc"),), "abc"),
    ((("Authorization", "BEARER  abc "),), "abc"),
    ((("authorization", b"Bearer abc"),), "abc"),
    ((("authorization", "Basic abc"),), None),
    ((("authorization", "Bearer "),), None),
    ((("authorization", "abc"),), None),
    ((("x-token", "Bearer abc"),), None),
    ((), None),
    (None, None),
])
def test_bearer_token_reads_the_authorization_metadata(metadata, expected):
    assert auth.bearer_token(metadata) == expected


def test_role_for_token_finds_each_role_and_nothing_for_a_stranger():
    assert auth.role_for_token(OPERATOR_TOKEN, TOKENS) == "operator"
    assert auth.role_for_token(READ_TOKEN, TOKENS) == "read-only"
    assert auth.role_for_token(OPERATOR_TOKEN + "x", TOKENS) is None
    assert auth.role_for_token(OPERATOR_TOKEN[:-1], TOKENS) is None
    assert auth.role_for_token("", TOKENS) is None
    assert auth.role_for_token("é-not-ascii-0000000", TOKENS) is None
    assert auth.role_for_token(OPERATOR_TOKEN, ()) is None


def test_role_for_token_compares_every_token_in_constant_time_without_stopping_early(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    many = TOKENS + tuple(AuthToken(role="read-only", token=f"filler-token-{i:04d}") for i in range(5))
    assert auth.role_for_token(READ_TOKEN, many) == "read-only"  # the first token matches ...
    assert len(compared) == len(many)  # ... and every other one is still compared
    assert {len(a) for a, _ in compared} == {len(b) for _, b in compared} == {32}  # digests: equal lengths
    compared.clear()
    assert auth.role_for_token("nobody-has-this-token", many) is None
    assert len(compared) == len(many)


# ---------------------------------------------------------------- the decision


def test_no_tokens_configured_means_no_token_is_asked_for():
    assert auth.check("/buckets.v1.Agent/Backup", (), ()) is None
    assert auth.check("/buckets.v1.Agent/Backup", bearer("anything"), ()) is None


def test_a_call_without_a_token_or_with_an_unknown_one_is_unauthenticated():
    with pytest.raises(errors.Unauthenticated, match="requires a bearer token"):
        auth.check("/buckets.v1.Agent/GetCapabilities", (("user-agent", "x"),), TOKENS)
    with pytest.raises(errors.Unauthenticated, match="not valid") as caught:
        auth.check("/buckets.v1.Agent/GetCapabilities", bearer("wrong-token-0000000000"), TOKENS)
    assert "wrong-token" not in str(caught.value)


def test_a_read_only_token_may_look_but_not_start_a_backup():
    assert auth.check("/buckets.v1.Agent/GetProjectStatus", bearer(READ_TOKEN), TOKENS) == "read-only"
    assert auth.check("/buckets.v1.Agent/StreamProgress", bearer(READ_TOKEN), TOKENS) == "read-only"
    with pytest.raises(errors.PermissionDenied) as caught:
        auth.check("/buckets.v1.Agent/Backup", bearer(READ_TOKEN), TOKENS)
    assert str(caught.value) == "Backup needs the operator role; the token presented has the read-only role"
    assert READ_TOKEN not in str(caught.value)


def test_an_operator_token_may_do_everything():
    for method in auth.AGENT_METHOD_ROLES:
        assert auth.check(f"/buckets.v1.Agent/{method}", bearer(OPERATOR_TOKEN), TOKENS) == "operator"
    assert auth.check("/buckets.v1.Agent/NotYetClassified", bearer(OPERATOR_TOKEN), TOKENS) == "operator"


def test_the_refusals_map_to_their_status_codes():
    import grpc

    from agent.status_codes import status_code_for

    assert status_code_for(errors.Unauthenticated("x")) is grpc.StatusCode.UNAUTHENTICATED
    assert status_code_for(errors.PermissionDenied("x")) is grpc.StatusCode.PERMISSION_DENIED


def test_interceptors_none_without_tokens_and_tokens_are_masked_in_logs():
    assert auth.interceptors(AuthConfig()) == []
    token = "interceptor-token-5b8e2d0c"
    installed = auth.interceptors(AuthConfig(tokens=(AuthToken(role="operator", token=token),)))
    assert len(installed) == 1 and isinstance(installed[0], auth.AuthInterceptor)
    event = logs.mask_secrets(None, "info", {"event": "x", "header": f"Bearer {token}", "nested": [token]})
    assert token not in repr(event)


# ---------------------------------------------------------------- the listener


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("[::1]", True),
    ("0.0.0.0", False), ("[::]", False), ("10.0.0.5", False), ("agent.example.com", False), ("", False),
])
def test_is_loopback(host, loopback):
    assert tls.is_loopback(host) is loopback


def test_plaintext_is_warned_about_only_off_loopback():
    tls_config = ServerTlsConfig(cert_file="c.pem", key_file="k.pem")
    assert tls.insecure_listener_warning("127.0.0.1:50051", None) is None
    assert tls.insecure_listener_warning("[::1]:0", None) is None
    assert tls.insecure_listener_warning("0.0.0.0:50051", tls_config) is None
    warning = tls.insecure_listener_warning("0.0.0.0:50051", None)
    assert warning and "0.0.0.0:50051" in warning and "[server.tls]" in warning
    assert tls.insecure_listener_warning("[::]:50051", None)


def test_transport_name():
    assert tls.transport_name(None) == "plaintext"
    assert tls.transport_name(ServerTlsConfig(cert_file="c", key_file="k")) == "tls"
    assert tls.transport_name(ServerTlsConfig(cert_file="c", key_file="k", client_ca_file="ca")) == "mtls"
