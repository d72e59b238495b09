"""The guide's Post-Deployment Validation, against the deployed stack through nginx and TLS.

Every request is made on the target itself (conftest's Client: curl on the host), so what is
tested is what a client of https://HOST/ gets: nginx, its limits and headers, the app behind it.

Logins are few (the app allows 5 in a burst per client, then 10 a minute; nginx limits the login
location as well): the suite's one admin login (conftest ``admin_token``), one failed login and
one login of each of two throwaway users; a 429 is waited out. Throwaway users (random names) are created with the app's own
``--ensure-user`` and erased again through the GDPR erasure endpoint, which deletes their API
keys: a verification run leaves no usable credential behind.

The guide's load test uses ``ab`` (apache2-utils), which is not a production package; the same
load (1000 requests at concurrency 100 on /api/health, 1000 at 50 on /api/agents with a key)
comes from a bounded Python client run with the target's own python3, through nginx and TLS.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
import time
from typing import Any, Dict, Iterator, Optional

import pytest

from conftest import Client, Response, layout

EDGE = "https://127.0.0.1"
RSS_LIMIT_MIB = 200
LOGIN_WAIT_SECONDS = 75
# One audit line: timestamp, event, client_id first; then key=value pairs whose values are
# percent-encoded (no space, '=' or line break survives inside a value).
AUDIT_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z event=[A-Za-z]+ "
    r"client_id=(?P<ip>[0-9a-fA-F:.]+)(?: [a-z_]+=[^ =\n]*)*$"
)
SQL_ERROR_RE = re.compile(
    r"sqlite|sqlcipher|syntax error|OperationalError|Traceback|no such (table|column)", re.I
)


def _login(edge: Client, username: str, password: str) -> Response:
    """POST /api/auth/login, waiting out a 429 (other test modules log in too)."""
    deadline = time.monotonic() + LOGIN_WAIT_SECONDS
    while True:
        resp = edge.post("/api/auth/login", json_body={"username": username, "password": password})
        if resp.status != 429 or time.monotonic() >= deadline:
            return resp
        time.sleep(min(float(resp.headers.get("retry-after", "6") or 6), 10.0))


def _cli(host: Any, *args: str, stdin: Optional[str] = None) -> Dict[str, Any]:
    """Run the app's command line as its service account; return its one JSON line."""
    L = layout(host)
    cmd = "runuser -u {} -- {} {}".format(L.user, L.cli, " ".join(shlex.quote(a) for a in args))
    if stdin is not None:
        cmd = f"printf '%s' {shlex.quote(stdin)} | {cmd}"
    out = host.run(cmd)
    assert out.rc == 0, f"{L.app} {args[0]} failed ({out.rc}): {out.stderr.strip()}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _app_python(host: Any, code: str, *args: str) -> Any:
    """Run Python with the app's venv and settings as the service account; return its JSON.
    The code reads the layout's configuration files as ``load_settings(*HUB_FILES)``."""
    L = layout(host)
    code = f"HUB_FILES = ({L.config_file!r}, {L.env_file!r})\n" + code
    cmd = "runuser -u {} -- {} -c {} {}".format(
        L.user, L.python, shlex.quote(code), " ".join(shlex.quote(a) for a in args)
    )
    out = host.run(cmd)
    assert out.rc == 0, f"app python failed ({out.rc}): {out.stderr.strip()[-500:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bearer(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _key(key: str) -> Dict[str, str]:
    return {"X-API-Key": key}


def _new_user(host: Any, edge: Client, role: str) -> Dict[str, Any]:
    name = f"verify-{role}-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    created = _cli(host, "--ensure-user", name, "--role", role, "--password-file", "-", stdin=password)
    assert created["changed"] is True, f"--ensure-user did not create {name}: {created}"
    key = _cli(host, "--create-api-key", "--user", name, "--key-name", "verify")["api_key"]
    return {"name": name, "password": password, "role": role, "key": key}


def _erase(edge: Client, user: Dict[str, Any]) -> None:
    """GDPR-erase a throwaway user (its API keys go with it); 401: already erased.

    Straight to the app on loopback when nginx does not answer, so that a broken proxy does not
    leave a verification user with a working key behind."""
    for client in (edge, Client(edge.host, f"http://127.0.0.1:{layout(edge.host).http_port}")):
        resp = client.delete("/api/users/me/data", headers=_key(user["key"]))
        if resp.status in (200, 401):
            return
    raise AssertionError(f"could not erase the throwaway user {user['name']}: {resp.status} {resp.body}")


