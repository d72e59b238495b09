"""The HTTP and WebSocket API (Starlette), wrapped in a lean ASGI layer for client address,
rate limits, body size limit and metrics."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple, Type, Union

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from . import __version__, db, openapi
from .accounts import Accounts
from .config import Settings
from .hive import Hive, QueueFull, load_executor, public_task
from .logs import AUDIT_WINDOW_SECONDS, AuditLog, clean_ip, reopen_app_log
from .ratelimit import TokenBuckets, client_bucket
from .schemas import (
    AgentCreate,
    ApiKeyCreate,
    BadJson,
    Login,
    TaskCreate,
    UserCreate,
    first_error,
    is_suspicious,
    parse_json,
    suspicious_strings,
)
from .security import ApiKeys, HashingBusy, Passwords, Tokens, role_at_least
from .sessions import LoginBackoff, OpenSockets, WsTickets
from .store import Store, ThreadReader

LOG = logging.getLogger("multiagent_hive.api")

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
API_KEY_TOUCH_SECONDS = 60.0
HEALTH_PATH = "/api/health"
# Probes hit health many times a second; the database answer behind them is at most this old.
HEALTH_DB_CACHE_SECONDS = 1.0
AUDIT_RETENTION_INTERVAL = 3600.0


def _minimal_health_answer(status: int, body: bytes) -> Tuple[int, bytes, List[Tuple[bytes, bytes]]]:
    return status, body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


HEALTH_MINIMAL = {True: _minimal_health_answer(200, b'{"status":"ok"}'), False: _minimal_health_answer(503, b'{"status":"error"}')}
CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
# X-Forwarded-For values up to this long are cached with the address they resolve to.
FORWARDED_CACHED_BYTES = 256
MISSING_CREDENTIALS = "missing credentials"
# The peer of a connection on SERVER_SOCKET: the proxy, whatever process it is.
PROXY_SOCKET_PEER = "unix"


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


class HiveApp:
    """The service. `app` is the ASGI callable uvicorn serves."""

    def __init__(self, settings: Settings, store: Store, metrics: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.reader = ThreadReader(settings.database_path, settings.database_encryption_key)
        self.metrics = metrics
        self.audit = AuditLog(settings, sink=self.store.insert_audit)
        if metrics is not None:
            self.audit.listeners.append(metrics.audit_event)
        self.passwords = Passwords(settings)
        self.tokens = Tokens(settings)
        self.api_keys = ApiKeys(settings)
        self.hive = Hive(
            store, load_executor(settings.task_executor, settings.task_duration_ms), settings.max_pending_tasks
        )
        self.general_limit = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.login_limit = TokenBuckets(settings.login_rate_per_minute / 60.0, settings.login_burst)
        self.trusted = settings.trusted_networks()
        self.allowed_origins = frozenset(settings.allowed_origins())
        self.proxy_socket = bool(settings.server_socket)
        self._trusted_cache: Dict[str, bool] = {}
        self._peer_cache: Dict[str, str] = {}
        self._rate_logged: Dict[str, float] = {}
        self._key_touched: Dict[int, float] = {}
        self._db_ok = False
        self._db_checked_at = float("-inf")
        self.max_body = settings.max_body_bytes
        self._bucket_cache: Dict[str, str] = {}
        self._client_cache: Dict[Tuple[str, Optional[bytes]], Tuple[str, str]] = {}
        self.backoff = LoginBackoff()
        self.tickets = WsTickets()
        self.sockets = OpenSockets()
        self.accounts = Accounts(self)

        routes: List[Union[Route, WebSocketRoute]] = [
            Route(HEALTH_PATH, self.health, methods=["GET"]),
            Route("/api/auth/login", self.login, methods=["POST"]),
            Route("/api/auth/api-keys", self.create_api_key, methods=["POST"]),
            Route("/api/admin/users", self.admin_users, methods=["GET", "POST"]),
            Route("/api/agents", self.agents, methods=["GET", "POST"]),
            Route("/api/agents/{agent_id}", self.agent, methods=["GET", "DELETE"]),
            Route("/api/tasks", self.tasks, methods=["GET", "POST"]),
            Route("/api/tasks/{task_id}", self.task, methods=["GET"]),
            Route("/api/hive/status", self.hive_status, methods=["GET"]),
            Route("/api/users/me/data", self.my_data, methods=["GET", "DELETE"]),
            *self.accounts.routes(),
        ]
        routes.append(openapi.route(routes, __version__))
        # JWTs issued before the last restore are refused (store.replay_journal sets the time;
        # the service is stopped during a restore, so reading it once here is enough).
        self.sessions_valid_after = store.sessions_valid_after()
        # A JWT's iat is in whole seconds: one issued in the rest of the restore's second would
        # be refused as if it were older than the restore. Serve only once that second is over.
        wait = self.sessions_valid_after - time.time()
        if 0 < wait <= 2:
            time.sleep(wait)
        # Users whose GDPR export is running, each with its own token (_release_export).
        self.exports: Dict[int, object] = {}
        self.route_names = {r.endpoint: r.path for r in routes}
        self.starlette = Starlette(
            routes=routes,
            lifespan=self.lifespan,
            exception_handlers={
                ApiError: self._api_error,
                HTTPException: self._http_error,
                db.sqlite.DatabaseError: self._database_error,
                HashingBusy: self._hashing_busy,
                QueueFull: self._queue_full,
            },
        )
        # No redirect at all (a trailing slash is a 404): Starlette builds a redirect from the
        # Host and scheme it sees, plain http behind nginx, and a client that follows a 307 sends
        # the body (a password) again, in clear.
        self.starlette.router.redirect_slashes = False

    # lifecycle ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        await self.hive.start()
        flusher = asyncio.ensure_future(self._flush_metrics()) if self.metrics is not None else None
        retention = asyncio.ensure_future(self._retain_audit()) if self.settings.audit_retention_days > 0 else None
        audit_flusher = asyncio.ensure_future(self._flush_audit())
        try:
            yield
        finally:
            audit_flusher.cancel()
            self.audit.flush(everything=True)
            if retention is not None:
                retention.cancel()
            await self.hive.stop()
            self.passwords.close()
            self.reader.close()
            if flusher is not None:
                flusher.cancel()
                self.metrics.flush()

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(self.metrics.FLUSH_SECONDS)
            try:
                self.metrics.flush()
            except Exception:  # a full metrics volume must not stop the flushing for good
                LOG.exception("writing metrics failed")

    async def _flush_audit(self) -> None:
        """The `repeated=N` lines of the audit log's per-second windows (logs.THROTTLED_EVENTS)."""
        while True:
            await asyncio.sleep(AUDIT_WINDOW_SECONDS)
            try:
                self.audit.flush()
            except Exception:  # a full log volume must not stop the flushing for good
                LOG.exception("writing the audit log failed")

    async def _retain_audit(self) -> None:
        """AUDIT_RETENTION_DAYS: at start, then every AUDIT_RETENTION_INTERVAL seconds, delete
        older audit events in small batches, yielding the event loop between them."""
        while True:
            try:
                while self.store.purge_audit(self.settings.audit_retention_days) > 0:
                    await asyncio.sleep(0.01)
            except Exception:  # a busy or full database: try again next time
                LOG.exception("audit retention failed")
            await asyncio.sleep(AUDIT_RETENTION_INTERVAL)

    def reopen_logs(self) -> None:
        reopen_app_log()
        self.audit.reopen()
        LOG.info("log files reopened")

    # ASGI layer --------------------------------------------------------------------------
    def _client(self, scope: Scope, forwarded: Optional[bytes]) -> Tuple[str, str]:
        """(client address, rate-limit bucket) for a peer and its X-Forwarded-For (every value,
        joined by commas), resolved once and kept in a bounded cache: proxies and monitors send
        the same pair again and again."""
        if self.proxy_socket:
            # uvicorn gives a Unix socket connection no server address (ASGI allows [path, None]).
            # getsockname() cannot fail on a listening TCP socket, unlike getpeername(), whose
            # failure leaves "client" empty: an empty client is no sign of the proxy's socket.
            server = scope.get("server")
            via_proxy = server is None or server[1] is None
            if via_proxy:
                raw = PROXY_SOCKET_PEER
            else:
                client = scope.get("client")
                raw = client[0] if client else "0.0.0.0"
                forwarded = None  # TCP is open to every local process: its header names nobody
        else:
            client = scope.get("client")
            raw = client[0] if client else "0.0.0.0"
        key = (raw, forwarded)
        known = self._client_cache.get(key)
        if known is not None:
            return known
        peer = self._peer_cache.get(raw)
        if peer is None:
            peer = clean_ip(raw)
            if len(self._peer_cache) >= 10_000:
                self._peer_cache.clear()
            self._peer_cache[raw] = peer
        client_addr = peer
        if forwarded is not None and (raw == PROXY_SOCKET_PEER or self._is_trusted(peer)):
            for hop in reversed(forwarded.decode("latin-1").split(",")):
                try:
                    addr = str(ipaddress.ip_address(hop.strip()))
                except ValueError:
                    break  # garbage from the client side: trust nothing further left
                client_addr = addr
                if not self._is_trusted(addr):
                    break
        known = (client_addr, self.bucket(client_addr))
        if forwarded is None or len(forwarded) <= FORWARDED_CACHED_BYTES:  # the cache stays small
            if len(self._client_cache) >= 10_000:
                self._client_cache.clear()
            self._client_cache[key] = known
        return known

    def _is_trusted(self, ip: str) -> bool:
        cached = self._trusted_cache.get(ip)
        if cached is None:
            try:
                addr = ipaddress.ip_address(ip)
                cached = any(addr in net for net in self.trusted)
            except ValueError:
                cached = False
            if len(self._trusted_cache) < 10_000:
                self._trusted_cache[ip] = cached
        return cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.starlette(scope, receive, send)
            return
        # One pass over the headers for what this layer needs of them.
        forwarded: Optional[bytes] = None
        credentials = False
        length: Optional[bytes] = None
        for key, value in scope["headers"]:
            if key == b"x-forwarded-for":
                forwarded = value if forwarded is None else forwarded + b"," + value
            elif key in CREDENTIAL_HEADERS:
                credentials = True
            elif key == b"content-length" and length is None:
                length = value
        ip, bucket = self._client(scope, forwarded)
        scope["hive.client_ip"] = ip
        if not self.general_limit.allow(bucket):
            self._rate_limited(ip, scope.get("path", ""), self.general_limit)
            if kind == "http":
                await self._send_plain(send, 429, {"error": "rate limit exceeded"},
                                       {"retry-after": str(self.general_limit.retry_after(bucket))})
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        if kind == "websocket":
            await self.starlette(scope, receive, send)
            return
        if not credentials and scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD"):
            await self._minimal_health(scope["method"], send)
            return
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = False
            if too_big:
                self.audit.event("InvalidInput", ip, method=scope["method"], path=scope["path"], detail="body too large")
                await self._send_plain(send, 413, {"error": "request body too large", "limit": self.max_body})
                self._observe(scope, 413, 0.0)
                return
        started = time.perf_counter()
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
            await send(message)

        try:
            await self.starlette(scope, receive, send_wrapper)
        finally:
            self._observe(scope, status_holder[0], time.perf_counter() - started)

    def bucket(self, ip: str) -> str:
        """Rate-limit key of a client: the IPv4 address or the IPv6 /64 (ratelimit.client_bucket)."""
        key = self._bucket_cache.get(ip)
        if key is None:
            key = client_bucket(ip)
            if len(self._bucket_cache) >= 10_000:
                self._bucket_cache.clear()
            self._bucket_cache[ip] = key
        return key

    async def _minimal_health(self, method: str, send: Send) -> None:
        """Unauthenticated GET (or HEAD) /api/health, answered here rather than through Starlette's
        routing and middleware: it is the hottest path (load balancers, monitors, the guide's
        load test) and needs nothing from the framework. With credentials, `health` answers."""
        started = time.perf_counter()
        status, body, headers = HEALTH_MINIMAL[self.database_ok()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if method == "GET" else b""})
        if self.metrics is not None:
            self.metrics.observe(method, HEALTH_PATH, status, time.perf_counter() - started)

    def database_ok(self) -> bool:
        """The database ping behind health, cached for HEALTH_DB_CACHE_SECONDS (a failure as
        well as a success), so a flood of probes costs one query a second."""
        now = time.monotonic()
        if now - self._db_checked_at >= HEALTH_DB_CACHE_SECONDS:
            try:
                self._db_ok = self.store.ping()
            except Exception as exc:  # noqa: BLE001 - any database failure is an unhealthy answer, never a 500
                LOG.error("health check: database error: %s", exc)
                self._db_ok = False
            self._db_checked_at = now
        return self._db_ok

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        if self.metrics is None:
            return
        route = self.route_names.get(scope.get("endpoint"), "unmatched")  # type: ignore[arg-type]
        self.metrics.observe(scope["method"], route, status, seconds)

    @staticmethod
    async def _send_plain(send: Send, status: int, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> None:
        payload = json.dumps(body).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        for key, value in (headers or {}).items():
            raw.append((key.encode(), value.encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    def _rate_limited(self, ip: str, path: str, buckets: TokenBuckets) -> None:
        # One audit line per client per second is enough evidence and bounds a flood's writes.
        now = time.monotonic()
        if now - self._rate_logged.get(ip, 0.0) >= 1.0:
            if len(self._rate_logged) > 10_000:
                self._rate_logged.clear()
            self._rate_logged[ip] = now
            self.audit.event("RateLimitExceeded", ip, path=path)

    # errors ------------------------------------------------------------------------------
    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        body: Dict[str, Any] = {"error": exc.error}
        if exc.detail:
            body["detail"] = exc.detail
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    async def _database_error(self, request: Request, exc: Exception) -> Response:
        """A failed statement rolled back and nothing was saved: say so with a status the client
        can act on instead of a bare 500 (507 when the volume is full, 503 otherwise)."""
        message = str(exc)
        LOG.error("%s %s: database error: %s", request.method, request.url.path, message)
        if "full" in message.lower():
            return JSONResponse(
                {"error": "database storage full", "detail": "the database volume is out of space; nothing was saved"},
                status_code=507,
            )
        return JSONResponse(
            {"error": "database unavailable", "detail": "the request was not saved; retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def _queue_full(self, request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "task queue full", "detail": f"{self.settings.max_pending_tasks} tasks are waiting for an agent; nothing was saved"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    async def _hashing_busy(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HashingBusy)
        return JSONResponse(
            {"error": "server busy", "detail": "too many password checks in progress; retry later"},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    # helpers -----------------------------------------------------------------------------
    def _ip(self, request: Request) -> str:
        return str(request.scope.get("hive.client_ip", "0.0.0.0"))

    def _unauthorized(self, request: Request, detail: str, user: Optional[Dict[str, Any]] = None) -> ApiError:
        # Only a credential that was presented and failed is UnauthorizedAccess (what fail2ban
        # counts); a request without any is AuthenticationRequired, so that a page embedding
        # links to the API cannot get its visitors banned.
        event = "AuthenticationRequired" if detail == MISSING_CREDENTIALS else "UnauthorizedAccess"
        self.audit.event(event, self._ip(request), user, method=request.method, path=request.url.path, detail=detail)
        return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})

    def user_from_headers(self, headers: Any) -> Tuple[Optional[Dict[str, Any]], str]:
        """(user, how); user is None when the credentials are missing or invalid, and `how` is
        then the reason. A JWT names its user by the random `subject` and is valid only at the
        user's current token generation and while the user is enabled."""
        api_key = headers.get("x-api-key")
        if api_key is not None:
            if len(api_key) > 200:
                return None, "invalid api key"
            digest = self.api_keys.digest(api_key)
            row = self.store.user_by_api_key(digest)
            if row is None:
                return None, "invalid api key"
            row["key_digest"] = digest
            return row, "api key"
        auth = headers.get("authorization")
        if auth is None:
            return None, MISSING_CREDENTIALS
        scheme, _sep, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, "unsupported authorization scheme"
        claims = self.tokens.decode(value.strip())
        if claims is None:
            return None, "invalid or expired token"
        user = self.store.user_by_subject(claims["sub"])
        if user is None:
            return None, "user no longer exists"
        if user["disabled"]:
            return None, "account disabled"
        if user["token_generation"] != claims["gen"] or claims["iat"] < self.sessions_valid_after:
            return None, "session revoked"
        user["session_exp"] = float(claims["exp"])
        user["session_generation"] = claims["gen"]
        return user, "jwt"

    def authenticate(self, request: Request, needed: str = "viewer") -> Dict[str, Any]:
        user, how = self.user_from_headers(request.headers)
        if user is None:
            raise self._unauthorized(request, how)
        if how == "api key":
            self._api_key_used(request, user)
        if not role_at_least(user["role"], needed):
            self.audit.event(
                "AccessDenied", self._ip(request), user,
                method=request.method, path=request.url.path, detail=f"role {user['role']} lacks {needed}",
            )
            raise ApiError(403, "forbidden", f"requires role {needed}")
        return user

    def issue_token(self, row: Dict[str, Any]) -> Tuple[str, int]:
        subject = row.get("subject") or self.store.ensure_subject(row["id"])
        return self.tokens.issue(subject, int(row.get("token_generation") or 0), row["role"])

    def login_backoff_error(self, request: Request, username: str, user: Optional[Dict[str, Any]], wait: float) -> ApiError:
        """429 while the per-account backoff of this source runs (audited once per window)."""
        retry = str(max(1, int(wait + 0.999)))
        if self.backoff.should_audit_block(username, self.bucket(self._ip(request))):
            self.audit.event("LoginBackoff", self._ip(request), user, path=request.url.path, retry_after=retry)
        return ApiError(429, "too many failed logins for this account", f"retry in {retry} s", headers={"Retry-After": retry})

    def _api_key_used(self, request: Request, user: Dict[str, Any]) -> None:
        """Key use is audited and stamped at most once a minute per key, so a client polling
        with a key does not write a line and a row per request."""
        now = time.monotonic()
        key_id = int(user["key_id"])
        if now - self._key_touched.get(key_id, -API_KEY_TOUCH_SECONDS) >= API_KEY_TOUCH_SECONDS:
            self._key_touched[key_id] = now
            self.store.touch_api_key(key_id)
            self.audit.event("AuthenticationSuccess", self._ip(request), user, method="api-key", key_id=key_id)

    async def read_model(self, request: Request, model: Type[BaseModel], user: Optional[Dict[str, Any]] = None) -> Any:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail="content type")
            raise ApiError(415, "content type must be application/json")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail="body too large")
                raise ApiError(413, "request body too large")
        try:
            data = parse_json(bytes(body))
        except BadJson as exc:
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail=str(exc))
            raise ApiError(400, "malformed JSON", str(exc)) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            reason = first_error(exc)
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail=reason)
            if suspicious_strings(data):
                self.audit.event(
                    "SuspiciousActivity", self._ip(request), user, path=request.url.path, detail="markup or injection in body"
                )
            raise ApiError(422, "invalid input", reason) from None

    def _paging(self, request: Request, user: Dict[str, Any]) -> Tuple[int, int]:
        try:
            limit = int(request.query_params.get("limit", "100"))
            offset = int(request.query_params.get("offset", "0"))
            if not (1 <= limit <= 1000 and 0 <= offset <= 10_000_000):
                raise ValueError
        except ValueError:
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail="paging")
            raise ApiError(422, "invalid input", "limit must be 1-1000, offset 0 or more") from None
        return limit, offset

    # endpoints ---------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """With credentials (the minimal answer is given in the ASGI layer, `_minimal_health`)."""
        db_ok = self.database_ok()
        self.authenticate(request)
        status = self.hive.status() if db_ok else {}
        return _json(
            {
                "status": "ok" if db_ok else "error",
                "version": __version__,
                "database": "ok" if db_ok else "error",
                "uptime_seconds": status.get("uptime_seconds"),
                "agents": status.get("agents", {}).get("total"),
                "tasks": status.get("tasks", {}).get("total"),
            },
            200 if db_ok else 503,
        )

    async def login(self, request: Request) -> Response:
        ip = self._ip(request)
        bucket = self.bucket(ip)
        if not self.login_limit.allow(bucket):
            self._rate_limited(ip, request.url.path, self.login_limit)
            raise ApiError(429, "too many login attempts", headers={"Retry-After": str(self.login_limit.retry_after(bucket))})
        # A full hashing pool refuses before the body is even read: under a login flood the
        # 503s must cost the event loop next to nothing (measured: docs/benchmarks.md).
        self.passwords.check_capacity()
        body = await self.read_model(request, Login)
        row = self.store.user_by_name(body.username)
        # Per-account backoff of this source, checked before any argon2 work (sessions.LoginBackoff).
        wait = self.backoff.wait(body.username, bucket)
        if wait > 0:
            raise self.login_backoff_error(request, body.username, row, wait)
        ok = await self.passwords.verify_async(row["password_hash"] if row else None, body.password)
        if not ok or row is None or row["disabled"]:
            delay = self.backoff.failed(body.username, bucket)
            # The client learns nothing more than "invalid credentials" (a right password for a
            # disabled account is not confirmed); the audit line says which.
            self.audit.event("UnauthorizedAccess", ip, row, method=request.method, path=request.url.path,
                             detail="account disabled" if ok and row else "invalid credentials")
            error = ApiError(401, "unauthorized", "invalid credentials", headers={"WWW-Authenticate": "Bearer"})
            if delay > 0:
                self.audit.event("LoginBackoff", ip, row, path=request.url.path, retry_after=str(int(delay)))
            raise error
        self.backoff.succeeded(body.username, bucket)
        token, expires = self.issue_token(row)
        self.audit.event("AuthenticationSuccess", ip, row, method="password")
        return _json({"access_token": token, "token_type": "bearer", "expires_in": expires})

    async def create_api_key(self, request: Request) -> Response:
        user = self.authenticate(request)
        body = await self.read_model(request, ApiKeyCreate, user)
        key = self.api_keys.new()
        # A key minted with a JWT ends with that session (revoke, password or role change,
        # disable); one minted with a key inherits that key's binding.
        meta = self.store.create_api_key(
            user["id"], body.name, self.api_keys.digest(key), key[:12], user.get("session_generation")
        )
        self.audit.event("AccountChange", self._ip(request), user, action="api-key-create", target=user["pseudonym"],
                         key_id=meta["id"], bound_to_session=user.get("session_generation") is not None)
        return _json({"api_key": key, **meta}, 201)

    async def admin_users(self, request: Request) -> Response:
        user = self.authenticate(request, "admin")
        if request.method == "GET":
            return _json({"users": self.store.list_users()})
        body = await self.read_model(request, UserCreate, user)
        if len(body.password) < self.settings.min_password_length:
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail="short password")
            raise ApiError(422, "invalid input", f"password must be at least {self.settings.min_password_length} characters")
        if self.store.user_by_name(body.username):
            raise ApiError(409, "user exists")
        password_hash = await self.passwords.hash_async(body.password)
        user_id = self.store.create_user(body.username, body.role, password_hash)
        return _json({"id": user_id, "username": body.username, "role": body.role}, 201)

    async def agents(self, request: Request) -> Response:
        if request.method == "POST":
            user = self.authenticate(request, "operator")
            body = await self.read_model(request, AgentCreate, user)
            agent = await self.hive.create_agent(
                body.name, body.type, [c.model_dump() for c in body.capabilities], user["id"]
            )
            return _json(agent, 201)
        user = self.authenticate(request)
        limit, offset = self._paging(request, user)
        query = request.query_params.get("query")
        if query is None:
            return _json({"agents": self.hive.list_agents(limit, offset)})
        if len(query) > 200:
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail="query too long")
            raise ApiError(422, "invalid input", "query must be at most 200 characters")
        if is_suspicious(query):
            # Logged, then answered like any search: the query is only ever a bound parameter.
            self.audit.event(
                "SuspiciousActivity", self._ip(request), user, path=request.url.path, detail="injection-like query", query=query
            )
        return _json({"agents": self.hive.search_agents(query, limit, offset)})

    def _agent_or_404(self, agent_id: str) -> Dict[str, Any]:
        agent = self.hive.agents.get(agent_id) if UUID_RE.fullmatch(agent_id) else None
        if agent is None:
            raise ApiError(404, "agent not found")
        return agent

    async def agent(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        if request.method == "DELETE":
            self.authenticate(request, "operator")
            self._agent_or_404(agent_id)
            reason = self.hive.delete_agent(agent_id)
            if reason == "busy":
                raise ApiError(409, "agent is busy with a task")
            if reason:
                raise ApiError(404, "agent not found")
            return Response(status_code=204)
        self.authenticate(request)
        return _json(self._agent_or_404(agent_id))

    async def tasks(self, request: Request) -> Response:
        if request.method == "POST":
            user = self.authenticate(request, "operator")
            body = await self.read_model(request, TaskCreate, user)
            task = await self.hive.create_task(
                body.description, body.priority, [c.model_dump() for c in body.required_capabilities], user["id"]
            )
            return _json(public_task(task), 201)
        user = self.authenticate(request)
        limit, offset = self._paging(request, user)
        state = request.query_params.get("state")
        if state is not None and state not in ("Pending", "Assigned", "InProgress", "Completed", "Failed"):
            self.audit.event("InvalidInput", self._ip(request), user, path=request.url.path, detail="task state")
            raise ApiError(422, "invalid input", "state must be Pending, Assigned, InProgress, Completed or Failed")
        return _json({"tasks": [public_task(t) for t in await self.reader.list_tasks(state, limit, offset)]})

    async def task(self, request: Request) -> Response:
        self.authenticate(request)
        task_id = request.path_params["task_id"]
        task = self.store.get_task(task_id) if UUID_RE.fullmatch(task_id) else None
        if task is None:
            raise ApiError(404, "task not found")
        return _json(public_task(task))

    async def hive_status(self, request: Request) -> Response:
        self.authenticate(request)
        return _json(self.hive.status())

    def _release_export(self, user_id: int, token: object) -> None:
        if self.exports.get(user_id) is token:
            del self.exports[user_id]

    async def _export(self, user_id: int, token: object) -> AsyncIterator[bytes]:
        """The GDPR export, streamed: read in batches on a connection of its own, in a worker
        thread of its own (the event loop and the shared connection's lock stay free; WAL lets
        this reader run beside the service's writes), one chunk at a time as the client takes
        them. The user's slot in `exports` is freed once the reader is closed."""
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hive-export")
        reader: Optional[Store] = None
        chunks: Optional[Iterator[bytes]] = None

        def start() -> Tuple[Store, Iterator[bytes]]:
            store = Store(self.settings.database_path, self.settings.database_encryption_key)

            def stamp() -> str:
                return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

            return store, store.export_user_chunks(user_id, public_task, stamp)

        def finish() -> None:
            try:
                if chunks is not None:
                    chunks.close()  # type: ignore[attr-defined]
                if reader is not None:
                    reader.close()
            finally:
                try:
                    loop.call_soon_threadsafe(self._release_export, user_id, token)
                except RuntimeError:  # the loop is gone: so is the set
                    pass

        try:
            reader, pending = await loop.run_in_executor(pool, start)
            chunks = pending
            while True:
                chunk = await loop.run_in_executor(pool, lambda: next(pending, None))
                if chunk is None:
                    break
                yield chunk
        finally:
            # After the read in flight, in the same thread: a generator is never closed while it runs.
            pool.submit(finish)
            pool.shutdown(wait=False)

    async def my_data(self, request: Request) -> Response:
        user = self.authenticate(request)
        ip = self._ip(request)
        if request.method == "GET":
            # One export per user at a time: each holds a reader, a thread and a snapshot.
            if user["id"] in self.exports:
                raise ApiError(409, "an export of this account is already running", "retry when it has finished",
                               headers={"Retry-After": "5"})
            token = self.exports[user["id"]] = object()
            body = self._export(user["id"], token)
            # Also when the body is dropped unread (the client left before the first chunk).
            weakref.finalize(body, self._release_export, user["id"], token)
            self.audit.event("DataExport", ip, user)
            return StreamingResponse(body, media_type="application/json")
        if user["role"] == "admin" and self.store.count_admins() <= 1:
            raise ApiError(409, "the last admin account cannot be erased", "create another admin first")
        counts = self.store.erase_user(user["id"])
        # Logged after the erasure: the event carries only the now unlinkable pseudonym.
        self.audit.event("DataErasure", ip, {"id": None, "pseudonym": user["pseudonym"], "username": None})
        self.accounts.ended(user["id"], "account erased")
        return _json({"erased": True, **counts})


def create_app(settings: Settings, store: Optional[Store] = None, metrics: Any = None) -> HiveApp:
    return HiveApp(settings, store or Store(settings.database_path, settings.database_encryption_key), metrics)
