"""Who may call what on the hub: the agent's bearer tokens and roles (:mod:`agent.auth`), with
the role of every ``buckets.v1.Hub`` method written out here. A method missing from the table
needs ``operator`` (fail closed)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from agent import auth as agent_auth
from agent.auth import OPERATOR, READ_ONLY, READ_ONLY_SERVICES
from agent.config import AuthConfig
from hub_client.service.status_codes import status_for

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


def interceptors(config: AuthConfig) -> list[grpc.aio.ServerInterceptor]:
    """The agent's token check (:mod:`agent.auth`) with the Hub's method roles and its refusals'
    statuses (hub_client/service/status_codes.py)."""
    return agent_auth.interceptors(config, role_of=required_role, server="hub", status_of=status_for)