def _audit_lines(host: Any) -> list:
    L = layout(host)
    with host.sudo():
        return host.file(L.audit_log).content_string.splitlines()


# fixtures (module scope: the whole module logs in a handful of times) -----------------------


@pytest.fixture(scope="module")
def edge(host: Any) -> Client:
    return Client(host, EDGE)


@pytest.fixture(scope="module")
def audit_start(host: Any) -> int:
    """Lines already in the audit log before this module's requests."""
    return len(_audit_lines(host))


@pytest.fixture(scope="module")
def failed_login(edge: Client, audit_start: int) -> Response:
    # The guide's own probe: a user that does not exist.
    return _login(edge, "test", "test")


@pytest.fixture(scope="module")
def viewer(host: Any, edge: Client) -> Iterator[Dict[str, Any]]:
    user = _new_user(host, edge, "viewer")
    yield user
    _erase(edge, user)


@pytest.fixture(scope="module")
def operator(host: Any, edge: Client) -> Iterator[Dict[str, Any]]:
    user = _new_user(host, edge, "operator")
    yield user
    _erase(edge, user)


@pytest.fixture(scope="module")
def created_agents(edge: Client, operator: Dict[str, Any]) -> Iterator[list]:
    """Agents the tests create; deleted at the end of the module."""
    created: list = []
    yield created
    for agent_id in created:
        edge.delete(f"/api/agents/{agent_id}", headers=_key(operator["key"]))


# POST-AUTH ----------------------------------------------------------------------------------


@pytest.mark.checklist("POST-AUTH-1")
def test_jwt_login_rejects_bad_credentials(failed_login: Response) -> None:
    assert failed_login.status == 401, (
        f"login test/test: expected 401, got {failed_login.status}: {failed_login.body}"
    )
    assert "access_token" not in failed_login.body


@pytest.mark.checklist("POST-AUTH-1")
def test_jwt_login_issues_a_token_that_authenticates(
    edge: Client, admin_token: str, subject: Dict[str, Any]
) -> None:
    body = subject["login"].json()
    assert body.get("token_type") == "bearer" and int(body.get("expires_in", 0)) > 0, body
    for who, token in (("admin", admin_token), (subject["name"], body["access_token"])):
        parts = token.split(".")
        assert len(parts) == 3 and all(parts), f"{who}: expected a JWT (3 dot-separated parts), got {token[:20]}..."
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        assert header.get("alg") == "HS256", f"{who}: JWT alg: expected HS256, found {header.get('alg')}"
        assert _claims(token)["exp"] > time.time(), f"{who}: the token is already expired"
    resp = edge.get("/api/admin/users", headers=_bearer(admin_token))
    assert resp.status == 200, f"admin request with the token: expected 200, got {resp.status}: {resp.body}"
    resp = edge.get("/api/agents", headers=_bearer(body["access_token"]))
    assert resp.status == 200, f"operator request with the token: expected 200, got {resp.status}: {resp.body}"


@pytest.mark.checklist("POST-AUTH-1", "PRE-NIST-3")
def test_jwt_garbage_forged_and_expired_tokens_are_refused(host: Any, edge: Client, admin_token: str) -> None:
    token = admin_token
    head, payload, sig = token.split(".")
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    expired = _app_python(
        host,
        "import json, sys, time, uuid, jwt\n"
        "from multiagent_hive.config import load_settings\n"
        "from multiagent_hive import security\n"
        "claims = json.loads(sys.argv[1])\n"
        "now = int(time.time())\n"
        "claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600, jti=uuid.uuid4().hex,\n"
        "              iss=security.JWT_ISSUER, aud=security.JWT_AUDIENCE)\n"
        "secret = load_settings(*HUB_FILES).jwt_secret\n"
        "print(json.dumps(jwt.encode(claims, secret, algorithm=security.JWT_ALGORITHM)))\n",
        json.dumps({k: v for k, v in _claims(token).items() if k in ("sub", "role")}),
    )
    cases = {
        "garbage": "not-a-jwt",
        "bad signature": f"{head}.{payload}.{sig[:-4]}AAAA" if not sig.endswith("AAAA") else f"{head}.{payload}.BBBB",
        "alg none": f"{unsigned}.{payload}.",
        "expired (signed with the real key)": expired,
    }
    for what, bad in cases.items():
        resp = edge.get("/api/admin/users", headers=_bearer(bad))
        assert resp.status == 401, f"{what} token: expected 401, got {resp.status}: {resp.body}"


