"""Host firewall (role hub_firewall): ufw on the Debian family, firewalld on the RHEL family.
Default deny in, allow out; ssh (rate-limited on ufw), http and https open to the world; the
app and metrics ports only on loopback. Any other port open to every source is reported: an
opening beyond these must carry a source address (hub_firewall_extra_rules `from`)."""
from __future__ import annotations

import re
from typing import Any, List, Set, Tuple

import pytest

from conftest import host_value, layout

# The layout's loopback ports (conftest.Layout attributes).
INTERNAL_PORTS = ("http_port", "metrics_port", "node_exporter_port")
WEB_PORTS = {80, 443}


def is_debian_family(host: Any) -> bool:
    return host.system_info.distribution in ("debian", "ubuntu")


def ssh_port(host: Any) -> int:
    with host.sudo():
        out = host.check_output("sshd -T")
    ports = [int(line.split()[1]) for line in out.splitlines() if line.startswith("port ")]
    return ports[0]


def ufw_status(host: Any) -> str:
    if not is_debian_family(host):
        pytest.skip("ufw is the Debian family's firewall")
    with host.sudo():
        return host.check_output("ufw status verbose")


UFW_RULE = re.compile(r"^(?P<to>\S+(?: \(v6\))?)\s+(?P<action>ALLOW|DENY|REJECT|LIMIT)(?: IN)?\s+(?P<src>.+?)\s*(?:#.*)?$")


def ufw_rules(status: str) -> List[Tuple[str, str, str]]:
    rules = []
    for line in status.splitlines():
        m = UFW_RULE.match(line)
        if m:
            rules.append((m["to"].replace(" (v6)", ""), m["action"], m["src"].replace(" (v6)", "")))
    return rules


def ufw_world_open(host: Any) -> Set[str]:
    return {to for to, action, src in ufw_rules(ufw_status(host)) if action in ("ALLOW", "LIMIT") and src == "Anywhere"}


def firewalld(host: Any, args: str) -> str:
    if is_debian_family(host):
        pytest.skip("firewalld is the RHEL family's firewall")
    with host.sudo():
        return host.check_output(f"firewall-cmd {args}").strip()


@pytest.mark.checklist("PRE-NET-1")
def test_firewall_active_default_deny_in_allow_out(host: Any) -> None:
    if is_debian_family(host):
        status = ufw_status(host)
        assert "Status: active" in status
        assert re.search(r"^Default: deny \(incoming\), allow \(outgoing\)", status, re.M)
        assert host.service("ufw").is_enabled
    else:
        assert firewalld(host, "--state") == "running"
        assert host.service("firewalld").is_enabled
        zone = firewalld(host, "--get-default-zone")
        assert firewalld(host, f"--permanent --zone={zone} --get-target") in ("default", "REJECT", "DROP")


@pytest.mark.checklist("PRE-NET-1")
def test_firewall_logs_blocked_packets(host: Any) -> None:
    if is_debian_family(host):
        assert re.search(r"^Logging: on", ufw_status(host), re.M)
    else:
        assert firewalld(host, "--get-log-denied") != "off"


@pytest.mark.checklist("PRE-NET-1")
def test_ssh_http_https_open(host: Any) -> None:
    wanted = {ssh_port(host)} | WEB_PORTS
    if is_debian_family(host):
        open_ports = ufw_world_open(host)
        assert {f"{p}/tcp" for p in wanted} <= open_ports
    else:
        zone = firewalld(host, "--get-default-zone")
        ports = set(firewalld(host, f"--zone={zone} --list-ports").split())
        services = set(firewalld(host, f"--zone={zone} --list-services").split())
        named = {"ssh": 22, "http": 80, "https": 443}
        opened = {int(p.split("/")[0]) for p in ports if p.endswith("/tcp")} | {named[s] for s in services if s in named}
        assert wanted <= opened


@pytest.mark.checklist("PRE-NET-4")
def test_ssh_rate_limited(host: Any) -> None:
    if not is_debian_family(host):
        pytest.skip("firewalld has no per-source connection limit; fail2ban covers SSH there")
    port = ssh_port(host)
    limited = {to for to, action, src in ufw_rules(ufw_status(host)) if action == "LIMIT"}
    assert f"{port}/tcp" in limited


@pytest.mark.checklist("PRE-NET-1", "PRE-NET-2")
def test_nothing_else_open_to_the_world(host: Any) -> None:
    allowed = {ssh_port(host)} | WEB_PORTS
    if is_debian_family(host):
        extra = {to for to in ufw_world_open(host) if to not in {f"{p}/tcp" for p in allowed}}
    else:
        zone = firewalld(host, "--get-default-zone")
        extra = {p for p in firewalld(host, f"--zone={zone} --list-ports").split()
                 if int(p.split("/")[0].split("-")[0]) not in allowed or not p.endswith("/tcp")}
        services = set(firewalld(host, f"--zone={zone} --list-services").split())
        # dhcpv6-client accepts only replies from link-local DHCPv6 servers (546/udp).
        extra |= services - {"ssh", "http", "https", "dhcpv6-client"}
    assert not extra


@pytest.mark.checklist("PRE-NET-1")
def test_firewalld_keeps_the_dhcpv6_client(host: Any) -> None:
    """A host that gets its IPv6 address by DHCPv6 loses it at lease renewal without this service;
    only hub_firewall_firewalld_dhcpv6_client: false closes it."""
    zone = firewalld(host, "--get-default-zone")
    services = set(firewalld(host, f"--permanent --zone={zone} --list-services").split())
    if host_value(host, "hub_firewall_firewalld_dhcpv6_client", True) in (False, "false"):
        assert "dhcpv6-client" not in services
    else:
        assert "dhcpv6-client" in services


@pytest.mark.checklist("PRE-NET-2")
@pytest.mark.parametrize("port_name", INTERNAL_PORTS)
def test_internal_port_not_allowed(host: Any, port_name: str) -> None:
    """The app (8080), its metrics (9464) and node exporter (9100) have no opening from anywhere."""
    port = getattr(layout(host), port_name)
    if is_debian_family(host):
        rules = ufw_rules(ufw_status(host))
        assert not [r for r in rules if r[0].split("/")[0] == str(port) and r[1] in ("ALLOW", "LIMIT") and r[2] == "Anywhere"]
    else:
        zone = firewalld(host, "--get-default-zone")
        ports = firewalld(host, f"--zone={zone} --list-ports").split()
        assert not [p for p in ports if p.split("/")[0] == str(port)]


@pytest.mark.checklist("PRE-NET-2")
@pytest.mark.parametrize("port_name", INTERNAL_PORTS)
def test_internal_port_listens_on_loopback_only(host: Any, port_name: str) -> None:
    port = getattr(layout(host), port_name)
    out = host.check_output(f"ss -Hltn 'sport = :{port}'")
    addresses = [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()]
    outside = [a for a in addresses if a not in ("127.0.0.1", "[::1]", "::1")]
    assert not outside, f"port {port} listens on {outside}"
