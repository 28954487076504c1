"""Transport security of the gRPC listener: TLS or mTLS from ``[server.tls]``, else plaintext.

Plaintext stays the default because the embedded default, the demo and the
tests listen on loopback; a plaintext listener on any other address is
allowed but warned about at start (:func:`insecure_listener_warning`), since
everything on it — repository passwords in requests, bearer tokens — crosses
the network in the clear.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from agent.config import ConfigError, ServerTlsConfig


def server_credentials(tls: ServerTlsConfig | None) -> grpc.ServerCredentials | None:
    """Return the listener's credentials, or None for plaintext.

    With ``tls.client_ca_file`` every client must present a certificate signed
    by one of its CAs (``require_client_auth``): without one, or with one from
    another CA, the handshake fails and no handler runs.

    Raises:
        ConfigError: a file cannot be read (the config check read it, so it
            changed since; the agent must not start half-protected).
    """
    if tls is None:
        return None

    def read(key: str, path: Path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError([f"server.tls.{key}: cannot read {path}: {exc.strerror or exc}"]) from None

    client_ca = None if tls.client_ca_file is None else read("client_ca_file", tls.client_ca_file)
    return grpc.ssl_server_credentials(
        [(read("key_file", tls.key_file), read("cert_file", tls.cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def add_port(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``listen`` on ``server`` (with ``credentials`` when given) and return the port; 0 on failure."""
    if credentials is None:
        return server.add_insecure_port(listen)
    return server.add_secure_port(listen, credentials)


def transport_name(tls: ServerTlsConfig | None) -> str:
    """``"mtls"``, ``"tls"`` or ``"plaintext"``: what the listener asks of a client, for the log."""
    if tls is None:
        return "plaintext"
    return "mtls" if tls.client_ca_file is not None else "tls"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as in a ``host:port`` listen address) only accepts local connections.

    ``localhost`` counts; any other name and the wildcard addresses
    (``0.0.0.0``, ``[::]``) do not.
    """
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_listener_warning(listen: str, tls: ServerTlsConfig | None) -> str | None:
    """Return why listening on ``listen`` is unsafe, or None (TLS configured, or loopback only)."""
    if tls is not None:
        return None
    host = listen.rsplit(":", 1)[0]
    if is_loopback(host):
        return None
    return (f"plaintext gRPC on the non-loopback address {listen}: requests (repository passwords, "
            "bearer tokens) cross the network unencrypted; configure [server.tls]")
