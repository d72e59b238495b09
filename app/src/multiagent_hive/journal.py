"""The credential journal: every revocation, disable, enable, role change, password change and
erasure, appended (and fsync'ed) to a file beside the database before the change commits.

A restore replaces the database file only; `--restore` then replays this journal into the
restored copy (store.replay_journal), so what was revoked after the backup stays revoked.
The file holds no secret: users are named by their random token subject, keys by their keyed
hash (useless without API_ENCRYPTION_KEY), passwords only by a keyed fingerprint of the hash."""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from typing import Any, Dict, Iterator

SUFFIX = ".credentials.jsonl"


def journal_path(database_path: str) -> str:
    """The journal of a database: beside it, outside what a restore replaces."""
    return database_path + SUFFIX


def fingerprint(key: str, password_hash: str) -> str:
    """A keyed fingerprint of a password hash: tells a replay whether the restored hash is the
    newest one, and reveals nothing about the hash without DATABASE_ENCRYPTION_KEY."""
    return hmac.new(key.encode("utf-8"), password_hash.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def append(path: str, record: Dict[str, Any]) -> None:
    """One JSON line, on disk (fsync'ed) when this returns; the service and the CLI may append
    at once (an exclusive lock per line). Raises OSError, which aborts the change it records."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def records(path: str) -> Iterator[Dict[str, Any]]:
    """The records in order; a torn last line (a crash mid-write) is skipped."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("op"), str):
                yield record
