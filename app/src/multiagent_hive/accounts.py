"""Credential lifecycle routes (password change and reset, disable/enable, delete, role change,
API key listing and revocation, session revocation), WebSocket tickets and the WebSocket
endpoint whose sockets end with their credential. Registered by api.HiveApp."""
from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Annotated, Any, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .ratelimit import client_bucket
from .schemas import Strict, check_role
from .sessions import (
    CLOSE_SESSION_ENDED,
    TICKET_PREFIX,
    TICKET_SECONDS,
    SocketSession,
    Ticket,
)

if TYPE_CHECKING:  # pragma: no cover
    from .api import HiveApp

# How often an open WebSocket re-reads its credential from the database: a revocation by another
# process (the CLI, a second worker) ends the socket within this time; one in this process at once.
WS_RECHECK_SECONDS = 10.0
WS_SUBPROTOCOL = "hive.v1"
# Close code when a user already has WEBSOCKET_MAX_PER_USER sockets open (1008: policy violation).
CLOSE_TOO_MANY = 1008
# Why a credential sent in a header failed (api.user_from_headers): UnauthorizedAccess on /ws.
HEADER_FAILURES = frozenset({
    "invalid api key", "unsupported authorization scheme", "invalid or expired token", "user no longer exists",
    "account disabled", "session revoked",
})


# request and response schemas (pydantic evaluates annotations: typing names, Python 3.9) -------
class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordReset(Strict):
    new_password: str = Field(min_length=1, max_length=1024)


class RoleChange(Strict):
    role: Annotated[str, AfterValidator(check_role)]


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


