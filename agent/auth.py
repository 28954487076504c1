"""Who may call what: bearer tokens with a role, checked before any handler runs.

A caller presents ``authorization: Bearer <token>`` metadata (what
:class:`hub_client.client.AgentClient` sends). Each configured token grants one
of two roles:

- ``read-only``: look, never change — status, capabilities, browsing
  backups, following operations, health and reflection;
- ``operator``: everything, including every call that changes data or state
  on the host.

The decision is made by pure functions (:func:`required_role`,
:func:`bearer_token`, :func:`role_for_token`, :func:`check`) and enforced by
:class:`AuthInterceptor`, a grpc.aio server interceptor, so a servicer method
cannot forget it. The role of every ``buckets.v1.Agent`` method is written out
in :data:`AGENT_METHOD_ROLES`; a method missing from it needs ``operator``
(fail closed), and a unit test fails when the proto gains a method the table
does not name. With no tokens configured no interceptor is installed at all
(loopback and tests, as before).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence

import grpc
import structlog

from agent import errors, logs, status_codes
from agent.config import AUTH_ROLES, AuthConfig, AuthToken

log = structlog.get_logger("agent.auth")

READ_ONLY, OPERATOR = AUTH_ROLES

AGENT_SERVICE = "buckets.v1.Agent"

AGENT_METHOD_ROLES: Mapping[str, str] = {
    # Operations: each starts work that writes a repository, a project, or both.
    "Backup": OPERATOR,
    "Restore": OPERATOR,
    # Verify writes nothing, but it starts an operation that can read a whole repository
    # for hours and holds the project's operation slot: not for a read-only caller.
    "Verify": OPERATOR,
    "EnsureProject": OPERATOR,
    "PreCopy": OPERATOR,
    "Drain": OPERATOR,
    "DeleteProject": OPERATOR,
    "Forget": OPERATOR,
    "UndoRestore": OPERATOR,
    "CopyFiles": OPERATOR,
    # A copy's preflight: says whether a path exists in a project, changes nothing.
    "CheckCopyTarget": READ_ONLY,
    # Following operations.
    "StreamProgress": READ_ONLY,
    "GetOperation": READ_ONLY,
    "ListOperations": READ_ONLY,
    "CancelOperation": OPERATOR,
    # Status.
    "GetProjectStatus": READ_ONLY,
    "GetHostStatus": READ_ONLY,
    "GetCapabilities": READ_ONLY,
    "ListProjects": READ_ONLY,
    # Browsing backups.
    "ListSnapshots": READ_ONLY,
    "ListFiles": READ_ONLY,
    "ReadFile": READ_ONLY,
    # Move lock and freshness: they change what the host does with a project.
    "Freeze": OPERATOR,
    "Thaw": OPERATOR,
    "MarkEdited": OPERATOR,
}

# Every method of these services only reads.
READ_ONLY_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})


def required_role(full_method: str) -> str:
    """Return the role ``full_method`` (``"/package.Service/Method"``) needs.

    A method this module does not know needs :data:`OPERATOR`: a new RPC is
    closed to read-only callers until someone classifies it.
    """
    service, _, method = full_method.lstrip("/").partition("/")
    if service == AGENT_SERVICE:
        return AGENT_METHOD_ROLES.get(method, OPERATOR)
    if service in READ_ONLY_SERVICES:
        return READ_ONLY
    return OPERATOR


def allows(role: str, required: str) -> bool:
    """Whether a caller with ``role`` may call a method that needs ``required``."""
    return role == OPERATOR or required == READ_ONLY


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """Return the token of the first ``authorization: Bearer <token>`` entry of ``metadata``.

    None when there is no such entry, or it uses another scheme or is empty.
    The scheme is matched case-insensitively (RFC 7235).
    """
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def role_for_token(presented: str, tokens: Sequence[AuthToken]) -> str | None:
    """Return the role of ``presented`` among ``tokens``, or None when it is none of them.

    Every configured token is compared, in constant time each
    (:func:`hmac.compare_digest` of SHA-256 digests, so unequal lengths take no
    shortcut either), and the loop never stops early: the time taken does not
    tell which token, or which role, came close.
    """
    wanted = _digest(presented)
    found: str | None = None
    for candidate in tokens:
        if hmac.compare_digest(wanted, _digest(candidate.token)) and found is None:
            found = candidate.role
    return found


def check(full_method: str, metadata: Iterable[tuple[str, str | bytes]] | None,
          tokens: Sequence[AuthToken], *, role_of: Callable[[str], str] = required_role,
          server: str = "agent") -> str | None:
    """Decide one call: return the caller's role (None when no tokens are configured).
    ``role_of`` gives the role a method needs (the hub passes its own table); ``server`` names
    the server in the messages.

    Raises:
        errors.Unauthenticated: tokens are configured and the call carries none, or an unknown one.
        errors.PermissionDenied: the token's role does not allow ``full_method``.
    """
    if not tokens:
        return None
    presented = bearer_token(metadata)
    if presented is None:
        raise errors.Unauthenticated(f"this {server} requires a bearer token (metadata authorization: Bearer <token>)")
    role = role_for_token(presented, tokens)
    if role is None:
        raise errors.Unauthenticated(f"the bearer token is not valid for this {server}")
    required = role_of(full_method)
    if not allows(role, required):
        method = full_method.rsplit("/", 1)[-1]
        raise errors.PermissionDenied(
            f"{method} needs the {required} role; the token presented has the {role} role",
            method=method, required_role=required, role=role,
        )
    return role


def _refusal(handler: grpc.RpcMethodHandler | None, status: grpc.Status) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with ``status`` at once.

    The request is never deserialized: a refused caller's bytes are not parsed.
    """

    async def refuse(_request, context: grpc.aio.ServicerContext):
        await context.abort(status.code, status.details, status.trailing_metadata)

    request_streaming = bool(handler and handler.request_streaming)
    response_streaming = bool(handler and handler.response_streaming)
    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call that :func:`check` refuses, before its handler runs.

    Takes the configured tokens. A refusal is logged (method, code, reason) —
    never the token presented.
    """

    def __init__(self, tokens: Sequence[AuthToken], *, role_of: Callable[[str], str] = required_role,
                 server: str = "agent",
                 status_of: Callable[[BaseException, str], grpc.Status] = status_codes.status_for) -> None:
        self._tokens = tuple(tokens)
        self._role_of, self._server, self._status_of = role_of, server, status_of

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        try:
            check(handler_call_details.method, handler_call_details.invocation_metadata, self._tokens,
                  role_of=self._role_of, server=self._server)
        except errors.BucketsError as exc:
            status = self._status_of(exc, str(exc))
            log.warning("rpc.refused", method=handler_call_details.method, code=status.code.name, reason=str(exc))
            return _refusal(await continuation(handler_call_details), status)
        return await continuation(handler_call_details)


def interceptors(config: AuthConfig, **checking) -> list[grpc.aio.ServerInterceptor]:
    """The server interceptors for ``config``: none without tokens, else one :class:`AuthInterceptor`
    (``checking``: its role_of / server / status_of, for the hub's service).

    The tokens are also registered with :mod:`agent.logs`, so no log event can
    carry one even by accident.
    """
    tokens = config.tokens or ()
    for token in tokens:
        logs.register_secret(token.token)
    return [AuthInterceptor(tokens, **checking)] if tokens else []