def _claims(token: str) -> Dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.checklist("POST-AUTH-2")
def test_api_key_created_through_the_api_authenticates(edge: Client, viewer: Dict[str, Any]) -> None:
    login = _login(edge, viewer["name"], viewer["password"])
    assert login.status == 200, f"{viewer['name']} login: {login.status} {login.body}"
    resp = edge.post(
        "/api/auth/api-keys", headers=_bearer(login.json()["access_token"]), json_body={"name": "verify"}
    )
    assert resp.status == 201, f"POST /api/auth/api-keys: expected 201, got {resp.status}: {resp.body}"
    key = resp.json()["api_key"]
    health = edge.get("/api/health", headers=_key(key))
    assert health.status == 200, f"/api/health with X-API-Key: {health.status} {health.body}"
    # The detailed answer is only given to an authenticated caller.
    assert "version" in health.json(), f"/api/health did not treat the key as authenticated: {health.body}"
    agents = edge.get("/api/agents", headers=_key(key))
    assert agents.status == 200 and "agents" in agents.json(), f"/api/agents: {agents.status} {agents.body}"


@pytest.mark.checklist("POST-AUTH-2")
def test_wrong_api_key_is_refused(edge: Client) -> None:
    for path in ("/api/health", "/api/agents"):
        resp = edge.get(path, headers=_key("hive_" + secrets.token_urlsafe(32)))
        assert resp.status == 401, f"{path} with a wrong X-API-Key: expected 401, got {resp.status}"


# POST-AUTHZ ---------------------------------------------------------------------------------


@pytest.mark.checklist("POST-AUTHZ-1", "PRE-NIST-3")
def test_admin_endpoint_by_role(
    edge: Client, admin_token: str, viewer: Dict[str, Any], operator: Dict[str, Any]
) -> None:
    anonymous = edge.get("/api/admin/users")
    assert anonymous.status == 401, f"/api/admin/users without auth: expected 401, got {anonymous.status}"
    as_admin = edge.get("/api/admin/users", headers=_bearer(admin_token))
    assert as_admin.status == 200, f"/api/admin/users as admin: expected 200, got {as_admin.status}"
    names = [u.get("username") for u in as_admin.json()["users"]]
    assert "admin" in names and viewer["name"] in names, f"users listed: {names}"
    for user in (viewer, operator):
        resp = edge.get("/api/admin/users", headers=_key(user["key"]))
        assert resp.status == 403, (
            f"/api/admin/users as {user['role']}: expected 403, got {resp.status}: {resp.body}"
        )


@pytest.mark.checklist("POST-AUTHZ-2")
def test_agent_creation_needs_operator(
    edge: Client, admin_token: str, viewer: Dict[str, Any], operator: Dict[str, Any], created_agents: list
) -> None:
    body = {"name": f"verify-{secrets.token_hex(3)}", "type": "worker"}
    denied = edge.post("/api/agents", headers=_key(viewer["key"]), json_body=body)
    assert denied.status == 403, f"POST /api/agents as viewer: expected 403, got {denied.status}: {denied.body}"
    listed = edge.get("/api/agents", headers=_key(viewer["key"]))
    assert listed.status == 200, f"GET /api/agents as viewer: expected 200, got {listed.status}"
    for who, headers in (("operator", _key(operator["key"])), ("admin", _bearer(admin_token))):
        resp = edge.post("/api/agents", headers=headers, json_body=dict(body, name=f"{body['name']}-{who}"))
        assert resp.status == 201, f"POST /api/agents as {who}: expected 201, got {resp.status}: {resp.body}"
        created_agents.append(resp.json()["id"])


# POST-INPUT ---------------------------------------------------------------------------------


