"""checklist.inventory: testinfra host specs and the ssh config scripts/verify.sh connects with."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from checklist import inventory


def listed(**hostvars: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "_meta": {"hostvars": hostvars},
        "all": {"children": ["hub"]},
        "hub": {"hosts": list(hostvars)},
    }


def test_ssh_hosts_get_their_connection_settings_and_sudo_only_when_becoming_another_user() -> None:
    out = inventory.summarise(listed(
        a={"ansible_host": "192.0.2.10", "ansible_user": "deploy", "ansible_become": True,
           "ansible_port": 2222, "ansible_ssh_private_key_file": "~/.ssh/fleet",
           "ansible_ssh_common_args": "-o ProxyJump=ops@bastion.example.com -o 'ServerAliveInterval 5'"},
        b={"ansible_user": "root", "ansible_become": "true",
           "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -J jump -4",
           "ansible_ssh_extra_args": "-oLogLevel=ERROR", "ansible_host_key_checking": False},
        c={"ansible_user": "deploy", "ansible_become": True, "ansible_become_user": "svc"},
    ))
    specs = {h["name"]: h["testinfra"] for h in out["hosts"]}
    assert specs == {"a": "safe-ssh://a?sudo=true", "b": "safe-ssh://b", "c": "safe-ssh://c?sudo=true&sudo_user=svc"}
    ssh = {h["name"]: dict(h["ssh"]) for h in out["hosts"]}
    assert ssh["a"] == {
        "HostName": "192.0.2.10", "User": "deploy", "Port": "2222",
        "IdentityFile": os.path.expanduser("~/.ssh/fleet"), "IdentitiesOnly": "yes",
        "ProxyJump": "ops@bastion.example.com", "ServerAliveInterval": "5",
    }
    # ansible_host_key_checking: false comes first; ssh keeps a keyword's first value.
    assert list(ssh["b"]) == ["HostName", "User", "StrictHostKeyChecking", "ProxyJump",
                              "AddressFamily", "LogLevel"]
    assert ssh["b"]["HostName"] == "b" and ssh["b"]["ProxyJump"] == "jump"


def test_relative_key_paths_are_made_absolute_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = inventory.summarise(listed(h={"ansible_ssh_private_key_file": ".cache/ssh/id"}))
    assert dict(out["hosts"][0]["ssh"])["IdentityFile"] == str(tmp_path / ".cache/ssh/id")


@pytest.mark.parametrize("hostvars, message", [
    ({"ansible_ssh_private_key_file": "{{ lookup('env', 'X') }}/id"}, "Jinja template"),
    ({"ansible_ssh_common_args": "-o"}, "cannot read the ssh option"),
    ({"ansible_ssh_common_args": "-X"}, "no ssh_config equivalent"),
    ({"ansible_ssh_common_args": "-o 'unclosed"}, "No closing quotation"),
    ({"ansible_ssh_pass": "secret"}, "password login"),
    ({"ansible_connection": "winrm"}, "not supported"),
])
def test_values_that_cannot_become_ssh_settings_are_named(hostvars: Dict[str, Any], message: str) -> None:
    with pytest.raises(inventory.InventoryError) as err:
        inventory.summarise(listed(h=hostvars))
    assert message in str(err.value) and "secret" not in str(err.value)


def test_ssh_config_multiplexes_every_host_and_keeps_the_operators_config() -> None:
    out = inventory.summarise(listed(
        a={"ansible_host": "192.0.2.10"},
        ct={"ansible_connection": "containers.podman.podman", "ansible_host": "hub-ct"},
    ))
    text = inventory.ssh_config(out["hosts"], "/tmp/hubv.x/")
    lines = [line.strip() for line in text.splitlines()]
    assert "Host ct" not in lines, "podman hosts need no ssh settings"
    assert lines.index("Host a") < lines.index("HostName 192.0.2.10") < lines.index("Host *")
    for wanted in ("ControlMaster auto", "ControlPath /tmp/hubv.x/%C", "BatchMode yes",
                   f"ControlPersist {inventory.CONTROL_PERSIST}",
                   "Include ~/.ssh/config", "Include /etc/ssh/ssh_config"):
        assert wanted in lines


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_ssh_reads_the_written_config(tmp_path: Path) -> None:
    """`ssh -G` (print the configuration, connect nowhere) resolves a host through the file."""
    listing = tmp_path / "inventory.json"
    listing.write_text(json.dumps(listed(
        hub1={"ansible_host": "192.0.2.10", "ansible_user": "deploy", "ansible_port": 2222,
              "ansible_ssh_common_args": "-o StrictHostKeyChecking=no"},
    )))
    config = tmp_path / "ssh_config"
    done = subprocess.run(
        ["python3", "-m", "checklist.inventory", "--ssh-config", str(config),
         "--control-dir", str(tmp_path), str(listing)],
        capture_output=True, text=True, check=True, cwd=inventory.__file__.rsplit("/checklist/", 1)[0],
    )
    summary = json.loads(done.stdout)
    assert summary["hosts"][0]["testinfra"] == "safe-ssh://hub1"
    assert "ssh" not in summary["hosts"][0], "ssh settings stay out of the kept summary"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    resolved = subprocess.run(["ssh", "-G", "-F", str(config), "hub1"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
    for wanted in ("hostname 192.0.2.10", "user deploy", "port 2222", "controlmaster auto",
                   "batchmode yes", "stricthostkeychecking false"):
        assert wanted in resolved, wanted
    # ssh -G prints the socket path with %C already expanded.
    assert any(line.startswith(f"controlpath {tmp_path}/") for line in resolved), resolved


def test_main_exits_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "inventory.json"
    listing.write_text(json.dumps(listed(h={"ansible_ssh_common_args": "-X"})))
    assert inventory.main([str(listing)]) == 1
    assert "inventory: h: ansible_ssh_common_args" in capsys.readouterr().err
