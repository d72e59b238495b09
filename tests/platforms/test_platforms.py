"""Every role's variables and templates, resolved for the facts of each supported platform.

No machine here runs Ubuntu 22.04 or RHEL 9, so render.yml resolves, on the controller, what the
roles would choose on each platform: the facts come from fixtures/ (shaped like `setup` output),
the probes' outputs from probes.yml. These tests check the choices per platform (packages,
services, paths, firewall and MAC backends) and the guards that keep a role from running what a
platform cannot do (curl against curl-minimal, SELinux tasks where SELinux is disabled, EPEL
packages without EPEL).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ROLES = REPO / "roles"

DEBIAN_FAMILY = ["debian-11", "debian-12", "debian-13", "ubuntu-22.04", "ubuntu-24.04"]
RHEL_FAMILY = ["rocky-9", "rocky-9-container", "rhel-9"]
PLATFORMS = DEBIAN_FAMILY + RHEL_FAMILY
# RHEL 9 hosts that get their packages from elsewhere than a subscription-manager registration.
RHEL_REPO_SOURCES = ["rhel-9-rhui", "rhel-9-satellite", "rhel-9-no-crb"]

# RHEL 9 installs (and its container images) ship the -minimal/-single variant; asking for the
# package on the left is a dnf depsolve conflict with the one on the right.
RHEL9_CONFLICTS = {"curl": "curl-minimal", "libcurl": "libcurl-minimal", "coreutils": "coreutils-single"}
# Packages RHEL 9 has only in EPEL.
EPEL_ONLY = {"fail2ban", "fail2ban-server", "fail2ban-firewalld", "fail2ban-systemd", "certbot",
             "python3-certbot-nginx", "golang-github-prometheus-node-exporter"}


@pytest.fixture(scope="session")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("platforms")
    env = dict(os.environ, ANSIBLE_CONFIG=str(HERE / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    playbook = Path(sys.executable).parent / "ansible-playbook"
    cmd = [str(playbook) if playbook.exists() else "ansible-playbook",
           "-i", str(HERE / "inventory.yml"), str(HERE / "render.yml"),
           "-e", json.dumps({"out_dir": str(out), "platform_roles": sorted(p.parent.parent.name for p in ROLES.glob("*/tasks/main.yml")),
                             "platform_os_roles": sorted({p.parent.parent.name for p in ROLES.glob("*/vars/*.yml")
                                                          if p.name != "main.yml"})})]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def resolved(reports: dict[str, dict[str, Any]], platform: str) -> dict[str, Any]:
    return reports[platform]["resolved"]


def all_packages(report: dict[str, Any]) -> list[str]:
    """Every package list a role installs from on this platform."""
    names: list[str] = []
    for key, value in report["resolved"].items():
        if key.endswith("_packages") and isinstance(value, list):
            names += value
    for role_vars in report["os_vars"].values():
        for key, value in role_vars.items():
            if "packages" in key and isinstance(value, list):
                names += [v for v in value if isinstance(v, str)]
    return names


def load_tasks(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text()) or []


def walk(tasks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from walk(task.get(key, []))


def conditions(task: dict[str, Any]) -> str:
    when = task.get("when", [])
    return " and ".join(when if isinstance(when, list) else [str(when)])


def test_every_platform_resolves_and_renders_every_template(reports: dict[str, dict[str, Any]]) -> None:
    assert sorted(reports) == sorted(PLATFORMS + ["debian-12-no-security"] + RHEL_REPO_SOURCES)
    templates = sorted(str(p.relative_to(ROLES)) for p in ROLES.glob("*/templates/*.j2"))
    for platform, report in reports.items():
        assert sorted(report["rendered"]) == templates, platform
        for name, text in report["rendered"].items():
            assert text.strip(), (platform, name)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_backends_services_and_paths(reports: dict[str, dict[str, Any]], platform: str) -> None:
    r = resolved(reports, platform)
    debian = platform in DEBIAN_FAMILY
    expected = {
        "hub_firewall_backend": "ufw" if debian else "firewalld",
        "hub_mac_framework": "apparmor" if debian else "selinux",
        "hub_ssh_service": "ssh" if debian else "sshd",
        "hub_base_cron_service": "cron" if debian else "crond",
        "hub_base_auto_updates_timers": ["apt-daily.timer", "apt-daily-upgrade.timer"] if debian else ["dnf-automatic.timer"],
        "hub_monitoring_node_exporter_method": "package" if debian else "release",
        "hub_monitoring_node_exporter_service": "prometheus-node-exporter" if debian else "node_exporter",
        "hub_monitoring_node_exporter_defaults_file": ("/etc/default/prometheus-node-exporter" if debian
                                                       else "/etc/sysconfig/node_exporter"),
        "hub_nginx_site_path": ("/etc/nginx/sites-available/ai-orchestrator" if debian
                                else "/etc/nginx/conf.d/ai-orchestrator.conf"),
        "hub_fail2ban_banaction": "iptables-multiport" if debian else "firewallcmd-rich-rules",
        "hub_mac_apparmor_profile_path": "/etc/apparmor.d/opt.ai-orchestrator.multiagent-hive",
        "hub_monitoring_arch": "amd64",
    }
    assert {k: r[k] for k in expected} == expected
    jail = reports[platform]["rendered"]["hub_fail2ban/templates/ai-orchestrator.local.j2"]
    assert f"banaction = {expected['hub_fail2ban_banaction']}" in jail
    assert ("python3-venv" in r["hub_base_packages"]) is debian


@pytest.mark.parametrize("platform", RHEL_FAMILY)
def test_rhel_package_lists_do_not_conflict_with_the_minimal_variants(
        reports: dict[str, dict[str, Any]], platform: str) -> None:
    """RHEL 9 ships curl-minimal: `curl` in a package list is a depsolve error there."""
    report = reports[platform]
    conflicting = sorted({p for p in all_packages(report) if p in RHEL9_CONFLICTS})
    assert not conflicting, f"conflict with {[RHEL9_CONFLICTS[p] for p in conflicting]} on {platform}"
    # curl is still wanted: by the file either package provides.
    assert "/usr/bin/curl" in resolved(reports, platform)["hub_base_packages"]
    assert {"tar", "gzip"} <= set(resolved(reports, platform)["hub_base_packages"])


@pytest.mark.parametrize("platform", RHEL_FAMILY)
def test_epel_is_enabled_where_packages_come_from_it(reports: dict[str, dict[str, Any]], platform: str) -> None:
    report = reports[platform]
    r = resolved(reports, platform)
    wanted = sorted(set(all_packages(report)) & EPEL_ONLY)
    assert wanted, "fail2ban is expected to come from EPEL on RHEL 9"
    defaults = yaml.safe_load((ROLES / "hub_base/defaults/main.yml").read_text())
    assert defaults["hub_base_epel_enabled"] is True and defaults["hub_base_crb_enabled"] is True
    assert r["hub_base_epel_gpg_fingerprint"] == "FF8AD1344597106ECE813B918A3872BF3228467C"
    assert r["hub_base_epel_gpg_key"].endswith("RPM-GPG-KEY-EPEL-9")
    assert r["hub_base_crb_error"] == ""
    if platform == "rhel-9":
        # RHEL carries no epel-release; a registered host's CodeReady Builder comes through
        # subscription-manager (redhat.repo is its file).
        assert r["hub_base_epel_release"] == "https://dl.fedoraproject.org/pub/epel/epel-release-latest-9.noarch.rpm"
        assert r["hub_base_crb_method"] == "subscription-manager"
        assert r["hub_base_crb_repo"] == "codeready-builder-for-rhel-9-x86_64-rpms"
    else:
        assert r["hub_base_epel_release"] == "epel-release"
        assert (r["hub_base_crb_method"], r["hub_base_crb_repo"]) == ("dnf", "crb")
    # The tasks: sources.yml comes before the packages, installs the release, imports the key.
    main = [t.get("ansible.builtin.import_tasks") for t in walk(load_tasks(ROLES / "hub_base/tasks/main.yml"))]
    assert main.index("sources.yml") < main.index("packages.yml")
    sources = list(walk(load_tasks(ROLES / "hub_base/tasks/sources.yml")))
    installs = [t for t in sources if t.get("ansible.builtin.dnf", {}).get("name") == "{{ __hub_base_epel_release_effective }}"]
    keys = [t for t in sources if "ansible.builtin.rpm_key" in t]
    assert installs and keys
    assert keys[0]["ansible.builtin.rpm_key"]["fingerprint"] == "{{ __hub_base_epel_gpg_fingerprint_effective }}"


@pytest.mark.parametrize(("host", "method", "repo"), [
    ("rhel-9-rhui", "dnf", "codeready-builder-for-rhel-9-rhui-rpms"),
    ("rhel-9-satellite", "dnf", "ACME_Red_Hat_CodeReady_Linux_Builder_for_x86_64_RHEL_9_x86_64_RPMs")])
def test_crb_comes_from_the_repositories_the_host_has(
        reports: dict[str, dict[str, Any]], host: str, method: str, repo: str) -> None:
    """Not registered (RHUI on a cloud's pay-as-you-go image, a Satellite's .repo file): the host's
    own CodeReady Builder id, enabled with dnf config-manager, never subscription-manager."""
    r = resolved(reports, host)
    assert (r["hub_base_crb_method"], r["hub_base_crb_repo"], r["hub_base_crb_error"]) == (method, repo, "")
    assert r["hub_base_security_source_found"] is True
    sources = list(walk(load_tasks(ROLES / "hub_base/tasks/sources.yml")))
    enable = next(t for t in sources if "community.general.dnf_config_manager" in t)
    assert enable["community.general.dnf_config_manager"]["name"] == ["{{ __hub_base_crb_repo_effective }}"]
    assert "__hub_base_crb_method == 'dnf'" in enable["when"]
    rhsm = next(t for t in sources if "community.general.rhsm_repository" in t)
    assert "__hub_base_crb_method == 'subscription-manager'" in rhsm["when"]


def test_a_host_without_crb_stops_naming_the_variables(reports: dict[str, dict[str, Any]]) -> None:
    r = resolved(reports, "rhel-9-no-crb")
    assert r["hub_base_crb_method"] == "none"
    assert "hub_base_crb_repo" in r["hub_base_crb_error"] and "hub_base_crb_enabled" in r["hub_base_crb_error"]
    sources = list(walk(load_tasks(ROLES / "hub_base/tasks/sources.yml")))
    probe = next(t for t in sources if t.get("register") == "__hub_base_dnf_repolist_all")
    assert probe["ansible.builtin.command"]["argv"] == ["dnf", "-q", "repolist", "--all"]
    assert probe["changed_when"] is False and probe["check_mode"] is False
    guard = next(t for t in sources if t.get("ansible.builtin.assert", {}).get("fail_msg") == "{{ __hub_base_crb.error }}")
    assert sources.index(probe) < sources.index(guard)
    assert all(sources.index(guard) < sources.index(t) for t in sources
               if "community.general.dnf_config_manager" in t or "community.general.rhsm_repository" in t)


def test_debian_family_needs_no_epel(reports: dict[str, dict[str, Any]]) -> None:
    for platform in DEBIAN_FAMILY:
        r = resolved(reports, platform)
        assert (r["hub_base_epel_release"], r["hub_base_crb_method"]) == ("", "none"), platform
        assert not set(all_packages(reports[platform])) & {"fail2ban-server", "epel-release"}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_selinux_tasks_only_where_selinux_is_enabled(reports: dict[str, dict[str, Any]], platform: str) -> None:
    report = reports[platform]
    selinux_on = report["facts"]["selinux"].get("status") == "enabled"
    r = report["resolved"]
    assert r["hub_mac_selinux_enabled"] is selinux_on
    if platform == "rocky-9-container":
        assert not r["hub_mac_selinux_enabled"], "SELinux is disabled in the registry scenario's container"
    if platform in ("rocky-9", "rhel-9"):
        assert r["hub_mac_selinux_enabled"]


def test_every_selinux_include_is_guarded() -> None:
    """semanage and setsebool fail where SELinux is disabled: each include of selinux.yml is guarded."""
    includes = []
    for main in ROLES.glob("*/tasks/main.yml"):
        for task in walk(load_tasks(main)):
            target = task.get("ansible.builtin.include_tasks") or task.get("ansible.builtin.import_tasks")
            if target == "selinux.yml":
                includes.append((main.parent.parent.name, conditions(task)))
    assert {role for role, _ in includes} >= {"hub_mac", "hub_nginx"}
    for role, when in includes:
        assert "selinux" in when.replace("selinux.yml", "") and (
            "__hub_mac_selinux_enabled" in when or "['status']" in when or ".status" in when), (role, when)
    for role in ("hub_mac", "hub_nginx"):
        # No other task file reaches the selinux modules unguarded.
        for path in (ROLES / role / "tasks").glob("*.yml"):
            if path.name == "selinux.yml":
                continue
            for task in walk(load_tasks(path)):
                modules = [k for k in task if k.startswith(("ansible.posix.se", "community.general.se"))]
                assert not modules, (path, modules)


def test_apparmor_is_decided_by_the_profile_load_interface() -> None:
    text = (ROLES / "hub_mac/tasks/apparmor.yml").read_text()
    assert "parameters/enabled" not in text.replace("# /sys/module/apparmor/parameters/enabled", "")
    main_vars = yaml.safe_load((ROLES / "hub_mac/vars/main.yml").read_text())
    assert main_vars["__hub_mac_apparmor_load_interface"] == "/sys/kernel/security/apparmor/.load"
    tests = (REPO / "molecule/shared/tests/test_mac.py").read_text()
    assert "/sys/kernel/security/apparmor/.load" in tests


@pytest.mark.parametrize("platform", DEBIAN_FAMILY)
def test_apparmor_profile_covers_what_python_reads(reports: dict[str, dict[str, Any]], platform: str) -> None:
    profile = reports[platform]["rendered"]["hub_mac/templates/apparmor-profile.j2"]
    rules = {line.strip() for line in profile.splitlines()}
    version = reports[platform]["facts"]["python"]["version"]
    # /usr/lib/python3.X/sitecustomize.py is a link into /etc/python3.X (Debian and Ubuntu).
    assert "/etc/python3*/** r," in rules
    assert "/usr/bin/python3* mrix," in rules and "/usr/lib/python3*/** r," in rules
    assert f"python{version['major']}.{version['minor']}".startswith("python3")
    assert "/usr/lib/python3/dist-packages/** r," in rules
    assert "@{PROC}/@{pid}/stat r," in rules and "@{PROC}/sys/vm/overcommit_memory r," in rules
    # The venv of a versioned release as well as the older layout.
    assert any("/opt/ai-orchestrator/releases/*/venv/bin/* rix," in rule for rule in rules)
    assert "profile ai-orchestrator {" in profile  # enforce mode


@pytest.mark.parametrize("platform", PLATFORMS)
def test_security_update_source_is_recognised(reports: dict[str, dict[str, Any]], platform: str) -> None:
    r = resolved(reports, platform)
    assert r["hub_base_security_source_found"] is True, platform
    if platform in DEBIAN_FAMILY:
        codename = reports[platform]["facts"]["distribution_release"]
        assert r["hub_base_apt_security_suites"] == [f"{codename}-security"]
    else:
        assert any("baseos" in repo for repo in r["hub_base_dnf_repos_enabled"])
        assert "repo" not in r["hub_base_dnf_repos_enabled"]


def test_a_host_without_a_security_source_is_flagged(reports: dict[str, dict[str, Any]]) -> None:
    r = resolved(reports, "debian-12-no-security")
    assert r["hub_base_security_source_found"] is False
    assert r["hub_base_apt_security_suites"] == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_os_and_nginx_decisions_from_their_probes(reports: dict[str, dict[str, Any]], platform: str) -> None:
    """hub_os's login.defs keys, files and cron paths that differ (render.yml's probe: /etc/issue.net
    as the role writes it, /etc/issue in the wrong mode), the deny lists to remove; nginx's version."""
    r = resolved(reports, platform)
    assert [d["key"] for d in r["hub_os_login_defs_drift"]] == [
        "UMASK", "SHA_CRYPT_MIN_ROUNDS", "SHA_CRYPT_MAX_ROUNDS", "PASS_MAX_DAYS", "PASS_MIN_DAYS", "PASS_WARN_AGE",
        "ENCRYPT_METHOD"]
    # YESCRYPT only where login.defs' shadow knows it (4.10 and later); SHA512 elsewhere, never DES.
    method = {d["key"]: d["value"] for d in r["hub_os_login_defs_drift"]}["ENCRYPT_METHOD"]
    assert method == ("YESCRYPT" if platform in ("debian-12", "debian-13", "ubuntu-24.04") else "SHA512"), method
    assert all(isinstance(d["value"], str) for d in r["hub_os_login_defs_drift"])
    assert "/etc/issue" in r["hub_os_files_drift"] and "/etc/issue.net" not in r["hub_os_files_drift"]
    assert "/etc/cron.allow" in r["hub_os_files_drift"]
    assert r["hub_os_cron_paths_to_fix"] == ["/etc/crontab", "/etc/cron.d", "/etc/cron.hourly", "/etc/cron.daily",
                                             "/etc/cron.weekly", "/etc/cron.monthly"]
    assert r["hub_os_deny_files_present"] == ["/etc/cron.deny"]
    assert re.fullmatch(r"1\.(18|2[0-9])\.[0-9]+", r["hub_nginx_version"]), r["hub_nginx_version"]