@pytest.mark.checklist("POST-INPUT-1", "PRE-NIST-3")
def test_markup_and_unknown_fields_are_rejected(edge: Client, operator: Dict[str, Any]) -> None:
    headers = _key(operator["key"])
    script = edge.post("/api/agents", headers=headers, json_body={"name": "<script>alert(1)</script>", "type": "worker"})
    assert 400 <= script.status < 500, f"<script> name: expected 4xx, got {script.status}: {script.body}"
    assert "name" in script.json().get("detail", ""), f"no reason naming the field: {script.body}"
    assert "<script>" not in script.body, "the rejected markup is echoed back"
    unknown = edge.post("/api/agents", headers=headers, json_body={"name": "ok", "type": "worker", "is_admin": True})
    assert 400 <= unknown.status < 500, f"unknown field: expected 4xx, got {unknown.status}: {unknown.body}"
    agents = edge.get("/api/agents?limit=1000", headers=headers).json()["agents"]
    assert not [a for a in agents if "<" in a["name"] or a["name"] == "ok"], "a rejected agent was created"


@pytest.mark.checklist("POST-INPUT-1")
def test_oversized_body_is_refused(host: Any, edge: Client, operator: Dict[str, Any]) -> None:
    big = host.run("mktemp /tmp/verify-body.XXXXXX").stdout.strip()
    try:
        host.check_output(f"head -c 2097152 /dev/zero | tr '\\0' a > {shlex.quote(big)}")
        resp = edge.post(
            "/api/agents",
            headers=dict(_key(operator["key"]), **{"Content-Type": "application/json"}),
            extra=f"--data-binary @{shlex.quote(big)}",
        )
    finally:
        host.run(f"rm -f {shlex.quote(big)}")
    assert resp.status == 413, f"2 MiB body: expected 413, got {resp.status}"


@pytest.mark.checklist("POST-INPUT-2")
def test_sql_in_query_is_only_a_search_term(edge: Client, viewer: Dict[str, Any]) -> None:
    for query in ("SELECT%20*%20FROM%20users", "%27%20OR%20%271%27%3D%271", "x%27%3B%20DROP%20TABLE%20users%3B%20--"):
        resp = edge.get(f"/api/agents?query={query}", headers=_key(viewer["key"]))
        assert resp.status == 200, f"?query={query}: expected a normal 200 answer, got {resp.status}: {resp.body}"
        assert not SQL_ERROR_RE.search(resp.body), f"?query={query}: database error text in {resp.body[:300]}"
        for leaked in ("password_hash", "$argon2", "pseudonym", "username"):
            assert leaked not in resp.body, f"?query={query}: user data ({leaked}) in the answer"
        assert isinstance(resp.json().get("agents"), list), resp.body
    health = edge.get("/api/health")
    assert health.status == 200, f"the users table or database suffered: /api/health {health.status}"


# POST-PERF ----------------------------------------------------------------------------------

LOAD_SCRIPT = r"""
import http.client, json, ssl, sys, threading, time
path, total, concurrency, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
headers = {"X-API-Key": key} if key else {}
lock = threading.Lock()
codes, errors, times = {}, [], []
per_thread = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]

def worker(count):
    for _ in range(count):
        start = time.monotonic()
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", 443, context=ctx, timeout=30)
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            with lock:
                codes[resp.status] = codes.get(resp.status, 0) + 1
                times.append(time.monotonic() - start)
        except Exception as exc:
            with lock:
                errors.append(repr(exc)[:200])

threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in per_thread]
began = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join(max(1.0, 300 - (time.monotonic() - began)))
elapsed = time.monotonic() - began
times.sort()
done = sum(codes.values())
print(json.dumps({
    "path": path, "requests": total, "concurrency": concurrency, "completed": done,
    "failed": len(errors) + (total - done - len(errors)), "errors": errors[:5],
    "codes": {str(k): v for k, v in codes.items()}, "seconds": round(elapsed, 2),
    "rps": round(done / elapsed, 1) if elapsed else 0.0,
    "p50_ms": round(1000 * times[len(times) // 2], 1) if times else None,
    "p95_ms": round(1000 * times[int(len(times) * 0.95)], 1) if times else None,
}))
"""


def _service_state(host: Any) -> Dict[str, str]:
    out = host.check_output(f"systemctl show -p MainPID -p NRestarts -p ActiveState {layout(host).service}.service")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def load(host: Any, operator: Dict[str, Any]) -> Dict[str, Any]:
    """The guide's two ab runs, once for the module; the service's state before and after."""
    before = _service_state(host)
    runs = []
    for path, total, concurrency, key in (
        ("/api/health", 1000, 100, ""),
        ("/api/agents", 1000, 50, operator["key"]),
    ):
        out = host.run(
            f"python3 -c {shlex.quote(LOAD_SCRIPT)} {shlex.quote(path)} {total} {concurrency} {shlex.quote(key)}"
        )
        assert out.rc == 0, f"load client failed: {out.stderr.strip()[-500:]}"
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"before": before, "after": _service_state(host), "runs": runs}


