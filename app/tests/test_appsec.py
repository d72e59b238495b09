"""The hub facing a hostile web: WebSocket origins, restores that keep revocations, bounded audit
growth, the streamed GDPR export, no redirect, the admin's own password, keys minted with keys."""
from __future__ import annotations

import json
import random
import secrets
import time
import tracemalloc
from typing import Any, Dict, List, Set

import pytest
from starlette.testclient import TestClient, WebSocketDisconnect

from conftest import CLIENT_IP, PASSWORDS, audit_lines, cli, init_db, login, make_env, settings_from

NEW_PASSWORD = "a-new-password-42"


def events(settings: Any, event: str) -> List[str]:
    return [line for line in audit_lines(settings) if f" event={event} " in line]


def user_id(client: Any, admin: Dict[str, str], name: str) -> int:
    return next(u["id"] for u in client.get("/api/admin/users", headers=admin).json()["users"] if u["username"] == name)


def status(client: Any, headers: Dict[str, str]) -> int:
    return int(client.get("/api/hive/status", headers=headers).status_code)


def cli_key(env: Dict[str, str], user: str) -> str:
    out = cli(env, "--create-api-key", "--user", user)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["api_key"])


def ws_refused(client: Any, url: str, **kw: Any) -> None:
    with pytest.raises(WebSocketDisconnect) as exc:
        with client.websocket_connect(url, **kw) as ws:
            ws.receive_json()
    assert exc.value.code == 1008


def ticket(client: Any, headers: Dict[str, str]) -> str:
    resp = client.post("/api/ws/ticket", headers=headers)
    assert resp.status_code == 200
    return str(resp.json()["ticket"])


# -- WebSocket origin: a page elsewhere cannot get its visitors banned --------------------------
def test_cross_origin_handshakes_are_refused_and_never_counted(client: Any, viewer: Dict[str, str], settings: Any) -> None:
    rng = random.Random(7)
    origins = ["https://evil.example", "http://testserver.evil.example", "https://testserver@evil.example", "null",
               "ftp://testserver", "https://[::1]", "https://testserver.", "https://xtestserver",
               "https://" + "".join(rng.choice("abcdefghij") for _ in range(12)) + ".test"]
    for origin in origins:
        for attempt in range(6):
            # A real ticket first (refused all the same, before it is looked at), then unknown ones.
            value = ticket(client, viewer) if attempt == 0 else "wst_" + secrets.token_urlsafe(32)
            ws_refused(client, f"/ws?ticket={value}", headers={"Origin": origin})
    assert not events(settings, "UnauthorizedAccess")
    assert any("origin%20not%20allowed" in line for line in events(settings, "AccessDenied"))
    # The browser's own origin (the Host it connected to) still works, as does a client with no Origin.
    # (nginx passes the host name without the port the browser used.)
    for headers in ({"Origin": "http://testserver"}, {"Origin": "https://TESTSERVER/"}, {"Origin": "https://testserver:8443"},
                    {"Origin": "https://hub.example:8443", "Host": "hub.example"}, {}):
        with client.websocket_connect(f"/ws?ticket={ticket(client, viewer)}", headers=headers) as ws:
            assert ws.receive_json()["type"] == "status"


def test_unknown_tickets_are_never_counted_header_credentials_are(client: Any, settings: Any) -> None:
    for _ in range(6):
        ws_refused(client, "/ws?ticket=wst_" + secrets.token_urlsafe(32))
        ws_refused(client, "/ws", subprotocols=["hive.v1", "wst_" + secrets.token_urlsafe(20)])
        ws_refused(client, "/ws?ticket=wst_short")
    assert not events(settings, "UnauthorizedAccess")
    assert len(events(settings, "AuthenticationRequired")) >= 5
    ws_refused(client, "/ws", headers={"Authorization": "Bearer forged"})
    assert events(settings, "UnauthorizedAccess")


