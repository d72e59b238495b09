"""Rate-limit keys per IPv6 /64, in the app (ratelimit.client_bucket) and in nginx (the
`$hub_limit_key` map of roles/hub_nginx/templates/site.conf.j2, evaluated here the way nginx
does: regexes in order, first match wins, named captures substituted into the value)."""
from __future__ import annotations

import ipaddress
import random
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from conftest import CLIENT_IP

SITE = Path(__file__).resolve().parents[2] / "roles" / "hub_nginx" / "templates" / "site.conf.j2"


def _map(variable: str) -> List[Tuple[str, str]]:
    text = SITE.read_text()
    block = re.search(r"map \S+ \$" + variable + r" \{\n(.*?)\n\}", text, re.S)
    assert block, f"no map for ${variable} in {SITE}"
    entries = []
    for line in block.group(1).splitlines():
        line = line.strip().rstrip(";")
        match = re.fullmatch(r'("(?:[^"\\]|\\.)*"|\S+)\s+("(?:[^"\\]|\\.)*"|\S+)', line)
        assert match, line
        key, value = (part[1:-1] if part.startswith('"') else part for part in match.groups())
        entries.append((key, value))
    return entries


def nginx_map(variable: str, subject: str, default_vars: Optional[dict] = None) -> str:
    """What nginx's map gives for `subject` (exact strings first, then regexes in order)."""
    entries = _map(variable)
    default = ""
    for key, value in entries:
        if key == "default":
            default = value
        elif not key.startswith("~") and key == subject:
            return value
    for key, value in entries:
        if key.startswith("~"):
            flags = re.I if key.startswith("~*") else 0
            pattern = key[2:] if key.startswith("~*") else key[1:]
            found = re.search(pattern.replace("(?<", "(?P<"), subject, flags)
            if found:
                groups = found.groupdict()
                return re.sub(r"\$(\w+)", lambda m, groups=groups: groups.get(m.group(1)) or (default_vars or {}).get(m.group(1), m.group(0)), value)
    return re.sub(r"\$(\w+)", lambda m: (default_vars or {}).get(m.group(1), m.group(0)), default)


def expected_prefix(address: str) -> str:
    net = ipaddress.IPv6Network((int(ipaddress.IPv6Address(address)) >> 64 << 64, 64))
    return ":".join(f"{h:x}" for h in [int(x, 16) for x in net.network_address.exploded.split(":")[:4]])


def _addresses(seed: int, count: int) -> List[str]:
    """IPv6 addresses with zero runs in every position, the hard cases of '::' compression."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        groups = [rnd.choice([0, 0, 0, 1, rnd.randrange(65536)]) for _ in range(8)]
        out.append(str(ipaddress.IPv6Address(int("".join(f"{g:04x}" for g in groups), 16))))
    return out


EDGE = [
    "::", "::1", "::2:3:4:5:6", "::2:3:4:5:6:7", "1::", "1::2", "1::3:4:5:6:7", "1:2::", "1:2::3:4:5:6",
    "1:2:3::", "1:2:3::4:5", "1:2:3:4::", "1:2:3:4::5", "1:0:0:4:5::", "2001:db8::1", "2001:db8:0:1::1",
    "2001:db8:1:2:3:4:5:6", "fe80::1", "2001:db8::5:0:0:1", "1:0:2:0:0:0:0:3",
]


def test_nginx_limit_key_is_the_64() -> None:
    wrong = [(a, nginx_map("hub_limit_key", a)) for a in EDGE + _addresses(7, 3000)
             if nginx_map("hub_limit_key", a) != expected_prefix(a)]
    assert not wrong, wrong[:5]


def test_nginx_limit_key_ipv4_keys_on_the_address() -> None:
    assert nginx_map("hub_limit_key", "203.0.113.7") == "$binary_remote_addr"
    assert nginx_map("hub_limit_key", "::ffff:203.0.113.7") == "$binary_remote_addr"


def test_nginx_map_reader_can_fail() -> None:
    """The detector itself: a prefix from the wrong hextets is noticed."""
    assert expected_prefix("2001:db8:1:2::9") == "2001:db8:1:2"
    assert expected_prefix("2001:db8:1:2::9") != expected_prefix("2001:db8:1:3::9")
    assert nginx_map("hub_limit_key", "2001:db8:1:2::9") != nginx_map("hub_limit_key", "2001:db8:1:3::9")


def test_app_bucket_is_the_64() -> None:
    from multiagent_hive.ratelimit import client_bucket

    for address in EDGE + _addresses(11, 500):
        net = ipaddress.IPv6Network(client_bucket(address))
        assert net.prefixlen == 64
        assert [int(h, 16) for h in net.network_address.exploded.split(":")[:4]] == [
            int(h, 16) for h in expected_prefix(address).split(":")
        ]
    assert client_bucket("2001:db8:1:2::1") == client_bucket("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_bucket("2001:db8:1:2::1") != client_bucket("2001:db8:1:3::1")
    assert client_bucket("203.0.113.7") == "203.0.113.7"
    assert client_bucket("::ffff:203.0.113.7") == "203.0.113.7"


def test_app_rate_limit_shared_by_a_64(settings: Any) -> None:
    """Addresses of one /64 share the general bucket; another /64 has its own."""
    from starlette.testclient import TestClient

    from multiagent_hive.api import create_app

    app = create_app(settings)
    app.general_limit.burst = 3.0
    app.general_limit.rate = 0.001
    try:
        codes = []
        for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:a:b:c:d", "2001:db8:1:2::4"):
            codes.append(TestClient(app, client=(host, 5000)).get("/api/agents").status_code)
        assert codes == [401, 401, 401, 429]
        assert TestClient(app, client=("2001:db8:1:3::1", 5000)).get("/api/agents").status_code == 401
        assert TestClient(app, client=(CLIENT_IP, 5000)).get("/api/agents").status_code == 401
    finally:
        app.audit.close()
        app.store.close()


@pytest.mark.parametrize(
    "uri,args,logged",
    [
        ("/ws", "ticket=wst_abc", ""),
        ("/ws", "token=eyJ.x.y", ""),
        ("/api/agents", "query=db&limit=5", "?query=db&limit=5"),
        ("/api/agents", "", ""),
        ("/api/agents", "access_token=eyJ.x.y", "?[redacted]"),
        ("/api/agents", "limit=5&api_key=hive_x", "?[redacted]"),
        ("/x", "Ticket=1", "?[redacted]"),
    ],
)
def test_nginx_access_log_query(uri: str, args: str, logged: str) -> None:
    query = nginx_map("hub_log_query", args, {"args": args})
    assert nginx_map("hub_log_args", uri, {"hub_log_query": query}) == logged
