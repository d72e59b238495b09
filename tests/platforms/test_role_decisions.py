"""Decisions the roles make from their variables, resolved by Ansible's own templating with the
roles' defaults and vars files, under operator values other than the defaults.

render.yml (test_platforms.py) resolves each platform with the defaults; these tests vary the
inputs: what an operator sets, or what a probe of the host returns.
"""
from __future__ import annotations

import base64
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"


@pytest.fixture(scope="module", autouse=True)
def collections() -> None:
    """The roles' filters (hub.provision.*) from the repository, as ansible-playbook finds them
    beside the playbooks (playbooks/collections)."""
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    finder = _AnsibleCollectionFinder(paths=[str(REPO / "playbooks/collections")])
    finder._install()  # pylint: disable=protected-access


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
    """The layout's defaults and derived values, then the role's defaults and the named vars files."""
    merged: Dict[str, Any] = {}
    for path in [ROLES / "hub_common/defaults/main.yml", ROLES / "hub_common/vars/main.yml", ROLES / role / "defaults/main.yml",
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


# --- hub_common / hub_monitoring: the metrics port -----------------------------------------------

# Ports that services shipped by RHEL 9 listen on by default (the first is enabled on every
# RHEL 9 server install: cockpit.socket), and ports RHEL's SELinux policy gives another service's
# type in the range the layout uses (selinux-policy corenetwork.te.in), where the hub's own port
# type could not be added.
RHEL_SERVICE_PORTS = {9090: "cockpit.socket", 9091: "prometheus pushgateway", 9093: "alertmanager",
                      3000: "grafana", 44321: "pmcd", 44322: "pmproxy", 44323: "pmproxy", 5432: "postgresql",
                      6379: "redis", 8443: "pki-tomcat"}
RHEL_SELINUX_NAMED_PORTS = {9000, 9001, 9010, 9030, 9050, 9051, 9080, 9090, 9100, 9101, 9102, 9123, 9125,
                            9150, 9180, 9191, 9220, 9221, 9222, 9225, 9280, 9281, 9282, 9290, 9291, 9292,
                            9418, 9433, 9443, 9444, 9445, 9446, 9447, 9618, 9696, 9701, 9875, 9911, 9990, 9999}


def test_the_metrics_port_is_no_common_rhel_services_and_has_no_selinux_type() -> None:
    layout = yaml.safe_load((ROLES / "hub_common/defaults/main.yml").read_text())
    port = layout["hub_metrics_port"]
    assert port not in RHEL_SERVICE_PORTS, RHEL_SERVICE_PORTS.get(port)
    assert port not in RHEL_SELINUX_NAMED_PORTS
    specs = yaml.safe_load((ROLES / "hub_common/meta/argument_specs.yml").read_text())
    assert specs["argument_specs"]["main"]["options"]["hub_metrics_port"]["default"] == port
    assert f"`hub_metrics_port` | `{port}`" in (ROLES / "hub_common/README.md").read_text()


def _monitoring_vars(listen: List[Dict[str, Any]], ps_output: str, **overrides: Any) -> Dict[str, Any]:
    v = role_vars("hub_monitoring", "main.yml", "RedHat.yml")
    v.update(ansible_facts={"tcp_listen": listen, "architecture": "x86_64"},
             __hub_monitoring_port_units={"stdout_lines": ps_output.splitlines()}, **overrides)
    return v


def _guard_message(v: Dict[str, Any]) -> str:
    task = next(t for t in load_tasks(ROLES / "hub_monitoring/tasks/ports.yml") if "ansible.builtin.assert" in t)
    return str(resolve(v, task["ansible.builtin.assert"]["fail_msg"]))


@pytest.mark.parametrize("variable", ["hub_metrics_port", "hub_node_exporter_port"])
def test_a_monitoring_port_another_unit_holds_is_refused_naming_its_variable(variable: str) -> None:
    port = random.Random(variable).randint(20000, 30000)
    listen = [{"address": "0.0.0.0", "port": port, "pid": 1, "name": "systemd", "protocol": "tcp"},
              {"address": "127.0.0.1", "port": 8080, "pid": 700, "name": "multiagent-hive", "protocol": "tcp"}]
    v = _monitoring_vars(listen, "      1 cockpit.socket\n", **{variable: port})
    assert resolve(v, "{{ __hub_monitoring_port_foreign }}") == [f"{port} (systemd, pid 1, cockpit.socket)"]
    message = _guard_message(v)
    assert message.count(variable) == 2 and f"{port} (systemd, pid 1, cockpit.socket)" in message
    other = {"hub_metrics_port", "hub_node_exporter_port"} - {variable}
    assert not any(name in message for name in other)
    # The same port switched off in hub_monitoring is not checked.
    switch = "hub_monitoring_exporter_enabled" if variable == "hub_metrics_port" else "hub_monitoring_node_exporter_enabled"
    v = _monitoring_vars(listen, "      1 cockpit.socket\n", **{variable: port, switch: False})
    assert resolve(v, "{{ __hub_monitoring_port_foreign }}") == []


def test_the_hubs_own_units_on_their_ports_pass() -> None:
    v = role_vars("hub_monitoring", "main.yml", "RedHat.yml")
    metrics, node = int(resolve(v, "{{ hub_metrics_port }}")), int(resolve(v, "{{ hub_node_exporter_port }}"))
    listen = [{"address": "127.0.0.1", "port": metrics, "pid": 812, "name": "multiagent-hive"},
              {"address": "127.0.0.1", "port": node, "pid": 813, "name": "node_exporter"},
              {"address": "0.0.0.0", "port": 9090, "pid": 1, "name": "systemd"}]
    v = _monitoring_vars(listen, "    812 ai-orchestrator-exporter.service\n    813 node_exporter.service\n")
    assert resolve(v, "{{ __hub_monitoring_port_foreign }}") == []
    # The assert's message renders to text even then (Ansible refuses an empty fail_msg).
    assert _guard_message(v).strip()
    # A process outside any unit on the metrics port is foreign.
    v = _monitoring_vars(listen, "    812 -\n    813 node_exporter.service\n")
    assert resolve(v, "{{ __hub_monitoring_port_foreign }}") == [f"{metrics} (multiagent-hive, pid 812, -)"]


# --- hub_ssh: the lockout guard and the RHEL crypto subpolicy -------------------------------------

# `sshd -T -C user=...` under RHEL 9's DEFAULT policy and Debian 12's OpenSSH 9.2 defaults.
RHEL9_SSHD_T = [
    "pubkeyacceptedalgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384,"
    "ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521,ecdsa-sha2-nistp521-cert-v01@openssh.com,ssh-ed25519,"
    "ssh-ed25519-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com",
    "casignaturealgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,ssh-ed25519,rsa-sha2-256,rsa-sha2-512",
    "authorizedkeyscommand none", "trustedusercakeys none", "authorizedkeysfile .ssh/authorized_keys"]
DEBIAN12_SSHD_T = [
    "pubkeyacceptedalgorithms ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,"
    "ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,"
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,"
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,"
    "sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256",
    "casignaturealgorithms ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,"
    "sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256",
    "authorizedkeyscommand none", "trustedusercakeys none", "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2"]


def _key_line(kind: str, tmp: Path, bits: str = "") -> str:
    path = tmp / f"{kind}{bits}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", bits] if bits else []), "-N", "", "-C", "op", "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    return Path(str(path) + ".pub").read_text().strip()


