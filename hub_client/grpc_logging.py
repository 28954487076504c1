"""No gRPC C-core log lines on the commands' stderr unless asked for.

gRPC's core writes some failures straight to stderr (a TLS handshake error as an
``I0000 … ssl_transport_security.cc`` line, with a warning about absl logging) before the call
fails; the CLIs say what went wrong themselves (hub_client/connection_check.py), and the agent
daemon logs its own events as JSON. The core reads GRPC_VERBOSITY once, when it starts, which
importing the client modules already does: so this module is imported first by both command
line modules, and sets it only when the user has not (GRPC_VERBOSITY=debug still works).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
