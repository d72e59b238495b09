"""The SQLCipher database: open with the key, migrations, verification, backup and restore."""
from __future__ import annotations

import datetime as _dt
import gzip
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from sqlcipher3 import dbapi2

# The driver is part of this module's interface: the API handles its DatabaseError (507/503).
sqlite = dbapi2

PLAINTEXT_HEADER = b"SQLite format 3\x00"


class DatabaseError(Exception):
    """A database problem with a message fit for an operator."""


# Versioned migrations: (version, description, statements). Never edit a released one; append.
MIGRATIONS: List[Tuple[int, str, List[str]]] = [
    (
        1,
        "users, api keys, agents, tasks",
        [
            """CREATE TABLE users (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                username TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
                password_hash TEXT NOT NULL,
                pseudonym TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE api_keys (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                created_at TEXT NOT NULL,
                last_used_at TEXT
            )""",
            """CREATE TABLE agents (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                type TEXT NOT NULL,
                capabilities TEXT NOT NULL,
                state TEXT NOT NULL,
                current_task TEXT,
                tasks_completed INTEGER NOT NULL DEFAULT 0,
                created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE tasks (
                id TEXT PRIMARY KEY,
                description TEXT NOT NULL,
                priority INTEGER NOT NULL,
                required_capabilities TEXT NOT NULL,
                state TEXT NOT NULL,
                assigned_agent TEXT,
                result TEXT,
                error TEXT,
                created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        ],
    ),
    (
        2,
        "audit trail and lookup indexes",
        [
            """CREATE TABLE audit_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts TEXT NOT NULL,
                event TEXT NOT NULL,
                client_id TEXT NOT NULL,
                user_id INTEGER,
                user_ref TEXT,
                username TEXT,
                detail TEXT
            )""",
            "CREATE INDEX audit_events_user ON audit_events(user_id)",
            "CREATE INDEX audit_events_event ON audit_events(event)",
            "CREATE INDEX agents_state ON agents(state)",
            "CREATE INDEX agents_created_by ON agents(created_by)",
            "CREATE INDEX tasks_state ON tasks(state)",
            "CREATE INDEX tasks_created_by ON tasks(created_by)",
        ],
    ),
    (
        3,
        "credential lifecycle: random token subject, token generation, disabled users, session-bound keys",
        [
            # Tokens name a user by `subject` (random, never reused), not by the row id a restore
            # can hand to someone else; `token_generation` moves on every password change, role
            # change, disable and revoke, which ends every JWT issued before.
            "ALTER TABLE users ADD COLUMN subject TEXT",
            "UPDATE users SET subject = lower(hex(randomblob(16))) WHERE subject IS NULL",
            "CREATE UNIQUE INDEX users_subject ON users(subject)",
            "ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",
            # A key minted with a JWT belongs to that session generation (NULL: made by the CLI
            # on the host), so revoking the sessions also ends the keys a stolen token minted.
            "ALTER TABLE api_keys ADD COLUMN session_generation INTEGER",
            "CREATE INDEX api_keys_user ON api_keys(user_id)",
        ],
    ),
    (
        4,
        "indexes for the list queries and the audit retention",
        [
            # Every list is ORDER BY created_at LIMIT/OFFSET; without these each page sorted the table.
            "CREATE INDEX agents_created_at ON agents(created_at)",
            "CREATE INDEX tasks_created_at ON tasks(created_at)",
            "CREATE INDEX tasks_state_created_at ON tasks(state, created_at)",
            # The retention deletes by age.
            "CREATE INDEX audit_events_ts ON audit_events(ts)",
        ],
    ),
    (
        5,
        "key origin, audit target, restore state",
        [
            # 'cli' for a key an admin made on the host, 'http' for one minted over the API: a
            # password change or a disable ends every 'http' key of the user. Existing unbound
            # keys are 'cli' unless their creation's audit row shows the API made them.
            "ALTER TABLE api_keys ADD COLUMN created_via TEXT",
            "UPDATE api_keys SET created_via = CASE WHEN session_generation IS NOT NULL OR EXISTS ("
            " SELECT 1 FROM audit_events a WHERE a.event = 'AccountChange'"
            " AND a.detail LIKE '%action=api-key-create %'"
            " AND a.detail LIKE '% key_id=' || api_keys.id || ' bound_to_session=%')"
            " THEN 'http' ELSE 'cli' END",
            # The user an AccountChange was about (its `target=` pseudonym): the GDPR export
            # includes what others did to the user.
            "ALTER TABLE audit_events ADD COLUMN target_ref TEXT",
            "UPDATE audit_events SET target_ref = substr(detail, instr(detail, 'target=') + 7, 18)"
            " WHERE event = 'AccountChange' AND instr(detail, 'target=u-') > 0",
            "CREATE INDEX audit_events_target ON audit_events(target_ref) WHERE target_ref IS NOT NULL",
            # Small named values of the service: `sessions_valid_after` (set by a restore).
            "CREATE TABLE service_state (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
# Migrations the previous release cannot run on (they drop or rename what older code reads).
# Every other migration only adds, so the running release may keep serving while it is applied;
# for these the service must be stopped first (the upgrade role reads this through --schema-info).
INCOMPATIBLE_MIGRATIONS: FrozenSet[int] = frozenset()


def key_pragma(key: str) -> str:
    """64 hex digits (`openssl rand -hex 32`) are used as the raw 256-bit key, which skips
    SQLCipher's per-open PBKDF2; anything else is a passphrase."""
    if re.fullmatch(r"[0-9A-Fa-f]{64}", key):
        return f"PRAGMA key = \"x'{key}'\""
    return "PRAGMA key = '" + key.replace("'", "''") + "'"


def _wipe(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def connect(path: str, key: str, *, create: bool = False, readonly: bool = False) -> Any:
    """Open and key the database; raise DatabaseError for a missing file or a wrong key.

    Without create=True a missing file is an error, so a typo or wrong path never produces a
    new empty database.
    """
    existed = os.path.exists(path)
    if not existed and not create:
        raise DatabaseError(f"database {path} does not exist (run --init-database)")
    if existed and os.path.getsize(path) > 0:
        with open(path, "rb") as handle:
            if handle.read(16) == PLAINTEXT_HEADER:
                raise DatabaseError(f"database {path} is a plaintext SQLite file, not SQLCipher")
    mode = "ro" if readonly else ("rwc" if create else "rw")
    uri = "file:" + _uri_path(path) + f"?mode={mode}"
    old_umask = os.umask(0o077)
    try:
        conn = sqlite.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    except sqlite.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    finally:
        os.umask(old_umask)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(key_pragma(key))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite.DatabaseError as exc:
        conn.close()
        if not existed:
            _wipe(path)
        raise DatabaseError(
            f"cannot read database {path}: wrong DATABASE_ENCRYPTION_KEY or not a database ({exc})"
        ) from exc
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -4096")  # 4 MiB of decrypted pages is plenty here
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))


def schema_version(conn: Any) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row["user_version"] if isinstance(row, dict) else row[0])