@pytest.mark.checklist("POST-PERF-1")
def test_load_through_nginx_has_no_failed_request(load: Dict[str, Any]) -> None:
    for run in load["runs"]:
        print(
            f"load {run['path']}: {run['requests']} requests, concurrency {run['concurrency']}: "
            f"{run['rps']} requests/s, p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms, codes {run['codes']}"
        )
        assert run["failed"] == 0, f"{run['path']}: {run['failed']} failed requests: {run['errors']}"
        assert run["codes"] == {"200": run["requests"]}, (
            f"{run['path']}: expected {run['requests']} x 200, got {run['codes']}"
        )


@pytest.mark.checklist("POST-PERF-2")
def test_memory_after_load_is_bounded(host: Any, load: Dict[str, Any]) -> None:
    before, after = load["before"], load["after"]
    service = f"{layout(host).service}.service"
    assert after.get("ActiveState") == "active", f"{service} is {after.get('ActiveState')} after the load"
    assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == before["NRestarts"], (
        f"{service} restarted during the load: before {before}, after {after}"
    )
    status = host.file(f"/proc/{after['MainPID']}/status").content_string
    rss_kib = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
    cmdline = host.file(f"/proc/{after['MainPID']}/cmdline").content_string.replace("\0", " ")
    print(f"{service} pid {after['MainPID']} ({cmdline.strip()}): RSS {rss_kib / 1024:.1f} MiB after the load")
    assert "multiagent-hive" in cmdline or "multiagent_hive" in cmdline, f"MainPID runs {cmdline}"
    assert rss_kib < RSS_LIMIT_MIB * 1024, (
        f"RSS after the load: expected under {RSS_LIMIT_MIB} MiB, found {rss_kib / 1024:.1f} MiB"
    )


# POST-GDPR ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subject(
    host: Any, edge: Client, operator: Dict[str, Any], audit_start: int
) -> Iterator[Dict[str, Any]]:
    """A throwaway data subject with a JWT, an agent and an API key of its own."""
    user = _new_user(host, edge, "operator")
    login = _login(edge, user["name"], user["password"])
    assert login.status == 200, f"{user['name']} login: {login.status} {login.body}"
    user["login"] = login
    user["token"] = login.json()["access_token"]
    agent = edge.post(
        "/api/agents", headers=_bearer(user["token"]), json_body={"name": f"{user['name']}-agent", "type": "worker"}
    )
    assert agent.status == 201, f"agent of {user['name']}: {agent.status} {agent.body}"
    user["agent_id"] = agent.json()["id"]
    yield user
    edge.delete(f"/api/agents/{user['agent_id']}", headers=_key(operator["key"]))
    _erase(edge, user)


@pytest.fixture(scope="module")
def export(edge: Client, subject: Dict[str, Any]) -> Response:
    return edge.get("/api/users/me/data", headers=_bearer(subject["token"]))


@pytest.fixture(scope="module")
def erasure(edge: Client, subject: Dict[str, Any], export: Response) -> Response:
    return edge.delete("/api/users/me/data", headers=_bearer(subject["token"]))


@pytest.mark.checklist("POST-GDPR-1", "PRE-GDPR-3")
def test_export_holds_the_callers_record_and_data(export: Response, subject: Dict[str, Any]) -> None:
    assert export.status == 200, f"GET /api/users/me/data: expected 200, got {export.status}: {export.body}"
    data = export.json()
    assert data["user"]["username"] == subject["name"], f"export is of {data['user']}"
    assert data["user"]["role"] == "operator"
    assert [a["id"] for a in data["agents"]] == [subject["agent_id"]], f"agents exported: {data['agents']}"
    assert data["api_keys"] and subject["key"] not in export.body, "api keys: listed, never the key itself"
    events = {e["event"] for e in data["audit_events"]}
    assert "AuthenticationSuccess" in events, f"the subject's audit events are not exported: {events}"
    assert "password" not in json.dumps(data["user"]), "the export exposes the password hash"


