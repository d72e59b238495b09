"""Application log (file + stderr for the journal) and the audit log, both reopenable on SIGHUP."""
from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

from .config import LOG_LEVELS, Settings

LOG = logging.getLogger("multiagent_hive")

AUDIT_EVENTS = (
    "AuthenticationSuccess",
    "AuthenticationFailure",
    "UnauthorizedAccess",
    "SuspiciousActivity",
    "RateLimitExceeded",
    "InvalidInput",
    "DataExport",
    "DataErasure",
    # A request without any credential (401): not a failed attempt, fail2ban does not count it.
    "AuthenticationRequired",
    # A valid credential whose role is too low (403).
    "AccessDenied",
    # Credential lifecycle: password change/reset, role change, disable/enable, delete, key or
    # session revocation (`action=` says which, `target=` names the user by pseudonym).
    "AccountChange",
    # Per-account login backoff engaged or enforced (`retry_after=` seconds).
    "LoginBackoff",
)
# Severity of each audit event, compared with SECURITY_LOG_LEVEL.
AUDIT_SEVERITY = {
    "AuthenticationSuccess": logging.INFO,
    "DataExport": logging.INFO,
    "DataErasure": logging.INFO,
    "AuthenticationFailure": logging.WARNING,
    "UnauthorizedAccess": logging.WARNING,
    "InvalidInput": logging.WARNING,
    "RateLimitExceeded": logging.WARNING,
    "SuspiciousActivity": logging.WARNING,
    "AuthenticationRequired": logging.WARNING,
    "AccessDenied": logging.WARNING,
    "AccountChange": logging.WARNING,
    "LoginBackoff": logging.WARNING,
}


# Events a client can cause at the request rate, without (or with a failing) credential: at
# most AUDIT_BURST lines per client, event, user and second are written, the rest of that second
# is counted and written as one line with `repeated=N` when the second is over. So a flood grows
# the audit log (and table) with its duration, not its request count. AUDIT_BURST is the
# ai-orchestrator-auth jail's default maxretry: failures still reach fail2ban one line each up
# to there, and a flood of them adds a line a second on top.
THROTTLED_EVENTS = frozenset({
    "AuthenticationFailure", "UnauthorizedAccess", "AuthenticationRequired", "AccessDenied",
    "InvalidInput", "SuspiciousActivity",
})
AUDIT_BURST = 5
AUDIT_WINDOW_SECONDS = 1.0
AUDIT_THROTTLE_ENTRIES = 10_000
Sink = Callable[[str, str, str, Optional[Dict[str, Any]], str, Optional[str]], None]


class _Window:
    __slots__ = ("start", "written", "repeated", "user")

    def __init__(self, start: float, user: Optional[Dict[str, Any]]) -> None:
        self.start = start
        self.written = 0
        self.repeated = 0
        self.user = user


class ReopenableFileHandler(logging.FileHandler):
    """A FileHandler whose file logrotate may move away; reopen() starts the new one."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


# A JWT, an API key, a WebSocket ticket, and the value of a credential-like query parameter.
# uvicorn logs every WebSocket handshake with its query string ('"WebSocket /ws?ticket=..."').
_CREDENTIAL_RE = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]*(?:\.[\w-]*)?|hive_[\w-]{16,}|wst_[\w-]{16,}")
# Parameter names are bounded so the scan stays linear in the text.
_QUERY_PARAM_RE = re.compile(r"([?&][^=&\s\"]{0,64}=)([^&\s\"]*)")
_SECRET_NAME_RE = re.compile(r"token|ticket|key|secret|password|auth", re.I)


def _param(match: re.Match[str]) -> str:
    return match.group(1) + "[redacted]" if _SECRET_NAME_RE.search(match.group(1)) else match.group(0)


def redact(text: str) -> str:
    """The text with every credential-looking value replaced by [redacted]."""
    if "=" in text:
        text = _QUERY_PARAM_RE.sub(_param, text)
    return _CREDENTIAL_RE.sub("[redacted]", text)


class RedactCredentials(logging.Filter):
    """On every handler: no log record, from this app or a library, carries a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


_file_handler: Optional[ReopenableFileHandler] = None


def setup_logging(settings: Settings, *, to_file: bool = True) -> None:
    global _file_handler
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = settings.python_log_level()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    stderr.addFilter(RedactCredentials())
    root.addHandler(stderr)
    if to_file and settings.app_log_path:
        _file_handler = ReopenableFileHandler(settings.app_log_path, encoding="utf-8", delay=False)
        _file_handler.setFormatter(formatter)
        _file_handler.addFilter(RedactCredentials())
        root.addHandler(_file_handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)


