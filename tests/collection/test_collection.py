"""The roles, playbooks and strategy shim build as the `hub.provision` collection, install into
an empty collections path, and an operator's own playbook that uses them passes a syntax check
with nothing of this repository on Ansible's search paths; the filters the roles call run from
the installed collection."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

OPERATOR_PLAYBOOK = """\
- name: The operator's own playbook, using the collection's roles by their full names
  hosts: hub
  become: true
  roles:
    - role: hub.provision.hub_common
    - role: hub.provision.hub_base
    - role: hub.provision.hub_os
    - role: hub.provision.hub_firewall
    - role: hub.provision.hub_ssh
    - role: hub.provision.hub_app
    - role: hub.provision.hub_backup
    - role: hub.provision.hub_nginx
    - role: hub.provision.hub_fail2ban
    - role: hub.provision.hub_mac
    - role: hub.provision.hub_monitoring

- name: The collection's own site playbook
  ansible.builtin.import_playbook: hub.provision.site
"""


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("collection")
    # An empty ansible.cfg: neither the repository's roles_path nor its strategy_plugins apply.
    (work / "ansible.cfg").write_text("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(work / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(work / "collections"),
               ANSIBLE_HOME=str(work / "home"), ANSIBLE_NOCOLOR="1")
    built = _run([str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT), "--output-path", str(work)], work, env)
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = work.glob("hub-provision-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "roles/hub_app/tasks/main.yml" in names and "app/pyproject.toml" in names
    assert not [n for n in names if n.startswith((".venv", ".git/", "molecule/", "reports/", "playbooks/collections"))]
    # --no-deps: the `ansible` package in the venv already carries the dependencies.
    inst = _run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(work / "collections"),
                 str(tarball)], work, env)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return work, env


def test_installed_layout(installed: tuple[Path, dict[str, str]]) -> None:
    work, _ = installed
    root = work / "collections" / "ansible_collections" / "hub" / "provision"
    for path in ("roles/hub_app/defaults/main.yml", "roles/hub_common/defaults/main.yml", "playbooks/site.yml", "plugins/strategy/mitogen_linear.py",
                 "meta/runtime.yml", "app/src/multiagent_hive/__init__.py", "plugins/filter/hub.py"):
        assert (root / path).is_file(), path


def test_operator_playbook_syntax(installed: tuple[Path, dict[str, str]]) -> None:
    work, env = installed
    (work / "playbook.yml").write_text(OPERATOR_PLAYBOOK)
    (work / "hosts.yml").write_text("all:\n  children:\n    hub:\n      hosts:\n        hub-1:\n")
    result = _run([str(BIN / "ansible-playbook"), "-i", "hosts.yml", "playbook.yml", "--syntax-check"], work, env)
    assert result.returncode == 0, result.stdout + result.stderr


FILTER_PLAYBOOK = """\
- name: The collection's filters, as its roles call them
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Parse sshd -V and ufw output, decide a package install
      ansible.builtin.assert:
        that:
          - "'OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17' | hub.provision.hub_openssh_version == '9.2'"
          - "['22/tcp                     LIMIT IN    Anywhere                   # ssh'] | hub.provision.hub_ufw_rules == ['22/tcp|LIMIT IN|Anywhere']"
          - "['nginx'] | hub.provision.hub_packages_missing(['curl'])"
          - "not (['nginx'] | hub.provision.hub_packages_missing(['nginx']))"
"""


def test_installed_filters_run(installed: tuple[Path, dict[str, str]]) -> None:
    """A syntax check evaluates no filter: the roles' filters (hub.provision.*, by their full
    names) are called, from the installed collection alone."""
    work, env = installed
    assert (work / "collections/ansible_collections/hub/provision/plugins/filter/hub.py").is_file()
    (work / "filters.yml").write_text(FILTER_PLAYBOOK)
    result = _run([str(BIN / "ansible-playbook"), "-i", "localhost,", "filters.yml"], work, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok=1" in result.stdout and "failed=0" in result.stdout


def test_syntax_check_fails_for_a_missing_role(installed: tuple[Path, dict[str, str]]) -> None:
    """The syntax check above can fail: a role the collection does not have is an error."""
    work, env = installed
    (work / "bad.yml").write_text("- hosts: all\n  roles: [hub.provision.hub_nonexistent]\n")
    result = _run([str(BIN / "ansible-playbook"), "-i", "localhost,", "bad.yml", "--syntax-check"], work, env)
    assert result.returncode != 0
    assert "hub_nonexistent" in result.stdout + result.stderr
