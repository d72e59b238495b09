"""All SQL of the service. Every statement is parameterized; one connection per process."""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import db, journal
from .security import new_pseudonym


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(cursor: Any, row: Tuple[Any, ...]) -> Dict[str, Any]:
    return {col[0]: row[i] for i, col in enumerate(cursor.description)}


USER_COLUMNS = "id, username, role, pseudonym, subject, token_generation, disabled"
AGENT_COLUMNS = "id, name, type, capabilities, state, current_task, tasks_completed, created_at, updated_at"
# One SQL statement and its parameters.
Statement = Tuple[str, Tuple[Any, ...]]
# What a restore puts where a password changed after the backup was taken: no hash, so no
# password matches until an admin sets a new one (the journal keeps no hash to restore).
LOCKED_PASSWORD = "!locked: the password changed after the restored backup; reset it"
TASK_COLUMNS = (
    "id, description, priority, required_capabilities, state, assigned_agent, result, error, "
    "created_at, updated_at"
)


class Store:
    """The shared connection. SQLite calls are short, so they run on the event loop; the lock
    keeps them correct when the test client or a thread uses the store too."""

    def __init__(self, path: str, key: str) -> None:
        self.path = path
        self.key = key
        self.journal = journal.journal_path(path)
        self.conn = db.connect(path, key)
        self.conn.row_factory = _row
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def one(self, sql: str, params: Tuple[Any, ...] = ()) -> Optional[Dict[str, Any]]:
        with self.lock:
            result: Optional[Dict[str, Any]] = self.conn.execute(sql, params).fetchone()
            return result

    def all(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Dict[str, Any]]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def execute(self, sql: str, params: Tuple[Any, ...] = ()) -> int:
        with self.lock:
            cur = self.conn.execute(sql, params)
            return int(cur.rowcount)

    def execute_each(self, statements: List[Statement]) -> List[Optional[BaseException]]:
        """Run statements in one transaction (one commit, one encryption of each page they
        touch); if that fails, each in its own, so one bad row does not fail the others.
        Returns each statement's error, None where it was committed."""
        try:
            with self.transaction() as conn:
                for sql, params in statements:
                    conn.execute(sql, params)
        except db.sqlite.Error:
            errors: List[Optional[BaseException]] = []
            for sql, params in statements:
                try:
                    self.execute(sql, params)
                except db.sqlite.Error as exc:
                    errors.append(exc)
                else:
                    errors.append(None)
            return errors
        return [None] * len(statements)

    def ping(self) -> bool:
        return self.one("SELECT 1 AS ok") is not None

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    # users -----------------------------------------------------------------------------
    def user_by_name(self, username: str) -> Optional[Dict[str, Any]]:
        return self.one("SELECT * FROM users WHERE username = ?", (username,))

    def user_by_id(self, user_id: int) -> Optional[Dict[str, Any]]:
        return self.one(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))

    def user_by_subject(self, subject: str) -> Optional[Dict[str, Any]]:
        """The user a JWT names (its random `sub`, never the row id a restore can reuse)."""
        return self.one(f"SELECT {USER_COLUMNS} FROM users WHERE subject = ?", (subject,))

    def ensure_subject(self, user_id: int) -> str:
        """The user's token subject, made now for a row an older release inserted without one."""
        subject = secrets.token_hex(16)
        self.execute("UPDATE users SET subject = ? WHERE id = ? AND subject IS NULL", (subject, user_id))
        row = self.one("SELECT subject FROM users WHERE id = ?", (user_id,))
        return str(row["subject"]) if row else subject

    def create_user(self, username: str, role: str, password_hash: str) -> int:
        with self.lock:
            cur = self.conn.execute(
                "INSERT INTO users (username, role, password_hash, pseudonym, subject, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (username, role, password_hash, new_pseudonym(), secrets.token_hex(16), utcnow()),
            )
            return int(cur.lastrowid)

    def list_users(self) -> List[Dict[str, Any]]:
        rows = self.all("SELECT id, username, role, disabled, created_at FROM users ORDER BY id")
        for row in rows:
            row["disabled"] = bool(row["disabled"])
        return rows

    def count_admins(self) -> int:
        """Admins that can still log in (disabled ones do not count)."""
        row = self.one("SELECT count(*) AS n FROM users WHERE role = 'admin' AND disabled = 0")
        return int(row["n"]) if row else 0

    # credential lifecycle ---------------------------------------------------------------
    # Each change is written to the credential journal inside its transaction, before COMMIT:
    # a change the journal could not take is not made, and one the journal has survives a
    # restore of an older backup (replay_journal).
    def _record(self, conn: Any, user_id: int, op: str, **fields: Any) -> bool:
        row = conn.execute("SELECT subject FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            return False
        journal.append(self.journal, {"op": op, "subject": row["subject"], "ts": utcnow(), **fields})
        return True

    def _end_sessions(self, conn: Any, user_id: int) -> None:
        """Move the token generation on (every JWT issued before stops working) and drop the
        keys that were minted by a JWT of an older generation."""
        conn.execute("UPDATE users SET token_generation = token_generation + 1 WHERE id = ?", (user_id,))
        conn.execute(
            "DELETE FROM api_keys WHERE user_id = ? AND session_generation IS NOT NULL"
            " AND session_generation < (SELECT token_generation FROM users WHERE id = ?)",
            (user_id, user_id),
        )

    def _revoke_keys(self, conn: Any, user_id: int, scope: str) -> Optional[int]:
        """Delete the user's keys (scope 'http': those not made by an admin on the host, 'all':
        every one), journaling exactly which (their keyed hashes: a restore deletes those and no
        key made later, however close in time). The number deleted, None without such a user."""
        only_api = " AND created_via IS NOT 'cli'" if scope == "http" else ""
        hashes = [str(r["key_hash"]) for r in conn.execute(
            "SELECT key_hash FROM api_keys WHERE user_id = ?" + only_api, (user_id,)).fetchall()]
        if not self._record(conn, user_id, "revoke-keys", scope=scope, key_hashes=hashes):
            return None
        return int(conn.execute("DELETE FROM api_keys WHERE user_id = ?" + only_api, (user_id,)).rowcount)

    def _end_api_made_keys(self, conn: Any, user_id: int) -> int:
        """Delete every key of the user not made by an admin on the host (--create-api-key)."""
        return self._revoke_keys(conn, user_id, "http") or 0

    def set_password(self, user_id: int, password_hash: str) -> bool:
        """Ends the sessions and every key the user did not get from the CLI."""
        with self.transaction() as conn:
            if not self._record(conn, user_id, "password", fingerprint=journal.fingerprint(self.key, password_hash)):
                return False
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            self._end_api_made_keys(conn, user_id)
            self._end_sessions(conn, user_id)
        return True

    def set_role(self, user_id: int, role: str) -> bool:
        with self.transaction() as conn:
            if not self._record(conn, user_id, "role", role=role):
                return False
            conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))
            self._end_sessions(conn, user_id)
        return True

    def set_disabled(self, user_id: int, disabled: bool) -> bool:
        """Disabling ends the sessions and every key the user did not get from the CLI; the
        CLI-made keys are refused while disabled (the key lookup joins on `disabled = 0`) and
        work again after enabling."""
        with self.transaction() as conn:
            if not self._record(conn, user_id, "disabled", value=bool(disabled)):
                return False
            conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))
            if disabled:
                self._end_api_made_keys(conn, user_id)
                self._end_sessions(conn, user_id)
        return True

    def revoke_sessions(self, user_id: int) -> Optional[int]:
        """End every JWT and delete every API key of the user; the number of keys deleted, or
        None when there is no such user."""
        with self.transaction() as conn:
            keys = self._revoke_keys(conn, user_id, "all")
            if keys is None:
                return None
            self._end_sessions(conn, user_id)
            return keys

    # api keys --------------------------------------------------------------------------
    def create_api_key(
        self, user_id: int, name: str, key_hash: str, prefix: str, session_generation: Optional[int] = None,
        via: str = "http",
    ) -> Dict[str, Any]:
        """session_generation: the token generation of the JWT that minted the key (the key ends
        with that session), None otherwise. via: 'cli' for a key an admin made on the host (ends
        on revoke or delete only), 'http' for one minted over the API (ends also with a password
        change or a disable of the user)."""
        assert via in ("cli", "http")
        now = utcnow()
        with self.lock:
            cur = self.conn.execute(
                "INSERT INTO api_keys (user_id, name, key_hash, prefix, created_at, session_generation, created_via)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, name, key_hash, prefix, now, session_generation, via),
            )
            return {"id": int(cur.lastrowid), "name": name, "prefix": prefix, "created_at": now}

    def user_by_api_key(self, key_hash: str) -> Optional[Dict[str, Any]]:
        """The key's enabled owner; keys of a disabled user or of an ended session match nothing."""
        return self.one(
            "SELECT u.id, u.username, u.role, u.pseudonym, u.subject, u.token_generation, u.disabled,"
            " k.id AS key_id, k.session_generation FROM api_keys k JOIN users u ON u.id = k.user_id"
            " WHERE k.key_hash = ? AND u.disabled = 0"
            " AND (k.session_generation IS NULL OR k.session_generation = u.token_generation)",
            (key_hash,),
        )

    def list_api_keys(self, user_id: int) -> List[Dict[str, Any]]:
        rows = self.all(
            "SELECT id, name, prefix, created_at, last_used_at, session_generation FROM api_keys"
            " WHERE user_id = ? ORDER BY id",
            (user_id,),
        )
        for row in rows:
            row["bound_to_session"] = row.pop("session_generation") is not None
        return rows

    def revoke_api_key(self, user_id: int, key_id: int) -> bool:
        with self.transaction() as conn:
            row = conn.execute("SELECT key_hash FROM api_keys WHERE id = ? AND user_id = ?", (key_id, user_id)).fetchone()
            if row is None:
                return False
            journal.append(self.journal, {"op": "revoke-key", "key_hash": row["key_hash"], "ts": utcnow()})
            conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
        return True

    def touch_api_key(self, key_id: int) -> None:
        self.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (utcnow(), key_id))

    # agents ----------------------------------------------------------------------------
    @staticmethod
    def _agent(row: Dict[str, Any]) -> Dict[str, Any]:
        row = dict(row)
        row["capabilities"] = json.loads(row["capabilities"])
        return row

    @staticmethod
    def agent_insert(agent: Dict[str, Any], created_by: Optional[int]) -> Statement:
        return (
            "INSERT INTO agents (id, name, type, capabilities, state, current_task, tasks_completed,"
            " created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                agent["id"], agent["name"], agent["type"], json.dumps(agent["capabilities"]),
                agent["state"], agent["current_task"], agent["tasks_completed"], created_by,
                agent["created_at"], agent["updated_at"],
            ),
        )

    def update_agent(self, agent: Dict[str, Any]) -> None:
        self.execute(
            "UPDATE agents SET state = ?, current_task = ?, tasks_completed = ?, updated_at = ? WHERE id = ?",
            (agent["state"], agent["current_task"], agent["tasks_completed"], agent["updated_at"], agent["id"]),
        )

    def delete_agent(self, agent_id: str) -> int:
        return self.execute("DELETE FROM agents WHERE id = ?", (agent_id,))

    def load_agents(self) -> List[Dict[str, Any]]:
        return [self._agent(r) for r in self.all(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at")]

    def search_agents(self, query: str, limit: int, offset: int) -> List[Dict[str, Any]]:
        """Substring match on name or type; the query is a bound parameter, LIKE wildcards
        in it are escaped, so any text is just text."""
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.all(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE name LIKE ? ESCAPE '\\' OR type LIKE ? ESCAPE '\\'"
            " ORDER BY created_at LIMIT ? OFFSET ?",
            (pattern, pattern, limit, offset),
        )
        return [self._agent(r) for r in rows]

    def list_agents(self, limit: int, offset: int) -> List[Dict[str, Any]]:
        rows = self.all(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at LIMIT ? OFFSET ?", (limit, offset))
        return [self._agent(r) for r in rows]

    # tasks -----------------------------------------------------------------------------
    @staticmethod
    def _task(row: Dict[str, Any]) -> Dict[str, Any]:
        row = dict(row)
        row["required_capabilities"] = json.loads(row["required_capabilities"])
        row["result"] = json.loads(row["result"]) if row["result"] else None
        return row

    @staticmethod
    def task_insert(task: Dict[str, Any], created_by: Optional[int]) -> Statement:
        return (
            "INSERT INTO tasks (id, description, priority, required_capabilities, state, assigned_agent,"
            " result, error, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task["id"], task["description"], task["priority"], json.dumps(task["required_capabilities"]),
                task["state"], task["assigned_agent"], None, task["error"], created_by,
                task["created_at"], task["updated_at"],
            ),
        )

    def update_task(self, task: Dict[str, Any]) -> None:
        self.execute(
            "UPDATE tasks SET state = ?, assigned_agent = ?, result = ?, error = ?, updated_at = ? WHERE id = ?",
            (
                task["state"], task["assigned_agent"],
                json.dumps(task["result"]) if task["result"] is not None else None,
                task["error"], task["updated_at"], task["id"],
            ),
        )

    def get_task(self, task_id: str) -> Optional[Dict[str, Any]]:
        row = self.one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return self._task(row) if row else None

    def list_tasks(self, state: Optional[str], limit: int, offset: int) -> List[Dict[str, Any]]:
        if state:
            rows = self.all(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE state = ? ORDER BY created_at LIMIT ? OFFSET ?",
                (state, limit, offset),
            )
        else:
            rows = self.all(f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY created_at LIMIT ? OFFSET ?", (limit, offset))
        return [self._task(r) for r in rows]

    def unfinished_tasks(self) -> List[Dict[str, Any]]:
        rows = self.all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('Pending', 'Assigned', 'InProgress') ORDER BY created_at"
        )
        return [self._task(r) for r in rows]

    def counts_by_state(self, table: str) -> Dict[str, int]:
        assert table in ("agents", "tasks")
        return {r["state"]: int(r["n"]) for r in self.all(f"SELECT state, count(*) AS n FROM {table} GROUP BY state")}

    # audit -----------------------------------------------------------------------------
    def purge_audit(self, older_than_days: int, batch: int = 500) -> int:
        """Delete at most `batch` audit events older than the retention (oldest first): one
        short statement, so the caller can loop with the event loop free between batches."""
        cutoff = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=older_than_days)).isoformat(
            timespec="milliseconds"
        ).replace("+00:00", "Z")
        return self.execute(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE ts < ? ORDER BY ts LIMIT ?)",
            (cutoff, batch),
        )

    def insert_audit(
        self, ts: str, event: str, client_id: str, user: Optional[Dict[str, Any]], detail: str, target: Optional[str] = None
    ) -> None:
        self.execute(
            "INSERT INTO audit_events (ts, event, client_id, user_id, user_ref, username, detail, target_ref)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ts, event, client_id,
                user["id"] if user else None,
                user["pseudonym"] if user else None,
                user["username"] if user else None,
                detail, target,
            ),
        )

    def audit_counts(self) -> Dict[str, int]:
        return {r["event"]: int(r["n"]) for r in self.all("SELECT event, count(*) AS n FROM audit_events GROUP BY event")}

    # GDPR ------------------------------------------------------------------------------
    EXPORT_BATCH_ROWS = 500
    EXPORT_CHUNK_BYTES = 64 * 1024

    def export_user_chunks(
        self, user_id: int, task_view: Callable[[Dict[str, Any]], Dict[str, Any]], exported_at: Callable[[], str]
    ) -> Iterator[bytes]:
        """The user's data as one JSON document, in chunks of about EXPORT_CHUNK_BYTES: rows are
        read EXPORT_BATCH_ROWS at a time, so memory stays flat however many rows the user has.
        Keys: user, api_keys, agents, tasks, audit_events (the user's own), actions_by_others
        (what an admin or the CLI did to the account, logged with its pseudonym as target; the
        actor is left out: that is someone else's data), exported_at. One read transaction: a
        consistent snapshot (WAL lets the service write meanwhile)."""
        profile = self.one("SELECT id, username, role, pseudonym, created_at FROM users WHERE id = ?", (user_id,))
        if profile is None:
            return
        buffer: List[str] = []
        size = 0

        def put(text: str) -> Optional[bytes]:
            nonlocal size
            buffer.append(text)
            size += len(text)
            if size < self.EXPORT_CHUNK_BYTES:
                return None
            chunk = "".join(buffer).encode("utf-8")
            buffer.clear()
            size = 0
            return chunk

        sections: List[Tuple[str, str, Tuple[Any, ...], Callable[[Dict[str, Any]], Dict[str, Any]]]] = [
            ("api_keys", "SELECT id, name, prefix, created_at, last_used_at FROM api_keys WHERE user_id = ? ORDER BY id",
             (user_id,), dict),
            ("agents", f"SELECT {AGENT_COLUMNS} FROM agents WHERE created_by = ? ORDER BY created_at", (user_id,),
             self._agent),
            ("tasks", f"SELECT {TASK_COLUMNS} FROM tasks WHERE created_by = ? ORDER BY created_at", (user_id,),
             lambda row: task_view(self._task(row))),
            ("audit_events", "SELECT ts, event, client_id, detail FROM audit_events WHERE user_id = ? ORDER BY id",
             (user_id,), dict),
            ("actions_by_others", "SELECT ts, event, detail FROM audit_events WHERE target_ref = ?"
             " AND (user_id IS NULL OR user_id != ?) ORDER BY id", (profile["pseudonym"], user_id), dict),
        ]
        with self.transaction_read() as conn:
            chunk = put('{"user":' + json.dumps(profile))
            for name, sql, params, view in sections:
                chunk = put(f',"{name}":[') or chunk
                if chunk:
                    yield chunk
                    chunk = None
                cursor = conn.execute(sql, params)
                first = True
                while True:
                    rows = cursor.fetchmany(self.EXPORT_BATCH_ROWS)
                    if not rows:
                        break
                    for row in rows:
                        chunk = put(("" if first else ",") + json.dumps(view(row)))
                        first = False
                        if chunk:
                            yield chunk
                put("]")
        put(',"exported_at":' + json.dumps(exported_at()) + "}")
        yield "".join(buffer).encode("utf-8")

    @contextmanager
    def transaction_read(self) -> Iterator[Any]:
        """A read transaction on this connection: every read in it sees one snapshot."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                self.conn.execute("ROLLBACK")

    def export_user(self, user_id: int) -> Dict[str, Any]:
        with self.lock:
            profile = self.one("SELECT id, username, role, pseudonym, created_at FROM users WHERE id = ?", (user_id,))
            keys = self.all(
                "SELECT id, name, prefix, created_at, last_used_at FROM api_keys WHERE user_id = ? ORDER BY id",
                (user_id,),
            )
            agents = [
                self._agent(r)
                for r in self.all(f"SELECT {AGENT_COLUMNS} FROM agents WHERE created_by = ? ORDER BY created_at", (user_id,))
            ]
            tasks = [
                self._task(r)
                for r in self.all(f"SELECT {TASK_COLUMNS} FROM tasks WHERE created_by = ? ORDER BY created_at", (user_id,))
            ]
            audit = self.all(
                "SELECT ts, event, client_id, detail FROM audit_events WHERE user_id = ? ORDER BY id", (user_id,)
            )
        return {"user": profile, "api_keys": keys, "agents": agents, "tasks": tasks, "audit_events": audit}

    def erase_user(self, user_id: int) -> Dict[str, int]:
        """Delete the account and its keys, unlink agents and tasks, pseudonymise the audit trail.

        After this, the pseudonym in audit lines maps to nobody: the users row was the only link."""
        with self.transaction() as conn:
            self._record(conn, user_id, "erase")
            return erase(conn, user_id)

    def sessions_valid_after(self) -> int:
        """JWTs issued (`iat`) before this Unix time are refused: the time of the last restore."""
        row = self.one("SELECT value FROM service_state WHERE name = 'sessions_valid_after'")
        return int(row["value"]) if row else 0


class ThreadReader:
    """Reads whose cost grows with the stored rows (a deep OFFSET walks the index row by row:
    docs/benchmarks.md), run in one worker thread on a connection of its own, opened there on
    first use: the event loop and the shared connection's lock stay free meanwhile, and WAL lets
    this reader run beside the service's writes, seeing every committed row."""

    def __init__(self, path: str, key: str) -> None:
        self.path = path
        self.key = key
        self._pool: Optional[ThreadPoolExecutor] = None
        self._store: Optional[Store] = None

    def _reader(self) -> Store:
        if self._store is None:
            self._store = Store(self.path, self.key)
        return self._store

    async def list_tasks(self, state: Optional[str], limit: int, offset: int) -> List[Dict[str, Any]]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hive-reader")
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self._reader().list_tasks(state, limit, offset)
        )

    def close(self) -> None:
        """Closes the connection in its own thread; a later read opens both again."""
        pool, self._pool = self._pool, None
        if pool is None:
            return

        def close_reader() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        pool.submit(close_reader)
        pool.shutdown(wait=True)


