"""The service layout's one owner (roles/hub_common): what it accepts and what it refuses.

The role's checks run on the controller (connection local, no facts): an inventory that still
sets a variable the layout replaced fails early, naming the variable and its replacement, and a
malformed layout (relative path, bad name, clashing ports) is refused before any role runs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAY = """\
- name: The layout alone
  hosts: localhost
  gather_facts: false
  roles:
    - role: hub_common
  tasks:
    - name: Show the layout
      ansible.builtin.debug:
        msg: "{{ hub_service_user }} {{ hub_install_dir }} {{ hub_http_port }}"
"""


def run(tmp_path: Path, extra: Dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STRATEGY="linear", ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    binary = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [str(binary) if binary.exists() else "ansible-playbook", "-i", "localhost,", "-c", "local",
         str(tmp_path / "play.yml"), "-e", json.dumps(extra)],
        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_defaults_pass(tmp_path: Path) -> None:
    result = run(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ai-orchestrator /opt/ai-orchestrator 8080" in result.stdout


def test_an_override_is_read(tmp_path: Path) -> None:
    result = run(tmp_path, {"hub_service_user": "hive", "hub_install_dir": "/srv/hive"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hive /srv/hive 8080" in result.stdout


def test_removed_variables_fail_early_with_their_replacement(tmp_path: Path) -> None:
    result = run(tmp_path, {"hub_app_user": "x", "hub_mac_app_install_dir": "/y", "hub_monitoring_app_env_file": "/z"})
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "hub_app_user is no longer read: set hub_service_user (role hub_common) instead" in out
    assert "hub_mac_app_install_dir is no longer read: set hub_install_dir (role hub_common) instead" in out
    assert "hub_monitoring_app_env_file is no longer read" in out
    assert "Show the layout" not in out


@pytest.mark.parametrize("extra, named", [
    ({"hub_install_dir": "srv/hive"}, "hub_install_dir"),
    ({"hub_log_dir": "/var/log/hub/"}, "hub_log_dir"),
    ({"hub_service_user": "Hive User"}, "hub_service_user"),
    ({"hub_metrics_port": 8080}, "ports distinct"),
    ({"hub_http_port": 70000}, "ports distinct"),
    ({"hub_http_socket": "/var/run/hub.sock"}, "hub_http_socket"),
    ({"hub_http_socket": "run/hub/http.sock"}, "hub_http_socket"),
    ({"hub_http_socket": "/run/" + "h" * 100 + "/http.sock"}, "hub_http_socket"),
])
def test_malformed_layouts_are_refused(tmp_path: Path, extra: Dict[str, Any], named: str) -> None:
    result = run(tmp_path, extra)
    assert result.returncode != 0, result.stdout
    assert named in " ".join(result.stdout.split())


def test_every_replaced_variable_is_gone_from_the_roles() -> None:
    """No role declares or reads a variable the layout replaced (only hub_common names them)."""
    with open(ROOT / "roles" / "hub_common" / "vars" / "main.yml", encoding="utf-8") as handle:
        removed = yaml.safe_load(handle)["__hub_common_removed_variables"]
    layout = yaml.safe_load((ROOT / "roles" / "hub_common" / "defaults" / "main.yml").read_text())
    assert all(str(v).split()[0] in layout for v in removed.values())
    found = []
    for path in sorted((ROOT / "roles").rglob("*")):
        if path.is_file() and "hub_common" not in path.parts and path.suffix in (".yml", ".j2", ".md"):
            text = path.read_text(encoding="utf-8")
            found += [f"{path.relative_to(ROOT)}: {name}" for name in removed if re.search(rf"\b{name}\b", text)]
    assert found == []