@pytest.mark.parametrize("platform", DEBIAN_FAMILY)
def test_unattended_upgrades_security_origins(reports: dict[str, dict[str, Any]], platform: str) -> None:
    text = reports[platform]["rendered"]["hub_base/templates/52hub-unattended-upgrades.j2"]
    if platform.startswith("ubuntu"):
        assert '"${distro_id}:${distro_codename}-security";' in text
    else:
        assert "codename=${distro_codename}-security,label=Debian-Security" in text


SHELL_SHEBANG = re.compile(r"#!\s*(?:/usr)?/bin/(?:env\s+)?(?:ba)?sh\b")
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def shellcheck(paths: list[Path]) -> str:
    """shellcheck's findings on these files ("" when clean)."""
    binary = str(SHELLCHECK) if SHELLCHECK.exists() else "shellcheck"
    run = subprocess.run([binary, "--format=gcc", *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode in (0, 1), run.stderr
    return run.stdout


def shell_scripts(texts: dict[str, str]) -> dict[str, str]:
    return {name: text for name, text in texts.items() if SHELL_SHEBANG.match(text.split("\n", 1)[0])}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_shell_templates_pass_shellcheck_as_rendered(
        reports: dict[str, dict[str, Any]], platform: str, tmp_path: Path) -> None:
    """The roles' shell templates are Jinja: shellcheck reads what a host of this platform gets."""
    scripts = shell_scripts(reports[platform]["rendered"])
    assert "hub_backup/templates/backup-ai-orchestrator.j2" in scripts, sorted(scripts)
    paths = []
    for name, text in sorted(scripts.items()):
        path = tmp_path / name.replace("/", "__")
        path.write_text(text)
        paths.append(path)
    findings = shellcheck(paths).replace(str(tmp_path) + "/", "")
    assert findings == "", f"{platform}:\n{findings}"


def test_role_shell_files_pass_shellcheck() -> None:
    files = [p for p in sorted(ROLES.glob("*/files/*")) if p.is_file()]
    texts = {str(p): p.read_text(errors="replace") for p in files}
    scripts = [Path(name) for name in shell_scripts(texts)]
    if scripts:
        assert shellcheck(scripts) == ""


# The web edge: what nginx, the app's unit and the MAC profile render for the app's socket, the
# limits and the headers.
def http_level(site: str) -> str:
    """The site file's text outside its server blocks: nginx's http context."""
    return site.split("\nserver {", 1)[0]


def server_blocks(site: str) -> list[str]:
    return ["server {" + block for block in site.split("\nserver {")[1:]]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_nginx_reaches_the_app_over_its_socket_only(reports: dict[str, dict[str, Any]], platform: str) -> None:
    rendered = reports[platform]["rendered"]
    layout = yaml.safe_load((ROLES / "hub_common" / "defaults" / "main.yml").read_text())
    socket = layout["hub_http_socket"]
    proxy = rendered["hub_nginx/templates/proxy.conf.j2"]
    assert re.findall(r"^proxy_pass (\S+);", proxy, re.M) == [f"http://unix:{socket}"], proxy
    env = rendered["hub_app/templates/environment.j2"]
    assert f"\nSERVER_SOCKET={socket}\n" in env
    unit = rendered["hub_app/templates/ai-orchestrator.service.j2"]
    group = "www-data" if platform in DEBIAN_FAMILY else "nginx"
    directory = socket.rsplit("/", 1)[0]
    # Not RuntimeDirectory=: systemd would give the directory back to the service's group.
    assert f"\nReadWritePaths=-{directory}\n" in unit and not re.search(r"^RuntimeDirectory", unit, re.M), unit
    tmpfiles = rendered["hub_app/templates/tmpfiles.conf.j2"]
    assert re.findall(r"^d .*$", tmpfiles, re.M) == [f"d {directory} 2750 ai-orchestrator {group} -"], tmpfiles
    profile = rendered["hub_mac/templates/apparmor-profile.j2"]
    assert f"  {socket} rw,\n" in profile and f"  {directory}/ r,\n" in profile


@pytest.mark.parametrize("platform", ["debian-12", "rocky-9"])
def test_nginx_limits_the_api_and_port_80(reports: dict[str, dict[str, Any]], platform: str) -> None:
    site = reports[platform]["rendered"]["hub_nginx/templates/site.conf.j2"]
    http = http_level(site)
    for directive in ("limit_conn hub_conn_net 100;", "limit_conn_status 429;",
                      "client_header_timeout 15s;", "client_body_timeout 15s;"):
        assert f"\n{directive}\n" in http, f"{directive} not at http level"
        assert all(directive not in block for block in server_blocks(site)), f"{directive} overridden in a server"
    assert "limit_req_zone $hub_api_limit_key zone=hub_api_net:10m rate=20r/s;" in http
    assert re.search(r"geo \$hub_api_limit_exempt \{\s*default 0;\s*127\.0\.0\.0/8 1;\s*::1 1;\s*\}", http), http
    https = next(b for b in server_blocks(site) if "listen 443" in b)
    api = re.search(r"location /api/ \{(.*?)\n    \}", https, re.S)
    assert api and "limit_req zone=hub_api_net burst=40 nodelay;" in api.group(1), https
    assert "ai-orchestrator-proxy.conf" in api.group(1) and "ai-orchestrator-headers.conf" in api.group(1)
    login = re.search(r"location = /api/auth/login \{(.*?)\n    \}", https, re.S)
    assert login and "zone=hub_login_net" in login.group(1) and "hub_api_net" not in login.group(1)


@pytest.mark.parametrize("platform", ["debian-12", "rocky-9"])
def test_security_headers_have_no_inline_script_no_xss_auditor_and_no_default_preload(
        reports: dict[str, dict[str, Any]], platform: str) -> None:
    headers = reports[platform]["rendered"]["hub_nginx/templates/headers.conf.j2"]
    names = re.findall(r'^add_header (\S+) "([^"]*)" always;', headers, re.M)
    found = dict(names)
    assert "X-XSS-Protection" not in found, headers
    csp = found["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert re.search(r"(^|; )default-src 'none'(;|$)", csp) and "frame-ancestors 'none'" in csp, csp
    hsts = found["Strict-Transport-Security"]
    assert "preload" not in hsts and "includeSubDomains" in hsts, hsts


def render_with(tmp_path: Path, templates: list[str], extra: dict[str, Any]) -> dict[str, str]:
    """Templates of the roles rendered with their defaults (and the layout's) under extra vars."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"ansible.builtin.include_vars": {"file": str(ROLES / role / sub / "main.yml")}}
            for role, sub in (("hub_common", "defaults"), ("hub_common", "vars"),
                              ("hub_monitoring", "defaults"), ("hub_monitoring", "vars"),
                              ("hub_nginx", "defaults"), ("hub_nginx", "vars"))
        ] + [
            {"ansible.builtin.copy": {
                "content": "{{ lookup('ansible.builtin.template', '%s') }}" % (ROLES / name),
                "dest": str(tmp_path / name.replace("/", "__")), "mode": "0644"}}
            for name in templates
        ],
    }]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(HERE / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    run = subprocess.run(
        [str(playbook_bin) if playbook_bin.exists() else "ansible-playbook", "-i", "localhost,", "-c", "local",
         str(playbook), "-e", json.dumps(extra)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return {name: (tmp_path / name.replace("/", "__")).read_text() for name in templates}


def test_the_webhook_url_is_in_no_unit_and_on_no_command_line(tmp_path: Path) -> None:
    """A webhook URL with the characters curl's config syntax escapes: it reaches curl through
    its configuration file only, never through the unit's environment or curl's argv."""
    url = 'https://hooks.example/services/T0/B1/' + secrets_token() + '?q="x"\\y'
    rendered = render_with(tmp_path, [
        "hub_monitoring/templates/ai-orchestrator-log-monitor.service.j2",
        "hub_monitoring/templates/alert-webhook.curl.j2",
        "hub_monitoring/templates/ai-orchestrator-alert.j2",
    ], {"hub_monitoring_alert_webhook": url, "hub_monitoring_alert_max_per_minute": 10,
        "hub_log_dir": "/var/log/ai-orchestrator"})
    unit = rendered["hub_monitoring/templates/ai-orchestrator-log-monitor.service.j2"]
    assert url not in unit and "ALERT_WEBHOOK=" not in unit, unit
    assert re.findall(r"^Environment=ALERT_WEBHOOK\S*", unit, re.M) == [
        "Environment=ALERT_WEBHOOK_CONFIG=/etc/ai-orchestrator-alert-webhook.curl"], unit

    # The rendered command, run with a stand-in curl that records its argv and what its config says.
    config = tmp_path / "alert-webhook.curl"
    config.write_text(rendered["hub_monitoring/templates/alert-webhook.curl.j2"])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "curl").write_text(
        "#!/usr/bin/env python3\n"
        "import json, shlex, sys\n"
        "args = sys.argv[1:]\n"
        "conf = open(args[args.index('--config') + 1]).read()\n"
        "url = [shlex.split(l.split('=', 1)[1])[0] for l in conf.splitlines() if l.startswith('url')][0]\n"
        f"json.dump({{'argv': args, 'url': url}}, open({str(tmp_path / 'curl.json')!r}, 'w'))\n")
    (bindir / "curl").chmod(0o755)
    (bindir / "logger").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "logger").chmod(0o755)
    script = tmp_path / "alert"
    script.write_text(rendered["hub_monitoring/templates/ai-orchestrator-alert.j2"])
    run = subprocess.run(["/bin/sh", str(script), "subject"], input="text", text=True, capture_output=True,
                         env={"PATH": f"{bindir}:/usr/bin:/bin", "ALERT_WEBHOOK_CONFIG": str(config)}, timeout=60)
    assert run.returncode == 0, run.stderr
    called = json.loads((tmp_path / "curl.json").read_text())
    assert called["url"] == url, called
    assert not any(url in arg or "hooks.example" in arg for arg in called["argv"]), called["argv"]


def secrets_token() -> str:
    import secrets
    return secrets.token_urlsafe(18)


@pytest.mark.parametrize("extra, named", [
    ({"hub_nginx_hsts_preload": True}, "hub_nginx_tls_mode is selfsigned"),
    ({"hub_nginx_hsts_preload": True, "hub_nginx_tls_mode": "acme", "hub_nginx_acme_email": "ops@example.org",
      "hub_nginx_hsts_include_subdomains": False}, "hub_nginx_hsts_include_subdomains true (False)"),
    ({"hub_nginx_hsts_preload": True, "hub_nginx_tls_mode": "acme", "hub_nginx_acme_email": "ops@example.org",
      "hub_nginx_hsts_max_age": 86400}, "at least 31536000 (86400)"),
])
def test_hsts_preload_is_refused_where_the_preload_lists_would_not_take_it(
        tmp_path: Path, extra: dict[str, Any], named: str) -> None:
    """Only the check runs (--tags pre-tls-4 in check mode; it comes before anything is installed)."""
    play = tmp_path / "play.yml"
    play.write_text("- hosts: localhost\n  gather_facts: true\n  roles: [hub_nginx]\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STRATEGY="linear", ANSIBLE_ROLES_PATH=str(ROLES))
    binary = Path(sys.executable).parent / "ansible-playbook"
    run = subprocess.run(
        [str(binary) if binary.exists() else "ansible-playbook", "-i", "localhost,", "-c", "local", "--check",
         "--tags", "pre-tls-4", str(play), "-e", json.dumps(extra)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0 and "Check the HSTS preload request" in out, out[-3000:]
    assert named in out, out[-3000:]
    assert "Install the site and its snippets" not in out