class GroupCommit:
    """Rows the API inserts while the event loop is busy share one transaction: one WAL commit
    and one encryption of each page they touch, instead of one per row (figures:
    docs/benchmarks.md). Each writer waits for the COMMIT, so an answer still means the row is
    in the database, and its `on_commit` runs right after it, in submission order, even when
    the waiting request was cancelled meanwhile (the hive's memory never misses a stored row)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Per event loop: a future is only ever completed on its own loop.
        self.pending: Dict[asyncio.AbstractEventLoop, List[Tuple[Statement, Callable[[], None], asyncio.Future[None]]]] = {}

    async def write(self, statement: Statement, on_commit: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        queue = self.pending.setdefault(loop, [])
        if not queue:
            loop.call_soon(self._flush, loop)
        queue.append((statement, on_commit, future))
        await asyncio.shield(future)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self.pending.pop(loop, [])
        try:
            errors = self.store.execute_each([entry[0] for entry in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every writer, re-raised there
            errors = [exc] * len(batch)
        for (_statement, on_commit, future), error in zip(batch, errors):
            if error is None:
                try:
                    on_commit()
                except BaseException as exc:  # noqa: BLE001 - the writer's own failure, raised to it
                    error = exc
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def erase(conn: Any, user_id: int) -> Dict[str, int]:
    """Store.erase_user's statements, for a caller's transaction (also the journal's replay)."""
    keys = conn.execute("DELETE FROM api_keys WHERE user_id = ?", (user_id,)).rowcount
    agents = conn.execute("UPDATE agents SET created_by = NULL WHERE created_by = ?", (user_id,)).rowcount
    tasks = conn.execute("UPDATE tasks SET created_by = NULL WHERE created_by = ?", (user_id,)).rowcount
    audit = conn.execute("UPDATE audit_events SET user_id = NULL, username = NULL WHERE user_id = ?", (user_id,)).rowcount
    conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
    return {"api_keys": keys, "agents_unlinked": agents, "tasks_unlinked": tasks, "audit_events_pseudonymised": audit}


def replay_journal(conn: Any, key: str, journal_file: str, now: Optional[float] = None) -> Dict[str, Any]:
    """Bring a just-restored database (a plain db.connect connection) up to the credential
    journal, in one transaction, then end every session issued before the restore:

    - revoked keys stay deleted; keys a revocation, password change or disable ended stay
      deleted (those created before it: a key made later, and in the backup, is kept);
    - the newest disabled flag and role of each user are set;
    - a user whose password changed after the backup gets no password (LOCKED_PASSWORD) until
      an admin resets it: the journal keeps no hash;
    - erased users are erased again;
    - every user's token generation moves on, every session-bound key is deleted, and JWTs
      issued before now are refused (service_state sessions_valid_after)."""
    revoked_hashes: List[str] = []
    revoked_keys: List[Tuple[str, str, str]] = []
    latest: Dict[str, Dict[str, Any]] = {}
    erased: List[str] = []
    count = 0
    for record in journal.records(journal_file):
        count += 1
        op, subject = record["op"], record.get("subject")
        if op == "revoke-key":
            revoked_hashes.append(str(record["key_hash"]))
        elif op == "revoke-keys" and isinstance(record.get("key_hashes"), list):
            revoked_hashes.extend(str(h) for h in record["key_hashes"])
        elif op == "revoke-keys":  # journaled without the keys: those created up to then
            revoked_keys.append((str(subject), str(record["ts"]), str(record.get("scope"))))
        elif op == "erase":
            erased.append(str(subject))
        elif op in ("password", "disabled", "role"):
            value = record.get({"password": "fingerprint", "disabled": "value", "role": "role"}[op])
            latest.setdefault(str(subject), {})[op] = value
    valid_after = int(time.time() if now is None else now) + 1
    result: Dict[str, Any] = {"journal_records": count, "api_keys_deleted": 0, "passwords_locked": [],
                              "users_erased": 0, "sessions_valid_after": valid_after}
    conn.execute("BEGIN IMMEDIATE")
    try:
        def user(subject: str) -> Optional[Tuple[Any, ...]]:
            found: Optional[Tuple[Any, ...]] = conn.execute(
                "SELECT id, username, password_hash FROM users WHERE subject = ?", (subject,)
            ).fetchone()
            return found

        for key_hash in revoked_hashes:
            result["api_keys_deleted"] += conn.execute("DELETE FROM api_keys WHERE key_hash = ?", (key_hash,)).rowcount
        for subject, ts, scope in revoked_keys:
            only_api = " AND created_via IS NOT 'cli'" if scope == "http" else ""
            result["api_keys_deleted"] += conn.execute(
                "DELETE FROM api_keys WHERE user_id = (SELECT id FROM users WHERE subject = ?) AND created_at <= ?" + only_api,
                (subject, ts),
            ).rowcount
        for subject in erased:
            found = user(subject)
            if found is not None:
                erase(conn, found[0])
                result["users_erased"] += 1
        for subject, changes in latest.items():
            found = user(subject)
            if found is None:
                continue
            user_id, username, password_hash = found
            if "password" in changes and journal.fingerprint(key, password_hash) != changes["password"]:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (LOCKED_PASSWORD, user_id))
                result["passwords_locked"].append(username)
            if "disabled" in changes:
                conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(bool(changes["disabled"])), user_id))
            if changes.get("role") in ("admin", "operator", "viewer"):
                conn.execute("UPDATE users SET role = ? WHERE id = ?", (changes["role"], user_id))
        conn.execute("UPDATE users SET token_generation = token_generation + 1")
        result["api_keys_deleted"] += conn.execute("DELETE FROM api_keys WHERE session_generation IS NOT NULL").rowcount
        conn.execute(
            "INSERT OR REPLACE INTO service_state (name, value) VALUES ('sessions_valid_after', ?)", (str(valid_after),)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result