def _guard(family: str, sshd_t: List[str], files: List[str], **overrides: Any) -> Dict[str, Any]:
    """The guard's decision and message for a login user whose authorized keys files hold `files`."""
    v = role_vars("hub_ssh", "main.yml", f"{family}.yml")
    v.update(__hub_ssh_keys_config={"stdout_lines": sshd_t},
             __hub_ssh_key_texts={"results": [{"content": base64.b64encode(t.encode()).decode(), "item": f"/f{i}"}
                                              for i, t in enumerate(files)]},
             __hub_ssh_login_user={"stdout": "ops"}, __hub_ssh_login_groups={"stdout": "ops wheel"},
             ansible_facts={"getent_passwd": {"ops": ["x", "1000", "1000", "", "/home/ops", "/bin/bash"]}},
             **overrides)
    task = next(t for t in load_tasks(ROLES / "hub_ssh/tasks/guard.yml") if "ansible.builtin.assert" in t)
    v.update(_trusted(task.get("vars", {})))
    that = task["ansible.builtin.assert"]["that"]
    return {"ok": all(resolve(v, "{{ " + c + " }}") for c in that),
            "message": str(resolve(v, task["ansible.builtin.assert"]["fail_msg"])),
            "accepted": resolve(v, "{{ __hub_ssh_login_keys_accepted }}")}


