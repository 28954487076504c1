"""The README's walk-through (two hosts on one machine: move, copy, drain, delete) run exactly as
written, then checked against the files and the hub store, not against its own output.

The shell blocks are those right after a ``<!-- walkthrough -->`` line in README.md, concatenated
as they are and run with ``bash -euo pipefail``. The only differences from a reader's shell:
``PATH`` starts with this venv's ``bin`` (``buckets``, ``buckets-agent``), and ``HOME`` and the
working directory are a temporary directory. The walk-through listens on fixed ports, so it runs
in a network namespace of its own (its own loopback: nothing else listens there); without root
or ``ip netns`` the test skips and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hub_client.store import NotFound, open_store
from tests.harness import REPO_ROOT

MARKER = "<!-- walkthrough -->"
WEB = "5e1f0c2a-7b3d-4c8e-9f10-2a3b4c5d6e7f"
DOCS = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
# What the walk-through writes into the projects (its `echo` lines), as bytes on disk.
WEB_FILES = {"index.html": b"<h1>hello</h1>\n", "assets/site.css": b"body { color: teal }\n"}
DOCS_FILES = {"manual/install.md": b"# Install\n"}
RUN_TIMEOUT = 240


def walkthrough_blocks(readme: str) -> list[str]:
    """The fenced shell blocks that directly follow a marker line, in order, each as written
    (the fence lines dropped). Raises ValueError for a marker not followed by a block."""
    lines = readme.splitlines(keepends=True)
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        start = index + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        if start >= len(lines) or not re.fullmatch(r"```(sh|bash)\s*", lines[start]):
            raise ValueError(f"README.md line {index + 1}: the walkthrough marker is not followed by a sh block")
        end = start + 1
        while end < len(lines) and lines[end].rstrip("\n") != "```":
            end += 1
        if end >= len(lines):
            raise ValueError(f"README.md line {start + 1}: the walkthrough block is not closed")
        blocks.append("".join(lines[start + 1:end]))
    return blocks


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the walk-through runs in a network namespace of its own, which needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) for a network namespace"
    return None


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its relative path, with its bytes (no symlink followed)."""
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and not path.is_symlink()}


def namespace_pids(name: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()] if listed.returncode == 0 else []


@pytest.fixture
def netns():
    """A fresh network namespace with its loopback up; in cleanup every process still in it
    (only what the walk-through started) is killed and the namespace removed, also on failure."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    name = f"buckets-walk-{uuid.uuid4().hex[:8]}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.skip(f"cannot add a network namespace: {added.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        for pid in namespace_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_the_blocks_are_found_in_order() -> None:
    blocks = walkthrough_blocks((REPO_ROOT / "README.md").read_text())
    script = "".join(blocks)
    commands = ["buckets-agent serve", "buckets hosts add", "buckets projects add", "backup", "buckets move",
                "buckets copy", "buckets drain", "buckets delete", "kill"]
    positions = [script.find(command) for command in commands]
    assert -1 not in positions and positions == sorted(positions), dict(zip(commands, positions))


def test_the_readme_walkthrough_runs_as_written(netns: str, tmp_path: Path) -> None:
    script = "".join(walkthrough_blocks((REPO_ROOT / "README.md").read_text()))
    bin_dir = Path(sys.executable).parent
    for command in ("buckets", "buckets-agent"):
        assert (bin_dir / command).exists(), f"{command} is not installed in {bin_dir} (make setup)"
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "walkthrough.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home)}
    for name in [name for name in env if name.startswith("BUCKETS_")]:
        del env[name]  # a reader's fresh shell has none of these (store, configs, token, home)
    try:
        ran = subprocess.run(["ip", "netns", "exec", netns, "bash", "-euo", "pipefail",
                              str(tmp_path / "walkthrough.sh")],
                             cwd=home, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the walk-through did not end in {RUN_TIMEOUT} s:\n{exc.stdout}\n{exc.stderr}")
    work = home / "buckets-walk"
    logs = "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(work.glob("*.log")))
    assert ran.returncode == 0, f"exit {ran.returncode}\n{ran.stdout[-6000:]}\n{ran.stderr[-6000:]}{logs}"

    # No agent left running: nothing runs in its namespace (a pid of the machine's other
    # processes may have been reused by now, a process in this namespace is ours).
    agents = {int((work / name).read_text()): name for name in ("host-a.pid", "host-b.pid")}
    left = namespace_pids(netns)
    assert left == [], f"still running in the walk-through's namespace: {left} (the agents: {agents})"

    # The moved project is on host-b, byte for byte what was written, with the copied manual.
    assert files_under(work / "host-b/projects" / f"project-{WEB}") == {
        **WEB_FILES, **{f"docs/{path[len('manual/'):]}": data for path, data in DOCS_FILES.items()}}
    # host-a's copy of it is gone (cleaned up after the move), its home and persist location.
    assert not (work / "host-a/projects" / f"project-{WEB}").exists()
    assert not (work / "host-a/persist" / f"project-{WEB}").exists()
    # The deleted project: no home, no persist location, no repository, no record.
    for path in ("host-a/projects", "host-a/persist", "host-b/projects", "host-b/persist", "repos"):
        assert not (work / path / f"project-{DOCS}").exists(), path
    assert (work / "repos" / f"project-{WEB}").is_dir()

    store = open_store(str(work / "hub.sqlite"), migrate=False)
    try:
        assert store.get_host("host-a").status == "draining"
        assert store.get_host("host-b").status == "running"
        assert store.get_project(WEB).host_id == "host-b"
        with pytest.raises(NotFound):
            store.get_project(DOCS)
        moves = store.list_moves(project_id=WEB)
        assert [(m.status, m.source_host, m.target_host) for m in moves] == [("succeeded", "host-a", "host-b")]
    finally:
        store.close()
