"""The hub hosts of an inventory and its attestations, from ``ansible-inventory --list``.

    ansible-inventory -i INVENTORY --list | python3 -m checklist.inventory [--group hub]

prints one JSON object: ``{"hosts": [{"name", "connection", "address", "testinfra"}],
"attestations": {...}}``. Only these few values leave the inventory: its other variables (vault
secrets among them) are never written anywhere.

``testinfra`` is the host spec for pytest's ``--hosts``: ``podman://CONTAINER`` for hosts
reached through podman (testinfra runs ``podman exec``: fast), ``ansible://NAME`` otherwise
(testinfra's ansible backend: ssh with the inventory's ansible_host, ansible_user, become).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List

PODMAN_CONNECTIONS = {"containers.podman.podman", "podman"}


def group_hosts(inventory: Dict[str, Any], group: str) -> List[str]:
    """Hosts of ``group`` and of its children, in inventory order, once each."""
    seen: List[str] = []
    pending = [group]
    visited = set()
    while pending:
        name = pending.pop(0)
        if name in visited:
            continue
        visited.add(name)
        entry = inventory.get(name) or {}
        for host in entry.get("hosts", []):
            if host not in seen:
                seen.append(host)
        pending.extend(entry.get("children", []))
    return seen


def summarise(inventory: Dict[str, Any], group: str = "hub") -> Dict[str, Any]:
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    hosts = []
    for name in group_hosts(inventory, group):
        hv = hostvars.get(name, {})
        connection = str(hv.get("ansible_connection", "ssh"))
        address = str(hv.get("ansible_host", name))
        spec = f"podman://{address}" if connection in PODMAN_CONNECTIONS else f"ansible://{name}"
        hosts.append(
            {"name": name, "connection": connection, "address": address, "testinfra": spec}
        )
    attestations: Any = {}
    warnings = []
    if hosts:
        first = hosts[0]["name"]
        attestations = hostvars.get(first, {}).get("hub_attestations", {}) or {}
        for other in hosts[1:]:
            theirs = hostvars.get(other["name"], {}).get("hub_attestations", {}) or {}
            if theirs != attestations:
                warnings.append(
                    f"hub_attestations of {other['name']} differ from {first}'s; using {first}'s"
                )
    return {"hosts": hosts, "attestations": attestations, "warnings": warnings}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="hub")
    parser.add_argument("file", nargs="?", help="ansible-inventory --list output (default: stdin)")
    args = parser.parse_args(argv)
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            inventory = json.load(handle)
    else:
        inventory = json.load(sys.stdin)
    out = summarise(inventory, args.group)
    for warning in out["warnings"]:
        print(f"inventory: {warning}", file=sys.stderr)
    if not out["hosts"]:
        print(f"inventory: no host in group '{args.group}'", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
