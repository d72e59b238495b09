"""Credential lifecycle: password change and reset, disable/enable, delete, role change, API key
listing and revocation, session revocation; JWTs by random subject and token generation; the
per-account login backoff."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from conftest import CLIENT_IP, PASSWORDS, audit_lines, login

NEW_PASSWORD = "a-brand-new-password-1"


def lines_with(settings: Any, event: str) -> List[str]:
    return [line for line in audit_lines(settings) if f" event={event} " in line]


def user_id(client: Any, admin: Dict[str, str], name: str) -> int:
    return next(u["id"] for u in client.get("/api/admin/users", headers=admin).json()["users"] if u["username"] == name)


def new_key(client: Any, headers: Dict[str, str], name: str = "k") -> Dict[str, Any]:
    resp = client.post("/api/auth/api-keys", headers=headers, json={"name": name})
    assert resp.status_code == 201, resp.text
    body: Dict[str, Any] = resp.json()
    return body


def status(client: Any, headers: Dict[str, str]) -> int:
    return int(client.get("/api/agents", headers=headers).status_code)


# -- tokens name a random subject at a generation -----------------------------------------------
def test_token_subject_is_random_not_the_row_id(client: Any, viewer: Dict[str, str], hive_app: Any) -> None:
    claims = hive_app.tokens.decode(viewer["Authorization"].split(" ", 1)[1])
    assert claims["sub"] != "3" and len(claims["sub"]) == 32 and claims["gen"] == 0


def test_restored_database_new_user_cannot_take_an_old_token(settings: Any, tmp_path: Any) -> None:
    """A token issued for a user that exists only in the newer database is not honoured for
    the new user that gets the same row id after a restore of an older backup."""
    from starlette.testclient import TestClient

    from multiagent_hive import db
    from multiagent_hive.api import create_app

    backup = str(tmp_path / "old.db")
    db.backup(settings.database_path, settings.database_encryption_key, backup)
    app = create_app(settings)
    with TestClient(app, client=(CLIENT_IP, 40000)) as c:
        admin = login(c, "admin")
        mallory_account = {"username": "mallory", "password": "mallory-password-1", "role": "admin"}
        assert c.post("/api/admin/users", headers=admin, json=mallory_account).status_code == 201
        token = c.post("/api/auth/login", json={"username": "mallory", "password": "mallory-password-1"}).json()["access_token"]
        mallory = {"Authorization": "Bearer " + token}
    app.audit.close()
    app.store.close()
    db.restore(settings.database_path, settings.database_encryption_key, backup)
    app = create_app(settings)
    try:
        with TestClient(app, client=(CLIENT_IP, 40000)) as c:
            admin = login(c, "admin")
            resp = c.post("/api/admin/users", headers=admin, json={"username": "newbie", "password": "newbie-password-1", "role": "viewer"})
            assert resp.status_code == 201
            assert resp.json()["id"] == 4  # the row id mallory had
            assert c.get("/api/admin/users", headers=mallory).status_code == 401
    finally:
        app.audit.close()
        app.store.close()


# -- password ------------------------------------------------------------------------------------
def test_change_own_password_ends_every_session(client: Any, settings: Any) -> None:
    first = login(client, "operator")
    second = login(client, "operator")
    jwt_key = new_key(client, first)["api_key"]
    resp = client.post("/api/auth/password", headers=first,
                       json={"current_password": PASSWORDS["operator"], "new_password": NEW_PASSWORD})
    assert resp.status_code == 200, resp.text
    fresh = {"Authorization": "Bearer " + resp.json()["access_token"]}
    assert status(client, first) == 401 and status(client, second) == 401
    assert status(client, {"X-API-Key": jwt_key}) == 401, "a key minted by an ended session still works"
    assert status(client, fresh) == 200
    assert client.post("/api/auth/login", json={"username": "operator", "password": PASSWORDS["operator"]}).status_code == 401
    assert client.post("/api/auth/login", json={"username": "operator", "password": NEW_PASSWORD}).status_code == 200
    line = lines_with(settings, "AccountChange")[-1]
    assert "action=password-change" in line and "target=u-" in line
    assert NEW_PASSWORD not in "\n".join(audit_lines(settings))


def test_change_password_needs_the_current_one(client: Any, operator: Dict[str, str], settings: Any) -> None:
    resp = client.post("/api/auth/password", headers=operator, json={"current_password": "wrong", "new_password": NEW_PASSWORD})
    assert resp.status_code == 403
    assert status(client, operator) == 200
    assert any("wrong%20current%20password" in line for line in lines_with(settings, "UnauthorizedAccess"))
    short = client.post("/api/auth/password", headers=operator,
                        json={"current_password": PASSWORDS["operator"], "new_password": "short"})
    assert short.status_code == 422
    assert client.post("/api/auth/password", json={"current_password": "x", "new_password": NEW_PASSWORD}).status_code == 401


def test_admin_reset_password(client: Any, admin: Dict[str, str], viewer: Dict[str, str], settings: Any) -> None:
    vid = user_id(client, admin, "viewer")
    assert client.post(f"/api/admin/users/{vid}/password", headers=viewer, json={"new_password": NEW_PASSWORD}).status_code == 403
    resp = client.post(f"/api/admin/users/{vid}/password", headers=admin, json={"new_password": NEW_PASSWORD})
    assert resp.status_code == 200 and resp.json()["sessions_ended"] is True
    assert status(client, viewer) == 401
    assert client.post("/api/auth/login", json={"username": "viewer", "password": NEW_PASSWORD}).status_code == 200
    assert client.post("/api/admin/users/999/password", headers=admin, json={"new_password": NEW_PASSWORD}).status_code == 404
    assert any("action=password-reset" in line for line in lines_with(settings, "AccountChange"))


# -- disable, enable, delete, role -------------------------------------------------------------
def test_disable_and_enable(client: Any, admin: Dict[str, str], operator: Dict[str, str], settings: Any) -> None:
    oid = user_id(client, admin, "operator")
    jwt_key = new_key(client, operator)["api_key"]
    host_key = _host_key(settings, "operator")
    assert client.post(f"/api/admin/users/{oid}/disable", headers=admin).json()["action"] == "disable"
    assert status(client, operator) == 401
    assert status(client, {"X-API-Key": jwt_key}) == 401
    assert status(client, {"X-API-Key": host_key}) == 401
    refused = client.post("/api/auth/login", json={"username": "operator", "password": PASSWORDS["operator"]})
    assert refused.status_code == 401 and refused.json()["detail"] == "invalid credentials"  # the password is not confirmed
    assert any("account%20disabled" in line for line in lines_with(settings, "UnauthorizedAccess"))
    users = {u["username"]: u for u in client.get("/api/admin/users", headers=admin).json()["users"]}
    assert users["operator"]["disabled"] is True
    assert client.post(f"/api/admin/users/{oid}/enable", headers=admin).json()["action"] == "enable"
    # The old session stays ended and its key with it; the key made on the host works again.
    assert status(client, operator) == 401
    assert status(client, {"X-API-Key": jwt_key}) == 401
    assert status(client, {"X-API-Key": host_key}) == 200
    assert status(client, login(client, "operator")) == 200
    actions = " ".join(lines_with(settings, "AccountChange"))
    assert "action=disable" in actions and "action=enable" in actions


def test_role_change_ends_sessions_and_applies(client: Any, admin: Dict[str, str], viewer: Dict[str, str]) -> None:
    vid = user_id(client, admin, "viewer")
    assert client.post(f"/api/admin/users/{vid}/role", headers=admin, json={"role": "operator"}).status_code == 200
    assert status(client, viewer) == 401
    fresh = login(client, "viewer")
    assert client.post("/api/agents", headers=fresh, json={"name": "x", "type": "worker"}).status_code == 201
    assert client.post(f"/api/admin/users/{vid}/role", headers=admin, json={"role": "root"}).status_code == 422


def test_delete_user(client: Any, admin: Dict[str, str], viewer: Dict[str, str], settings: Any) -> None:
    vid = user_id(client, admin, "viewer")
    key = new_key(client, viewer)["api_key"]
    resp = client.delete(f"/api/admin/users/{vid}", headers=admin)
    assert resp.status_code == 200 and resp.json()["api_keys_revoked"] == 1
    assert status(client, viewer) == 401 and status(client, {"X-API-Key": key}) == 401
    assert client.delete(f"/api/admin/users/{vid}", headers=admin).status_code == 404
    assert any("action=delete" in line for line in lines_with(settings, "AccountChange"))


def test_last_admin_cannot_be_disabled_demoted_or_deleted(client: Any, admin: Dict[str, str]) -> None:
    aid = user_id(client, admin, "admin")
    assert client.post(f"/api/admin/users/{aid}/disable", headers=admin).status_code == 409
    assert client.post(f"/api/admin/users/{aid}/role", headers=admin, json={"role": "viewer"}).status_code == 409
    assert client.delete(f"/api/admin/users/{aid}", headers=admin).status_code == 409
    assert status(client, admin) == 200


# -- API keys and revoke-sessions ----------------------------------------------------------------
def test_list_and_revoke_own_api_keys(client: Any, operator: Dict[str, str], viewer: Dict[str, str], admin: Dict[str, str], settings: Any) -> None:
    one, two = new_key(client, operator, "one"), new_key(client, operator, "two")
    other = new_key(client, viewer, "theirs")
    listed = client.get("/api/auth/api-keys", headers=operator).json()["api_keys"]
    assert [k["name"] for k in listed] == ["one", "two"]
    assert all("api_key" not in k and "key_hash" not in k for k in listed) and listed[0]["bound_to_session"] is True
    assert client.delete(f"/api/auth/api-keys/{other['id']}", headers=operator).status_code == 404  # not theirs
    assert client.delete(f"/api/auth/api-keys/{one['id']}", headers=operator).status_code == 204
    assert status(client, {"X-API-Key": one["api_key"]}) == 401
    assert status(client, {"X-API-Key": two["api_key"]}) == 200
    # An admin lists and revokes anyone's.
    vid = user_id(client, admin, "viewer")
    assert [k["name"] for k in client.get(f"/api/admin/users/{vid}/api-keys", headers=admin).json()["api_keys"]] == ["theirs"]
    assert client.get(f"/api/admin/users/{vid}/api-keys", headers=operator).status_code == 403
    assert client.delete(f"/api/admin/users/{vid}/api-keys/{other['id']}", headers=admin).status_code == 204
    assert status(client, {"X-API-Key": other["api_key"]}) == 401
    assert len([line for line in lines_with(settings, "AccountChange") if "action=api-key-revoke" in line]) == 2
    created = [line for line in lines_with(settings, "AccountChange") if "action=api-key-create" in line]
    assert len(created) == 3 and "bound_to_session=True" in created[0]
    assert all(k["api_key"] not in "\n".join(audit_lines(settings)) for k in (one, two, other))


def test_revoke_sessions_ends_tokens_and_every_key(client: Any, admin: Dict[str, str], operator: Dict[str, str], settings: Any) -> None:
    oid = user_id(client, admin, "operator")
    jwt_key = new_key(client, operator)["api_key"]
    host_key = _host_key(settings, "operator")
    resp = client.post(f"/api/admin/users/{oid}/revoke-sessions", headers=admin)
    assert resp.status_code == 200 and resp.json()["api_keys_revoked"] == 2
    for headers in (operator, {"X-API-Key": jwt_key}, {"X-API-Key": host_key}):
        assert status(client, headers) == 401
    own = login(client, "operator")
    assert client.post("/api/auth/revoke-sessions", headers=own).status_code == 200
    assert status(client, own) == 401
    assert any("action=revoke-sessions" in line for line in lines_with(settings, "AccountChange"))


def test_key_minted_by_a_key_shares_its_binding(client: Any, operator: Dict[str, str]) -> None:
    parent = new_key(client, operator)["api_key"]
    child = new_key(client, {"X-API-Key": parent})["api_key"]
    assert client.post("/api/auth/password", headers=operator,
                       json={"current_password": PASSWORDS["operator"], "new_password": NEW_PASSWORD}).status_code == 200
    assert status(client, {"X-API-Key": parent}) == 401 and status(client, {"X-API-Key": child}) == 401


def _host_key(settings: Any, username: str) -> str:
    """A key made on the host (like --create-api-key): bound to no session."""
    from multiagent_hive.security import ApiKeys
    from multiagent_hive.store import Store

    keys = ApiKeys(settings)
    store = Store(settings.database_path, settings.database_encryption_key)
    try:
        user = store.user_by_name(username)
        assert user is not None
        key = keys.new()
        store.create_api_key(user["id"], "host", keys.digest(key), key[:12], via="cli")
        return key
    finally:
        store.close()


# -- per-account login backoff -------------------------------------------------------------------
def test_login_backoff_per_account_and_source(client: Any, hive_app: Any, settings: Any) -> None:
    from multiagent_hive.sessions import BACKOFF_FREE_FAILURES

    hive_app.login_limit.rate = 1000.0  # the per-source limit is not what is tested here
    hive_app.login_limit.burst = 1000.0
    wrong = {"username": "operator", "password": "wrong-password"}
    codes = [client.post("/api/auth/login", json=wrong).status_code for _ in range(BACKOFF_FREE_FAILURES)]
    assert codes == [401] * BACKOFF_FREE_FAILURES
    # Now the account is delayed for this source, even with the right password (no argon2 work).
    right = {"username": "operator", "password": PASSWORDS["operator"]}
    resp = client.post("/api/auth/login", json=right)
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    assert lines_with(settings, "LoginBackoff")
    # Another account from this source, and this account from another source, are not delayed.
    assert client.post("/api/auth/login", json={"username": "viewer", "password": PASSWORDS["viewer"]}).status_code == 200
    from starlette.testclient import TestClient

    elsewhere = TestClient(hive_app, client=("198.51.100.44", 40000))  # the app is already started
    assert elsewhere.post("/api/auth/login", json=right).status_code == 200
    # After the delay the right password works again and resets the count.
    key = ("operator", CLIENT_IP)
    hive_app.backoff.entries[key][1] -= 3600
    assert client.post("/api/auth/login", json=right).status_code == 200
    assert key not in hive_app.backoff.entries


def test_backoff_grows_and_is_capped() -> None:
    from multiagent_hive.sessions import BACKOFF_FREE_FAILURES, BACKOFF_MAX_SECONDS, LoginBackoff

    now = [1000.0]
    backoff = LoginBackoff(clock=lambda: now[0])
    delays = [backoff.failed("a", "192.0.2.1") for _ in range(BACKOFF_FREE_FAILURES + 3)]
    assert delays[: BACKOFF_FREE_FAILURES - 1] == [0.0] * (BACKOFF_FREE_FAILURES - 1)
    assert delays[BACKOFF_FREE_FAILURES - 1:] == [1.0, 2.0, 4.0, 8.0]
    assert backoff.wait("a", "192.0.2.1") == pytest.approx(8.0)
    assert backoff.wait("a", "192.0.2.2") == 0.0 and backoff.wait("b", "192.0.2.1") == 0.0
    for _ in range(40):
        backoff.failed("a", "192.0.2.1")
    assert backoff.wait("a", "192.0.2.1") == BACKOFF_MAX_SECONDS
    now[0] += BACKOFF_MAX_SECONDS
    assert backoff.wait("a", "192.0.2.1") == 0.0


def test_no_secret_in_the_audit_log_or_app_log(client: Any, admin: Dict[str, str], settings: Any) -> None:
    token = admin["Authorization"].split(" ", 1)[1]
    key = new_key(client, admin)["api_key"]
    ticket = client.post("/api/ws/ticket", headers=admin).json()["ticket"]
    client.post("/api/auth/login", json={"username": "admin", "password": "not-the-password-x"})
    client.get("/api/agents", headers={"Authorization": "Bearer " + token[:-3] + "abc"})
    client.get("/api/agents", headers={"X-API-Key": key + "x"})
    # The audit line is written before the response goes out: nothing to wait for.
    text = "\n".join(audit_lines(settings))
    for secret in (token, token[:-3], key, ticket, PASSWORDS["admin"], "not-the-password-x"):
        assert secret not in text


def test_library_log_records_are_redacted(tmp_path: Any) -> None:
    """uvicorn logs each WebSocket handshake with its query string: the handlers' filter removes
    the ticket (and any JWT or API key in any record)."""
    import logging

    from multiagent_hive.logs import RedactCredentials

    records: List[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    handler.addFilter(RedactCredentials())
    log = logging.getLogger("uvicorn.error.test-redact")
    log.addHandler(handler)
    log.propagate = False
    ticket = "wst_" + "x" * 43
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    log.warning('%s - "WebSocket %s" 403', "203.0.113.7:5000", f"/ws?ticket={ticket}&x=1")
    log.warning("auth header Bearer %s key %s", jwt_like, "hive_" + "k" * 43)
    log.removeHandler(handler)
    assert records[0] == '203.0.113.7:5000 - "WebSocket /ws?ticket=[redacted]&x=1" 403'
    assert ticket not in records[0] and jwt_like not in records[1] and "hive_kkk" not in records[1]


def test_search_for_a_token_is_redacted_in_the_audit_log(client: Any, viewer: Dict[str, str], settings: Any) -> None:
    token = viewer["Authorization"].split(" ", 1)[1]
    assert client.get("/api/agents", params={"query": "select " + token[:150] + " from x"}, headers=viewer).status_code in (200, 422)
    assert token[:150] not in "\n".join(audit_lines(settings))


def test_backoff_block_audited_once_per_window() -> None:
    from multiagent_hive.sessions import BACKOFF_FREE_FAILURES, LoginBackoff

    now = [50.0]
    backoff = LoginBackoff(clock=lambda: now[0])
    for _ in range(BACKOFF_FREE_FAILURES):
        backoff.failed("a", "192.0.2.1")
    assert backoff.should_audit_block("a", "192.0.2.1") is True
    assert backoff.should_audit_block("a", "192.0.2.1") is False  # same window
    now[0] += 2
    backoff.failed("a", "192.0.2.1")
    assert backoff.should_audit_block("a", "192.0.2.1") is True  # a new window
    assert backoff.should_audit_block("b", "192.0.2.1") is False  # nothing recorded