@pytest.mark.parametrize(("family", "sshd_t"), [("RedHat", RHEL9_SSHD_T), ("Debian", DEBIAN12_SSHD_T)])
@pytest.mark.parametrize("bits", ["256", "384", "521"])
def test_an_ecdsa_user_key_passes_the_guard_on_every_platform(family: str, sshd_t: List[str], bits: str,
                                                             tmp_path: Path) -> None:
    result = _guard(family, sshd_t, [_key_line("ecdsa", tmp_path, bits) + "\n"])
    assert result["ok"] and result["accepted"] == [f"ecdsa-sha2-nistp{bits}"]


@pytest.mark.parametrize(("family", "sshd_t"), [("RedHat", RHEL9_SSHD_T), ("Debian", DEBIAN12_SSHD_T)])
def test_keys_of_no_accepted_type_stop_the_guard(family: str, sshd_t: List[str], tmp_path: Path) -> None:
    """An authorized_keys file that is not empty but holds no usable key: refused, the types named."""
    dsa = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7 legacy"
    lines = ["# old keys\n", dsa + "\n", "ssh-ed25519 AAAAC3broken\n"]
    result = _guard(family, sshd_t, lines)
    assert not result["ok"] and result["accepted"] == []
    assert "none of its keys (ssh-dss) has a type the new configuration accepts" in result["message"]
    result = _guard(family, sshd_t, ["# nothing but a comment\n", "ssh-ed25519 AAAAC3broken\n"])
    assert not result["ok"] and "no key among /home/ops/.ssh/authorized_keys" in result["message"]
    # A key whose only algorithm the new configuration takes away: named with what it keeps.
    rsa = _key_line("rsa", tmp_path, "2048")
    sshd_rsa_sha1 = [line.replace("pubkeyacceptedalgorithms ", "pubkeyacceptedalgorithms ssh-rsa,")
                     .replace("rsa-sha2-256,", "").replace("rsa-sha2-512,", "").replace(",rsa-sha2-512", "").replace(",rsa-sha2-256", "")
                     if line.startswith("pubkey") else line for line in sshd_t]
    result = _guard(family, sshd_rsa_sha1, [rsa])
    assert result["ok"] is (family == "Debian"), result  # RHEL's subpolicy removes ssh-rsa (SHA-1)
    if family == "RedHat":
        assert "none of its keys (ssh-rsa)" in result["message"] and "less ssh-rsa" in result["message"]
    # With one usable key among them, the login works.
    assert _guard(family, sshd_t, lines + [_key_line("ed25519", tmp_path)])["ok"]


def test_keys_sshd_reads_elsewhere_pass_the_guard() -> None:
    for extra in ("authorizedkeyscommand /usr/bin/sss_ssh_authorizedkeys", "trustedusercakeys /etc/ssh/user_ca.pub"):
        key = extra.split()[0]
        sshd_t = [line for line in RHEL9_SSHD_T if not line.startswith(key)] + [extra]
        assert _guard("RedHat", sshd_t, [])["ok"]


