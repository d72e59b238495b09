"""`--schema-info`: what the upgrade role reads before it touches a running service."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from multiagent_hive import db

from conftest import cli, make_env


def info(env: Dict[str, str]) -> Dict[str, Any]:
    result = cli(env, "--schema-info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    out: Dict[str, Any] = json.loads(lines[0])
    assert out["changed"] is False and out["supported_schema_max"] == db.SCHEMA_VERSION
    return out


def test_no_database_yet(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    out = info(env)
    assert out["database_exists"] is False and out["schema_version"] is None
    assert out["pending"] == [v for v, _, _ in db.MIGRATIONS]
    assert not Path(env["DATABASE_PATH"]).exists(), "--schema-info must not create the database"


def test_current_database(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    assert cli(env, "--init-database").returncode == 0
    out = info(env)
    assert out["database_exists"] is True and out["schema_version"] == db.SCHEMA_VERSION
    assert out["pending"] == [] and out["backward_compatible"] is True


def _at_version(env: Dict[str, str], version: int) -> None:
    conn = db.connect(env["DATABASE_PATH"], env["DATABASE_ENCRYPTION_KEY"], create=True)
    for number, _desc, statements in db.MIGRATIONS:
        if number <= version:
            for statement in statements:
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def test_pending_and_compatibility(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path)
    _at_version(env, 1)
    out = info(env)
    assert out["schema_version"] == 1 and out["pending"] == [v for v, _, _ in db.MIGRATIONS[1:]]
    assert out["backward_compatible"] is True
    # In-process: a migration marked incompatible flips the answer.
    monkeypatch.setattr(db, "INCOMPATIBLE_MIGRATIONS", frozenset({db.SCHEMA_VERSION}))
    direct = db.schema_info(env["DATABASE_PATH"], env["DATABASE_ENCRYPTION_KEY"])
    assert direct["backward_compatible"] is False


def test_newer_database_is_reported_not_refused(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    _at_version(env, db.SCHEMA_VERSION)
    conn = db.connect(env["DATABASE_PATH"], env["DATABASE_ENCRYPTION_KEY"])
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()
    out = info(env)
    assert out["schema_version"] == db.SCHEMA_VERSION + 1 and out["pending"] == []
    assert "newer than this release" in out["message"]


def test_wrong_key_fails(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    assert cli(env, "--init-database").returncode == 0
    env["DATABASE_ENCRYPTION_KEY"] = "f" * 64
    result = cli(env, "--schema-info")
    assert result.returncode == 1 and "wrong DATABASE_ENCRYPTION_KEY" in result.stderr


def test_failing_migration_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path)
    assert cli(env, "--init-database").returncode == 0
    broken = (db.SCHEMA_VERSION + 1, "broken on purpose", ["ALTER TABLE no_such_table ADD COLUMN x TEXT"])
    monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS + [broken])
    monkeypatch.setattr(db, "SCHEMA_VERSION", broken[0])
    conn = db.connect(env["DATABASE_PATH"], env["DATABASE_ENCRYPTION_KEY"])
    try:
        with pytest.raises(db.DatabaseError, match=r"migration \d+ \(broken on purpose\) failed and was rolled back"):
            db.migrate(conn)
        assert db.schema_version(conn) == broken[0] - 1
    finally:
        conn.close()
