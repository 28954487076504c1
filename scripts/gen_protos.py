"""Regenerate the checked-in Python code for protos/ (generator: grpcio-tools, pinned in pyproject).

The code goes to hub_client/proto/ so the hub can import it without the agent's
dependencies. protoc writes absolute imports rooted at the proto package
(``from buckets.v1 import agent_pb2``); they are rewritten to live under
``hub_client.proto``.

Usage: python scripts/gen_protos.py [OUTPUT_DIR]   (default: the repository's hub_client/proto)
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
PACKAGE = "hub_client.proto"
PROTO_FILES = ["buckets/v1/agent.proto", "buckets/v1/hub.proto"]


def generate(output_dir: Path) -> None:
    """Write each proto's _pb2.py, _pb2.pyi and _pb2_grpc.py (plus package __init__ files) under output_dir."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for path in sorted(Path(tmp).rglob("*.py*")):
            relative = path.relative_to(tmp)
            text = re.sub(r"^from buckets\.", f"from {PACKAGE}.buckets.", path.read_text(), flags=re.M)
            target = output_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    for directory in [output_dir, *[p for p in output_dir.rglob("*") if p.is_dir()]]:
        if directory.name != "__pycache__":
            (directory / "__init__.py").touch()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "hub_client" / "proto"
    if output.exists() and len(sys.argv) == 1:
        shutil.rmtree(output)
    generate(output)


if __name__ == "__main__":
    main()
