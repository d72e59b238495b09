"""Fixtures: a fresh encrypted database, users of each role and a TestClient per test."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test executors are importable by name

from multiagent_hive import db
from multiagent_hive.config import Settings, load_settings
from multiagent_hive.security import Passwords
from multiagent_hive.store import Store

PASSWORDS = {"admin": "admin-password-1", "operator": "operator-password-1", "viewer": "viewer-password-1"}
CLIENT_IP = "203.0.113.7"


def make_env(tmp: Path, **extra: Any) -> Dict[str, str]:
    """Environment of a test instance: real secrets, paths in tmp, cheap argon2."""
    (tmp / "lib").mkdir(exist_ok=True)
    (tmp / "log").mkdir(exist_ok=True)
    env = {
        "JWT_SECRET": secrets.token_hex(32),
        "DATABASE_ENCRYPTION_KEY": secrets.token_hex(32),
        "API_ENCRYPTION_KEY": secrets.token_hex(32),
        "DATABASE_PATH": str(tmp / "lib" / "hive.db"),
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "18080",
        "ENABLE_METRICS": "false",
        "METRICS_PORT": "19090",
        "METRICS_DIR": str(tmp / "lib" / "metrics"),
        "ENABLE_AUDIT_LOGGING": "true",
        "AUDIT_LOG_PATH": str(tmp / "log" / "audit.log"),
        "APP_LOG_PATH": str(tmp / "log" / "app.log"),
        "SECURITY_LOG_LEVEL": "info",
        "LOG_LEVEL": "warn",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "64",
        "TASK_DURATION_MS": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def settings_from(env: Dict[str, str]) -> Settings:
    return load_settings(os.devnull, os.devnull, environ=env)


def init_db(settings: Settings) -> None:
    db.init_database(settings.database_path, settings.database_encryption_key)
    store = Store(settings.database_path, settings.database_encryption_key)
    hasher = Passwords(settings)
    for role, password in PASSWORDS.items():
        store.create_user(role, role, hasher.hash(password))
    store.close()


def cli(env: Dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run the console script with only the given environment (no /etc files exist here)."""
    full = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-m", "multiagent_hive", "--config", os.devnull, "--env-file", os.devnull, *args],
        input=stdin, capture_output=True, text=True, env=full, timeout=60,
    )


def audit_lines(settings: Settings) -> List[str]:
    path = Path(settings.audit_log_path)
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture()
def env(tmp_path: Path) -> Dict[str, str]:
    return make_env(tmp_path)


@pytest.fixture()
def settings(env: Dict[str, str]) -> Settings:
    s = settings_from(env)
    init_db(s)
    return s


@pytest.fixture()
def hive_app(settings: Settings) -> Iterator[Any]:
    from multiagent_hive.api import create_app

    app = create_app(settings)
    yield app
    app.audit.close()
    app.store.close()


@pytest.fixture()
def client(hive_app: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(hive_app, client=(CLIENT_IP, 40000)) as c:
        yield c


def login(client: Any, role: str) -> Dict[str, str]:
    resp = client.post("/api/auth/login", json={"username": role, "password": PASSWORDS[role]})
    assert resp.status_code == 200, resp.text
    return {"Authorization": "Bearer " + resp.json()["access_token"]}


@pytest.fixture()
def admin(client: Any) -> Dict[str, str]:
    return login(client, "admin")


@pytest.fixture()
def operator(client: Any) -> Dict[str, str]:
    return login(client, "operator")


@pytest.fixture()
def viewer(client: Any) -> Dict[str, str]:
    return login(client, "viewer")
