"""The real service process on loopback, for tests that need real concurrency (the event loop
answering one request while another is parsed) or an HTTP client of their own (schemathesis)."""
from __future__ import annotations

import contextlib
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
from typing import Any, Dict, Iterator, Optional, Tuple

from conftest import PASSWORDS, init_db, make_env, settings_from


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    def __init__(self, base: str, env: Dict[str, str], proc: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.env = env
        self.proc = proc

    def request(
        self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
        timeout: float = 30.0,
    ) -> Tuple[int, bytes, Dict[str, str]]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def token(self, role: str) -> str:
        body = json.dumps({"username": role, "password": PASSWORDS[role]}).encode()
        status, data, _ = self.request("POST", "/api/auth/login", body, {"Content-Type": "application/json"})
        assert status == 200, data
        return str(json.loads(data)["access_token"])


@contextlib.contextmanager
def live_server(tmp: Path, **extra: Any) -> Iterator[Live]:
    """Start `python -m multiagent_hive` on a free loopback port; stop it with SIGTERM."""
    port = free_port()
    env = make_env(tmp, SERVER_PORT=port, METRICS_PORT=free_port(), **extra)
    init_db(settings_from(env))
    full = {"PATH": os.environ.get("PATH", ""), **env}
    if os.environ.get("PYTHONPATH"):
        full["PYTHONPATH"] = os.environ["PYTHONPATH"]
    log = open(tmp / "server.out", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "multiagent_hive", "--config", os.devnull, "--env-file", os.devnull],
        env=full, stdout=log, stderr=subprocess.STDOUT,
    )
    live = Live(f"http://127.0.0.1:{port}", env, proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp / "server.out").read_text()
            try:
                if live.request("GET", "/api/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer health within 20 s"
            time.sleep(0.1)
        yield live
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
