"""Host baseline (role hub_base): packages, automatic security updates, the service account and
its directories, the operators' sudo policy, sysctl hardening."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import pytest

from conftest import layout

SUDOERS = "/etc/sudoers.d/ai-orchestrator-operators"
SYSCTL_FILE = "/etc/sysctl.d/60-hub-hardening.conf"

# The layout's directories (conftest.Layout attributes), their owner and group, and mode.
DIRECTORIES = [
    ("install_dir", "user", "group", 0o750),
    ("log_dir", "user", "group", 0o750),
    ("data_dir", "user", "group", 0o750),
    ("config_dir", "root", "group", 0o750),
    ("backup_dir", "user", "group", 0o750),
]

# Per-network-namespace hardening, checked everywhere (containers included).
NET_SYSCTLS = {
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.tcp_syncookies": "1",
}
# Kernel-wide hardening: only on a real or virtual machine (a container shares its host's kernel).
KERNEL_SYSCTLS = {
    "kernel.kptr_restrict": "2",
    "kernel.dmesg_restrict": "1",
    "kernel.randomize_va_space": "2",
    "fs.protected_hardlinks": "1",
    "fs.protected_symlinks": "1",
    "fs.suid_dumpable": "0",
}


def is_debian_family(host: Any) -> bool:
    return host.system_info.distribution in ("debian", "ubuntu")


def in_container(host: Any) -> bool:
    return host.run("systemd-detect-virt --container --quiet").rc == 0


@pytest.mark.checklist("PRE-ACC-1")
def test_service_account_as_the_guide(host: Any) -> None:
    L = layout(host)
    user = host.user(L.user)
    assert user.exists
    assert user.group == L.group
    assert user.shell == "/bin/false"
    assert user.home == L.install_dir
    # useradd -r: a system account, below the first regular uid of login.defs.
    uid_min = host.run("awk '$1 == \"UID_MIN\" {print $2}' /etc/login.defs").stdout.strip() or "1000"
    assert user.uid < int(uid_min)
    with host.sudo():
        shadow = host.check_output(f"getent shadow {L.user}").split(":")
    assert shadow[1].startswith(("!", "*")), "the service account must have no usable password"


@pytest.mark.checklist("PRE-ACC-1")
@pytest.mark.parametrize("path,owner,group,mode", DIRECTORIES)
def test_service_directories(host: Any, path: str, owner: str, group: str, mode: int) -> None:
    L = layout(host)
    d = host.file(getattr(L, path))
    assert d.is_directory
    assert (d.user, d.group, d.mode) == (getattr(L, owner, owner), getattr(L, group), mode)


def test_needed_packages_installed(host: Any) -> None:
    if is_debian_family(host):
        names = ["ca-certificates", "curl", "logrotate", "cron", "sudo", "acl", "python3-venv"]
    else:
        # curl is either curl or RHEL 9's curl-minimal (they conflict): asked for by its file.
        names = ["ca-certificates", "logrotate", "cronie", "sudo", "acl", "python3", "tar", "gzip"]
        assert host.run("rpm -q --whatprovides /usr/bin/curl").rc == 0, "nothing provides /usr/bin/curl"
    missing = [n for n in names if not host.package(n).is_installed]
    assert not missing


@pytest.mark.checklist("PRE-SRV-2", "MNT-SEC-M-1")
def test_security_update_source_configured(host: Any) -> None:
    """Without a security source, automatic updates have no security update to install."""
    if is_debian_family(host):
        out = host.check_output("apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE)'")
        suites = {line.split()[1] for line in out.splitlines() if line.startswith("deb ")}
        assert any(s.endswith("-security") for s in suites), suites
    else:
        repos = host.check_output("dnf -q repolist --enabled").lower()
        assert "baseos" in repos, repos


def test_epel_enabled_on_rhel(host: Any) -> None:
    """fail2ban and certbot come from EPEL on RHEL 9; its key is imported."""
    if is_debian_family(host):
        pytest.skip("EPEL is the RHEL family's")
    repos = [line.split()[0] for line in host.check_output("dnf -q repolist --enabled").splitlines() if line.strip()]
    assert "epel" in repos, repos
    assert host.run("rpm -q gpg-pubkey-3228467c").rc == 0, "EPEL 9's key is not imported"


def test_needrestart_never_asks(host: Any) -> None:
    """needrestart's question would stall apt (Ansible, unattended-upgrades): answered by config."""
    if not host.file("/etc/needrestart/conf.d").is_directory:
        pytest.skip("needrestart is not installed")
    conf = host.file("/etc/needrestart/conf.d/50-hub-provision.conf").content_string
    assert "$nrconf{restart} = 'a';" in conf


@pytest.mark.checklist("PRE-SRV-1")
def test_build_toolchain_absent(host: Any) -> None:
    """The guide's cargo build needed these; a production host does not."""
    names = ["build-essential", "pkg-config", "libssl-dev"] if is_debian_family(host) else ["openssl-devel"]
    present = [n for n in names if host.package(n).is_installed]
    assert not present