def reopen_app_log() -> None:
    if _file_handler is not None:
        _file_handler.reopen()


def _enc(value: Any) -> str:
    """Percent-encode user-controlled text: no space, '=', control character or line break
    survives, so a value can never fake a field or a second line."""
    return quote(str(value), safe="-._~:/@+,")


def clean_ip(value: str) -> str:
    """client_id is always a parsed address, never raw header text."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return "0.0.0.0"


def timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """One line per security event in AUDIT_LOG_PATH; the same event in the audit_events table.

    Lines: `<ts> event=<Type> client_id=<ip> key=value...`. The user appears only as a
    pseudonym (`user=u-...`), never by name."""

    def __init__(self, settings: Settings, sink: Optional[Sink] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = settings.enable_audit_logging
        self.path = settings.audit_log_path
        self.min_level = logging.getLevelName(LOG_LEVELS.get(settings.security_log_level.lower(), "INFO"))
        self.sink = sink
        self.fd: Optional[int] = None
        self.lock = threading.Lock()
        self.listeners: List[Callable[[str], None]] = []
        self.clock = clock
        # (event, client, pseudonym) -> the current second's window (THROTTLED_EVENTS only).
        self.windows: Dict[Tuple[str, str, Optional[str]], _Window] = {}
        if self.enabled:
            self.fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def reopen(self) -> None:
        if not self.enabled:
            return
        new = self._open()
        with self.lock:
            old, self.fd = self.fd, new
        if old is not None:
            os.close(old)

    def close(self) -> None:
        self.flush(everything=True)
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def event(
        self,
        event: str,
        client_ip: str,
        user: Optional[Dict[str, Any]] = None,
        **fields: Any,
    ) -> None:
        assert event in AUDIT_EVENTS, event
        for listener in self.listeners:
            listener(event)
        if not self.enabled or AUDIT_SEVERITY[event] < self.min_level:
            return
        client = clean_ip(client_ip)
        if event in THROTTLED_EVENTS and not self._admit(event, client, user):
            return
        self._write(event, client, user, fields)

    def _admit(self, event: str, client: str, user: Optional[Dict[str, Any]]) -> bool:
        """Whether this event gets its own line (see THROTTLED_EVENTS)."""
        now = self.clock()
        key = (event, client, user.get("pseudonym") if user else None)
        window = self.windows.get(key)
        if window is None or now - window.start >= AUDIT_WINDOW_SECONDS:
            if window is not None and window.repeated:
                self._write(event, client, window.user, {"repeated": window.repeated})
            if window is None and len(self.windows) >= AUDIT_THROTTLE_ENTRIES:
                self.flush(everything=True)
            window = self.windows[key] = _Window(now, user)
        if window.written < AUDIT_BURST:
            window.written += 1
            return True
        window.repeated += 1
        return False

    def flush(self, everything: bool = False) -> int:
        """Write the `repeated=N` line of every window whose second is over (of all of them
        with everything=True) and forget those windows; called every second by the service."""
        now = self.clock()
        lines = 0
        for key, window in list(self.windows.items()):
            if everything or now - window.start >= AUDIT_WINDOW_SECONDS:
                del self.windows[key]
                if window.repeated:
                    self._write(key[0], key[1], window.user, {"repeated": window.repeated})
                    lines += 1
        return lines

    def _write(self, event: str, client: str, user: Optional[Dict[str, Any]], fields: Dict[str, Any]) -> None:
        ts = timestamp()
        parts = [ts, f"event={event}", f"client_id={client}"]
        if user and user.get("pseudonym"):
            parts.append(f"user={_enc(user['pseudonym'])}")
        detail_parts = []
        for key, value in fields.items():
            if value is None:
                continue
            encoded = _enc(redact(value) if isinstance(value, str) else value)
            parts.append(f"{key}={encoded}")
            detail_parts.append(f"{key}={encoded}")
        line = " ".join(parts) + "\n"
        with self.lock:
            if self.fd is not None:
                os.write(self.fd, line.encode("utf-8"))
        if self.sink is not None:
            try:
                target = fields.get("target")
                self.sink(ts, event, client, user, " ".join(detail_parts), target if isinstance(target, str) else None)
            except Exception:  # the flat file already has the event
                LOG.exception("could not store audit event in the database")
