"""No credential in any log: after the rest of the suite (this module runs last, see
conftest.pytest_collection_modifyitems), every log of the hub and of nginx, rotated ones
included, and the service's journal hold no JWT, API key, WebSocket ticket or the admin password.

The module first uses each kind of credential through nginx the way clients do (a JWT in the
header, an API key, a ticket in the /ws URL, a JWT tried in the /ws URL), so the check means
something even when it runs alone; the scan itself is proven on a planted file."""
from __future__ import annotations

import json
import re
import shlex
from typing import Any, Dict, List

import pytest

from conftest import layout

# JWT (header and payload are base64 JSON: "eyJ"), an API key, a WebSocket ticket.
PATTERNS = {
    "jwt": r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
    "api key": r"hive_[A-Za-z0-9_-]{40,}",
    "ws ticket": r"wst_[A-Za-z0-9_-]{40,}",
}
WS_CLIENT = (
    "import asyncio, ssl, sys\n"
    "import websockets\n"
    "async def main():\n"
    "    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n"
    "    try:\n"
    "        async with websockets.connect('wss://127.0.0.1/ws?' + sys.argv[1], ssl=ctx, open_timeout=10) as ws:\n"
    "            await asyncio.wait_for(ws.recv(), 10)\n"
    "    except Exception:\n"
    "        pass\n"
    "asyncio.run(main())\n"
)


def scan(host: Any, globs: List[str], journal: bool, literals: List[str]) -> Dict[str, List[str]]:
    """Credential-looking strings in the files (gzip-rotated ones too) and the journal, by kind,
    shortened so that the report itself leaks nothing usable."""
    found: Dict[str, List[str]] = {}
    files = " ".join(globs)
    sources = f"shopt -s nullglob; for f in {files}; do [ -f \"$f\" ] && zcat -f -- \"$f\"; done"
    if journal:
        sources += f"; journalctl -u {layout(host).service} --no-pager -o cat 2>/dev/null"
    checks = dict(PATTERNS)
    for index, literal in enumerate(literals):
        checks[f"literal {index}"] = re.escape(literal)
    for kind, pattern in checks.items():
        cmd = f"bash -c {shlex.quote('(' + sources + ') | grep -a -o -E -- ' + shlex.quote(pattern) + ' | sort -u | head -n 5')}"
        with host.sudo():
            out = host.run(cmd).stdout.split()
        if out:
            found[kind] = [value[:10] + "..." for value in out]
    return found


@pytest.fixture()
def used_credentials(host: Any, edge_client: Any, admin_token: str) -> List[str]:
    """Each kind of credential, used through nginx once; the API key is revoked afterwards."""
    L = layout(host)
    auth = {"Authorization": f"Bearer {admin_token}"}
    resp = edge_client.post("/api/auth/api-keys", headers=auth, json_body={"name": "log-scan"})
    assert resp.status == 201, resp.body
    key = resp.json()
    try:
        assert edge_client.get("/api/agents", headers={"X-API-Key": key["api_key"]}).status == 200
        assert edge_client.get("/api/agents", headers={"X-API-Key": key["api_key"] + "x"}).status == 401
        ticket = edge_client.post("/api/ws/ticket", headers=auth).json()["ticket"]
        for query in (f"ticket={ticket}", f"ticket={ticket}", f"token={admin_token}"):
            host.run(f"{L.python} -c {shlex.quote(WS_CLIENT)} {shlex.quote(query)}")
    finally:
        assert edge_client.delete(f"/api/auth/api-keys/{key['id']}", headers=auth).status == 204
    return [admin_token, key["api_key"], ticket]


def test_scan_finds_planted_credentials(host: Any) -> None:
    """The detector: a JWT, an API key, a ticket and a literal planted in a log-like file (one of
    them gzip-compressed, like a rotated log) are all found."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlLW9mLWEtcGxhbnRlZC10b2tlbg"
    key = "hive_" + "A" * 43
    ticket = "wst_" + "b" * 43
    with host.sudo():
        tmp = host.check_output("mktemp -d").strip()
        try:
            host.check_output(
                f"printf '%s\\n' {shlex.quote('GET /ws?ticket=' + ticket)} {shlex.quote('x-api-key ' + key)} > {tmp}/a.log"
                f" && printf '%s\\n' {shlex.quote('Bearer ' + jwt + ' planted-literal-x')} | gzip > {tmp}/b.log.1.gz"
            )
            found = scan(host, [f"{tmp}/*"], journal=False, literals=["planted-literal-x"])
            clean = scan(host, [f"{tmp}/nothing-here*"], journal=False, literals=["planted-literal-x"])
        finally:
            host.run(f"rm -rf {shlex.quote(tmp)}")
    assert set(found) == {"jwt", "api key", "ws ticket", "literal 0"}, found
    assert clean == {}


@pytest.mark.checklist("POST-AUDIT-2", "PRE-APP-3")
def test_no_credential_in_any_log(host: Any, used_credentials: List[str], admin_password: str) -> None:
    found = scan(host, [f"{layout(host).log_dir}/*", "/var/log/nginx/*"], journal=True, literals=used_credentials + [admin_password])
    named = {("admin password" if k == f"literal {len(used_credentials)}" else k): v for k, v in found.items()}
    assert not named, "credentials in the logs: " + json.dumps(named)