def test_configured_origins_replace_the_same_origin_default(tmp_path: Any) -> None:
    from multiagent_hive.api import create_app

    s = settings_from(make_env(tmp_path, WEBSOCKET_ALLOWED_ORIGINS="https://hub.example, https://ops.example:8443/"))
    init_db(s)
    app = create_app(s)
    try:
        with TestClient(app, client=(CLIENT_IP, 40000)) as c:
            viewer = login(c, "viewer")
            for origin in ("https://hub.example", "https://ops.example:8443"):
                with c.websocket_connect(f"/ws?ticket={ticket(c, viewer)}", headers={"Origin": origin}) as ws:
                    assert ws.receive_json()["type"] == "status"
            for origin in ("http://testserver", "https://hub.example.evil", "http://hub.example"):
                ws_refused(c, f"/ws?ticket={ticket(c, viewer)}", headers={"Origin": origin})
    finally:
        app.audit.close()
        app.store.close()
    from multiagent_hive.config import validate

    bad = settings_from(make_env(tmp_path, WEBSOCKET_ALLOWED_ORIGINS="hub.example"))
    assert any("WEBSOCKET_ALLOWED_ORIGINS" in p for p in validate(bad))


# -- the audit log grows with a flood's duration, not its request count -------------------------
def test_anonymous_flood_is_aggregated_per_client_and_second(client: Any, hive_app: Any, settings: Any) -> None:
    before = len(audit_lines(settings))
    started = time.monotonic()
    for i in range(400):
        path = ("/api/agents", "/api/tasks", "/api/hive/status")[i % 3]
        assert client.get(path).status_code == 401
    elapsed = time.monotonic() - started
    hive_app.audit.flush(everything=True)
    lines = audit_lines(settings)[before:]
    seconds = int(elapsed) + 2
    # At most AUDIT_BURST lines and one repeated= line per second, not one per request.
    assert len(lines) <= 6 * seconds, (len(lines), elapsed)
    # Nothing is lost: the lines and their repeated= counts add up to the requests.
    total = sum(int(line.rsplit("repeated=", 1)[1]) if "repeated=" in line else 1 for line in lines)
    assert total == 400
    rows = hive_app.store.audit_counts().get("AuthenticationRequired", 0)
    assert rows <= 6 * seconds


def test_throttle_windows_per_client_event_and_second() -> None:
    from multiagent_hive.logs import AUDIT_BURST, AuditLog

    class Sink:
        rows: List[Any] = []

        def __call__(self, *row: Any) -> None:
            self.rows.append(row)

    now = [100.0]
    s = settings_from(make_env(__import__("pathlib").Path(__import__("tempfile").mkdtemp())))
    sink = Sink()
    audit = AuditLog(s, sink=sink, clock=lambda: now[0])
    rng = random.Random(3)
    sent: Dict[Any, int] = {}
    for _second in range(5):
        for _ in range(rng.randint(0, 40)):
            client = rng.choice(["192.0.2.1", "192.0.2.2", "2001:db8::1"])
            event = rng.choice(["UnauthorizedAccess", "AuthenticationRequired", "InvalidInput"])
            audit.event(event, client, path="/x")
            sent[(event, client)] = sent.get((event, client), 0) + 1
        now[0] += 1.0
        audit.flush()
    audit.event("AccountChange", "192.0.2.1", action="disable", target="u-0011223344556677")  # never throttled
    audit.close()
    got: Dict[Any, int] = {}
    per_window: Dict[Any, int] = {}
    for ts, event, client, _user, detail, _target in sink.rows:
        if event == "AccountChange":
            continue
        n = int(detail.rsplit("repeated=", 1)[1]) if "repeated=" in detail else 1
        got[(event, client)] = got.get((event, client), 0) + n
        per_window[(event, client, ts[:19])] = per_window.get((event, client, ts[:19]), 0) + 1
    assert got == sent
    assert sum(1 for row in sink.rows if "repeated=" not in row[4] and row[1] != "AccountChange") <= AUDIT_BURST * 3 * 3 * 5
    assert sink.rows[-1][1] == "AccountChange" and sink.rows[-1][5] == "u-0011223344556677"


