from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Dict

import pytest

from multiagent_hive import db
from multiagent_hive.store import Store

from conftest import cli, make_env, settings_from
from waiting import wait_for


def run_ok(env: Dict[str, str], *args: str, stdin: str = "") -> dict:
    result = cli(env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.fixture()
def inited(tmp_path: Path) -> Dict[str, str]:
    env = make_env(tmp_path)
    assert run_ok(env, "--init-database")["changed"] is True
    return env


def test_init_migrate_verify_idempotent(inited: Dict[str, str]) -> None:
    assert run_ok(inited, "--init-database")["changed"] is False
    out = run_ok(inited, "--migrate")
    assert out["changed"] is False and out["schema_version"] == db.SCHEMA_VERSION
    out = run_ok(inited, "--verify-database")
    assert out["integrity"] == "ok" and out["encrypted"] is True
    assert (Path(inited["DATABASE_PATH"]).stat().st_mode & 0o777) == 0o600


def test_migrate_applies_pending_versions(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    conn = db.connect(env["DATABASE_PATH"], env["DATABASE_ENCRYPTION_KEY"], create=True)
    version, _desc, statements = db.MIGRATIONS[0]
    for statement in statements:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    result = cli(env, "--verify-database")
    assert result.returncode == 1 and "run --migrate" in result.stderr
    out = run_ok(env, "--migrate")
    assert out["changed"] is True and out["applied"] == [v for v, _, _ in db.MIGRATIONS[1:]]
    assert run_ok(env, "--migrate")["changed"] is False
    run_ok(env, "--verify-database")


def test_wrong_key_never_creates_or_clobbers(inited: Dict[str, str]) -> None:
    path = Path(inited["DATABASE_PATH"])
    before = path.read_bytes()
    wrong = dict(inited, DATABASE_ENCRYPTION_KEY="ab" * 32)
    for args in (("--init-database",), ("--verify-database",), ("--migrate",)):
        result = cli(wrong, *args)
        assert result.returncode == 1
        assert "wrong DATABASE_ENCRYPTION_KEY" in result.stderr
    assert path.read_bytes() == before
    run_ok(inited, "--verify-database")


def test_missing_database_is_not_created(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    for args in (("--verify-database",), ("--migrate",), ("--backup", str(tmp_path / "b.db"))):
        result = cli(env, *args)
        assert result.returncode == 1 and "does not exist" in result.stderr
    assert not Path(env["DATABASE_PATH"]).exists()


def test_no_plaintext_on_disk(inited: Dict[str, str]) -> None:
    s = settings_from(inited)
    store = Store(s.database_path, s.database_encryption_key)
    marker = "PLAINTEXT-MARKER-" + "x" * 20
    store.create_user("marker_user", "viewer", marker)
    files = [p for p in Path(s.database_path).parent.iterdir() if p.name.startswith("hive.db")]
    assert any(p.name.endswith("-wal") for p in files)  # the WAL is on disk while open
    for p in files:
        data = p.read_bytes()
        assert marker.encode() not in data and b"marker_user" not in data
        assert not data.startswith(b"SQLite format 3")
    store.close()
    # the stock sqlite3 library cannot read it
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(s.database_path).execute("SELECT * FROM users").fetchall()


def test_backup_consistent_while_writing_and_verified(inited: Dict[str, str], tmp_path: Path) -> None:
    s = settings_from(inited)
    store = Store(s.database_path, s.database_encryption_key)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            with store.transaction() as conn:
                for _ in range(20):
                    conn.execute(
                        "INSERT INTO audit_events (ts, event, client_id, detail) VALUES ('t', 'InvalidInput', '127.0.0.1', ?)",
                        ("x" * 200,),
                    )
            written[0] += 20

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: written[0] > 0, "the writer commits before the backup starts")
        dest = tmp_path / "backup.db"
        out = run_ok(inited, "--backup", str(dest))
    finally:
        stop.set()
        thread.join()
        store.close()
    assert out["integrity"] == "ok" and Path(out["path"]) == dest
    assert written[0] > 0
    assert not list(tmp_path.glob(".backup.db.tmp-*"))
    assert not Path(str(dest) + "-wal").exists()
    assert dest.read_bytes()[:15] != b"SQLite format 3"
    # a whole number of writer transactions: the snapshot is consistent
    conn = db.connect(str(dest), s.database_encryption_key, readonly=True)
    count = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    conn.close()
    assert count % 20 == 0
    # verify-backup on .db and .db.gz; an existing destination is refused
    run_ok(inited, "--verify-backup", str(dest))
    assert cli(inited, "--backup", str(dest)).returncode == 1
    with open(dest, "rb") as src, gzip.open(str(dest) + ".gz", "wb") as out_gz:
        shutil.copyfileobj(src, out_gz)
    assert run_ok(inited, "--verify-backup", str(dest) + ".gz")["counts"]["users"] == 0


def test_verify_backup_rejects_corrupt_and_wrong_key(inited: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "b.db"
    run_ok(inited, "--backup", str(dest))
    wrong = dict(inited, DATABASE_ENCRYPTION_KEY="cd" * 32)
    assert cli(wrong, "--verify-backup", str(dest)).returncode == 1
    data = bytearray(dest.read_bytes())
    data[5000:5100] = b"\0" * 100
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    result = cli(inited, "--verify-backup", str(bad))
    assert result.returncode == 1
    notgz = tmp_path / "x.db.gz"
    notgz.write_bytes(b"not gzip")
    assert cli(inited, "--verify-backup", str(notgz)).returncode == 1


def test_restore_keeps_previous_and_verifies(inited: Dict[str, str], tmp_path: Path) -> None:
    s = settings_from(inited)
    store = Store(s.database_path, s.database_encryption_key)
    store.create_user("before", "viewer", "h")
    store.close()
    backup = tmp_path / "b.db"
    run_ok(inited, "--backup", str(backup))
    with open(backup, "rb") as src, gzip.open(str(backup) + ".gz", "wb") as out_gz:
        shutil.copyfileobj(src, out_gz)
    store = Store(s.database_path, s.database_encryption_key)
    store.create_user("after", "viewer", "h")
    store.close()

    # a corrupt source is refused before anything changes
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\0" * 8192)
    assert cli(inited, "--restore", str(corrupt)).returncode == 1
    assert not list(Path(s.database_path).parent.glob("hive.db.pre-restore-*"))

    out = run_ok(inited, "--restore", str(backup) + ".gz")
    assert out["changed"] is True and out["integrity"] == "ok"
    previous = Path(out["previous"])
    assert previous.exists() and previous.name.startswith("hive.db.pre-restore-")
    store = Store(s.database_path, s.database_encryption_key)
    assert store.user_by_name("before") and not store.user_by_name("after")
    store.close()
    kept = db.connect(str(previous), s.database_encryption_key, readonly=True)
    assert kept.execute("SELECT count(*) FROM users WHERE username = 'after'").fetchone()[0] == 1
    kept.close()
    run_ok(inited, "--verify-database")


def test_ensure_user_reads_password_from_stdin_or_file(inited: Dict[str, str], tmp_path: Path) -> None:
    out = run_ok(inited, "--ensure-user", "alice", "--role", "operator", "--password-file", "-", stdin="correct horse battery\n")
    assert out["changed"] is True and out["role"] == "operator"
    again = run_ok(inited, "--ensure-user", "alice", "--role", "admin", "--password-file", "-", stdin="whatever")
    assert again["changed"] is False and again["role"] == "operator"
    short = cli(inited, "--ensure-user", "bob", "--role", "viewer", "--password-file", "-", stdin="short")
    assert short.returncode == 1 and "at least 12" in short.stderr
    pw = tmp_path / "pw"
    pw.write_text("a-file-password-123\n")
    assert run_ok(inited, "--ensure-user", "carol", "--role", "viewer", "--password-file", str(pw))["changed"]
    missing = cli(inited, "--ensure-user", "dave", "--role", "viewer")
    assert missing.returncode == 2 and "--password-file" in missing.stderr
    # hub_app's probe "does the admin exist" (saved password file lost): no password, no change.
    assert run_ok(inited, "--ensure-user", "alice", "--role", "admin") == {**again, "changed": False}
    assert cli(inited, "--ensure-user", "bad name!", "--role", "viewer", "--password-file", str(pw)).returncode == 2
    # there is no way to pass a password on the command line
    assert cli(inited, "--ensure-user", "eve", "--role", "viewer", "--password", "x" * 20).returncode == 2


def test_create_api_key_shown_once_stored_hashed(inited: Dict[str, str]) -> None:
    run_ok(inited, "--ensure-user", "alice", "--role", "viewer", "--password-file", "-", stdin="correct horse battery")
    out = run_ok(inited, "--create-api-key", "--user", "alice", "--key-name", "ci")
    key = out["api_key"]
    assert key.startswith("hive_") and len(key) > 40
    s = settings_from(inited)
    store = Store(s.database_path, s.database_encryption_key)
    rows = store.all("SELECT * FROM api_keys")
    store.close()
    assert len(rows) == 1 and key not in json.dumps(rows)
    assert cli(inited, "--create-api-key", "--user", "nobody").returncode == 1
