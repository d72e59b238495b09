"""The command-line equivalents of the credential lifecycle: --disable-user, --enable-user,
--revoke-sessions, --reset-password (password from a file or stdin, never echoed)."""
from __future__ import annotations

import json
from typing import Any, Dict

from conftest import PASSWORDS, audit_lines, cli, login


def run_json(env: Dict[str, str], *args: str, stdin: str = "") -> Dict[str, Any]:
    result = cli(env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    data: Dict[str, Any] = json.loads(result.stdout)
    return data


def status(client: Any, headers: Dict[str, str]) -> int:
    return int(client.get("/api/agents", headers=headers).status_code)


def test_disable_and_enable_user(env: Dict[str, str], settings: Any, client: Any) -> None:
    operator = login(client, "operator")
    key = client.post("/api/auth/api-keys", headers=operator, json={"name": "k"}).json()["api_key"]
    first = run_json(env, "--disable-user", "operator")
    assert first["changed"] is True
    assert status(client, operator) == 401 and status(client, {"X-API-Key": key}) == 401
    assert client.post("/api/auth/login", json={"username": "operator", "password": PASSWORDS["operator"]}).status_code == 401
    assert run_json(env, "--disable-user", "operator")["changed"] is False
    assert run_json(env, "--enable-user", "operator")["changed"] is True
    assert run_json(env, "--enable-user", "operator")["changed"] is False
    assert status(client, login(client, "operator")) == 200
    lines = [line for line in audit_lines(settings) if " event=AccountChange " in line and "via=cli" in line]
    assert [line.split("action=")[1].split(" ")[0] for line in lines] == ["disable", "enable"]


def test_last_admin_cannot_be_disabled(env: Dict[str, str], settings: Any) -> None:
    result = cli(env, "--disable-user", "admin")
    assert result.returncode == 1 and "last enabled admin" in result.stderr


def test_revoke_sessions(env: Dict[str, str], settings: Any, client: Any) -> None:
    viewer = login(client, "viewer")
    client.post("/api/auth/api-keys", headers=viewer, json={"name": "a"})
    host_key = run_json(env, "--create-api-key", "--user", "viewer")["api_key"]
    assert any("action=api-key-create" in line and "via=cli" in line for line in audit_lines(settings))
    assert host_key not in "\n".join(audit_lines(settings))
    out = run_json(env, "--revoke-sessions", "viewer")
    assert out["changed"] is True and out["api_keys_revoked"] == 2
    assert status(client, viewer) == 401 and status(client, {"X-API-Key": host_key}) == 401
    assert status(client, login(client, "viewer")) == 200


def test_reset_password_from_stdin_never_echoed(env: Dict[str, str], settings: Any, client: Any) -> None:
    viewer = login(client, "viewer")
    secret = "reset-by-root-password-1"
    result = cli(env, "--reset-password", "viewer", "--password-file", "-", stdin=secret + "\n")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert json.loads(result.stdout)["changed"] is True
    assert status(client, viewer) == 401
    assert client.post("/api/auth/login", json={"username": "viewer", "password": secret}).status_code == 200
    assert secret not in "\n".join(audit_lines(settings))


def test_reset_password_refuses_bad_input(env: Dict[str, str], settings: Any) -> None:
    short = cli(env, "--reset-password", "viewer", "--password-file", "-", stdin="short\n")
    assert short.returncode == 1 and "at least" in short.stderr and "short\n" not in short.stdout
    missing = cli(env, "--reset-password", "viewer")
    assert missing.returncode == 2 and "--password-file" in missing.stderr
    unknown = cli(env, "--revoke-sessions", "nobody")
    assert unknown.returncode == 1 and "does not exist" in unknown.stderr
    bad = cli(env, "--disable-user", "bad name!")
    assert bad.returncode == 2
