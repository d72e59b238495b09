"""WebSocket authentication without a credential in the URL (single-use tickets), and open sockets
closed when the credential behind them expires or is revoked."""
from __future__ import annotations

import time
from typing import Any, Dict

import pytest
from starlette.websockets import WebSocketDisconnect

from conftest import PASSWORDS, audit_lines, login


def wait_closed(ws: Any, seconds: float = 15.0) -> WebSocketDisconnect:
    """The close the server sends, skipping events; fails (instead of hanging the suite) when
    none comes within `seconds`. The test session has no receive timeout of its own, so this
    reads its stream through its portal with a deadline (starlette's TestClient internals)."""
    import anyio

    async def receive() -> Any:
        with anyio.fail_after(seconds):
            return await ws._send_rx.receive()

    while True:
        try:
            message = ws.portal.call(receive)
        except TimeoutError:
            raise AssertionError(f"the socket was not closed within {seconds} s") from None
        if message["type"] == "websocket.close":
            return WebSocketDisconnect(code=message.get("code", 1000), reason=message.get("reason", ""))


def ticket(client: Any, headers: Dict[str, str]) -> str:
    resp = client.post("/api/ws/ticket", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["expires_in"] == 30
    value: str = resp.json()["ticket"]
    return value


def refused(client: Any, url: str, **kw: Any) -> None:
    with pytest.raises(WebSocketDisconnect) as exc:
        with client.websocket_connect(url, **kw) as ws:
            ws.receive_json()
    assert exc.value.code == 1008


def test_ticket_is_single_use(client: Any, viewer: Dict[str, str], settings: Any) -> None:
    value = ticket(client, viewer)
    with client.websocket_connect(f"/ws?ticket={value}") as ws:
        assert ws.receive_json()["type"] == "status"
    refused(client, f"/ws?ticket={value}")
    refused(client, "/ws?ticket=wst_forged")
    # Logged, but not as an event the fail2ban jail counts: a page can make a browser offer any ticket.
    assert any("path=/ws" in line and "invalid%20or%20expired%20ticket" in line
               for line in audit_lines(settings) if " event=AuthenticationRequired " in line)
    assert not [line for line in audit_lines(settings) if " event=UnauthorizedAccess " in line]


def test_ticket_expires(client: Any, viewer: Dict[str, str], hive_app: Any) -> None:
    value = ticket(client, viewer)
    for entry in hive_app.tickets.tickets.values():
        entry.expires = time.monotonic() - 1
    refused(client, f"/ws?ticket={value}")


def test_ticket_is_no_credential_elsewhere(client: Any, viewer: Dict[str, str]) -> None:
    value = ticket(client, viewer)
    assert client.get("/api/agents", headers={"Authorization": f"Bearer {value}"}).status_code == 401
    assert client.get("/api/agents", headers={"X-API-Key": value}).status_code == 401


def test_ticket_needs_authentication_and_is_bounded(client: Any, viewer: Dict[str, str]) -> None:
    assert client.post("/api/ws/ticket").status_code == 401
    for _ in range(20):
        ticket(client, viewer)
    assert client.post("/api/ws/ticket", headers=viewer).status_code == 429


def test_token_in_the_url_is_refused(client: Any, viewer: Dict[str, str], settings: Any) -> None:
    token = viewer["Authorization"].split(" ", 1)[1]
    refused(client, f"/ws?token={token}")
    lines = [line for line in audit_lines(settings) if "path=/ws" in line]
    assert lines and " event=AuthenticationRequired " in lines[-1]
    assert token not in "\n".join(audit_lines(settings))


def test_ticket_in_the_subprotocol_offer(client: Any, viewer: Dict[str, str]) -> None:
    value = ticket(client, viewer)
    with client.websocket_connect("/ws", subprotocols=["hive.v1", value]) as ws:
        assert ws.accepted_subprotocol == "hive.v1"
        assert ws.receive_json()["type"] == "status"


def test_headers_still_work_for_clients_that_can_send_them(client: Any, viewer: Dict[str, str]) -> None:
    with client.websocket_connect("/ws", headers=viewer) as ws:
        assert ws.receive_json()["type"] == "status"
    refused(client, "/ws")


@pytest.mark.parametrize("action", ["password", "disable", "role", "revoke-sessions", "delete"])
def test_open_socket_closed_when_the_session_is_revoked(client: Any, admin: Dict[str, str], action: str) -> None:
    operator = login(client, "operator")
    oid = next(u["id"] for u in client.get("/api/admin/users", headers=admin).json()["users"] if u["username"] == "operator")
    with client.websocket_connect(f"/ws?ticket={ticket(client, operator)}") as ws:
        assert ws.receive_json()["type"] == "status"
        if action == "password":
            resp = client.post(f"/api/admin/users/{oid}/password", headers=admin, json={"new_password": "another-password-12"})
        elif action == "role":
            resp = client.post(f"/api/admin/users/{oid}/role", headers=admin, json={"role": "viewer"})
        elif action == "delete":
            resp = client.delete(f"/api/admin/users/{oid}", headers=admin)
        else:
            resp = client.post(f"/api/admin/users/{oid}/{action}", headers=admin)
        assert resp.status_code == 200, resp.text
        closed = wait_closed(ws)
        assert closed.code == 1008 and closed.reason


def test_own_password_change_closes_own_sockets(client: Any) -> None:
    operator = login(client, "operator")
    with client.websocket_connect("/ws", headers=operator) as ws:
        ws.receive_json()
        client.post("/api/auth/password", headers=operator,
                    json={"current_password": PASSWORDS["operator"], "new_password": "another-password-12"})
        closed = wait_closed(ws)
        assert closed.code == 1008 and closed.reason == "password changed"


def test_revoking_one_key_keeps_the_other_sockets(client: Any, operator: Dict[str, str]) -> None:
    first = client.post("/api/auth/api-keys", headers=operator, json={"name": "a"}).json()
    second = client.post("/api/auth/api-keys", headers=operator, json={"name": "b"}).json()
    with client.websocket_connect("/ws", headers={"X-API-Key": second["api_key"]}) as kept:
        kept.receive_json()
        with client.websocket_connect("/ws", headers={"X-API-Key": first["api_key"]}) as ended:
            ended.receive_json()
            assert client.delete(f"/api/auth/api-keys/{first['id']}", headers=operator).status_code == 204
            closed = wait_closed(ended)
            assert closed.code == 1008
        client.post("/api/agents", headers=operator, json={"name": "still-here", "type": "worker"})
        assert kept.receive_json()["type"] == "agent_created"


def test_socket_closed_when_its_token_expires(client: Any, hive_app: Any) -> None:
    hive_app.tokens.expiry = 1
    operator = login(client, "operator")
    started = time.monotonic()
    with client.websocket_connect(f"/ws?ticket={ticket(client, operator)}") as ws:
        ws.receive_json()
        closed = wait_closed(ws)
    assert closed.code == 1008 and closed.reason == "session expired"
    assert time.monotonic() - started < 5


def test_revocation_by_another_process_is_seen_by_the_recheck(client: Any, settings: Any, monkeypatch: Any) -> None:
    from multiagent_hive import accounts
    from multiagent_hive.store import Store

    monkeypatch.setattr(accounts, "WS_RECHECK_SECONDS", 0.2)
    operator = login(client, "operator")
    with client.websocket_connect("/ws", headers=operator) as ws:
        ws.receive_json()
        other = Store(settings.database_path, settings.database_encryption_key)  # as the CLI would
        try:
            user = other.user_by_name("operator")
            assert user is not None
            other.revoke_sessions(user["id"])
        finally:
            other.close()
        closed = wait_closed(ws)
        assert closed.code == 1008 and closed.reason == "session revoked"