@pytest.mark.checklist("POST-GDPR-2", "PRE-GDPR-3")
def test_erasure_removes_the_user_and_unlinks_the_audit_trail(
    host: Any, edge: Client, admin_token: str, subject: Dict[str, Any], export: Response, erasure: Response
) -> None:
    L = layout(host)
    assert erasure.status == 200, f"DELETE /api/users/me/data: expected 200, got {erasure.status}: {erasure.body}"
    counts = erasure.json()
    assert counts.get("erased") is True and counts.get("api_keys", 0) >= 1, counts
    for what, headers in (("token", _bearer(subject["token"])), ("API key", _key(subject["key"]))):
        again = edge.get("/api/users/me/data", headers=headers)
        assert again.status == 401, f"the erased user's {what} still works: {again.status} {again.body}"
    users = edge.get("/api/admin/users", headers=_bearer(admin_token)).json()["users"]
    assert subject["name"] not in [u["username"] for u in users], "the erased user is still listed"
    pseudonym = export.json()["user"]["pseudonym"]
    assert any(
        " event=DataErasure " in line and f" user={pseudonym}" in line for line in _audit_lines(host)
    ), f"no DataErasure line for pseudonym {pseudonym} in {L.audit_log}"
    left = _app_python(
        host,
        "import json, sys\n"
        "from multiagent_hive.config import load_settings\n"
        "from multiagent_hive.store import Store\n"
        "s = load_settings(*HUB_FILES)\n"
        "st = Store(s.database_path, s.database_encryption_key)\n"
        "n = sys.argv[1]\n"
        "print(json.dumps({\n"
        "  'users': st.one('SELECT count(*) AS n FROM users WHERE username = ?', (n,))['n'],\n"
        "  'audit': st.one('SELECT count(*) AS n FROM audit_events WHERE username = ? OR detail LIKE ?',\n"
        "                  (n, '%' + n + '%'))['n']}))\n",
        subject["name"],
    )
    assert left == {"users": 0, "audit": 0}, f"the database still names {subject['name']}: {left}"


# POST-AUDIT ---------------------------------------------------------------------------------


@pytest.mark.checklist("POST-AUDIT-1")
def test_audit_log_exists_private_to_the_service(host: Any) -> None:
    L = layout(host)
    with host.sudo():
        log = host.file(L.audit_log)
        assert log.is_file, f"{L.audit_log} does not exist"
        assert log.user == L.user, f"{L.audit_log}: expected owner {L.user}, found {log.user}"
        assert log.mode == 0o640, f"{L.audit_log}: expected mode 0640, found {oct(log.mode)}"
        directory = host.file(L.audit_log.rsplit("/", 1)[0])
        assert directory.mode & 0o007 == 0, f"log directory is open to others: {oct(directory.mode)}"


@pytest.mark.checklist("POST-AUDIT-2")
def test_audit_lines_have_the_documented_format(
    host: Any, edge: Client, audit_start: int, failed_login: Response, subject: Dict[str, Any], viewer: Dict[str, Any]
) -> None:
    L = layout(host)
    # User text that tries to forge a second event and a client address.
    forged = "SELECT * FROM users\nevent=AuthenticationSuccess client_id=203.0.113.66 x"
    resp = edge.get("/api/agents?query=" + _quote(forged), headers=_key(viewer["key"]))
    assert resp.status == 200, f"probe query: {resp.status} {resp.body}"
    new = _audit_lines(host)[audit_start:]
    assert new, f"no audit line written by this module's requests in {L.audit_log}"
    bad = [line for line in new if not AUDIT_LINE_RE.match(line)]
    assert not bad, f"audit lines not in the documented format: {bad[:3]}"
    assert not [line for line in new if "client_id=203.0.113.66" in line], "forged client_id in the log"
    success = [line for line in new if " event=AuthenticationSuccess client_id=127.0.0.1" in line]
    refused = [line for line in new if " event=UnauthorizedAccess client_id=127.0.0.1" in line]
    assert success, "no AuthenticationSuccess line with client_id=127.0.0.1 for the subject's login"
    assert refused, "no UnauthorizedAccess line with client_id=127.0.0.1 for the failed login"
    assert viewer["name"] not in "\n".join(new), "a user name in the flat audit log (pseudonyms only)"


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