class ApiKeyInfo(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: str
    last_used_at: Optional[str] = None
    bound_to_session: bool


class ApiKeyList(BaseModel):
    api_keys: List[ApiKeyInfo]


class AccountChangeOut(BaseModel):
    user_id: int
    action: str
    sessions_ended: bool
    api_keys_revoked: int = 0


class WsTicketOut(BaseModel):
    ticket: str
    expires_in: int


class Accounts:
    """The routes below need HiveApp's authentication, body parsing and audit log."""

    def __init__(self, app: HiveApp) -> None:
        self.app = app
        self.store = app.store

    def routes(self) -> List[Union[Route, WebSocketRoute]]:
        return [
            Route("/api/auth/password", self.change_password, methods=["POST"]),
            Route("/api/auth/api-keys", self.my_api_keys, methods=["GET"]),
            Route("/api/auth/api-keys/{key_id:int}", self.revoke_my_api_key, methods=["DELETE"]),
            Route("/api/auth/revoke-sessions", self.revoke_my_sessions, methods=["POST"]),
            Route("/api/ws/ticket", self.ws_ticket, methods=["POST"]),
            Route("/api/admin/users/{user_id:int}", self.admin_delete_user, methods=["DELETE"]),
            Route("/api/admin/users/{user_id:int}/password", self.admin_reset_password, methods=["POST"]),
            Route("/api/admin/users/{user_id:int}/role", self.admin_change_role, methods=["POST"]),
            Route("/api/admin/users/{user_id:int}/disable", self.admin_disable, methods=["POST"]),
            Route("/api/admin/users/{user_id:int}/enable", self.admin_enable, methods=["POST"]),
            Route("/api/admin/users/{user_id:int}/revoke-sessions", self.admin_revoke_sessions, methods=["POST"]),
            Route("/api/admin/users/{user_id:int}/api-keys", self.admin_api_keys, methods=["GET"]),
            Route("/api/admin/users/{user_id:int}/api-keys/{key_id:int}", self.admin_revoke_api_key, methods=["DELETE"]),
            WebSocketRoute("/ws", self.websocket),
        ]

    # helpers -----------------------------------------------------------------------------
    def _audit(self, request: Request, actor: Optional[Dict[str, Any]], action: str, target: Dict[str, Any], **fields: Any) -> None:
        self.app.audit.event(
            "AccountChange", self.app._ip(request), actor, action=action, target=target["pseudonym"], **fields
        )

    def _target(self, request: Request) -> Dict[str, Any]:
        from .api import ApiError

        target = self.store.user_by_id(int(request.path_params["user_id"]))
        if target is None:
            raise ApiError(404, "user not found")
        return target

    def _check_password_length(self, request: Request, user: Dict[str, Any], password: str) -> None:
        from .api import ApiError

        minimum = self.app.settings.min_password_length
        if len(password) < minimum:
            self.app.audit.event("InvalidInput", self.app._ip(request), user, path=request.url.path, detail="short password")
            raise ApiError(422, "invalid input", f"password must be at least {minimum} characters")

    def _keep_an_admin(self, target: Dict[str, Any]) -> None:
        """The last enabled admin cannot be disabled, demoted or deleted."""
        from .api import ApiError

        if target["role"] == "admin" and not target["disabled"] and self.store.count_admins() <= 1:
            raise ApiError(409, "the last admin account must stay an enabled admin", "create or enable another admin first")

    def ended(self, user_id: int, reason: str) -> None:
        """Sessions of the user ended in the database: close their open WebSockets now."""
        self.app.sockets.end_user(user_id, reason)

    @staticmethod
    def _out(model: BaseModel, status: int = 200) -> Response:
        return JSONResponse(model.model_dump(), status_code=status)

    # the caller's own account ------------------------------------------------------------
    async def change_password(self, request: Request) -> Response:
        """Needs the current password; ends every session and session-bound key of the user,
        then answers a fresh token so the caller stays logged in."""
        from .api import ApiError

        user = self.app.authenticate(request)
        body = await self.app.read_model(request, PasswordChange, user)
        ip = self.app._ip(request)
        source = client_bucket(ip)
        wait = self.app.backoff.wait(user["username"], source)
        if wait > 0:
            raise self.app.login_backoff_error(request, user["username"], user, wait)
        row = self.store.user_by_name(user["username"])
        if row is None or not await self.app.passwords.verify_async(row["password_hash"], body.current_password):
            self.app.backoff.failed(user["username"], source)
            self.app.audit.event(
                "UnauthorizedAccess", ip, user, method=request.method, path=request.url.path, detail="wrong current password"
            )
            raise ApiError(403, "forbidden", "the current password is wrong")
        self.app.backoff.succeeded(user["username"], source)
        self._check_password_length(request, user, body.new_password)
        password_hash = await self.app.passwords.hash_async(body.new_password)
        self.store.set_password(user["id"], password_hash)
        self._audit(request, user, "password-change", user)
        self.ended(user["id"], "password changed")
        fresh = self.store.user_by_id(user["id"])
        assert fresh is not None
        token, expires = self.app.issue_token(fresh)
        return self._out(TokenOut(access_token=token, token_type="bearer", expires_in=expires))

    async def my_api_keys(self, request: Request) -> Response:
        user = self.app.authenticate(request)
        keys = [ApiKeyInfo(**k) for k in self.store.list_api_keys(user["id"])]
        return self._out(ApiKeyList(api_keys=keys))

    async def revoke_my_api_key(self, request: Request) -> Response:
        from .api import ApiError

        user = self.app.authenticate(request)
        key_id = int(request.path_params["key_id"])
        if not self.store.revoke_api_key(user["id"], key_id):
            raise ApiError(404, "api key not found")
        self._audit(request, user, "api-key-revoke", user, key_id=key_id)
        self.ended(user["id"], "api key revoked")  # sockets re-check: only the key's own end
        return Response(status_code=204)

    async def revoke_my_sessions(self, request: Request) -> Response:
        user = self.app.authenticate(request)
        keys = self.store.revoke_sessions(user["id"]) or 0
        self._audit(request, user, "revoke-sessions", user, api_keys=keys)
        self.ended(user["id"], "sessions revoked")
        return self._out(AccountChangeOut(user_id=user["id"], action="revoke-sessions", sessions_ended=True, api_keys_revoked=keys))

    # admin -------------------------------------------------------------------------------
    async def admin_reset_password(self, request: Request) -> Response:
        from .api import ApiError

        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        if target["id"] == admin["id"]:
            # Without the current password a stolen admin token would become the account.
            self.app.audit.event("AccessDenied", self.app._ip(request), admin, method=request.method,
                                 path=request.url.path, detail="own password through the admin endpoint")
            raise ApiError(403, "forbidden", "change your own password with POST /api/auth/password (it needs the current one)")
        body = await self.app.read_model(request, PasswordReset, admin)
        self._check_password_length(request, admin, body.new_password)
        password_hash = await self.app.passwords.hash_async(body.new_password)
        self.store.set_password(target["id"], password_hash)
        self._audit(request, admin, "password-reset", target)
        self.ended(target["id"], "password reset")
        return self._out(AccountChangeOut(user_id=target["id"], action="password-reset", sessions_ended=True))

    async def admin_change_role(self, request: Request) -> Response:
        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        body = await self.app.read_model(request, RoleChange, admin)
        if body.role == target["role"]:
            return self._out(AccountChangeOut(user_id=target["id"], action="role-unchanged", sessions_ended=False))
        if body.role != "admin":
            self._keep_an_admin(target)
        self.store.set_role(target["id"], body.role)
        self._audit(request, admin, "role-change", target, role=body.role)
        self.ended(target["id"], "role changed")
        return self._out(AccountChangeOut(user_id=target["id"], action="role-change", sessions_ended=True))

    async def admin_disable(self, request: Request) -> Response:
        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        if target["disabled"]:
            return self._out(AccountChangeOut(user_id=target["id"], action="already-disabled", sessions_ended=False))
        self._keep_an_admin(target)
        self.store.set_disabled(target["id"], True)
        self._audit(request, admin, "disable", target)
        self.ended(target["id"], "account disabled")
        return self._out(AccountChangeOut(user_id=target["id"], action="disable", sessions_ended=True))

    async def admin_enable(self, request: Request) -> Response:
        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        if not target["disabled"]:
            return self._out(AccountChangeOut(user_id=target["id"], action="already-enabled", sessions_ended=False))
        self.store.set_disabled(target["id"], False)
        self._audit(request, admin, "enable", target)
        return self._out(AccountChangeOut(user_id=target["id"], action="enable", sessions_ended=False))

    async def admin_delete_user(self, request: Request) -> Response:
        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        self._keep_an_admin(target)
        counts = self.store.erase_user(target["id"])
        # After the erasure the target pseudonym maps to nobody, as with a self-erasure.
        self._audit(request, admin, "delete", target, api_keys=counts["api_keys"])
        self.ended(target["id"], "account deleted")
        return self._out(
            AccountChangeOut(user_id=target["id"], action="delete", sessions_ended=True, api_keys_revoked=counts["api_keys"])
        )

    async def admin_revoke_sessions(self, request: Request) -> Response:
        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        keys = self.store.revoke_sessions(target["id"]) or 0
        self._audit(request, admin, "revoke-sessions", target, api_keys=keys)
        self.ended(target["id"], "sessions revoked")
        return self._out(AccountChangeOut(user_id=target["id"], action="revoke-sessions", sessions_ended=True, api_keys_revoked=keys))

    async def admin_api_keys(self, request: Request) -> Response:
        self.app.authenticate(request, "admin")
        target = self._target(request)
        keys = [ApiKeyInfo(**k) for k in self.store.list_api_keys(target["id"])]
        return self._out(ApiKeyList(api_keys=keys))

    async def admin_revoke_api_key(self, request: Request) -> Response:
        from .api import ApiError

        admin = self.app.authenticate(request, "admin")
        target = self._target(request)
        key_id = int(request.path_params["key_id"])
        if not self.store.revoke_api_key(target["id"], key_id):
            raise ApiError(404, "api key not found")
        self._audit(request, admin, "api-key-revoke", target, key_id=key_id)
        self.ended(target["id"], "api key revoked")
        return Response(status_code=204)

    # WebSocket ---------------------------------------------------------------------------
    async def ws_ticket(self, request: Request) -> Response:
        """A single-use ticket for `/ws?ticket=` (or the `Sec-WebSocket-Protocol` offer), valid
        for TICKET_SECONDS: the browser's WebSocket API cannot send headers, and a JWT in the URL
        ends up in access logs and browser history."""
        from .api import ApiError

        user = self.app.authenticate(request)
        ticket = self.app.tickets.issue(user, user.get("session_exp"), user.get("key_digest"))
        if ticket is None:
            raise ApiError(429, "too many unused tickets", headers={"Retry-After": str(int(TICKET_SECONDS))})
        return self._out(WsTicketOut(ticket=ticket, expires_in=int(TICKET_SECONDS)))

    def session_problem(self, session: SocketSession) -> str:
        """Why the credential behind an open socket no longer holds ('' while it does)."""
        if session.session_exp is not None and time.time() >= session.session_exp:
            return "session expired"
        if session.key_digest is not None:
            row = self.store.user_by_api_key(session.key_digest)
            return "" if row is not None and row["id"] == session.user_id else "session revoked"
        user = self.store.user_by_subject(session.subject)
        if user is None or user["disabled"] or user["token_generation"] != session.generation:
            return "session revoked"
        return ""

    def _ws_credential(self, websocket: WebSocket) -> Tuple[Optional[SocketSession], str, bool]:
        """(session, reason, offered_subprotocol). A ticket comes from `?ticket=` or an offered
        subprotocol `wst_...`; without one, `Authorization: Bearer` / `X-API-Key` headers (for
        clients that can send headers). A JWT in `?token=` is refused: it would be logged."""
        offered = [p.strip() for h in websocket.headers.getlist("sec-websocket-protocol") for p in h.split(",")]
        ticket_text = websocket.query_params.get("ticket") or next((p for p in offered if p.startswith(TICKET_PREFIX)), None)
        if ticket_text is not None:
            ticket: Optional[Ticket] = self.app.tickets.redeem(ticket_text)
            if ticket is None:
                return None, "invalid or expired ticket", False
            session = SocketSession(ticket.user_id, ticket.subject, ticket.generation, ticket.session_exp, ticket.key_digest)
            problem = self.session_problem(session)
            return (None, f"ticket: {problem}", False) if problem else (session, "ticket", WS_SUBPROTOCOL in offered)
        if "token" in websocket.query_params:
            return None, "token in the url refused (use a ticket)", False
        user, how = self.app.user_from_headers(websocket.headers)
        if user is None:
            return None, how, False
        session = SocketSession(
            user["id"], user["subject"], user["token_generation"], user.get("session_exp"), user.get("key_digest")
        )
        return session, how, WS_SUBPROTOCOL in offered

    def origin_allowed(self, websocket: WebSocket) -> bool:
        """A handshake without Origin comes from a client that is not a browser; a browser's must
        name one of WEBSOCKET_ALLOWED_ORIGINS, or, when that is empty, the host the browser
        connected to (its Host header's host name): browsers apply no same-origin rule to WebSockets."""
        origin = websocket.headers.get("origin")
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        allowed = self.app.allowed_origins
        if allowed:
            return origin in allowed
        # Host names only: nginx passes `$host`, without the port the browser used.
        try:
            parts = urlsplit(origin)
            own = urlsplit("//" + websocket.headers.get("host", "").strip().lower()).hostname
        except ValueError:
            return False
        return parts.scheme in ("https", "http") and bool(own) and parts.hostname == own

    async def websocket(self, websocket: WebSocket) -> None:
        ip = str(websocket.scope.get("hive.client_ip", "0.0.0.0"))
        if not self.origin_allowed(websocket):
            # Refused before any ticket is looked at, and not an event fail2ban counts: a page
            # elsewhere opening sockets here is its visitor's browser, not an attack by them.
            self.app.audit.event("AccessDenied", ip, method="GET", path="/ws", detail="origin not allowed")
            await websocket.close(code=1008)
            return
        session, how, subprotocol = self._ws_credential(websocket)
        if session is None:
            # A refused header credential counts as a failed one. A ticket does not: it is random,
            # lives 30 s and is used once, so guessing one is hopeless, while a page can make any
            # browser offer an unknown one; nor does a bare connect or a token in the URL.
            event = "UnauthorizedAccess" if how in HEADER_FAILURES else "AuthenticationRequired"
            self.app.audit.event(event, ip, method="GET", path="/ws", detail=how)
            await websocket.close(code=1008)
            return
        await websocket.accept(subprotocol=WS_SUBPROTOCOL if subprotocol else None)
        # Counted and registered (in _stream, before its first await) with no await between, so
        # simultaneous connects cannot pass the cap together.
        limit = self.app.settings.websocket_max_per_user
        if self.app.sockets.count(session.user_id) >= limit:
            self.app.audit.event("InvalidInput", ip, method="GET", path="/ws", detail="too many open websockets")
            await websocket.close(code=CLOSE_TOO_MANY, reason=f"too many open WebSockets for this user (limit {limit})")
            return
        await self._stream(websocket, session)

    async def _stream(self, websocket: WebSocket, session: SocketSession) -> None:
        app = self.app
        queue: asyncio.Queue[Optional[str]] = asyncio.Queue(maxsize=app.settings.websocket_queue_size)

        def listener(event: Dict[str, Any]) -> None:
            try:
                queue.put_nowait(json.dumps(event))
            except asyncio.QueueFull:
                # A client that cannot keep up is dropped rather than buffered without bound.
                app.hive.listeners.discard(listener)
                queue.get_nowait()
                queue.put_nowait(None)

        app.sockets.add(session)
        app.hive.listeners.add(listener)
        receiver = asyncio.ensure_future(self._drain(websocket))
        ender = asyncio.ensure_future(session.ended.wait())
        getter: Optional[asyncio.Future[Optional[str]]] = None
        try:
            await websocket.send_text(json.dumps({"type": "status", "data": app.hive.status()}))
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                timeout = WS_RECHECK_SECONDS
                if session.session_exp is not None:
                    timeout = max(0.0, min(timeout, session.session_exp - time.time()))
                waiting: Set[asyncio.Future[Any]] = {getter, receiver, ender}
                done, _pending = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    break
                if ender in done or not done:
                    # Timer or an account change in this process: read the credential again.
                    problem = self.session_problem(session)
                    if problem:
                        await websocket.close(code=CLOSE_SESSION_ENDED, reason=session.reason or problem)
                        break
                    if ender in done:  # the change left this socket's credential valid (another key)
                        session.ended.clear()
                        session.reason = ""
                        ender = asyncio.ensure_future(session.ended.wait())
                    continue
                message = getter.result()
                getter = None
                if message is None:
                    await websocket.close(code=1013)
                    break
                await websocket.send_text(message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            app.hive.listeners.discard(listener)
            app.sockets.discard(session)
            for task in (receiver, ender, getter):
                if task is not None:
                    task.cancel()

    @staticmethod
    async def _drain(websocket: WebSocket) -> None:
        """Read (and ignore) client messages until it disconnects."""
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
