"""Agent addresses as the hub and the CLIs dial them: ``host:port`` (an IPv6 host in brackets)
with a port in 1..65535, or ``unix:/path``. Checked where they come in (``--agent``, ``hosts
add``), so a typo is a usage error and not a connection to port 0 or a host that never answers.
"""

from __future__ import annotations

import argparse

FORM = 'host:port with a port in 1..65535 (an IPv6 host as [addr]:port), or unix:/path'


def address_problem(value: str) -> str | None:
    """Why ``value`` cannot be dialled as an agent address; None when it can."""
    if value.startswith("unix:"):
        return None if len(value) > len("unix:") else f"{value!r} names no socket path"
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"{value!r} has no port: write it as {FORM}"
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return f"{value!r}: the port must be 1..65535"
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            return f"{value!r}: an IPv6 host is written [addr]:port"
    elif ":" in host:
        return f"{value!r}: an IPv6 host is written [addr]:port"
    if any(c.isspace() or c in "/?#@" for c in host):
        return f"{value!r}: {host!r} is not a host name or address"
    return None


def agent_address(value: str) -> str:
    """An argparse ``type``: ``value`` when it is a dialable address, else a usage error."""
    problem = address_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value
