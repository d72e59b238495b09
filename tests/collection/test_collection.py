"""The roles, playbooks and strategy shim build as the `hub.provision` collection, install into
an empty collections path, and an operator's own playbook that uses them passes a syntax check
with nothing of this repository on Ansible's search paths; the filters the roles call run from
the installed collection."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

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
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ANSIBLE_CONFIG=str(work / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(work / "collections"),
               ANSIBLE_HOME=str(work / "home"), ANSIBLE_NOCOLOR="1")
    # As a release is built: what git tracks, whatever else lies in this checkout.
    built = _run(["bash", str(ROOT / "scripts/build-collection.sh"), str(work)], work, env)
    assert built.returncode == 0, built.stdout + built.stderr
    tarball = Path(built.stdout.strip())
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


# --- Documentation: what ansible-doc and Galaxy show of the installed collection ----------------

def _filter_names() -> List[str]:
    spec = importlib.util.spec_from_file_location("hub_filters", ROOT / "plugins/filter/hub.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.FilterModule().filters())


def _doc(installed: tuple[Path, dict[str, str]], kind: str, names: List[str]) -> Dict[str, Any]:
    work, env = installed
    result = _run([str(BIN / "ansible-doc"), "-t", kind, "--json", *names], work, env)
    assert result.returncode == 0, result.stdout + result.stderr
    docs: Dict[str, Any] = json.loads(result.stdout)
    return docs


def test_every_filter_has_its_documentation(installed: tuple[Path, dict[str, str]]) -> None:
    names = _filter_names()
    # One doc file per filter, and no doc file of a filter that does not exist.
    assert sorted(p.stem for p in (ROOT / "plugins/filter").glob("*.yml")) == names
    docs = _doc(installed, "filter", [f"hub.provision.{n}" for n in names])
    assert sorted(docs) == [f"hub.provision.{n}" for n in names]
    for fqcn, doc in docs.items():
        assert doc["doc"]["short_description"] and doc["doc"]["description"], fqcn
        assert "_input" in doc["doc"]["options"], fqcn
        assert doc["return"]["_value"]["description"], fqcn
        assert f"| {fqcn}" in doc["examples"], f"{fqcn}: its examples do not call it"
    work, env = installed
    text = _run([str(BIN / "ansible-doc"), "-t", "filter", "hub.provision.hub_ufw_rule_listed"], work, env)
    assert text.returncode == 0 and "list the rule TO ACTION from SOURCE" in " ".join(text.stdout.split()), text.stdout + text.stderr
    listed = _run([str(BIN / "ansible-doc"), "-t", "filter", "-l", "hub.provision"], work, env)
    assert sorted(line.split()[0] for line in listed.stdout.splitlines() if line.startswith("hub.")) == \
        [f"hub.provision.{n}" for n in names]


def _examples(text: str) -> List[Tuple[Dict[str, Any], Any]]:
    """The tasks of an EXAMPLES block, each with the result its `# => JSON` comment states."""
    tasks = yaml.safe_load(text)
    results = [json.loads(m) for m in re.findall(r"^\s*# => (.*)$", text, flags=re.MULTILINE)]
    assert len(tasks) == len(results), text
    return list(zip(tasks, results))


def test_filter_examples_give_what_they_say(installed: tuple[Path, dict[str, str]]) -> None:
    """Every filter's EXAMPLES run from the installed collection, and each gives the result its
    comment shows."""
    work, env = installed
    tasks: List[Dict[str, Any]] = []
    expected: Dict[str, Any] = {}
    for name in _filter_names():
        doc = yaml.safe_load((ROOT / "plugins/filter" / f"{name}.yml").read_text())
        for i, (task, result) in enumerate(_examples(doc["EXAMPLES"])):
            var = f"example_{name}_{i}"
            tasks.append({**task, "register": var})
            expected[var] = result
            tasks.append({"name": f"{name}: {task['name']}", "ansible.builtin.assert": {
                "that": [f"{var}.msg == expected.{var}"], "fail_msg": f"{{{{ {var}.msg }}}} is not {{{{ expected.{var} }}}}"}})
    assert len(expected) >= len(_filter_names())
    (work / "examples.yml").write_text(yaml.safe_dump([{"name": "Filter examples", "hosts": "localhost",
                                                        "connection": "local", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    (work / "expected.json").write_text(json.dumps({"expected": expected}))
    result = _run([str(BIN / "ansible-playbook"), "-i", "localhost,", "examples.yml", "-e", "@expected.json"], work, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok={len(tasks)}" in result.stdout and "failed=0" in result.stdout, result.stdout


def test_examples_check_can_fail(installed: tuple[Path, dict[str, str]]) -> None:
    """A stated result that the filter does not give fails the run above."""
    work, env = installed
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"ansible.builtin.debug": {"msg": "{{ '3072 SHA256:x root@h (RSA)' | hub.provision.hub_ssh_keygen_bits }}"}, "register": "r"},
        {"ansible.builtin.assert": {"that": ["r.msg == 2048"]}}]}]
    (work / "wrong.yml").write_text(yaml.safe_dump(play))
    result = _run([str(BIN / "ansible-playbook"), "-i", "localhost,", "wrong.yml"], work, env)
    assert result.returncode != 0 and "failed=1" in result.stdout


def test_strategy_documented(installed: tuple[Path, dict[str, str]]) -> None:
    doc = _doc(installed, "strategy", ["hub.provision.mitogen_linear"])["hub.provision.mitogen_linear"]["doc"]
    assert "Mitogen" in doc["short_description"] and doc["description"]


def test_every_role_shows_its_entry_points(installed: tuple[Path, dict[str, str]]) -> None:
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks/main.yml").is_file())
    docs = _doc(installed, "role", [f"hub.provision.{r}" for r in roles])
    assert sorted(docs) == roles or sorted(docs) == [f"hub.provision.{r}" for r in roles], sorted(docs)
    for role in roles:
        spec = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]
        doc = docs.get(role) or docs[f"hub.provision.{role}"]
        assert sorted(doc["entry_points"]) == sorted(spec), role
        for name, entry in doc["entry_points"].items():
            assert entry["short_description"] and entry["description"], (role, name)
            assert entry["short_description"] == spec[name]["short_description"], (role, name)
    work, env = installed
    text = _run([str(BIN / "ansible-doc"), "-t", "role", "hub.provision.hub_app"], work, env)
    assert text.returncode == 0, text.stderr
    assert re.search(r"ENTRY POINT: \W*main\W* - The AI Orchestrator Hub service", text.stdout), text.stdout


# --- The execution environment (ansible-builder 3) and ansible-navigator's settings -----------

def _galaxy_version() -> str:
    return str(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])


def _pins() -> Dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.split("[")[0].strip().lower()] = version.strip()
    return pins


def test_execution_environment_renders(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """`ansible-builder create` renders the build context: ansible-core at the tested pin, the
    collections the roles use, hub.provision from the tarball of this version, Mitogen."""
    work, env = installed
    version = _galaxy_version()
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    tarball = f"hub-provision-{version}.tar.gz"
    assert ee["additional_build_files"] == [{"src": f"dist/{tarball}", "dest": "collections"}]
    shutil.copy2(ROOT / "execution-environment.yml", tmp_path)
    (tmp_path / "dist").mkdir()
    shutil.copy2(next(work.glob("hub-provision-*.tar.gz")), tmp_path / "dist" / tarball)
    result = _run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", "context"], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    pins = _pins()
    import ansible.release
    assert f'ANSIBLE_INSTALL_REFS="ansible-core=={ansible.release.__version__} ansible-runner==' in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile and "ansible-galaxy collection install" in containerfile
    assert (context / "_build/collections" / tarball).read_bytes() == (tmp_path / "dist" / tarball).read_bytes()
    galaxy = yaml.safe_load((context / "_build/requirements.yml").read_text())["collections"]
    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    assert [c for c in galaxy if c.get("type") != "file"] == wanted
    assert {"name": f"collections/{tarball}", "type": "file"} in galaxy
    assert f"mitogen=={pins['mitogen']}" in (context / "_build/requirements.txt").read_text().split()
    assert "openssh-clients [platform:rpm]" in (context / "_build/bindep.txt").read_text()


def test_collection_declares_its_controller_needs(installed: tuple[Path, dict[str, str]]) -> None:
    """An execution environment that includes hub.provision gets Mitogen and ssh through
    ansible-builder's introspection of the installed collection."""
    work, env = installed
    result = _run([str(BIN / "ansible-builder"), "introspect", str(work / "collections")], work, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"mitogen=={_pins()['mitogen']}  # from collection hub.provision" in result.stdout, result.stdout
    assert "openssh-clients [platform:rpm]  # from collection hub.provision" in result.stdout, result.stdout


def test_navigator_settings_name_what_exists() -> None:
    settings = yaml.safe_load((ROOT / "ansible-navigator.yml").read_text())["ansible-navigator"]
    assert (ROOT / settings["ansible"]["config"]["path"]).is_file()
    assert all((ROOT / entry).is_file() for entry in settings["ansible"]["inventory"]["entries"])
    assert settings["execution-environment"]["image"] == f"hub-provision-ee:{_galaxy_version()}"
    assert f"ansible-builder build -t hub-provision-ee:{_galaxy_version()}" in (ROOT / "execution-environment.yml").read_text()


def test_strategy_falls_back_and_warns_only_when_used(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """Without Mitogen the strategy is Ansible's linear one, with a warning when a play runs
    under it, not whenever the plugin is loaded (ansible-doc, ansible-test's import check); with
    Mitogen (requirements.txt) no warning."""
    work, env = installed
    (tmp_path / "ansible_mitogen").mkdir()
    (tmp_path / "ansible_mitogen/__init__.py").write_text("raise ImportError('hidden for the test')\n")
    hidden = dict(env, PYTHONPATH=str(tmp_path))
    (work / "ping.yml").write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                                   "  tasks:\n    - ansible.builtin.ping:\n")
    warning = "mitogen is not importable (hidden for the test)"
    doc = _run([str(BIN / "ansible-doc"), "-t", "strategy", "hub.provision.mitogen_linear"], work, hidden)
    assert doc.returncode == 0 and warning not in doc.stdout + doc.stderr
    for environment, warned in ((hidden, True), (env, False)):
        run = _run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", "ping.yml"], work,
                   dict(environment, ANSIBLE_STRATEGY="hub.provision.mitogen_linear"))
        assert run.returncode == 0 and "ok=1" in run.stdout, run.stdout + run.stderr
        assert (warning in run.stdout + run.stderr) == warned, run.stdout + run.stderr


def test_one_licence_everywhere() -> None:
    """galaxy.yml, LICENSE, every role's meta/main.yml and every plugin's header state MIT, and
    no file of the repository states another licence."""
    assert yaml.safe_load((ROOT / "galaxy.yml").read_text())["license"] == ["MIT"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    for meta in sorted((ROOT / "roles").glob("*/meta/main.yml")):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["license"] == "MIT", meta
    plugins = sorted((ROOT / "plugins").glob("*/*.*"))
    assert plugins
    for plugin in plugins:
        assert "MIT License (see LICENSE)" in plugin.read_text().splitlines()[2 if plugin.suffix == ".yml" else 1], plugin
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    others = re.compile(r"license:\s*(?:-\s*)?(?!MIT\b)[\w\"']|GNU General Public License|Apache License|licen[cs]e has not been chosen", re.I)
    stating = [p for p in tracked if not p.startswith("tests/collection/") and (ROOT / p).is_file()
               and not (ROOT / p).is_symlink() and others.search((ROOT / p).read_text(errors="replace"))]
    assert stating == [], stating
