"""The checked-in generated code matches protos/ (regenerated with the pinned grpcio-tools)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen_protos.py"), str(tmp_path)], check=True)
    checked_in = REPO / "hub_client" / "proto"
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    existing = sorted(
        p.relative_to(checked_in) for p in checked_in.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert generated == existing
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, checked_in / p, shallow=False)]
    assert not stale, f"generated code is stale; run `make protos`: {stale}"


def test_every_design_rpc_is_declared() -> None:
    from hub_client.proto.buckets.v1 import agent_pb2

    methods = set(agent_pb2.DESCRIPTOR.services_by_name["Agent"].methods_by_name)
    assert {
        "Backup", "Restore", "Verify", "EnsureProject", "Drain", "DeleteProject", "StreamProgress",
        "GetOperation", "ListOperations", "CancelOperation", "GetProjectStatus", "GetHostStatus",
        "ListSnapshots", "ListFiles", "ReadFile", "Freeze", "Thaw", "MarkEdited", "GetCapabilities",
    } <= methods


def test_hub_client_imports_without_agent_dependencies() -> None:
    """hub_client's generated code and client need only grpcio and protobuf."""
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('agent', 'structlog', 'psutil'):\n"
        "        raise ImportError('hub_client must not import ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import hub_client.client, hub_client.progress\n"
        "from hub_client.proto.buckets.v1 import agent_pb2, agent_pb2_grpc\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_hub_rpc_is_declared() -> None:
    """hub.proto is generated too (the freshness test above compares it) and offers issue 20's calls."""
    from hub_client.proto.buckets.v1 import hub_pb2

    methods = set(hub_pb2.DESCRIPTOR.services_by_name["Hub"].methods_by_name)
    assert {
        "AddHost", "ListHosts", "DrainHost", "UndrainHost", "ForceOffHost", "RemoveHost",
        "AddProject", "GetProject", "ListProjects", "Refresh", "DeleteProject", "CloneProject",
        "StartMove", "GetMove", "ListMoves", "CancelMove", "ResumeMove", "RetryMove",
        "StartCopy", "GetCopy", "ListCopies", "CancelCopy", "ResumeCopy", "RetryCopy",
        "FollowLog", "ListRescues", "ListRegions",
    } <= methods
    assert hub_pb2.DESCRIPTOR.services_by_name["Hub"].methods_by_name["FollowLog"].server_streaming