def migrate(conn: Any) -> List[int]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise DatabaseError(
            f"database schema version {current} is newer than this release ({SCHEMA_VERSION})"
        )
    applied: List[int] = []
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite.Error as exc:
            conn.execute("ROLLBACK")
            # One line for the operator (and the upgrade role's message), not a traceback.
            raise DatabaseError(
                f"migration {version} ({description}) failed and was rolled back: {exc}; "
                f"applied before it: {applied or 'none'}"
            ) from exc
        except Exception:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def schema_info(path: str, key: str) -> Dict[str, Any]:
    """What an upgrade needs to know before it touches anything: the database's schema version,
    the newest this release understands, the migrations it would apply and whether the release
    running now could keep serving on the migrated schema. A database newer than this release
    is reported (pending is then empty), not refused: deciding is the caller's job."""
    if not os.path.exists(path):
        version: Optional[int] = None
    else:
        conn = connect(path, key)
        try:
            version = schema_version(conn)
        finally:
            conn.close()
    pending = [v for v, _d, _s in MIGRATIONS if v > (version or 0)]
    if version is None:
        message = f"database {path} does not exist"
    elif version > SCHEMA_VERSION:
        message = f"database schema version {version} is newer than this release ({SCHEMA_VERSION})"
    else:
        message = f"pending migrations {pending}" if pending else "schema is current"
    return {
        "changed": False,
        "message": message,
        "database_exists": version is not None,
        "schema_version": version,
        "supported_schema_max": SCHEMA_VERSION,
        "pending": pending,
        "backward_compatible": not any(v in INCOMPATIBLE_MIGRATIONS for v in pending),
    }


def init_database(path: str, key: str) -> Dict[str, Any]:
    if os.path.exists(path):
        conn = connect(path, key)
        try:
            version = schema_version(conn)
        finally:
            conn.close()
        return {"changed": False, "message": f"database {path} already exists", "schema_version": version}
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DatabaseError(f"directory {parent} does not exist")
    conn = connect(path, key, create=True)
    try:
        migrate(conn)
        version = schema_version(conn)
    except Exception:
        conn.close()
        _wipe(path)
        raise
    conn.close()
    os.chmod(path, 0o600)
    return {"changed": True, "message": f"created encrypted database {path}", "schema_version": version}


def check(conn: Any, path: str, *, require_current: bool = True) -> Dict[str, Any]:
    """Integrity (page-level and SQLCipher HMAC) and schema version; raises DatabaseError."""
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if rows != ["ok"]:
        raise DatabaseError(f"integrity check failed for {path}: {'; '.join(map(str, rows[:5]))}")
    bad = conn.execute("PRAGMA cipher_integrity_check").fetchall()
    if bad:
        raise DatabaseError(f"cipher integrity check failed for {path}: {bad[0][0]}")
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise DatabaseError(f"schema version {version} of {path} is newer than this release ({SCHEMA_VERSION})")
    if require_current and version != SCHEMA_VERSION:
        raise DatabaseError(f"schema version {version} of {path} is not current ({SCHEMA_VERSION}): run --migrate")
    with open(path, "rb") as handle:
        if handle.read(16) == PLAINTEXT_HEADER:
            raise DatabaseError(f"{path} is not encrypted")
    return {"schema_version": version, "integrity": "ok", "encrypted": True}


