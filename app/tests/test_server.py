"""The real process: sd_notify readiness, SIGHUP log reopening, SIGTERM, the exporter."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import init_db, make_env, settings_from


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_connect(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Notify:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def receive(self, timeout: float) -> Optional[str]:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            return None

    def close(self) -> None:
        self.sock.close()


def start(env: Dict[str, str], notify: Notify, *args: str) -> subprocess.Popen:
    full = {"PATH": os.environ.get("PATH", ""), **env, "NOTIFY_SOCKET": notify.path}
    return subprocess.Popen(
        [sys.executable, "-m", "multiagent_hive", "--config", os.devnull, "--env-file", os.devnull, *args],
        env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_ready(proc: subprocess.Popen, notify: Notify, port: int, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = notify.receive(0.2)
        if message and "READY=1" in message:
            # at the moment READY=1 arrives the port must already accept connections
            assert can_connect(port), "READY=1 before the port accepted connections"
            return message
        assert proc.poll() is None, proc.communicate()
    raise AssertionError("no READY=1")


def http(method: str, url: str, body: Optional[dict] = None) -> Tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture()
def instance(tmp_path: Path) -> Iterator[Tuple[Dict[str, str], Notify]]:
    env = make_env(tmp_path, SERVER_PORT=free_port(), METRICS_PORT=free_port(), ENABLE_METRICS="true", LOG_LEVEL="info")
    init_db(settings_from(env))
    notify = Notify(tmp_path / "notify.sock")
    yield env, notify
    notify.close()


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_notify_reload_terminate_and_exporter(instance: Tuple[Dict[str, str], Notify], tmp_path: Path) -> None:
    env, notify = instance
    port, metrics_port = int(env["SERVER_PORT"]), int(env["METRICS_PORT"])
    proc = start(env, notify)
    exporter: Optional[subprocess.Popen] = None
    try:
        assert "STATUS=listening" in wait_ready(proc, notify, port)
        base = f"http://127.0.0.1:{port}"
        assert http("GET", base + "/api/health") == (200, '{"status":"ok"}')
        # the serving process never binds the metrics port
        assert not can_connect(metrics_port)

        # a second instance cannot bind: it exits non-zero and never says READY
        other_notify = Notify(tmp_path / "notify2.sock")
        second = start(env, other_notify)
        assert second.wait(timeout=20) != 0
        messages: List[str] = []
        while True:
            message = other_notify.receive(0.2)
            if message is None:
                break
            messages.append(message)
        other_notify.close()
        assert not any("READY=1" in m for m in messages)

        # SIGHUP (logrotate): files moved away, new ones are opened and written
        audit, app_log = Path(env["AUDIT_LOG_PATH"]), Path(env["APP_LOG_PATH"])
        assert http("POST", base + "/api/auth/login", {"username": "test", "password": "test"})[0] == 401
        audit.rename(str(audit) + ".1")
        app_log.rename(str(app_log) + ".1")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (audit.exists() and app_log.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http("POST", base + "/api/auth/login", {"username": "test2", "password": "test"})[0] == 401
        assert "UnauthorizedAccess" in audit.read_text()
        assert len(audit.read_text().splitlines()) == 1
        assert len(Path(str(audit) + ".1").read_text().splitlines()) == 1
        assert "log files reopened" in app_log.read_text()
        assert proc.poll() is None

        # the exporter: the one process on METRICS_PORT
        exp_notify = Notify(tmp_path / "notify3.sock")
        exporter = start(env, exp_notify, "--metrics")
        wait_ready(exporter, exp_notify, metrics_port)
        exp_notify.close()
        # request figures reach the files within RequestMetrics.FLUSH_SECONDS
        deadline = time.monotonic() + 10
        while True:
            status, text = http("GET", f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
            if "hive_http_requests_total" in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert 'hive_http_requests_total{method="GET",route="/api/health",status="200"} 1.0' in text
        assert 'hive_audit_events_total{event="UnauthorizedAccess"} 2.0' in text
        assert "hive_database_up 1.0" in text and 'hive_agents{state="idle"}' in text
        assert stop(exporter) == 0
    finally:
        code = stop(proc)
        if exporter is not None:
            stop(exporter)
    assert code == 0
    tail: List[str] = []
    while True:
        message = notify.receive(0.5)
        if message is None:
            break
        tail.append(message)
    assert any("STOPPING=1" in m for m in tail)


def test_refuses_to_serve_without_database(tmp_path: Path) -> None:
    env = make_env(tmp_path, SERVER_PORT=free_port())
    notify = Notify(tmp_path / "n.sock")
    proc = start(env, notify)
    try:
        assert proc.wait(timeout=20) == 1
        assert "run --init-database" in proc.communicate()[1]
        assert notify.receive(0.2) is None
        assert not Path(env["DATABASE_PATH"]).exists()
    finally:
        stop(proc)
        notify.close()


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    env = make_env(tmp_path, JWT_SECRET="short")
    notify = Notify(tmp_path / "n.sock")
    proc = start(env, notify)
    try:
        assert proc.wait(timeout=20) == 2
        assert "JWT_SECRET is shorter than 32 bytes" in proc.communicate()[1]
    finally:
        stop(proc)
        notify.close()


def test_exporter_refuses_when_metrics_disabled(tmp_path: Path) -> None:
    env = make_env(tmp_path, ENABLE_METRICS="false")
    notify = Notify(tmp_path / "n.sock")
    proc = start(env, notify, "--metrics")
    try:
        assert proc.wait(timeout=20) == 2
    finally:
        stop(proc)
        notify.close()