def test_the_rhel_subpolicy_removes_sha1_signatures_only() -> None:
    v = role_vars("hub_ssh", "main.yml", "RedHat.yml")
    v.update(ansible_managed="managed")
    from ansible.template import Templar as _T  # the role's template, rendered as Ansible does
    text = _T(loader=DataLoader(), variables=v).template(
        trust_as_template((ROLES / "hub_ssh/templates/hub-ssh.pmod.j2").read_text()))
    sign = next(line for line in str(text).splitlines() if line.startswith("sign@SSH"))
    removed = sign.split("=", 1)[1].split()
    assert removed and all(r.startswith("-") and r.endswith("-SHA1") for r in removed), sign
    assert not any("ECDSA-SHA2" in r or "EDDSA" in r or "RSA-PSS" in r for r in removed)
    # The guard takes away exactly what that line removes.
    assert set(resolve(v, "{{ __hub_ssh_policy_sign_removed.keys() | list }}")) == {r[1:] for r in removed}


# --- hub_mac: the hub's SELinux module ------------------------------------------------------------

def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: Debian's checkpolicy and semodule-utils packages (scripts/bootstrap.sh installs them)"
    return path


def compile_module(te: str, fc: str, tmp: Path) -> Path:
    """checkmodule -M -m (MLS/MCS, as RHEL's targeted policy) and semodule_package, as the role
    runs them on the host: the module package, or the compiler's complaint."""
    (tmp / "hub.te").write_text(te)
    (tmp / "hub.fc").write_text(fc)
    for argv in ([_tool("checkmodule"), "-M", "-m", "-o", "hub.mod", "hub.te"],
                 [_tool("semodule_package"), "-o", "hub.pp", "-m", "hub.mod", "-f", "hub.fc"]):
        run = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, f"{argv[0]}: {run.stdout}{run.stderr}"
    return tmp / "hub.pp"


def _render_module(v: Dict[str, Any]) -> Dict[str, str]:
    templar = Templar(loader=DataLoader(), variables=dict(v, ansible_managed="managed"))
    return {kind: str(templar.template(trust_as_template((ROLES / f"hub_mac/templates/hub-selinux.{kind}.j2").read_text())))
            for kind in ("te", "fc")}


def _declared(te: str) -> set[str]:
    return set(re.findall(r"^type (\w+);", te, flags=re.M))


