"""Mandatory access control: AppArmor profile (Debian family), SELinux (RHEL family)."""
from __future__ import annotations

from typing import Any

import pytest

from conftest import layout


def family(host: Any) -> str:
    return host.system_info.distribution.lower()


def is_debian_family(host: Any) -> bool:
    return family(host) in ("debian", "ubuntu")


def apparmor_loadable(host: Any) -> bool:
    """The role's rule: a profile can be loaded where the kernel's load interface is writable.

    /sys/module/apparmor/parameters/enabled reads Y inside a container on an AppArmor kernel too,
    where securityfs is not mounted and nothing can be loaded.
    """
    with host.sudo():
        return host.run("test -w /sys/kernel/security/apparmor/.load").rc == 0


def selinux_enabled(host: Any) -> bool:
    """The role's rule: SELinux is enabled (enforcing or permissive) in the running kernel."""
    out = host.run("getenforce")
    return out.rc == 0 and out.stdout.strip() in ("Enforcing", "Permissive")


@pytest.mark.checklist("PRE-SRV-1", "PRE-ISO-3")
def test_apparmor_profile_parses(host: Any) -> None:
    L = layout(host)
    if not is_debian_family(host):
        pytest.skip("AppArmor is the Debian family's MAC; RHEL uses SELinux")
    profile = host.file(L.apparmor_profile)
    assert profile.exists and profile.user == "root" and profile.mode == 0o644
    text = profile.content_string
    assert f"profile {L.service} {{" in text  # named after the unit (hub_mac's default); enforce mode (the default), not complain
    assert "deny /etc/shadow r," in text and "deny /etc/gshadow r," in text
    with host.sudo():
        result = host.run(f"apparmor_parser --skip-kernel-load --skip-cache --skip-read-cache {L.apparmor_profile}")
    assert result.rc == 0, result.stderr


@pytest.mark.checklist("PRE-ISO-3")
def test_service_runs_confined_where_the_kernel_has_apparmor(host: Any) -> None:
    L = layout(host)
    if not is_debian_family(host):
        pytest.skip("AppArmor is the Debian family's MAC; RHEL uses SELinux")
    if not apparmor_loadable(host):
        # systemd would refuse to start the unit with a profile the kernel cannot load.
        assert not host.file(f"/etc/systemd/system/{L.service}.service.d/apparmor.conf").exists, "AppArmorProfile= set where no profile can be loaded"
        pytest.skip("no AppArmor profile can be loaded here (/sys/kernel/security/apparmor/.load is not "
                    "writable: no AppArmor or no securityfs): profile parsed only, confinement not observable")
    assert f"AppArmorProfile={L.service}" in host.file(f"/etc/systemd/system/{L.service}.service.d/apparmor.conf").content_string
    pid = host.check_output(f"systemctl show -p MainPID --value {L.service}").strip()
    assert pid != "0"
    with host.sudo():
        label = host.file(f"/proc/{pid}/attr/current").content_string.strip()
    assert label == f"{L.service} (enforce)", label


@pytest.mark.checklist("PRE-SRV-1", "PRE-ISO-3")
def test_selinux_enforcing_with_app_contexts(host: Any) -> None:
    L = layout(host)
    if is_debian_family(host):
        pytest.skip("SELinux is the RHEL family's MAC; Debian uses AppArmor")
    if not selinux_enabled(host):
        pytest.skip("SELinux is disabled in this kernel (a container on a kernel without it): "
                    "the role labels nothing there")
    assert host.check_output("getenforce").strip() == "Enforcing"
    expected = {
        L.data_dir: "var_lib_t",
        L.log_dir: "var_log_t",
        L.config_dir: "etc_t",
        f"{L.install_dir}/venv/bin": "bin_t",
    }
    for path, setype in expected.items():
        context = host.check_output(f"stat -c %C {path}")
        assert context.split(":")[2] == setype, (path, context)