def test_failed_credentials_still_reach_the_jail_one_line_each_up_to_its_maxretry(client: Any, settings: Any) -> None:
    for _ in range(5):
        assert client.get("/api/agents", headers={"Authorization": "Bearer forged"}).status_code == 401
    assert len(events(settings, "UnauthorizedAccess")) == 5


# -- the GDPR export: streamed, one at a time, with what others did to the account --------------
def test_export_streams_in_bounded_memory(settings: Any) -> None:
    from multiagent_hive.hive import public_task
    from multiagent_hive.store import Store

    store = Store(settings.database_path, settings.database_encryption_key)
    try:
        viewer = store.user_by_name("viewer")
        assert viewer is not None
        rows = [("2026-01-01T00:00:00.000Z", "AccessDenied", "192.0.2.1", viewer["id"], viewer["pseudonym"], "viewer",
                 "path=/api/agents detail=" + "x" * 150) for _ in range(20_000)]
        with store.transaction() as conn:
            conn.executemany("INSERT INTO audit_events (ts, event, client_id, user_id, user_ref, username, detail)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        tracemalloc.start()
        total = 0
        biggest = 0
        parts = []
        for chunk in store.export_user_chunks(viewer["id"], public_task, lambda: "now"):
            total += len(chunk)
            biggest = max(biggest, len(chunk))
            parts.append(chunk) if total < 100_000 else None
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        store.close()
    assert total > 4_000_000
    assert biggest < 2 * Store.EXPORT_CHUNK_BYTES
    assert peak < 1_500_000, peak  # a few chunks and a batch of rows, not the whole export


def test_export_is_valid_json_with_actions_by_others(client: Any, admin: Dict[str, str], settings: Any, env: Dict[str, str]) -> None:
    vid = user_id(client, admin, "viewer")
    viewer = login(client, "viewer")
    assert client.post(f"/api/admin/users/{vid}/disable", headers=admin).status_code == 200
    assert client.post(f"/api/admin/users/{vid}/enable", headers=admin).status_code == 200
    cli_key(env, "viewer")
    assert client.post(f"/api/admin/users/{vid}/role", headers=admin, json={"role": "operator"}).status_code == 200
    mine = login(client, "viewer")
    assert status(client, viewer) == 401
    resp = client.get("/api/users/me/data", headers=mine)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    actions = [(e["event"], e["detail"].split(" ")[0]) for e in data["actions_by_others"]]
    assert actions == [("AccountChange", "action=disable"), ("AccountChange", "action=enable"),
                       ("AccountChange", "action=api-key-create"), ("AccountChange", "action=role-change")]
    assert all(set(e) == {"ts", "event", "detail"} for e in data["actions_by_others"])  # the actor is not exported
    assert "via=cli" in data["actions_by_others"][2]["detail"]
    assert set(data) == {"user", "api_keys", "agents", "tasks", "audit_events", "actions_by_others", "exported_at"}
    # The admin's own export does not list what the admin did to others as done to them.
    assert client.get("/api/users/me/data", headers=admin).json()["actions_by_others"] == []


def test_one_export_per_user_at_a_time(client: Any, hive_app: Any, viewer: Dict[str, str], operator: Dict[str, str]) -> None:
    vid = hive_app.store.user_by_name("viewer")["id"]
    hive_app.exports[vid] = object()  # an export of the viewer is streaming
    busy = client.get("/api/users/me/data", headers=viewer)
    assert busy.status_code == 409 and busy.headers["retry-after"] == "5"
    assert client.get("/api/users/me/data", headers=operator).status_code == 200  # others are not held up
    del hive_app.exports[vid]
    for _ in range(3):  # a finished export frees the slot
        assert client.get("/api/users/me/data", headers=viewer).status_code == 200
    assert hive_app.exports == {}


def test_an_export_never_read_frees_its_slot(hive_app: Any) -> None:
    import gc

    token = hive_app.exports[5] = object()
    body = hive_app._export(5, token)
    import weakref

    weakref.finalize(body, hive_app._release_export, 5, token)
    del body
    gc.collect()
    assert 5 not in hive_app.exports


# -- no redirect leaves https ---------------------------------------------------------------------
def test_no_redirect_at_all(client: Any, hive_app: Any) -> None:
    paths = sorted({route.path for route in hive_app.starlette.routes if "{" not in route.path and route.path != "/ws"})
    assert "/api/auth/login" in paths
    headers = {"X-Forwarded-Proto": "https", "Host": "hub.example"}
    for path in paths + ["/api/agents/" + "0" * 8, "/api/admin/users/1/password"]:
        for method in ("GET", "POST", "DELETE"):
            resp = client.request(method, path + "/", headers=headers, json={"username": "a", "password": "b"},
                                  follow_redirects=False)
            assert not 300 <= resp.status_code < 400, (method, path, resp.status_code, resp.headers.get("location"))
            assert "location" not in resp.headers


# -- an admin's own password needs the current one ------------------------------------------------
def test_admin_cannot_reset_own_password_through_the_admin_endpoint(client: Any, admin: Dict[str, str], settings: Any) -> None:
    own = user_id(client, admin, "admin")
    resp = client.post(f"/api/admin/users/{own}/password", headers=admin, json={"new_password": NEW_PASSWORD})
    assert resp.status_code == 403 and "/api/auth/password" in resp.json()["detail"]
    assert client.post("/api/auth/login", json={"username": "admin", "password": NEW_PASSWORD}).status_code == 401
    assert status(client, admin) == 200  # nothing changed, no session ended
    # Another admin may still reset this one's.
    assert client.post("/api/admin/users", headers=admin, json={"username": "second", "password": "second-password-1",
                                                                 "role": "admin"}).status_code == 201
    second = {"Authorization": "Bearer " + client.post("/api/auth/login", json={
        "username": "second", "password": "second-password-1"}).json()["access_token"]}
    assert client.post(f"/api/admin/users/{own}/password", headers=second, json={"new_password": NEW_PASSWORD}).status_code == 200


# -- a password change or a disable ends every key the CLI did not make ---------------------------
@pytest.mark.parametrize("change", ["own-password", "admin-reset", "cli-reset", "disable-enable", "cli-disable-enable"])
def test_keys_minted_over_http_end_with_password_change_and_disable(
    change: str, client: Any, admin: Dict[str, str], env: Dict[str, str]
) -> None:
    host = cli_key(env, "operator")
    operator = login(client, "operator")
    by_key = client.post("/api/auth/api-keys", headers={"X-API-Key": host}, json={"name": "by-key"}).json()["api_key"]
    by_child = client.post("/api/auth/api-keys", headers={"X-API-Key": by_key}, json={"name": "child"}).json()["api_key"]
    by_jwt = client.post("/api/auth/api-keys", headers=operator, json={"name": "by-jwt"}).json()["api_key"]
    for key in (host, by_key, by_child, by_jwt):
        assert status(client, {"X-API-Key": key}) == 200
    oid = user_id(client, admin, "operator")
    if change == "own-password":
        assert client.post("/api/auth/password", headers={"X-API-Key": host}, json={
            "current_password": PASSWORDS["operator"], "new_password": NEW_PASSWORD}).status_code == 200
    elif change == "admin-reset":
        assert client.post(f"/api/admin/users/{oid}/password", headers=admin, json={"new_password": NEW_PASSWORD}).status_code == 200
    elif change == "cli-reset":
        assert cli(env, "--reset-password", "operator", "--password-file", "-", stdin=NEW_PASSWORD).returncode == 0
    elif change == "disable-enable":
        assert client.post(f"/api/admin/users/{oid}/disable", headers=admin).status_code == 200
        assert client.post(f"/api/admin/users/{oid}/enable", headers=admin).status_code == 200
    else:
        assert cli(env, "--disable-user", "operator").returncode == 0
        assert cli(env, "--enable-user", "operator").returncode == 0
    for key in (by_key, by_child, by_jwt):
        assert status(client, {"X-API-Key": key}) == 401, change
    assert status(client, {"X-API-Key": host}) == 200, "the key an admin made on the host survives"
    assert status(client, operator) == 401


# -- a restore keeps every revocation made after the backup ---------------------------------------
def _restore(env: Dict[str, str], backup: str) -> Dict[str, Any]:
    out = cli(env, "--restore", backup)
    assert out.returncode == 0, out.stderr
    result: Dict[str, Any] = json.loads(out.stdout)
    return result


def test_restore_keeps_revocations_and_ends_every_session(env: Dict[str, str], settings: Any, tmp_path: Any) -> None:
    from multiagent_hive import db
    from multiagent_hive.api import create_app

    for name in ("alice", "bob", "carol", "dave"):
        assert cli(env, "--ensure-user", name, "--role", "operator", "--password-file", "-", stdin=f"{name}-password-1").returncode == 0
    keys = {name: cli_key(env, name) for name in ("alice", "bob", "carol", "dave", "viewer")}
    app = create_app(settings)
    with TestClient(app, client=(CLIENT_IP, 40000)) as c:
        admin = login(c, "admin")
        viewer = login(c, "viewer")
        ids = {u["username"]: u["id"] for u in c.get("/api/admin/users", headers=admin).json()["users"]}
        http_key = c.post("/api/auth/api-keys", headers={"X-API-Key": keys["viewer"]}, json={"name": "h"}).json()
        backup = str(tmp_path / "before.db")
        db.backup(settings.database_path, settings.database_encryption_key, backup)
        time.sleep(0.01)
        # After the backup: a key revoked, a user disabled, a password changed, a user erased, a
        # role lowered, the viewer's sessions revoked; and a key made after the backup.
        assert c.delete(f"/api/auth/api-keys/{http_key['id']}", headers=viewer).status_code == 204
        assert c.post(f"/api/admin/users/{ids['alice']}/disable", headers=admin).status_code == 200
        assert c.post(f"/api/admin/users/{ids['bob']}/password", headers=admin, json={"new_password": NEW_PASSWORD}).status_code == 200
        assert c.delete(f"/api/admin/users/{ids['carol']}", headers=admin).status_code == 200
        assert c.post(f"/api/admin/users/{ids['dave']}/role", headers=admin, json={"role": "viewer"}).status_code == 200
        assert c.post(f"/api/admin/users/{ids['operator']}/revoke-sessions", headers=admin).status_code == 200
    app.audit.close()
    app.store.close()
    assert cli(env, "--revoke-sessions", "viewer").returncode == 0  # through the CLI as well
    result = _restore(env, backup)
    assert result["passwords_locked"] == ["bob"] and result["users_erased"] == 1 and result["journal_records"] >= 6
    app = create_app(settings)  # at once: a login right after a restore must work (below)
    try:
        with TestClient(app, client=(CLIENT_IP, 40000)) as c:
            fresh = login(c, "viewer")
            assert status(c, fresh) == 200, "a JWT issued right after the restore is refused"
            assert status(c, admin) == 401, "a JWT issued before the restore still works"
            assert status(c, {"X-API-Key": http_key["api_key"]}) == 401, "a revoked key came back"
            assert status(c, {"X-API-Key": keys["viewer"]}) == 401  # revoke-sessions deleted every key
            assert status(c, {"X-API-Key": keys["alice"]}) == 401  # disabled
            assert c.post("/api/auth/login", json={"username": "alice", "password": "alice-password-1"}).status_code == 401
            for password in ("bob-password-1", NEW_PASSWORD):  # no password until an admin sets one
                assert c.post("/api/auth/login", json={"username": "bob", "password": password}).status_code == 401
            assert status(c, {"X-API-Key": keys["bob"]}) == 200  # the CLI's key survives a password change
            assert status(c, {"X-API-Key": keys["carol"]}) == 401
            admin = login(c, "admin")
            users = {u["username"]: u for u in c.get("/api/admin/users", headers=admin).json()["users"]}
            assert "carol" not in users and users["alice"]["disabled"] and users["dave"]["role"] == "viewer"
            assert c.get("/api/agents", headers={"X-API-Key": keys["dave"]}).status_code == 200
            assert c.post("/api/agents", headers={"X-API-Key": keys["dave"]}, json={"name": "x", "type": "worker"}).status_code == 403
    finally:
        app.audit.close()
        app.store.close()
    assert cli(env, "--reset-password", "bob", "--password-file", "-", stdin="bob-password-2x").returncode == 0


@pytest.mark.parametrize("seed", range(4))
def test_restore_matches_the_live_credentials_for_random_changes(seed: int, tmp_path: Any) -> None:
    """Random users, keys and changes before and after the backup: after the restore each key
    works exactly when it worked before the restore (CLI keys; every session-bound key ends),
    and each user's existence, role and disabled flag are the live ones."""
    from multiagent_hive import db
    from multiagent_hive.journal import journal_path
    from multiagent_hive.security import ApiKeys, Passwords
    from multiagent_hive.store import LOCKED_PASSWORD, Store, replay_journal

    rng = random.Random(seed)
    s = settings_from(make_env(tmp_path))
    init_db(s)
    store = Store(s.database_path, s.database_encryption_key)
    hasher = Passwords(s)
    api_keys = ApiKeys(s)
    keys: Dict[str, Any] = {}
    changed_password: Set[str] = set()
    made_after: Set[str] = set()

    def step(after_backup: bool) -> None:
        users = store.list_users()
        user = rng.choice(users)
        op = rng.choice(["key", "key", "http-key", "revoke-key", "disable", "enable", "password", "role", "revoke", "erase", "new-user"])
        if op in ("key", "http-key"):
            key = api_keys.new()
            via = "cli" if op == "key" else "http"
            keys[key] = store.create_api_key(user["id"], "k", api_keys.digest(key), key[:12], None, via=via)["id"]
            if after_backup:
                made_after.add(key)
        elif op == "revoke-key" and keys:
            key = rng.choice(sorted(keys))
            owner = store.user_by_api_key(api_keys.digest(key))
            if owner is not None:
                store.revoke_api_key(owner["id"], keys[key])
        elif op in ("disable", "enable") and user["username"] != "admin":
            store.set_disabled(user["id"], op == "disable")
        elif op == "password":
            store.set_password(user["id"], hasher.hash(secrets.token_hex(8)))
            if after_backup:
                changed_password.add(user["username"])
        elif op == "role" and user["username"] != "admin":
            store.set_role(user["id"], rng.choice(["viewer", "operator", "admin"]))
        elif op == "revoke":
            store.revoke_sessions(user["id"])
        elif op == "erase" and user["username"] != "admin":
            store.erase_user(user["id"])
        elif op == "new-user":
            store.create_user(f"u{rng.randrange(10**6)}", "viewer", hasher.hash("x" * 12))

    for _ in range(30):
        step(False)
    backup = str(tmp_path / "b.db")
    db.backup(s.database_path, s.database_encryption_key, backup)
    for _ in range(30):
        step(True)
    live_keys = {key: store.user_by_api_key(api_keys.digest(key)) is not None for key in keys}
    live_users = {u["username"]: (u["role"], u["disabled"]) for u in store.list_users()}
    store.close()
    result = db.restore(s.database_path, s.database_encryption_key, backup,
                        after=lambda conn: replay_journal(conn, s.database_encryption_key, journal_path(s.database_path)))
    store = Store(s.database_path, s.database_encryption_key)
    try:
        for key, worked in live_keys.items():
            works = store.user_by_api_key(api_keys.digest(key)) is not None
            assert not (works and not worked), f"seed {seed}: a revoked key works again"
            assert works == worked or key in made_after, f"seed {seed}: a live key was lost"
        restored = {u["username"]: (u["role"], u["disabled"]) for u in store.list_users()}
        # Users created after the backup are not in it; every other one is as it was live.
        assert {n: v for n, v in live_users.items() if n in restored} == restored
        assert set(restored) <= set(live_users)
        for name in changed_password & set(restored):
            assert store.user_by_name(name)["password_hash"] == LOCKED_PASSWORD
        assert sorted(result["passwords_locked"]) == sorted(changed_password & set(restored))
    finally:
        store.close()


def test_a_failed_replay_leaves_the_database_as_it_was(settings: Any, tmp_path: Any) -> None:
    from multiagent_hive import db
    from multiagent_hive.store import Store

    backup = str(tmp_path / "b.db")
    db.backup(settings.database_path, settings.database_encryption_key, backup)
    store = Store(settings.database_path, settings.database_encryption_key)
    store.create_user("after", "viewer", "x")
    store.close()

    def broken(conn: Any) -> Dict[str, Any]:
        raise OSError("journal unreadable")

    with pytest.raises(db.DatabaseError, match="nothing restored"):
        db.restore(settings.database_path, settings.database_encryption_key, backup, after=broken)
    store = Store(settings.database_path, settings.database_encryption_key)
    try:
        assert store.user_by_name("after") is not None
    finally:
        store.close()


def test_the_journal_holds_no_secret(client: Any, admin: Dict[str, str], settings: Any, env: Dict[str, str]) -> None:
    from multiagent_hive.journal import journal_path

    key = cli_key(env, "viewer")
    vid = user_id(client, admin, "viewer")
    assert client.post(f"/api/admin/users/{vid}/password", headers=admin, json={"new_password": NEW_PASSWORD}).status_code == 200
    assert client.post(f"/api/admin/users/{vid}/revoke-sessions", headers=admin).status_code == 200
    path = journal_path(settings.database_path)
    text = open(path).read()
    import os
    import stat

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for secret in (NEW_PASSWORD, key, "viewer", "$argon2"):
        assert secret not in text
    ops = [json.loads(line)["op"] for line in text.splitlines()]
    assert ops == ["password", "revoke-keys", "revoke-keys"]


def test_migration_5_backfills_key_origin_and_audit_target(tmp_path: Any) -> None:
    from multiagent_hive import db

    path = str(tmp_path / "old.db")
    key = secrets.token_hex(32)
    conn = db.connect(path, key, create=True)
    for _version, _d, statements in db.MIGRATIONS[:4]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO users (username, role, password_hash, pseudonym, subject, created_at)"
                 " VALUES ('v', 'viewer', 'h', 'u-00112233445566aa', 's', 't')")
    for key_id, generation in ((1, None), (2, None), (3, 0), (4, None)):
        conn.execute("INSERT INTO api_keys (id, user_id, name, key_hash, prefix, created_at, session_generation)"
                     " VALUES (?, 1, 'k', ?, 'p', 't', ?)", (key_id, f"h{key_id}", generation))
    for detail in ("action=api-key-create target=u-00112233445566aa key_id=1 via=cli",
                   "action=api-key-create target=u-00112233445566aa key_id=2 bound_to_session=False",
                   "action=disable target=u-00112233445566aa via=cli"):
        conn.execute("INSERT INTO audit_events (ts, event, client_id, detail) VALUES ('t', 'AccountChange', '127.0.0.1', ?)", (detail,))
    conn.execute("INSERT INTO audit_events (ts, event, client_id, detail) VALUES ('t', 'InvalidInput', '1.2.3.4', 'target=u-x')")
    assert db.migrate(conn) == [5]
    via = dict(conn.execute("SELECT id, created_via FROM api_keys").fetchall())
    assert via == {1: "cli", 2: "http", 3: "http", 4: "cli"}
    targets = [row[0] for row in conn.execute("SELECT target_ref FROM audit_events ORDER BY id")]
    assert targets == ["u-00112233445566aa"] * 3 + [None]
    conn.close()