@pytest.mark.parametrize("seed", range(3))
def test_the_selinux_module_compiles_for_any_layout(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    v = role_vars("hub_mac", "main.yml", "RedHat.yml")
    base = rng.choice(["/srv/hive", "/opt/ai-orchestrator", "/data/hub-x"])
    v.update(hub_install_dir=base, hub_data_dir=f"{base}-data", hub_log_dir=f"/var/log/{base.rsplit('/', 1)[1]}",
             hub_http_port=rng.randint(1025, 30000), __hub_mac_framework="selinux")
    if seed:
        v.update(hub_mac_selinux_extra_types=["cert_t"],
                 hub_mac_selinux_extra_rules=["allow hub_t cert_t:dir { getattr search };"])
    sources = _render_module(v)
    package = compile_module(sources["te"], sources["fc"], tmp_path)
    assert package.stat().st_size > 0
    te, fc = sources["te"], sources["fc"]
    declared = _declared(te)
    assert {"hub_t", "hub_exec_t", "hub_logmon_t", "hub_node_exporter_t", "hub_conf_t", "hub_var_lib_t", "hub_log_t",
            "hub_port_t", "hub_metrics_port_t", "hub_node_exporter_port_t"} <= declared
    # Every domain is entered from systemd by executing its program, which the file contexts label.
    for domain in resolve(v, "{{ __hub_mac_selinux_domain_types }}"):
        program = domain.replace("_t", "_exec_t")
        assert f"type_transition init_t {program}:process {domain};" in te
        assert re.search(rf"^\S+ -- system_u:object_r:{program}:s0$", fc, flags=re.M), (program, fc)
    # The file contexts follow the layout and name only types the module declares or requires.
    assert f"{base}/releases/[^/]+/venv/bin/multiagent-hive -- system_u:object_r:hub_exec_t:s0" in fc
    assert f"{base}-data(/.*)?    system_u:object_r:hub_var_lib_t:s0" in fc
    required = set(re.findall(r"\b(\w+_t)\b", te.split("require {", 1)[1].split("}", 1)[0]))
    fc_types = set(re.findall(r"object_r:(\w+):s0", fc))
    assert fc_types <= declared | required, fc_types - declared - required
    # The logs stay readable by fail2ban and logrotate (logfile), nginx reaches the app's port.
    assert re.search(r"^typeattribute hub_log_t .*\blogfile;", te, flags=re.M)
    assert "allow httpd_t hub_port_t:tcp_socket name_connect;" in te
    # Port types for the layout's ports, labelled by seport (a module cannot carry portcon).
    ports = resolve(v, "{{ __hub_mac_selinux_ports }}")
    assert {(int(p["port"]), p["setype"]) for p in ports} >= {(v["hub_http_port"], "hub_port_t")}
    assert not re.search(r"^\s*portcon", te, flags=re.M)


def test_a_broken_extra_rule_fails_the_compilation(tmp_path: Path) -> None:
    """The compile step is a real check: a rule the module language refuses stops it."""
    v = role_vars("hub_mac", "main.yml", "RedHat.yml")
    v.update(__hub_mac_framework="selinux", hub_mac_selinux_extra_rules=["allow hub_t undeclared_t:file read"])
    sources = _render_module(v)
    with pytest.raises(AssertionError, match="checkmodule"):
        compile_module(sources["te"], sources["fc"], tmp_path)


def test_the_module_is_installed_only_where_selinux_is_enabled_and_starts_permissive() -> None:
    defaults = yaml.safe_load((ROLES / "hub_mac/defaults/main.yml").read_text())
    assert defaults["hub_mac_selinux_module"] is True and defaults["hub_mac_selinux_domain_permissive"] is True
    tasks = load_tasks(ROLES / "hub_mac/tasks/selinux.yml")
    block = next(t for t in tasks if "block" in t)
    assert block["when"] == "__hub_mac_selinux_module_on | bool"
    names = [next(k for k in t if k.startswith(("ansible.", "community."))) for t in block["block"]]
    assert names.index("community.general.selinux_permissive") > max(
        i for i, t in enumerate(block["block"]) if t.get("ansible.builtin.command", {}).get("argv", [""])[0] == "semodule"
        and "-i" in t["ansible.builtin.command"]["argv"])
    permissive = next(t for t in block["block"] if "community.general.selinux_permissive" in t)
    assert permissive["community.general.selinux_permissive"]["permissive"] == "{{ hub_mac_selinux_domain_permissive | bool }}"
    # The module comes before the file contexts and ports that name its types.
    order = [t.get("name", "") for t in tasks]
    assert order.index(block["name"]) < order.index("PRE-ISO-3 | File contexts of the hub's paths")
    main = load_tasks(ROLES / "hub_mac/tasks/main.yml")[0]["block"]
    include = next(t for t in main if t.get("ansible.builtin.include_tasks") == "selinux.yml")
    assert "__hub_mac_selinux_enabled | bool" in include["when"]
    # Debian's framework is AppArmor: no module there.
    v = role_vars("hub_mac", "main.yml", "Debian.yml")
    assert resolve(v, "{{ __hub_mac_selinux_module_on | bool }}") is False
    assert resolve(v, "{{ __hub_mac_selinux_ports }}") == []


def test_a_new_release_is_relabelled_where_selinux_is_enabled() -> None:
    """A release built after hub_mac ran (playbooks/upgrade.yml) gets its file contexts, so its entry
    point is hub_exec_t and the app enters its domain, not unconfined_service_t."""
    build = next(t for t in load_tasks(ROLES / "hub_app/tasks/install.yml") if t.get("name") == "PRE-APP-4 | Build the release")
    names = [t["name"] for t in build["block"]]
    relabel = next(t for t in build["block"] if t.get("ansible.builtin.command", {}).get("argv", [""])[0] == "restorecon")
    assert relabel["ansible.builtin.command"]["argv"][-1] == "{{ __hub_app_release_dir }}"
    assert "selinux.status" in relabel["when"] and "'enabled'" in relabel["when"]
    pip = next(t for t in build["block"] if "ansible.builtin.pip" in t)
    assert names.index(pip["name"]) < names.index(relabel["name"])
