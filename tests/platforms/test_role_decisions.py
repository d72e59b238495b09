"""Decisions the roles make from their variables, resolved by Ansible's own templating with the
roles' defaults and vars files, under operator values other than the defaults.

render.yml (test_platforms.py) resolves each platform with the defaults; these tests vary the
inputs: what an operator sets, or what a probe of the host returns.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"


def _trusted(value: Any) -> Any:
    """Values of a vars file as Ansible loads them: their strings are templates."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    return value


def role_vars(role: str, *files: str) -> Dict[str, Any]:
    """The layout's defaults, then the role's defaults and the named vars files, in that order."""
    merged: Dict[str, Any] = {}
    for path in [ROLES / "hub_common/defaults/main.yml", ROLES / role / "defaults/main.yml",
                 *(ROLES / role / "vars" / f for f in files)]:
        merged.update(_trusted(yaml.safe_load(path.read_text()) or {}))
    return merged


def resolve(variables: Dict[str, Any], expression: str) -> Any:
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(expression))


def load_tasks(path: Path) -> List[Dict[str, Any]]:
    tasks: List[Dict[str, Any]] = yaml.safe_load(path.read_text()) or []
    return tasks


# --- hub_firewall: firewalld's dhcpv6-client -----------------------------------------------------

def test_firewalld_keeps_dhcpv6_client_by_default() -> None:
    v = role_vars("hub_firewall", "main.yml", "RedHat.yml")
    closed = resolve(v, "{{ __hub_firewall_firewalld_closed }}")
    assert "dhcpv6-client" not in closed
    assert set(closed) == {"cockpit", "ssh"}


@pytest.mark.parametrize("seed", range(5))
def test_firewalld_closes_dhcpv6_client_only_when_switched_off(seed: int) -> None:
    rng = random.Random(seed)
    others = rng.sample(["cockpit", "ssh", "mdns", "samba-client", "http"], rng.randint(0, 4))
    for keep in (True, False):
        v = role_vars("hub_firewall", "main.yml", "RedHat.yml")
        v.update(hub_firewall_firewalld_remove_services=others, hub_firewall_firewalld_dhcpv6_client=keep)
        closed = resolve(v, "{{ __hub_firewall_firewalld_closed }}")
        assert ("dhcpv6-client" in closed) is (not keep)
        assert set(closed) - {"dhcpv6-client"} == set(others)
        assert len(closed) == len(set(closed))


def test_firewalld_tasks_reopen_dhcpv6_client_and_refuse_a_contradiction() -> None:
    tasks = load_tasks(ROLES / "hub_firewall/tasks/firewalld.yml")
    removal = next(t for t in tasks if t.get("ansible.posix.firewalld", {}).get("state") == "disabled"
                   and "service" in t["ansible.posix.firewalld"])
    assert removal["loop"] == "{{ __hub_firewall_firewalld_closed }}"
    keep = next(t for t in tasks if t.get("ansible.posix.firewalld", {}).get("service") == "dhcpv6-client")
    assert keep["ansible.posix.firewalld"]["state"] == "enabled" and keep["ansible.posix.firewalld"]["permanent"]
    assert keep["when"] == "hub_firewall_firewalld_dhcpv6_client | bool"
    guard = tasks[0]["ansible.builtin.assert"]
    for contradicting in (True, False):
        v = role_vars("hub_firewall", "main.yml", "RedHat.yml")
        v.update(hub_firewall_firewalld_remove_services=["cockpit", "dhcpv6-client"],
                 hub_firewall_firewalld_dhcpv6_client=contradicting)
        assert resolve(v, "{{ " + guard["that"] + " }}") is (not contradicting)
    assert "hub_firewall_firewalld_dhcpv6_client" in guard["fail_msg"]
