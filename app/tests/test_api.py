"""The HTTP API, including the guide's post-deployment probes as failing-capable tests."""
from __future__ import annotations

import base64
import json
import re
import time
from typing import Any, Dict

import jwt
import pytest

from conftest import CLIENT_IP, PASSWORDS, audit_lines


def lines_with(settings: Any, event: str) -> list:
    return [line for line in audit_lines(settings) if f" event={event} " in line]


# -- the guide's authentication probes ------------------------------------------------------
def test_guide_login_test_test_is_401_and_audited(client: Any, settings: Any) -> None:
    resp = client.post("/api/auth/login", json={"username": "test", "password": "test"})
    assert resp.status_code == 401
    line = lines_with(settings, "UnauthorizedAccess")[-1]
    assert f"client_id={CLIENT_IP} " in line
    assert "test" not in line.split("client_id=")[0]


def test_login_issues_pinned_jwt(client: Any, settings: Any) -> None:
    resp = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    token = body["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], audience="ai-orchestrator-api")
    assert claims["iss"] == "ai-orchestrator-hub" and claims["jti"] and claims["exp"] > time.time()
    line = lines_with(settings, "AuthenticationSuccess")[-1]
    assert f"client_id={CLIENT_IP} " in line and " user=u-" in line and "admin" not in line


def test_wrong_password_is_401(client: Any) -> None:
    assert client.post("/api/auth/login", json={"username": "admin", "password": "nope-nope-nope"}).status_code == 401


def _forge(settings: Any, alg: str, **overrides: Any) -> str:
    from multiagent_hive.store import Store

    store = Store(settings.database_path, settings.database_encryption_key)
    admin = store.user_by_id(1)
    store.close()
    assert admin is not None
    now = int(time.time())
    claims = {
        "sub": admin["subject"], "gen": admin["token_generation"], "iat": now, "exp": now + 600,
        "iss": "ai-orchestrator-hub", "aud": "ai-orchestrator-api", "jti": "x",
    }
    claims.update(overrides)
    if alg == "none":
        header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        return (header + b"." + payload + b".").decode()
    return jwt.encode(claims, settings.jwt_secret, algorithm=alg)


@pytest.mark.parametrize(
    "alg,overrides",
    [
        ("none", {}),
        ("HS512", {}),
        ("HS256", {"exp": 1}),
        ("HS256", {"iss": "someone-else"}),
        ("HS256", {"aud": "other-api"}),
    ],
)
def test_forged_or_expired_tokens_rejected(client: Any, settings: Any, alg: str, overrides: Dict[str, Any]) -> None:
    token = _forge(settings, alg, **overrides)
    assert client.get("/api/admin/users", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/admin/users", headers={"Authorization": f"Bearer {_forge(settings, 'HS256')}"}).status_code == 200


def test_health_minimal_and_detailed(client: Any, viewer: Dict[str, str]) -> None:
    resp = client.get("/api/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    detailed = client.get("/api/health", headers=viewer).json()
    assert detailed["database"] == "ok" and "version" in detailed and "uptime_seconds" in detailed


def test_guide_health_with_api_key(client: Any, settings: Any, viewer: Dict[str, str]) -> None:
    assert client.get("/api/health", headers={"X-API-Key": "your-api-key"}).status_code == 401
    created = client.post("/api/auth/api-keys", headers=viewer, json={"name": "probe"})
    assert created.status_code == 201
    key = created.json()["api_key"]
    resp = client.get("/api/health", headers={"X-API-Key": key})
    assert resp.status_code == 200 and resp.json()["database"] == "ok"
    assert any("method=api-key" in line for line in lines_with(settings, "AuthenticationSuccess"))
    # only the HMAC is stored
    rows = client.app.store.all("SELECT key_hash FROM api_keys")
    assert rows and all(key not in r["key_hash"] for r in rows)


def test_health_503_when_database_fails(client: Any, hive_app: Any) -> None:
    def broken() -> bool:
        raise RuntimeError("disk gone")

    hive_app.store.ping = broken
    resp = client.get("/api/health")
    assert resp.status_code == 503 and resp.json() == {"status": "error"}


def test_health_head_and_database_check_cached(client: Any, hive_app: Any, monkeypatch: Any) -> None:
    from multiagent_hive import api

    calls = []
    real_ping = hive_app.store.ping
    hive_app.store.ping = lambda: calls.append(1) or real_ping()
    head = client.head("/api/health")
    assert head.status_code == 200 and head.content == b""
    assert all(client.get("/api/health").json() == {"status": "ok"} for _ in range(20))
    assert len(calls) == 1  # one query behind a burst of probes

    def broken() -> bool:
        raise RuntimeError("disk gone")

    hive_app.store.ping = broken
    assert client.get("/api/health").status_code == 200  # still within the cached second
    monkeypatch.setattr(api, "HEALTH_DB_CACHE_SECONDS", 0.0)
    assert client.get("/api/health").status_code == 503
    hive_app.store.ping = real_ping
    assert client.get("/api/health").status_code == 200


def test_database_full_is_507_and_saves_nothing(client: Any, hive_app: Any, operator: Dict[str, str], monkeypatch: Any) -> None:
    from multiagent_hive import db

    def full(*_: Any) -> None:
        raise db.sqlite.OperationalError("database or disk is full")

    monkeypatch.setattr(hive_app.store, "execute_each", full)
    resp = client.post("/api/agents", headers=operator, json={"name": "lost", "type": "worker"})
    assert resp.status_code == 507 and resp.json()["error"] == "database storage full"
    assert "lost" not in [a["name"] for a in client.get("/api/agents", headers=operator).json()["agents"]]

    def locked(*_: Any) -> None:
        raise db.sqlite.OperationalError("database is locked")

    monkeypatch.setattr(hive_app.store, "execute_each", locked)
    resp = client.post("/api/agents", headers=operator, json={"name": "later", "type": "worker"})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert "not saved" in resp.json()["detail"]


# -- authorization ---------------------------------------------------------------------------
def test_guide_rbac_admin_users(client: Any, admin: Dict[str, str], operator: Dict[str, str], viewer: Dict[str, str]) -> None:
    assert client.get("/api/admin/users").status_code == 401
    assert client.get("/api/admin/users", headers=viewer).status_code == 403
    assert client.get("/api/admin/users", headers=operator).status_code == 403
    resp = client.get("/api/admin/users", headers=admin)
    assert resp.status_code == 200
    users = resp.json()["users"]
    assert {u["username"] for u in users} == {"admin", "operator", "viewer"}
    assert all("password_hash" not in u for u in users)


def test_guide_permission_validation_agents(client: Any, operator: Dict[str, str], viewer: Dict[str, str], settings: Any) -> None:
    body = {"name": "test", "type": "worker"}
    assert client.post("/api/agents", json=body).status_code == 401
    assert client.post("/api/agents", json=body, headers=viewer).status_code == 403
    resp = client.post("/api/agents", json=body, headers=operator)
    assert resp.status_code == 201
    assert resp.json()["name"] == "test" and resp.json()["state"] == "idle"
    assert client.get("/api/agents", headers=viewer).status_code == 200
    denied = lines_with(settings, "AccessDenied")
    assert any("detail=role%20viewer%20lacks%20operator" in line for line in denied)


def test_admin_can_create_users(client: Any, admin: Dict[str, str], operator: Dict[str, str]) -> None:
    body = {"username": "newbie", "password": "a-long-password-1", "role": "viewer"}
    assert client.post("/api/admin/users", json=body, headers=operator).status_code == 403
    assert client.post("/api/admin/users", json=body, headers=admin).status_code == 201
    assert client.post("/api/admin/users", json=body, headers=admin).status_code == 409
    assert client.post("/api/admin/users", json=dict(body, username="x", password="short"), headers=admin).status_code == 422
    ok = client.post("/api/auth/login", json={"username": "newbie", "password": "a-long-password-1"})
    assert ok.status_code == 200


# -- input validation --------------------------------------------------------------------------
def test_guide_script_in_name_rejected(client: Any, operator: Dict[str, str], settings: Any) -> None:
    resp = client.post("/api/agents", json={"name": "<script>alert(1)</script>", "type": "worker"}, headers=operator)
    assert resp.status_code == 422
    assert "name" in resp.json()["detail"]
    assert lines_with(settings, "InvalidInput") and lines_with(settings, "SuspiciousActivity")
    assert all("<" not in line for line in audit_lines(settings))


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a", "type": "worker", "admin": True},
        {"name": 5, "type": "worker"},
        {"name": "a" * 101, "type": "worker"},
        {"name": "", "type": "worker"},
        {"name": "ok", "type": "boss"},
        {"name": "ok", "type": "specialist:"},
        {"name": "ok", "type": "worker", "capabilities": [{"name": "nlp", "proficiency": 1.5}]},
        {"name": "ok", "type": "worker", "capabilities": [{"name": "nlp", "proficiency": "high"}]},
        {"name": "ok", "type": "worker", "capabilities": [{"name": "nlp", "proficiency": 0.5}, {"name": "nlp", "proficiency": 0.2}]},
        {"type": "worker"},
        ["not", "an", "object"],
    ],
)
def test_strict_agent_schema(client: Any, operator: Dict[str, str], body: Any) -> None:
    resp = client.post("/api/agents", json=body, headers=operator)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid input" and resp.json()["detail"]


def test_agent_types_and_names_accepted(client: Any, operator: Dict[str, str]) -> None:
    for kind in ("worker", "coordinator", "learner", "specialist:nlp-v2"):
        body = {"name": "Agent 007_x-y", "type": kind, "capabilities": [{"name": "nlp", "proficiency": 1.0}]}
        assert client.post("/api/agents", json=body, headers=operator).status_code == 201


def test_body_limits_and_content_type(client: Any, operator: Dict[str, str], settings: Any) -> None:
    big = {"name": "x", "type": "worker", "pad": "y" * (settings.max_body_bytes + 10)}
    assert client.post("/api/agents", json=big, headers=operator).status_code == 413

    def chunks():  # no Content-Length: the limit still holds while streaming
        for _ in range(20):
            yield b"x" * 65536

    streamed = client.post("/api/agents", content=chunks(), headers={**operator, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/api/agents", content=b"{bad", headers={**operator, "Content-Type": "application/json"}).status_code == 400
    assert client.post("/api/agents", content=b"name=x", headers={**operator, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415


# -- injection -------------------------------------------------------------------------------
def test_guide_sql_injection_probe_gets_normal_answer(client: Any, operator: Dict[str, str], viewer: Dict[str, str], settings: Any) -> None:
    client.post("/api/agents", json={"name": "alpha", "type": "worker"}, headers=operator)
    client.post("/api/agents", json={"name": "beta 100", "type": "learner"}, headers=operator)
    for query in ("SELECT * FROM users", "' OR '1'='1", "x'; DROP TABLE agents; --", "%", "_"):
        resp = client.get("/api/agents", params={"query": query}, headers=viewer)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"agents": []}, query
        assert "password" not in resp.text
    assert lines_with(settings, "SuspiciousActivity")
    assert [a["name"] for a in client.get("/api/agents", params={"query": "alp"}, headers=viewer).json()["agents"]] == ["alpha"]
    assert len(client.get("/api/agents", params={"query": "learner"}, headers=viewer).json()["agents"]) == 1
    assert len(client.get("/api/agents", headers=viewer).json()["agents"]) == 2
    assert client.get("/api/agents", params={"limit": "0"}, headers=viewer).status_code == 422


# -- audit line safety -------------------------------------------------------------------------
def test_audit_lines_cannot_be_injected(client: Any, hive_app: Any, settings: Any) -> None:
    evil = "bob\n2026-01-01T00:00:00.000Z event=UnauthorizedAccess client_id=198.51.100.9 x"
    client.post("/api/auth/login", json={"username": evil[:64], "password": "x"})
    client.get("/api/admin/users", headers={"Authorization": "Bearer a b\tclient_id=198.51.100.9"})
    client.get(
        "/api/admin/users?x=%0aevent=UnauthorizedAccess%20client_id=198.51.100.9", headers={"Authorization": "Bearer forged"}
    )
    hive_app.audit.event("UnauthorizedAccess", CLIENT_IP, detail=evil, path="/a b\r\nclient_id=1.2.3.4")
    lines = audit_lines(settings)
    assert len(lines) == 4
    # the guide's fail2ban filter, with <HOST> as fail2ban expands it (greedy, like the real one)
    failregex = re.compile(r".*UnauthorizedAccess.*client_id=(?P<host>[0-9a-fA-F.:]+).*")
    for line in lines:
        assert line.count("client_id=") == 1
        assert line.split(" ")[2] == f"client_id={CLIENT_IP}"
        match = failregex.match(line)
        assert match and match.group("host") == CLIENT_IP


def test_forwarded_for_only_from_trusted_proxy(settings: Any) -> None:
    from starlette.testclient import TestClient

    from multiagent_hive.api import create_app

    app = create_app(settings)
    try:
        with TestClient(app, client=("127.0.0.1", 5000)) as via_proxy:
            via_proxy.get("/api/admin/users", headers={"X-Forwarded-For": "198.51.100.20"})
            via_proxy.get("/api/admin/users", headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.21, 127.0.0.1"})
            via_proxy.get("/api/admin/users", headers={"X-Forwarded-For": "garbage\nclient_id=1.1.1.1"})
            # Resolved addresses are cached per (peer, header value): the same value again, and
            # a new one, each get their own client; a long value is resolved but not kept.
            via_proxy.get("/api/admin/users", headers={"X-Forwarded-For": "198.51.100.20"})
            via_proxy.get("/api/admin/users", headers={"X-Forwarded-For": "198.51.100.23"})
            long_chain = ", ".join(["127.0.0.1"] * 60) + ", 198.51.100.24, 127.0.0.1"
            via_proxy.get("/api/admin/users", headers={"X-Forwarded-For": long_chain})
            cached_values = [forwarded for _peer, forwarded in app._client_cache]
            assert b"198.51.100.23" in cached_values and long_chain.encode() not in cached_values
        with TestClient(app, client=("192.0.2.50", 5000)) as direct:
            direct.get("/api/admin/users", headers={"X-Forwarded-For": "198.51.100.22"})
    finally:
        app.audit.close()
        app.store.close()
    # No credentials: AuthenticationRequired (not counted by fail2ban), with the same client_id rule.
    ids = [line.split(" ")[2] for line in lines_with(settings, "AuthenticationRequired")]
    assert ids == [
        "client_id=198.51.100.20",
        "client_id=198.51.100.21",
        "client_id=127.0.0.1",
        "client_id=198.51.100.20",
        "client_id=198.51.100.23",
        "client_id=198.51.100.24",
        "client_id=192.0.2.50",
    ]


# -- rate limits -------------------------------------------------------------------------------
def test_login_rate_limit(client: Any, settings: Any) -> None:
    codes = [client.post("/api/auth/login", json={"username": "x", "password": "y"}).status_code for _ in range(settings.login_burst + 3)]
    assert codes[: settings.login_burst] == [401] * settings.login_burst
    assert codes[-1] == 429
    resp = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    assert len(lines_with(settings, "RateLimitExceeded")) == 1  # throttled to one a second


def test_general_rate_limit(env: Dict[str, str]) -> None:
    from starlette.testclient import TestClient

    from multiagent_hive.api import create_app

    from conftest import init_db, settings_from

    env.update(RATE_LIMIT_PER_SECOND="1", RATE_LIMIT_BURST="3")
    s = settings_from(env)
    init_db(s)
    app = create_app(s)
    try:
        with TestClient(app, client=("192.0.2.1", 1)) as c:
            codes = [c.get("/api/health").status_code for _ in range(5)]
        with TestClient(app, client=("192.0.2.2", 1)) as other:
            assert other.get("/api/health").status_code == 200
    finally:
        app.audit.close()
        app.store.close()
    assert codes[:3] == [200, 200, 200] and codes[4] == 429
    assert "client_id=192.0.2.1 " in lines_with(s, "RateLimitExceeded")[0]


def test_default_limits_allow_a_benchmark_burst(client: Any) -> None:
    assert all(client.get("/api/health").status_code == 200 for _ in range(300))
