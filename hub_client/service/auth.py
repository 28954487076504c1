"""Who may call what on the hub: the agent's bearer tokens and roles (:mod:`agent.auth`), with
the role of every ``buckets.v1.Hub`` method written out here. A method missing from the table
needs ``operator`` (fail closed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import structlog

from agent import errors, logs
from agent.auth import OPERATOR, READ_ONLY, READ_ONLY_SERVICES, _refusal, allows, bearer_token, role_for_token
from agent.config import AuthConfig, AuthToken
from hub_client.service.status_codes import status_for

log = structlog.get_logger("hub.auth")

HUB_SERVICE = "buckets.v1.Hub"

HUB_METHOD_ROLES: Mapping[str, str] = {
    "AddHost": OPERATOR, "GetHost": READ_ONLY, "ListHosts": READ_ONLY, "DrainHost": OPERATOR,
    "UndrainHost": OPERATOR, "ForceOffHost": OPERATOR, "RemoveHost": OPERATOR,
    "AddProject": OPERATOR, "GetProject": READ_ONLY, "ListProjects": READ_ONLY,
    # Refresh only asks agents and records what they say; it changes no project.
    "Refresh": READ_ONLY, "DeleteProject": OPERATOR, "CloneProject": OPERATOR,
    "StartMove": OPERATOR, "GetMove": READ_ONLY, "ListMoves": READ_ONLY, "CancelMove": OPERATOR,
    "ResumeMove": OPERATOR, "RetryMove": OPERATOR,
    "StartCopy": OPERATOR, "GetCopy": READ_ONLY, "ListCopies": READ_ONLY, "CancelCopy": OPERATOR,
    "ResumeCopy": OPERATOR, "RetryCopy": OPERATOR,
    "FollowLog": READ_ONLY, "ListRescues": READ_ONLY, "ListRegions": READ_ONLY,
}


def required_role(full_method: str) -> str:
    service, _, method = full_method.lstrip("/").partition("/")
    if service == HUB_SERVICE:
        return HUB_METHOD_ROLES.get(method, OPERATOR)
    return READ_ONLY if service in READ_ONLY_SERVICES else OPERATOR


def check(full_method: str, metadata, tokens: Sequence[AuthToken]) -> str | None:
    """The caller's role (None without tokens); raises Unauthenticated / PermissionDenied."""
    if not tokens:
        return None
    presented = bearer_token(metadata)
    if presented is None:
        raise errors.Unauthenticated("this hub requires a bearer token (metadata authorization: Bearer <token>)")
    role = role_for_token(presented, tokens)
    if role is None:
        raise errors.Unauthenticated("the bearer token is not valid for this hub")
    required = required_role(full_method)
    if not allows(role, required):
        method = full_method.rsplit("/", 1)[-1]
        raise errors.PermissionDenied(f"{method} needs the {required} role; the token presented has the {role} role",
                                      method=method, required_role=required, role=role)
    return role


class HubAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Sequence[AuthToken]) -> None:
        self._tokens = tuple(tokens)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        try:
            check(details.method, details.invocation_metadata, self._tokens)
        except errors.BucketsError as exc:
            status = status_for(exc, str(exc))
            log.warning("rpc.refused", method=details.method, code=status.code.name, reason=str(exc))
            return _refusal(await continuation(details), status)
        return await continuation(details)


def interceptors(config: AuthConfig) -> list[grpc.aio.ServerInterceptor]:
    tokens = config.tokens or ()
    for token in tokens:
        logs.register_secret(token.token)
    return [HubAuthInterceptor(tokens)] if tokens else []
