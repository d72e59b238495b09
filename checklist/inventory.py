"""The hub hosts of an inventory and its attestations, from ``ansible-inventory --list``.

    ansible-inventory -i INVENTORY --list | python3 -m checklist.inventory [--group hub] \\
        [--ssh-config FILE --control-dir DIR]

prints one JSON object: ``{"hosts": [{"name", "connection", "address", "testinfra", "layout"}],
"attestations": {...}}``. Only these few values leave the inventory: its other variables (vault
secrets among them) are never written anywhere.

``testinfra`` is the host spec for pytest's ``--hosts``: ``podman://CONTAINER`` for hosts
reached through podman (testinfra runs ``podman exec``), ``safe-ssh://NAME`` otherwise (ssh,
with the remote command's own exit status even when it is 255, which plain ``ssh://`` takes for
a connection failure: the suite runs ssh on the target to probe sshd). With
``--ssh-config FILE`` the ssh settings of every SSH-reached host (address, user, port, key, the
``-o`` options of ``ansible_ssh_common_args``/``ansible_ssh_extra_args``, host key checking) are
written to FILE as one ``Host NAME`` block each, plus multiplexing: every command of the suite
on a host shares one TCP connection (ControlMaster, ControlPath under ``--control-dir``,
ControlPersist), because the roles' firewall rate-limits new SSH connections (ufw ``LIMIT``: the 6th
new connection within 30 s is refused) and a connection per command gets the operator refused. The operator's own
``~/.ssh/config`` and the system's ``/etc/ssh/ssh_config`` are included after these blocks, so
a ProxyJump or an identity set there still applies.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

PODMAN_CONNECTIONS = {"containers.podman.podman", "podman"}
SSH_CONNECTIONS = {"ssh", "smart", "ansible.builtin.ssh", "paramiko", "paramiko_ssh"}
# How long an idle master connection stays up: longer than any pause between two commands of
# the suite; scripts/verify.sh closes the masters when it ends.
CONTROL_PERSIST = "15m"
CONNECT_TIMEOUT = 10
# Single-letter ssh flags an inventory may carry in its ssh args, as ssh_config keywords.
FLAG_OPTIONS = {
    "-4": ("AddressFamily", "inet"),
    "-6": ("AddressFamily", "inet6"),
    "-A": ("ForwardAgent", "yes"),
    "-a": ("ForwardAgent", "no"),
    "-C": ("Compression", "yes"),
    "-q": ("LogLevel", "QUIET"),
}
VALUE_FLAGS = {"-J": "ProxyJump", "-p": "Port", "-i": "IdentityFile", "-l": "User"}


class InventoryError(ValueError):
    """An inventory value the verification suite cannot turn into ssh settings."""


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


def _first(hv: Dict[str, Any], *names: str) -> Optional[Any]:
    for name in names:
        if hv.get(name) not in (None, ""):
            return hv[name]
    return None


def _plain(host: str, var: str, value: Any) -> str:
    text = str(value)
    if "{{" in text or "{%" in text:
        raise InventoryError(
            f"{host}: {var} is a Jinja template ({text!r}); ansible-inventory does not render "
            "it: set a plain value for the hosts scripts/verify.sh reaches"
        )
    return text


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y", "t")


def parse_ssh_args(host: str, var: str, text: str) -> List[Tuple[str, str]]:
    """ssh command-line options (as Ansible passes them) as (keyword, value) ssh_config pairs."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InventoryError(f"{host}: {var}: {exc}") from exc
    out: List[Tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-o"):
            option = word[2:] or (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if word[2:] else 2
            key, sep, value = option.partition("=")
            if not sep:
                key, _, value = option.partition(" ")
            if not key.strip() or not value.strip():
                raise InventoryError(f"{host}: {var}: cannot read the ssh option {option!r}")
            out.append((key.strip(), value.strip()))
            continue
        if word in FLAG_OPTIONS:
            out.append(FLAG_OPTIONS[word])
            i += 1
            continue
        flag, value = word[:2], word[2:]
        if flag in VALUE_FLAGS:
            if not value:
                if i + 1 >= len(words):
                    raise InventoryError(f"{host}: {var}: {flag} without a value")
                value = words[i + 1]
                i += 1
            out.append((VALUE_FLAGS[flag], value))
            i += 1
            continue
        raise InventoryError(
            f"{host}: {var}: the ssh argument {word!r} has no ssh_config equivalent here; "
            "use -o Keyword=value"
        )
    return out


def ssh_settings(name: str, hv: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The ssh_config lines of one inventory host, from the variables Ansible's ssh reads."""
    if _first(hv, "ansible_ssh_pass", "ansible_password") is not None:
        raise InventoryError(
            f"{name}: password login (ansible_ssh_pass) is not supported by scripts/verify.sh: "
            "it connects non-interactively with a key (BatchMode)"
        )
    pairs: List[Tuple[str, str]] = []
    address = _first(hv, "ansible_host", "ansible_ssh_host")
    pairs.append(("HostName", _plain(name, "ansible_host", address if address is not None else name)))
    user = _first(hv, "ansible_user", "ansible_ssh_user")
    if user is not None:
        pairs.append(("User", _plain(name, "ansible_user", user)))
    port = _first(hv, "ansible_port", "ansible_ssh_port")
    if port is not None:
        pairs.append(("Port", _plain(name, "ansible_port", port)))
    key = _first(hv, "ansible_ssh_private_key_file", "ansible_private_key_file")
    if key is not None:
        # Relative paths are relative to where Ansible runs, the repository's root (as here).
        path = os.path.abspath(os.path.expanduser(_plain(name, "ansible_ssh_private_key_file", key)))
        pairs += [("IdentityFile", path), ("IdentitiesOnly", "yes")]
    checking = _first(hv, "ansible_host_key_checking", "ansible_ssh_host_key_checking")
    if checking is not None and not _truthy(checking):
        pairs.append(("StrictHostKeyChecking", "no"))
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        value = hv.get(var)
        if value:
            pairs += parse_ssh_args(name, var, _plain(name, var, value))
    # ssh uses the first value it reads for a keyword: keep the first, as ssh would.
    kept: List[Tuple[str, str]] = []
    seen = set()
    for keyword, value in pairs:
        if keyword.lower() not in seen:
            seen.add(keyword.lower())
            kept.append((keyword, value))
    return kept


def ssh_config(hosts: List[Dict[str, Any]], control_dir: str) -> str:
    """An ssh_config for ``ssh -F``: one block per host, then multiplexing for all of them."""
    lines = [
        "# Written by checklist.inventory for scripts/verify.sh (one run); not to be edited.",
    ]
    for host in hosts:
        if "ssh" not in host:
            continue
        lines.append(f"Host {host['name']}")
        lines += [f"  {keyword} {value}" for keyword, value in host["ssh"]]
    lines += [
        "Host *",
        # One TCP connection per host for the whole run (see the module docstring).
        "  ControlMaster auto",
        f"  ControlPath {control_dir.rstrip('/')}/%C",
        f"  ControlPersist {CONTROL_PERSIST}",
        # Never wait for a password or a host key prompt: fail with a message instead.
        "  BatchMode yes",
        f"  ConnectTimeout {CONNECT_TIMEOUT}",
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 4",
        # What a plain `ssh` (and so Ansible) would read too: the operator's and the system's.
        "  Include ~/.ssh/config",
        "  Include /etc/ssh/ssh_config",
    ]
    return "\n".join(lines) + "\n"


# The service layout's one owner (account, directories, ports): the verification suite reads a
# host's layout as these defaults under the host's own values (molecule/shared/tests/conftest.py).
LAYOUT_DEFAULTS = Path(__file__).resolve().parent.parent / "roles" / "hub_common" / "defaults" / "main.yml"


def layout_names() -> List[str]:
    """The names of the service layout's variables (hub_common's defaults)."""
    with open(LAYOUT_DEFAULTS, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    return sorted(str(k) for k in data)


def summarise(inventory: Dict[str, Any], group: str = "hub") -> Dict[str, Any]:
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    names = layout_names()
    hosts = []
    for name in group_hosts(inventory, group):
        hv = hostvars.get(name, {})
        connection = str(hv.get("ansible_connection", "ssh"))
        address = str(_first(hv, "ansible_host", "ansible_ssh_host") or name)
        entry: Dict[str, Any] = {"name": name, "connection": connection, "address": address}
        # Only the layout's own values leave the inventory (no secret is among them).
        entry["layout"] = {k: hv[k] for k in names if k in hv}
        if connection in PODMAN_CONNECTIONS:
            entry["testinfra"] = f"podman://{address}"
        elif connection in SSH_CONNECTIONS:
            entry["ssh"] = ssh_settings(name, hv)
            user = _first(hv, "ansible_user", "ansible_ssh_user")
            become = _truthy(hv.get("ansible_become", False))
            become_user = str(hv.get("ansible_become_user") or "root")
            spec = f"safe-ssh://{name}"
            if become and str(user or "") != become_user:
                spec += "?sudo=true" + ("" if become_user == "root" else f"&sudo_user={become_user}")
            entry["testinfra"] = spec
        else:
            raise InventoryError(
                f"{name}: ansible_connection {connection!r} is not supported by the verification "
                "suite (ssh or podman)"
            )
        hosts.append(entry)
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--group", default="hub")
    parser.add_argument("--ssh-config", metavar="FILE",
                        help="write the ssh settings of the SSH-reached hosts to FILE (for ssh -F)")
    parser.add_argument("--control-dir", metavar="DIR",
                        help="directory of the multiplexing sockets (short: a socket path has "
                             "at most 104 characters)")
    parser.add_argument("file", nargs="?", help="ansible-inventory --list output (default: stdin)")
    args = parser.parse_args(argv)
    if args.ssh_config and not args.control_dir:
        parser.error("--ssh-config needs --control-dir")
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            inventory = json.load(handle)
    else:
        inventory = json.load(sys.stdin)
    try:
        out = summarise(inventory, args.group)
    except InventoryError as exc:
        print(f"inventory: {exc}", file=sys.stderr)
        return 1
    for warning in out["warnings"]:
        print(f"inventory: {warning}", file=sys.stderr)
    if not out["hosts"]:
        print(f"inventory: no host in group '{args.group}'", file=sys.stderr)
        return 1
    if args.ssh_config:
        fd = os.open(args.ssh_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(ssh_config(out["hosts"], args.control_dir))
    for host in out["hosts"]:
        host.pop("ssh", None)  # in the ssh config file, not in the summary kept under reports/
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
