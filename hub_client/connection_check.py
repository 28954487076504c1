"""Why an agent cannot be reached, in words: gRPC says UNAVAILABLE for a stopped agent, a
plaintext client at a TLS port, a missing client certificate and an untrusted server
certificate alike. After such a failure the CLIs connect once more themselves (TCP, then a TLS
handshake with Python's ``ssl``) and name the cause and the option that fixes it.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Handshake:
    """What a TLS handshake with the agent came to: ``ok``, or the error it raised (``error``,
    ``verify_message`` for an untrusted certificate) and whether it happened after the handshake
    when the agent read our certificate (``rejected_after``: an mTLS refusal)."""

    ok: bool
    error: str = ""
    verify_message: str = ""
    rejected_after: bool = False


def explain(target: str, *, tls_used: bool, ca_file: Path | None = None, cert_file: Path | None = None,
            key_file: Path | None = None, server_name: str | None = None,
            timeout: float = PROBE_TIMEOUT) -> str:
    """A sentence saying why ``target`` (``host:port``) did not answer a client with these TLS
    settings; "" when the probe finds nothing wrong (or cannot probe, e.g. a unix: target)."""
    address = _split(target)
    if address is None:
        return ""
    host, port = address
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return f"nothing listens on {target}: is the agent running, and is this its address?"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    except OSError as exc:
        return f"cannot connect to {target}: {exc.strerror or exc} (a firewall, or a wrong address?)"
    plain = _handshake(host, port, verify=False, timeout=timeout)
    speaks_tls = plain.ok or plain.rejected_after
    if not tls_used:
        if speaks_tls:
            return (f"the agent at {target} speaks TLS and this client did not: pass --ca (the CA of the agent's "
                    "certificate; on the agent's host `buckets-agent --config` uses its own certificate)"
                    + (" and --cert/--key (the agent requires a client certificate)" if plain.rejected_after else ""))
        return ""
    if not speaks_tls:
        return f"the agent at {target} does not speak TLS (plaintext): leave out --ca/--cert/--key"
    checked = _handshake(host, port, verify=True, timeout=timeout, ca_file=ca_file, cert_file=cert_file,
                         key_file=key_file, server_name=server_name)
    if checked.verify_message:
        trusted = f"the CA in {ca_file}" if ca_file else "the system's CAs"
        return (f"the agent's certificate at {target} is not trusted by {trusted}: {checked.verify_message}"
                + (" (--ca must name the CA that signed the agent's certificate)" if "unable to get" in
                   checked.verify_message or "self-signed" in checked.verify_message else ""))
    if checked.rejected_after or (not checked.ok and "certificate" in checked.error):
        if cert_file is None:
            return f"the agent at {target} requires a client certificate (mTLS): pass --cert and --key"
        return (f"the agent at {target} rejected the client certificate {cert_file} ({checked.error}): it must be "
                "signed by a CA in the agent's [server.tls] client_ca_file")
    if not checked.ok:
        return f"the TLS handshake with {target} failed: {checked.error}"
    return ""


def _split(target: str) -> tuple[str, int] | None:
    if target.startswith("unix:"):
        return None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _handshake(host: str, port: int, *, verify: bool, timeout: float, ca_file: Path | None = None,
               cert_file: Path | None = None, key_file: Path | None = None,
               server_name: str | None = None) -> Handshake:
    """One TLS handshake with ALPN h2 (as gRPC), then a short read: a server that wants a client
    certificate says so with an alert only after the client's half of a TLS 1.3 handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    if verify:
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file))
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name or host) as conn:
                try:
                    conn.settimeout(min(timeout, 1.0))
                    if conn.recv(1) == b"":
                        return Handshake(False, error="the agent closed the connection after the handshake",
                                         rejected_after=True)
                except (TimeoutError, socket.timeout):
                    pass  # the server waits for our HTTP/2 preface: it took us in
                except ssl.SSLError as exc:
                    return Handshake(False, error=_reason(exc), rejected_after=True)
                except OSError:
                    pass
                return Handshake(True)
    except ssl.SSLCertVerificationError as exc:
        return Handshake(False, error=_reason(exc), verify_message=exc.verify_message or _reason(exc))
    except ssl.SSLError as exc:
        return Handshake(False, error=_reason(exc))
    except OSError as exc:
        return Handshake(False, error=str(exc.strerror or exc))


def _reason(exc: ssl.SSLError) -> str:
    return (exc.reason or str(exc)).replace("_", " ").lower() if isinstance(exc, ssl.SSLError) else str(exc)