def verify_database(path: str, key: str) -> Dict[str, Any]:
    conn = connect(path, key)
    try:
        result = check(conn, path)
        cipher = conn.execute("PRAGMA cipher_version").fetchone()[0]
    finally:
        conn.close()
    return {"changed": False, "message": f"database {path} ok", "cipher_version": cipher, **result}


def _copy_into(src: Any, dest_path: str, key: str) -> None:
    """Online backup API: a consistent snapshot even while another process writes."""
    dest = connect(dest_path, key, create=True)
    try:
        src.backup(dest)
        # A self-contained file: no -wal/-shm beside a backup.
        dest.execute("PRAGMA journal_mode = DELETE")
    finally:
        dest.close()


def backup(path: str, key: str, dest: str) -> Dict[str, Any]:
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise DatabaseError(f"backup destination {dest} already exists")
    dest_dir = os.path.dirname(dest)
    if not os.path.isdir(dest_dir):
        raise DatabaseError(f"backup directory {dest_dir} does not exist")
    src = connect(path, key)
    tmp = os.path.join(dest_dir, f".{os.path.basename(dest)}.tmp-{os.getpid()}")
    _wipe(tmp)
    try:
        _copy_into(src, tmp, key)
        verify_conn = connect(tmp, key, readonly=True)
        try:
            result = check(verify_conn, tmp, require_current=False)
        finally:
            verify_conn.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except Exception:
        _wipe(tmp)
        raise
    finally:
        src.close()
    return {
        "changed": True,
        "message": f"backup written to {dest} and verified",
        "path": dest,
        "size": os.path.getsize(dest),
        **result,
    }


class _Plain:
    """A .db path, or a .db.gz decompressed into a private temporary file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tmpdir: Optional[str] = None
        self.path = source

    def __enter__(self) -> str:
        if not os.path.isfile(self.source):
            raise DatabaseError(f"{self.source} does not exist")
        if self.source.endswith(".gz"):
            # The content is SQLCipher ciphertext, so a private temporary copy leaks nothing.
            self.tmpdir = tempfile.mkdtemp(prefix="hive-backup-")
            self.path = os.path.join(self.tmpdir, "backup.db")
            try:
                with gzip.open(self.source, "rb") as src, open(self.path, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (OSError, EOFError) as exc:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                raise DatabaseError(f"cannot decompress {self.source}: {exc}") from exc
        return self.path

    def __exit__(self, *exc: Any) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def verify_backup(source: str, key: str) -> Dict[str, Any]:
    with _Plain(source) as plain:
        conn = connect(plain, key, readonly=True)
        try:
            result = check(conn, plain, require_current=False)
            counts = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("users", "agents", "tasks")
            } if result["schema_version"] >= 1 else {}
        except sqlite.Error as exc:
            raise DatabaseError(f"backup {source} unreadable: {exc}") from exc
        finally:
            conn.close()
    return {"changed": False, "message": f"backup {source} ok", "path": source, "counts": counts, **result}


def restore(path: str, key: str, source: str, after: Optional[Callable[[Any], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Restore `source` over the database at `path` (kept as `<path>.pre-restore-<ts>`), migrate
    it, run `after(connection)` on it (the CLI replays the credential journal there), check it.
    `after`'s answer is part of the result."""
    replayed: Dict[str, Any] = {}
    with _Plain(source) as plain:
        src = connect(plain, key, readonly=True)
        try:
            check(src, plain, require_current=False)
            previous = None
            if os.path.exists(path):
                stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                previous = f"{path}.pre-restore-{stamp}"
                if os.path.exists(previous):
                    raise DatabaseError(f"{previous} already exists")
                try:
                    current = connect(path, key)
                except DatabaseError:
                    # Unreadable current database: set the files aside as they are.
                    for suffix in ("", "-wal", "-shm"):
                        if os.path.exists(path + suffix):
                            os.replace(path + suffix, previous + suffix)
                else:
                    try:
                        _copy_into(current, previous, key)
                        os.chmod(previous, 0o600)
                    finally:
                        current.close()
            # Prepared beside the database and moved over it only when complete: a restore that
            # fails half-way (a journal that cannot be replayed) leaves the database as it was.
            staged = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.restore-{os.getpid()}")
            _wipe(staged)
            try:
                target = connect(staged, key, create=True)
                try:
                    src.backup(target)
                    migrate(target)
                    if after is not None:
                        try:
                            replayed = after(target)
                        except (OSError, ValueError, KeyError, sqlite.Error) as exc:
                            raise DatabaseError(f"replaying the credential journal failed, nothing restored: {exc}") from exc
                    result = check(target, staged)
                    target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file to move
                finally:
                    target.close()
                os.chmod(staged, 0o600)
                for suffix in ("-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.unlink(path + suffix)
                os.replace(staged, path)
            finally:
                _wipe(staged)
        finally:
            src.close()
    return {
        "changed": True,
        "message": f"restored {path} from {source}",
        "previous": previous,
        **replayed,
        **result,
    }
