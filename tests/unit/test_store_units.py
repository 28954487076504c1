"""Store pieces that need no database: URL parsing, migration lists, lock keys, imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub_client.store import MoveInProgress, SQLiteStore, migrations, open_store
from hub_client.store.filelock import lock_path

REPO = Path(__file__).resolve().parents[2]


def test_store_imports_without_agent_or_psycopg() -> None:
    """hub_client.store (and its SQLite backend) needs neither agent/ nor psycopg."""
    code = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('agent', 'structlog', 'psutil', 'psycopg'):\n"
        "        raise ImportError('hub_client.store must not import ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import hub_client.store as s\n"
        "st = s.open_store('sqlite:///:memory:')\n"
        "assert st.schema_version() >= 1\n"
        "with st.move_lock('p'):\n"
        "    pass\n"
        "st.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_open_store_urls(tmp_path: Path) -> None:
    memory = open_store("sqlite:///:memory:")
    assert isinstance(memory, SQLiteStore) and memory.path == ":memory:"
    on_disk = open_store(f"sqlite://{tmp_path / 'a.db'}")
    assert on_disk.path == str(tmp_path / "a.db") and on_disk.lock_dir == Path(str(tmp_path / "a.db") + ".locks")
    bare = open_store(str(tmp_path / "b.db"))
    assert isinstance(bare, SQLiteStore)
    for store in (memory, on_disk, bare):
        store.close()
    with pytest.raises(ValueError, match="mysql"):
        open_store("mysql://x/y")


def test_migration_lists_are_numbered_in_order(monkeypatch) -> None:
    for dialect in migrations.MIGRATIONS:
        assert [m.version for m in migrations.pending(dialect, 0)] == list(range(1, migrations.latest(dialect) + 1))
        assert migrations.pending(dialect, migrations.latest(dialect)) == ()
    assert migrations.latest("sqlite") == migrations.latest("postgres")
    monkeypatch.setitem(migrations.MIGRATIONS, "sqlite", (migrations.Migration(2, "gap", ()),))
    with pytest.raises(ValueError, match="1..n"):
        migrations.pending("sqlite", 0)
    with pytest.raises(ValueError, match="oracle"):
        migrations.pending("oracle", 0)


def test_advisory_key_is_stable_signed_64_bit() -> None:
    pytest.importorskip("psycopg", reason="the PostgreSQL backend needs psycopg (pip install -e '.[dev]')")
    from hub_client.store.postgres import advisory_key

    key = advisory_key("project-1")
    assert -(2**63) <= key < 2**63
    assert key != advisory_key("project-2")
    other_process = subprocess.run(
        [sys.executable, "-c", "from hub_client.store.postgres import advisory_key as k; print(k('project-1'))"],
        check=True, cwd=REPO, capture_output=True, text=True,
    )
    assert int(other_process.stdout) == key


def test_lock_files_are_hashed_names(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "../../etc/passwd")
    assert path.parent == tmp_path and path.name.startswith("move-") and path.suffix == ".lock"


def test_move_in_progress_names_project_and_move() -> None:
    error = MoveInProgress("p1", "m1", "held elsewhere")
    assert str(error) == "move in progress for project p1 (move m1): held elsewhere"
    assert (error.project_id, error.move_id) == ("p1", "m1")
