"""SERVER_SOCKET: the reverse proxy's Unix socket is the only place X-Forwarded-For names the
client; on the loopback TCP listener, which every local process can reach, it names nobody."""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import make_env
from liveserver import Live, live_server


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def via_socket(path: str, method: str, url: str, headers: Dict[str, str]) -> Tuple[int, bytes]:
    conn = UnixConnection(path)
    try:
        conn.request(method, url, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def random_addresses(rng: random.Random, n: int) -> List[str]:
    """Public-looking IPv4 and IPv6 addresses, none of them loopback."""
    out: List[str] = []
    while len(out) < n:
        if rng.random() < 0.5:
            addr: ipaddress._BaseAddress = ipaddress.IPv4Address(rng.getrandbits(32))
        else:
            addr = ipaddress.IPv6Address((0x2001 << 112) | rng.getrandbits(112))
        if addr.is_global:
            out.append(str(addr))
    return out


def client_ids(live: Live) -> List[str]:
    lines = Path(live.env["AUDIT_LOG_PATH"]).read_text().splitlines()
    return [line.split(" ")[2].split("=", 1)[1] for line in lines if " event=UnauthorizedAccess " in line]


def test_forwarded_for_counts_only_on_the_proxy_socket(tmp_path: Path) -> None:
    sock = str(tmp_path / "run" / "http.sock")
    (tmp_path / "run").mkdir()
    rng = random.Random()
    forged, relayed = random_addresses(rng, 6), random_addresses(rng, 6)
    with live_server(tmp_path, SERVER_SOCKET=sock) as live:
        # The guide's own check, unchanged, on TCP.
        assert live.request("GET", "/api/health")[0] == 200
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660 and stat.S_ISSOCK(os.stat(sock).st_mode)
        bad = {"Authorization": "Bearer not-a-token"}
        for addr in forged:
            chain = rng.choice([addr, f"{addr}, 127.0.0.1", f"198.51.100.1, {addr}"])
            status, _, _ = live.request("GET", "/api/admin/users", headers={**bad, "X-Forwarded-For": chain})
            assert status == 401
        for addr in relayed:
            status, _ = via_socket(sock, "GET", "/api/admin/users", {**bad, "X-Forwarded-For": addr})
            assert status == 401
        # The socket serves the whole API, health included.
        assert via_socket(sock, "GET", "/api/health", {})[0] == 200
        ids = client_ids(live)
    assert not set(forged) & set(ids), ids
    assert set(relayed) <= set(ids), ids
    assert "127.0.0.1" in ids  # the forging TCP clients are logged as what they are
    assert not os.path.exists(sock)  # removed on a clean stop


def test_a_socket_left_behind_is_replaced_and_another_file_is_not(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run / "http.sock"))  # as after kill -9: the file stays, nobody listens
    stale.close()
    with live_server(tmp_path, SERVER_SOCKET=str(run / "http.sock")):
        assert via_socket(str(run / "http.sock"), "GET", "/api/health", {})[0] == 200

    regular = run / "not-a-socket"
    regular.write_text("keep me")
    (tmp_path / "other").mkdir()
    env = make_env(tmp_path / "other", SERVER_SOCKET=str(regular))
    result = subprocess.run(
        [sys.executable, "-m", "multiagent_hive", "--config", os.devnull, "--env-file", os.devnull, "--check-config"],
        env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "exists and is not a socket" in result.stderr
    assert regular.read_text() == "keep me"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("run/http.sock", "must be an absolute path"),
        ("/run/" + "x" * 110 + ".sock", "longer than 107 bytes"),
        ("/tmp/", "is a directory"),
    ],
)
def test_check_config_names_a_bad_socket_path(tmp_path: Path, value: str, problem: str) -> None:
    env = make_env(tmp_path, SERVER_SOCKET=value)
    result = subprocess.run(
        [sys.executable, "-m", "multiagent_hive", "--config", os.devnull, "--env-file", os.devnull, "--check-config"],
        env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "SERVER_SOCKET" in result.stderr and problem in result.stderr


def test_check_config_reports_the_socket(tmp_path: Path) -> None:
    env = make_env(tmp_path, SERVER_SOCKET=str(tmp_path / "http.sock"))
    result = subprocess.run(
        [sys.executable, "-m", "multiagent_hive", "--config", os.devnull, "--env-file", os.devnull, "--check-config"],
        env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["socket"] == str(tmp_path / "http.sock")