def test_cron_running(host: Any) -> None:
    svc = host.service("cron" if is_debian_family(host) else "crond")
    assert svc.is_running and svc.is_enabled


def apt_config(host: Any) -> str:
    return host.check_output("apt-config dump")


@pytest.mark.checklist("PRE-SRV-2", "MNT-SEC-W-1", "MNT-SEC-M-1")
def test_automatic_updates_turned_on(host: Any) -> None:
    if is_debian_family(host):
        assert host.package("unattended-upgrades").is_installed
        dump = apt_config(host)
        assert 'APT::Periodic::Update-Package-Lists "1";' in dump
        assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    else:
        assert host.package("dnf-automatic").is_installed
        conf = host.file("/etc/dnf/automatic.conf").content_string
        lines = {line.replace(" ", "") for line in conf.splitlines()}
        assert "apply_updates=yes" in lines
        assert "upgrade_type=security" in lines


@pytest.mark.checklist("PRE-SRV-2", "MNT-SEC-M-1")
def test_automatic_updates_security_only(host: Any) -> None:
    if not is_debian_family(host):
        pytest.skip("dnf-automatic: upgrade_type=security is checked in test_automatic_updates_turned_on")
    origins: List[str] = []
    for line in apt_config(host).splitlines():
        if line.startswith(("Unattended-Upgrade::Origins-Pattern:: ", "Unattended-Upgrade::Allowed-Origins:: ")):
            origins.append(line.split(" ", 1)[1].strip().strip(";").strip('"'))
    assert origins, "unattended-upgrades has no origin at all"
    not_security = [o for o in origins if "security" not in o.lower()]
    assert not not_security, f"non-security origins would be upgraded unattended: {not_security}"


@pytest.mark.checklist("MNT-SEC-W-1", "MNT-SEC-M-1")
def test_update_timers_active(host: Any) -> None:
    timers = ["apt-daily.timer", "apt-daily-upgrade.timer"] if is_debian_family(host) else ["dnf-automatic.timer"]
    for timer in timers:
        svc = host.service(timer)
        assert svc.is_enabled, timer
        assert svc.is_running, timer


def sudoers_json(host: Any) -> Dict[str, Any]:
    with host.sudo():
        return json.loads(host.check_output(f"cvtsudoers -f json {SUDOERS}"))


@pytest.mark.checklist("PRE-ACC-4")
def test_sudoers_dropin_valid(host: Any) -> None:
    f = host.file(SUDOERS)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o440)
    with host.sudo():
        assert host.run(f"visudo -cf {SUDOERS}").rc == 0


@pytest.mark.checklist("PRE-ACC-4")
def test_sudoers_grants_only_service_management(host: Any) -> None:
    L = layout(host)
    data = sudoers_json(host)
    aliases = data.get("Command_Aliases", {})
    specs = data["User_Specs"]
    assert len(specs) == 1
    (who,) = specs[0]["User_List"]
    group = who["usergroup"]
    assert host.group(group).exists
    granted = set()
    for cmnd_spec in specs[0]["Cmnd_Specs"]:
        assert cmnd_spec["runasusers"] == [{"username": "root"}]
        assert "runasgroups" not in cmnd_spec
        for cmd in cmnd_spec["Commands"]:
            entries = aliases[cmd["cmndalias"]] if "cmndalias" in cmd else [cmd]
            for entry in entries:
                assert not entry.get("negated")
                path, _, args = entry["command"].partition(" ")
                granted.add((os.path.basename(path), args))
    expected = {("systemctl", f"{verb} {L.service}") for verb in ("start", "stop", "restart", "reload", "status")}
    expected.add(("journalctl", f"-u {L.service}"))
    assert granted == expected


@pytest.mark.checklist("PRE-ACC-4")
def test_sudo_readonly_commands_cannot_spawn_a_shell(host: Any) -> None:
    """status and journalctl open a pager, a pager opens a shell: NOEXEC stops that."""
    L = layout(host)
    data = sudoers_json(host)
    aliases = data.get("Command_Aliases", {})
    for cmnd_spec in data["User_Specs"][0]["Cmnd_Specs"]:
        commands = []
        for cmd in cmnd_spec["Commands"]:
            commands += aliases[cmd["cmndalias"]] if "cmndalias" in cmd else [cmd]
        if any(c["command"].endswith(f"status {L.service}") or "journalctl" in c["command"] for c in commands):
            assert {"noexec": True} in cmnd_spec.get("Options", [])


@pytest.mark.checklist("PRE-SRV-1")
def test_sysctl_network_hardening(host: Any) -> None:
    assert host.file(SYSCTL_FILE).exists
    wrong = {k: host.sysctl(k) for k, v in NET_SYSCTLS.items() if str(host.sysctl(k)) != v}
    assert not wrong


@pytest.mark.checklist("PRE-SRV-1")
def test_sysctl_kernel_hardening(host: Any) -> None:
    if in_container(host):
        pytest.skip("a container shares its host's kernel: kernel-wide settings belong to the host")
    wrong = {k: host.sysctl(k) for k, v in KERNEL_SYSCTLS.items() if str(host.sysctl(k)) != v}
    assert not wrong
