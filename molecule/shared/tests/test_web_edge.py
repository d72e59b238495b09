"""The edge between the host's local accounts, nginx and the app: the app's Unix socket is the one
place X-Forwarded-For names a client, and only nginx's group can open it; the loopback port the
guide's checks use takes every caller for what it is. nginx's /api/ throttle and port 80's
timeouts. The alert webhook's URL is in no unit and on no command line."""
from __future__ import annotations

import ipaddress
import random
import shlex
import time
from typing import Any, List

import pytest

from conftest import layout


def audit_lines_after(host: Any, before: int, wanted: str, timeout: float = 10.0) -> List[str]:
    L = layout(host)
    deadline = time.monotonic() + timeout
    found: List[str] = []
    while time.monotonic() < deadline:
        with host.sudo():
            lines = host.check_output(f"tail -n +{before + 1} {L.audit_log}").splitlines()
        found = [line for line in lines if wanted in line]
        if found:
            break
        time.sleep(0.3)
    return found


def audit_length(host: Any) -> int:
    with host.sudo():
        return int(host.check_output(f"cat {layout(host).audit_log} 2>/dev/null | wc -l") or 0)


def random_public_address() -> str:
    while True:
        addr = ipaddress.IPv4Address(random.getrandbits(32))
        if addr.is_global:
            return str(addr)


def socket_group(host: Any) -> str:
    L = layout(host)
    with host.sudo():
        return host.check_output(f"stat -c %G {shlex.quote(L.http_socket.rsplit('/', 1)[0])}")


@pytest.mark.checklist("PRE-NET-2")
def test_the_apps_socket_is_open_to_nginxs_group_only(host: Any) -> None:
    L = layout(host)
    directory = L.http_socket.rsplit("/", 1)[0]
    group = socket_group(host)
    with host.sudo():
        nginx_user = host.check_output("ps -o user= -C nginx | grep -vx root | sort -u | head -1")
        d = host.file(directory)
        assert d.user == L.user and d.group == group and d.mode == 0o2750, (d.user, d.group, oct(d.mode))
        s = host.file(L.http_socket)
        assert s.is_socket and s.group == group and s.mode & 0o007 == 0, (s.group, oct(s.mode))
    assert group != L.group and nginx_user and group in host.check_output(f"id -Gn {nginx_user}").split()
    probe = f"curl -s -o /dev/null -w '%{{http_code}}' --unix-socket {shlex.quote(L.http_socket)} http://hub/api/health"
    with host.sudo():
        assert host.run(f"runuser -u {nginx_user} -- {probe}").stdout == "200"
        # Any other local account: refused by the directory and the socket's mode.
        other = host.run(f"runuser -u nobody -- {probe}")
        assert other.stdout != "200" and other.rc != 0, (other.rc, other.stdout, other.stderr)


@pytest.mark.checklist("PRE-NET-2")
def test_the_loopback_port_believes_no_forwarded_header(host: Any) -> None:
    """Any local process reaches 127.0.0.1:<hub_http_port>: the address it names in
    X-Forwarded-For is neither logged (fail2ban bans what is logged) nor rate-limited."""
    L = layout(host)
    forged = random_public_address()
    before = audit_length(host)
    with host.sudo():
        out = host.run(
            f"runuser -u nobody -- curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer forged' "
            f"-H 'X-Forwarded-For: {forged}' http://127.0.0.1:{L.http_port}/api/admin/users"
        )
    assert out.stdout == "401", (out.stdout, out.stderr)
    lines = audit_lines_after(host, before, "event=UnauthorizedAccess")
    assert lines, "the app logged no UnauthorizedAccess event"
    assert all(forged not in line for line in lines), lines
    assert any(" client_id=127.0.0.1 " in line for line in lines), lines


@pytest.mark.checklist("PRE-NET-2")
def test_the_socket_believes_nginxs_header(host: Any) -> None:
    """What nginx relays on the socket names the client (the same request on TCP does not)."""
    L = layout(host)
    relayed = random_public_address()
    with host.sudo():
        nginx_user = host.check_output("ps -o user= -C nginx | grep -vx root | sort -u | head -1")
    before = audit_length(host)
    with host.sudo():
        out = host.run(
            f"runuser -u {nginx_user} -- curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer forged' "
            f"-H 'X-Forwarded-For: {relayed}' --unix-socket {shlex.quote(L.http_socket)} http://hub/api/admin/users"
        )
    assert out.stdout == "401", (out.stdout, out.stderr)
    lines = audit_lines_after(host, before, f"client_id={relayed} ")
    assert lines and "event=UnauthorizedAccess" in lines[-1], lines


