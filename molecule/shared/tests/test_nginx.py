"""nginx: the TLS reverse proxy of guide step 5.1 (role hub_nginx).

Everything runs on the target: curl through the conftest ``Client``, ``openssl s_client`` for the
TLS handshake, the app's own Python (its venv has ``websockets``) for the WebSocket round trip.
What a test needs to know about the site (names, key path, body limit) it reads from the installed
site file, so the suite works on any inventory.
"""
from __future__ import annotations

import json
import random
import re
import shlex
from typing import Any, Dict, List, Optional

import pytest

from conftest import layout
from helpers import nginx_pids, wait_nginx_reloaded, wait_until

SITE_FILES = ("/etc/nginx/sites-available/ai-orchestrator", "/etc/nginx/conf.d/ai-orchestrator.conf")
RELOAD_SCRIPT = "/usr/local/sbin/ai-orchestrator-nginx-reload"
CERTBOT_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/reload-nginx"
# Mozilla "intermediate" TLS 1.2 suites: ECDHE key exchange with an AEAD cipher, nothing else.
STRONG_TLS12 = re.compile(r"^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")


# helpers -------------------------------------------------------------------------------------
def site_conf(host: Any) -> str:
    with host.sudo():
        for path in SITE_FILES:
            if host.file(path).exists:
                return host.file(path).content_string
    pytest.fail(f"no AI Orchestrator site in {SITE_FILES}")
    return ""  # unreachable, for the type checker