def test_nginx_proxies_to_the_socket(host: Any) -> None:
    L = layout(host)
    with host.sudo():
        conf = host.check_output("nginx -T 2>/dev/null")
    assert f"proxy_pass http://unix:{L.http_socket};" in conf
    assert f"proxy_pass http://127.0.0.1:{L.http_port}" not in conf


@pytest.mark.checklist("PRE-NET-4")
def test_api_throttle_per_address_and_loopback_exempt(host: Any) -> None:
    """/api/ beyond nginx's rate and burst gets nginx's 429, per client address; a TEST-NET
    address is put on lo for the test (removed afterwards), loopback sources are not counted."""
    source = f"192.0.2.{random.randint(2, 254)}"
    with host.sudo():
        if host.run(f"ip addr add {source}/32 dev lo").rc != 0:
            pytest.skip("cannot add a test address on lo here")
    try:
        # One curl, one kept-alive connection: 150 requests faster than the rate refills.
        urls = " ".join([f"-o /dev/null https://{source}/api/health"] * 150)
        codes = host.check_output(f"curl -sk --interface {source} -w '%{{http_code}}\\n' {urls}").split()
        assert "429" in codes, codes
        assert codes[:20] == ["200"] * 20, f"throttled before the burst: {codes[:20]}"
        # Again at once, bodies shown: the 429s are nginx's page, not the app's JSON.
        bodies = host.check_output(
            f"curl -sk --interface {source} " + " ".join([f"https://{source}/api/health"] * 60))
        assert "429 Too Many Requests" in bodies and "nginx" in bodies, bodies[-500:]
        # Loopback (health checks, local tools) is not counted.
        local = host.check_output(
            "curl -sk -w '%{http_code}\\n' " + " ".join(["-o /dev/null https://127.0.0.1/api/health"] * 150)).split()
        assert set(local) == {"200"}, local
    finally:
        with host.sudo():
            host.run(f"ip addr del {source}/32 dev lo")


@pytest.mark.checklist("PRE-NET-4")
def test_port_80_drops_a_slow_header_within_the_timeout(host: Any) -> None:
    """One address cannot hold port 80's connections (which 443 shares) with headers it never
    finishes: nginx closes them after client_header_timeout, set at http level, not its 60 s."""
    script = (
        "import socket, time\n"
        "s = socket.create_connection(('127.0.0.1', 80), timeout=45)\n"
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n')\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    while s.recv(4096):\n"
        "        pass\n"
        "except OSError:\n"
        "    pass\n"
        "print(round(time.monotonic() - t, 1))\n"
    )
    with host.sudo():
        conf = host.check_output("nginx -T 2>/dev/null")
    timeout = int(next(line.split()[1].rstrip("s;") for line in conf.splitlines()
                       if line.strip().startswith("client_header_timeout")))
    waited = float(host.check_output(f"{layout(host).python} -c {shlex.quote(script)}"))
    assert waited <= timeout + 5, f"port 80 held a slow header for {waited} s (client_header_timeout {timeout})"


@pytest.mark.checklist("PRE-APP-3")
def test_alert_webhook_url_is_in_no_unit_and_no_argv(host: Any) -> None:
    """The unit names the file, never the URL, and the file is the monitor's account's alone (that
    curl gets the URL from it, not from its command line: tests/platforms runs the command)."""
    L = layout(host)
    unit = "ai-orchestrator-log-monitor"
    show = host.check_output(f"systemctl show -p Environment {unit}")
    assert "ALERT_WEBHOOK=" not in show, show
    if "ALERT_WEBHOOK_CONFIG=" not in show:
        pytest.skip("no alert webhook configured on this host (hub_monitoring_alert_webhook)")
    path = show.split("ALERT_WEBHOOK_CONFIG=", 1)[1].split()[0]
    with host.sudo():
        f = host.file(path)
        assert f.user == L.user and f.mode == 0o600, (f.user, oct(f.mode))
        url = f.content_string.split('url = "', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
        unit_text = host.check_output(f"systemctl cat {unit}")
    assert url and url not in show and url not in unit_text
    with host.sudo():
        other = host.run(f"runuser -u nobody -- cat {shlex.quote(path)}")
    assert other.rc != 0