def directive(conf: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", conf, re.M)
    assert match, f"{name} not in the site configuration"
    return match.group(1).strip()


def server_names(host: Any) -> List[str]:
    return directive(site_conf(host), "server_name").split()


def s_client(host: Any, args: str) -> Any:
    name = shlex.quote(server_names(host)[0])
    return host.run(
        f"timeout 15 openssl s_client -connect 127.0.0.1:443 -servername {name} {args} </dev/null 2>&1"
    )


def negotiated_cipher(output: str) -> Optional[str]:
    # "New, TLSv1.3, Cipher is X" always; the "Cipher    : X" session block not always.
    match = re.search(r"(?:^|,)\s*Cipher\s*(?:is|:)\s*(\S+)", output, re.M)
    return match.group(1) if match and match.group(1) not in ("(NONE)", "0000") else None


def assert_security_headers(headers: Dict[str, str], where: str) -> None:
    """The guide's headers (HSTS included) as nginx adds them to every response, without the
    deprecated X-XSS-Protection, with a CSP that allows no inline script or style, and HSTS
    without preload (opt-in, never with a self-signed certificate)."""
    assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("x-content-type-options") == "nosniff", where
    assert "x-xss-protection" not in headers, f"{where}: X-XSS-Protection {headers.get('x-xss-protection')!r}"
    assert headers.get("referrer-policy"), where
    csp = headers.get("content-security-policy", "")
    assert "default-src" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, f"{where}: CSP {csp!r}"
    hsts = headers.get("strict-transport-security", "")
    max_age = re.search(r"max-age=(\d+)", hsts)
    assert max_age and int(max_age.group(1)) >= 31536000, f"{where}: HSTS {hsts!r}"
    assert "preload" not in hsts, f"{where}: HSTS {hsts!r}"


def loopback_source() -> str:
    """A loopback address of its own: nginx and the app keep per-address limits, so a test
    that exhausts one never throttles the other tests (which all come from 127.0.0.1)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


def size_bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2).lower()]


# service -------------------------------------------------------------------------------------
def test_nginx_running_enabled_and_config_valid(host: Any) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled
    with host.sudo():
        result = host.run("nginx -t")
    assert result.rc == 0, result.stderr
    # The packaged welcome site must not answer next to ours.
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_server_header_has_no_version(host: Any, edge_client: Any) -> None:
    resp = edge_client.get("/.env")
    assert resp.headers.get("server") == "nginx"
    assert "nginx/" not in resp.body


def test_http_redirects_to_https_keeping_host_and_path(host: Any) -> None:
    out = host.check_output(
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "
        "-H 'Host: alias.example.test' 'http://127.0.0.1/some/path?x=1'"
    )
    assert out == "301 https://alias.example.test/some/path?x=1"


def test_http2_negotiated(host: Any) -> None:
    out = host.check_output("curl -sk -o /dev/null -w '%{http_version}' https://127.0.0.1/.env")
    assert out == "2"


# certificates --------------------------------------------------------------------------------
@pytest.mark.checklist("PRE-TLS-1", "PRE-TLS-3")
def test_served_certificate_is_valid_and_matches_the_key(host: Any) -> None:
    conf = site_conf(host)
    key_path = directive(conf, "ssl_certificate_key")
    names = server_names(host)
    served = s_client(host, "-tls1_2").stdout
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", served, re.S)
    assert pem, served
    cert = shlex.quote(pem.group(0))
    # Not expired, and valid for at least another day.
    assert host.run(f"printf '%s\\n' {cert} | openssl x509 -noout -checkend 86400").rc == 0
    text = host.check_output(f"printf '%s\\n' {cert} | openssl x509 -noout -text")
    san = re.search(r"Subject Alternative Name:.*?\n\s*(.+)", text)
    assert san, text
    assert f"DNS:{names[0]}" in san.group(1), san.group(1)
    served_pub = host.check_output(f"printf '%s\\n' {cert} | openssl x509 -noout -pubkey")
    with host.sudo():
        key_pub = host.check_output(f"openssl pkey -in {shlex.quote(key_path)} -pubout")
        key_file = host.file(key_path)
        assert key_file.user == "root"
        assert key_file.mode & 0o077 == 0, oct(key_file.mode)
    assert served_pub == key_pub, "the served certificate does not match the configured key"


@pytest.mark.checklist("PRE-TLS-2")
def test_certificate_renewal_is_configured(host: Any) -> None:
    conf = site_conf(host)
    cert_path = directive(conf, "ssl_certificate")
    with host.sudo():
        acme = host.file(cert_path).is_symlink and host.file(cert_path).linked_to.startswith(
            "/etc/letsencrypt/"
        )
        if acme:
            # certbot renews from its timer (or cron) and reloads nginx through the deploy hook.
            timers = host.run("systemctl is-enabled certbot.timer certbot-renew.timer")
            cron = host.file("/etc/cron.d/ai-orchestrator-certbot")
            assert "enabled" in timers.stdout or (cron.exists and "certbot renew" in cron.content_string)
            hook = host.file(CERTBOT_HOOK)
            assert hook.exists and host.run(f"test -x {CERTBOT_HOOK}").rc == 0
        else:
            # Self-signed: each run of the role reissues it 30 days before expiry, so a managed
            # host never serves one that is about to run out.
            assert host.run(f"openssl x509 -in {shlex.quote(cert_path)} -noout -checkend 864000").rc == 0
    assert host.file(RELOAD_SCRIPT).mode == 0o755


@pytest.mark.checklist("PRE-TLS-2")
def test_renewal_hook_reloads_nginx_without_restart(host: Any) -> None:
    """The renewal dry run of the deploy hook: run it as certbot would after a renewal."""
    hook = CERTBOT_HOOK if host.file(CERTBOT_HOOK).exists else RELOAD_SCRIPT
    name = server_names(host)[0]
    before = nginx_pids(host)
    assert len(before["master"]) == 1, before
    with host.sudo():
        result = host.run(
            f"RENEWED_LINEAGE=/etc/letsencrypt/live/{shlex.quote(name)} "
            f"RENEWED_DOMAINS={shlex.quote(name)} {hook}"
        )
    assert result.rc == 0, result.stderr
    after = wait_nginx_reloaded(host, before)
    assert after["master"] == before["master"], "nginx was restarted, not reloaded"
    assert host.service("nginx").is_running
    assert host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/.env").stdout == "403"


def test_acme_challenge_answered_over_http(host: Any) -> None:
    conf = site_conf(host)
    webroot = re.search(r"location \^~ /\.well-known/acme-challenge/ \{[^}]*?root\s+([^;]+);", conf)
    assert webroot, "no ACME webroot location on port 80"
    token = f"hub-test-{random.randint(0, 10**9)}"
    path = f"{webroot.group(1)}/.well-known/acme-challenge/{token}"
    # As certbot's webroot plugin does: world-readable challenge files whatever the login umask
    # (hub_os sets 027 for logins, under which nginx's workers could not read them).
    with host.sudo():
        host.check_output(f"umask 022 && mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} && echo {token} > {path}")
    try:
        out = host.check_output(
            f"curl -s -w ' %{{http_code}}' http://127.0.0.1/.well-known/acme-challenge/{token}"
        )
    finally:
        with host.sudo():
            host.run(f"rm -f {shlex.quote(path)}")
    assert out == f"{token}\n 200"


# TLS -----------------------------------------------------------------------------------------
@pytest.mark.checklist("PRE-TLS-3")
@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_tls_versions_refused(host: Any, flag: str) -> None:
    # SECLEVEL=0 makes the client really offer the old protocol; the refusal must be the server's.
    out = s_client(host, f"{flag} -cipher 'DEFAULT:@SECLEVEL=0'").stdout
    assert "no protocols available" not in out, out
    assert "alert" in out, out  # the server refused with a TLS alert
    assert negotiated_cipher(out) is None, out


@pytest.mark.checklist("PRE-TLS-3")
@pytest.mark.parametrize("flag,protocol", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_current_tls_versions_accepted(host: Any, flag: str, protocol: str) -> None:
    out = s_client(host, flag).stdout
    assert negotiated_cipher(out), out
    assert re.search(rf"Protocol\s*:\s*{re.escape(protocol)}\b", out) or f"{protocol}," in out, out


@pytest.mark.checklist("PRE-TLS-3")
def test_tls12_negotiates_a_strong_cipher(host: Any) -> None:
    out = s_client(host, "-tls1_2").stdout
    cipher = negotiated_cipher(out)
    assert cipher and STRONG_TLS12.match(cipher), cipher


@pytest.mark.checklist("PRE-TLS-3")
# Each case offers the ECDSA and the RSA variant, so the refusal is the cipher policy's whatever
# the certificate's key type (static-RSA AES128-SHA only ever works with an RSA certificate).
@pytest.mark.parametrize(
    "cipher",
    [
        "AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384",
    ],
)
def test_weak_tls12_ciphers_refused(host: Any, cipher: str) -> None:
    out = s_client(host, f"-tls1_2 -cipher '{cipher}:@SECLEVEL=0'").stdout
    assert "no ciphers available" not in out, out
    assert "alert" in out, out
    assert negotiated_cipher(out) is None, out


# headers -------------------------------------------------------------------------------------
@pytest.mark.checklist("PRE-TLS-4")
@pytest.mark.parametrize(
    "path,status",
    [
        ("/", None),
        ("/api/health", None),
        ("/nonexistent-page", 404),
        ("/.env", 403),
        ("/.git/config", 403),
        ("/backup/app.log", 403),
        ("/etc/site.conf", 403),
    ],
)
def test_security_headers_on_every_response(edge_client: Any, path: str, status: Optional[int]) -> None:
    resp = edge_client.get(path)
    if status is not None:
        assert resp.status == status, (path, resp.status)
    assert_security_headers(resp.headers, path)


@pytest.mark.checklist("PRE-TLS-4")
def test_security_headers_on_the_http_redirect(host: Any, edge_client: Any) -> None:
    # The conftest Client, on plain HTTP (curl does not follow the redirect without -L).
    resp = type(edge_client)(host, "http://127.0.0.1").get("/anything")
    assert resp.status == 301
    assert_security_headers(resp.headers, "http redirect")


@pytest.mark.checklist("PRE-TLS-4")
def test_security_headers_on_the_websocket_handshake(edge_client: Any) -> None:
    # Without a token the app refuses the upgrade; nginx's headers must be on that answer too.
    resp = edge_client.get(
        "/ws",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
        extra="--http1.1 --max-time 5",
    )
    assert resp.status in (101, 401, 403), resp.status
    assert_security_headers(resp.headers, "/ws handshake")


@pytest.mark.checklist("PRE-TLS-4")
def test_body_over_the_limit_refused_with_headers(host: Any, edge_client: Any) -> None:
    limit = size_bytes(directive(site_conf(host), "client_max_body_size"))
    blob = f"/tmp/hub-nginx-test-body-{random.randint(0, 10**9)}"
    host.check_output(f"head -c {limit + 4096} /dev/zero > {blob}")
    try:
        resp = edge_client.post(
            "/api/tasks",
            headers={"Content-Type": "application/json"},
            extra=f"--data-binary @{blob}",
        )
    finally:
        host.run(f"rm -f {blob}")
    assert resp.status == 413
    assert_security_headers(resp.headers, "413")


# proxying ------------------------------------------------------------------------------------
def test_dotfiles_denied_but_well_known_passed_to_the_app(edge_client: Any) -> None:
    assert edge_client.get("/.htpasswd").status == 403
    # /.well-known/ is not a dotfile to hide: it reaches the app (which has nothing there).
    assert edge_client.get("/.well-known/security.txt").status == 404


def test_api_health_through_the_proxy(edge_client: Any) -> None:
    resp = edge_client.get("/api/health")
    assert resp.status == 200, resp.body
    assert resp.json()["status"] == "ok"


def test_forwarded_for_cannot_be_spoofed(host: Any, edge_client: Any) -> None:
    """nginx sends X-Forwarded-For: $remote_addr, so the address the app logs (and fail2ban bans)
    is the real peer even when the client sends a forged header. The request comes from
    127.0.0.1, an address the app trusts as a proxy: with an appended header it would log the
    forged address."""
    L = layout(host)
    forged = "203.0.113.77"
    with host.sudo():
        before = int(host.check_output(f"cat {L.audit_log} 2>/dev/null | wc -l") or 0)
    resp = edge_client.get("/api/admin/users", headers={"X-Forwarded-For": forged})
    assert resp.status == 401

    def logged() -> List[str]:
        with host.sudo():
            lines = host.check_output(f"tail -n +{before + 1} {L.audit_log}").splitlines()
        return [line for line in lines if "path=/api/admin/users" in line]

    new = wait_until(logged, "the app logs the UnauthorizedAccess event", 10)
    assert "client_id=127.0.0.1 " in new[-1] + " ", new[-1]
    assert forged not in new[-1]


WS_CLIENT = (
    "import asyncio, json, ssl, sys\n"
    "import websockets\n"
    "async def main():\n"
    "    ctx = ssl.create_default_context()\n"
    "    ctx.check_hostname = False\n"
    "    ctx.verify_mode = ssl.CERT_NONE\n"
    "    uri = 'wss://127.0.0.1/ws?' + sys.argv[1]\n"
    "    try:\n"
    "        async with websockets.connect(uri, ssl=ctx, open_timeout=10) as ws:\n"
    "            print(await asyncio.wait_for(ws.recv(), 10))\n"
    "    except Exception as exc:\n"
    "        print(json.dumps({'refused': type(exc).__name__}))\n"
    "asyncio.run(main())\n"
)
ACCESS_LOG = "/var/log/nginx/ai-orchestrator.access.log"


def _ws(host: Any, query: str) -> Dict[str, Any]:
    L = layout(host)
    result = host.run(f"{L.python} -c {shlex.quote(WS_CLIENT)} {shlex.quote(query)}")
    assert result.rc == 0, result.stderr
    event: Dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return event


def test_websocket_round_trip(host: Any, edge_client: Any, admin_token: str) -> None:
    """A single-use ticket from an authenticated POST opens /ws; the ticket and a JWT tried in
    the URL never reach nginx's access log (the /ws line is logged without its query)."""
    with host.sudo():
        before = int(host.check_output(f"cat {ACCESS_LOG} | wc -l") or 0)
    auth = {"Authorization": f"Bearer {admin_token}"}
    resp = edge_client.post("/api/ws/ticket", headers=auth)
    assert resp.status == 200, resp.body
    ticket = resp.json()["ticket"]
    assert _ws(host, f"ticket={ticket}")["type"] == "status"
    assert "refused" in _ws(host, f"ticket={ticket}"), "a ticket worked twice"
    assert "refused" in _ws(host, f"token={admin_token}"), "a JWT in the URL was accepted"

    def access_log() -> str:
        with host.sudo():
            return str(host.check_output(f"tail -n +{before + 1} {ACCESS_LOG}"))

    # nginx writes a /ws line when the connection ends, after the client has gone.
    log = wait_until(access_log, "the /ws connections' lines in the access log", 10,
                     done=lambda text: text.count("GET /ws HTTP/1.1") >= 3)
    assert ticket not in log and admin_token not in log and "/ws?" not in log


# rate limits (last: they exhaust the login budget of their own source addresses) ----------------
@pytest.mark.checklist("PRE-NET-4")
def test_login_rate_limited_by_nginx(host: Any, edge_client: Any) -> None:
    source = loopback_source()
    # GET: the app answers 405 without counting a login attempt, so only nginx's limit is hit.
    loop = (
        "for i in $(seq 1 60); do "
        f"c=$(curl -sk --interface {source} -o /dev/null -w '%{{http_code}}' "
        "https://127.0.0.1/api/auth/login); echo $c; [ \"$c\" = 429 ] && break; done"
    )
    codes = host.check_output(loop).split()
    assert "429" in codes, codes
    assert len(codes) > 2, f"throttled at once: {codes}"
    resp = edge_client.get("/api/auth/login", extra=f"--interface {source}")
    assert resp.status == 429
    # nginx's own answer (the app's 429 is JSON), with the security headers.
    assert "429 Too Many Requests" in resp.body and "nginx" in resp.body, resp.body
    assert_security_headers(resp.headers, "429")


@pytest.mark.checklist("PRE-NET-4")
def test_login_rate_limit_keys_on_the_ipv6_64(host: Any) -> None:
    """Two addresses of one IPv6 /64 share nginx's login budget (one host holds a whole /64);
    an address of another /64 has its own. Documentation-prefix addresses are put on lo for the
    test and removed afterwards."""
    if "listen [::]:443" not in site_conf(host):
        pytest.skip("nginx does not listen on IPv6 here (hub_nginx_listen_ipv6)")
    prefix = f"2001:db8:{random.randint(1, 0xffff):x}:{random.randint(1, 0xffff):x}"
    first, second = f"{prefix}::a", f"{prefix}:1:2:3:4"
    other = f"2001:db8:{random.randint(1, 0xffff):x}:{random.randint(1, 0xffff):x}::a"
    added: List[str] = []
    try:
        with host.sudo():
            for address in (first, second, other):
                if host.run(f"ip -6 addr add {address}/128 dev lo nodad").rc != 0:
                    pytest.skip("cannot add IPv6 test addresses on lo here (no CAP_NET_ADMIN or no IPv6)")
                added.append(address)

        def codes(source: str, count: int) -> List[str]:
            loop = (
                f"for i in $(seq 1 {count}); do "
                f"c=$(curl -sk -g --interface {source} -o /dev/null -w '%{{http_code}}' "
                "'https://[::1]/api/auth/login'); echo $c; [ \"$c\" = 429 ] && break; done; true"
            )
            return host.check_output(loop).split()

        exhausted = codes(first, 60)
        assert exhausted[-1] == "429" and len(exhausted) > 2, exhausted
        assert codes(second, 1) == ["429"], "another address of the same /64 got its own budget"
        assert codes(other, 1) != ["429"], "an address of another /64 was throttled"
    finally:
        with host.sudo():
            for address in added:
                host.run(f"ip -6 addr del {address}/128 dev lo")
