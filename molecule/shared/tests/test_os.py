"""Operating system baseline (role hub_os, beyond the guide: PRE-HARD-3 to PRE-HARD-9), on the
model of dev-sec's os_hardening. What a container cannot have (kernel modules, the kernel's
audit subsystem: both belong to the container host's kernel) is skipped there with the reason;
on a real or virtual machine every check runs."""
from __future__ import annotations

import re
from typing import Any, Dict

import pytest

from conftest import layout

BLACKLISTED = ["cramfs", "freevxfs", "jffs2", "hfs", "hfsplus", "udf", "dccp", "sctp", "rds", "tipc"]
KERNEL_SKIP = "a container shares its host's kernel: {what} belong(s) to the container host"


def in_container(host: Any) -> bool:
    return host.run("systemd-detect-virt --container --quiet").rc == 0


def login_defs(host: Any) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for line in host.file("/etc/login.defs").content_string.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            values[parts[0]] = parts[1]
    return values


@pytest.mark.checklist("PRE-HARD-3")
def test_login_defs_policy(host: Any) -> None:
    defs = login_defs(host)
    assert defs.get("UMASK") == "027"
    assert int(defs["SHA_CRYPT_MIN_ROUNDS"]) >= 5000
    assert int(defs["SHA_CRYPT_MAX_ROUNDS"]) >= int(defs["SHA_CRYPT_MIN_ROUNDS"])
    assert 0 < int(defs["PASS_MAX_DAYS"]) <= 365
    assert int(defs["PASS_MIN_DAYS"]) >= 1
    assert int(defs["PASS_WARN_AGE"]) >= 7


@pytest.mark.checklist("PRE-HARD-3")
def test_new_login_gets_umask_027(host: Any) -> None:
    """A login shell gets login.defs' UMASK (through /etc/profile.d: Debian enables no pam_umask)."""
    with host.sudo():
        out = host.run("su -l root -s /bin/sh -c umask")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() in ("0027", "027"), out.stdout


@pytest.mark.checklist("PRE-HARD-4")
def test_core_dumps_off(host: Any) -> None:
    limits = host.file("/etc/security/limits.d/10-hub-coredump.conf").content_string
    assert re.search(r"^\*\s+hard\s+core\s+0\s*$", limits, re.M)
    with host.sudo():
        # A login session gets the hard limit 0 from PAM limits.
        assert host.check_output("su -l root -s /bin/sh -c 'ulimit -H -c'").strip() == "0"
        # Services get systemd's default limit.
        assert host.check_output("systemctl show --property DefaultLimitCORE --value").strip() == "0"
        coredump = host.check_output("systemd-analyze cat-config systemd/coredump.conf")
    settings = dict(
        line.split("=", 1) for line in coredump.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings.get("Storage") == "none" and settings.get("ProcessSizeMax") == "0"


@pytest.mark.checklist("PRE-HARD-4")
def test_suid_programs_dump_no_core(host: Any) -> None:
    if in_container(host):
        pytest.skip(KERNEL_SKIP.format(what="fs.suid_dumpable, a kernel-wide sysctl,"))
    assert host.sysctl("fs.suid_dumpable") == 0


@pytest.mark.checklist("PRE-HARD-5")
def test_unused_modules_blacklisted_in_config(host: Any) -> None:
    conf = host.file("/etc/modprobe.d/hub-blacklist.conf").content_string
    for module in BLACKLISTED:
        assert re.search(rf"^install\s+{module}\s+/(usr/)?bin/(false|true)\s*$", conf, re.M), module
        assert re.search(rf"^blacklist\s+{module}\s*$", conf, re.M), module


@pytest.mark.checklist("PRE-HARD-5")
def test_unused_modules_cannot_load(host: Any) -> None:
    if in_container(host):
        pytest.skip(KERNEL_SKIP.format(what="kernel modules"))
    with host.sudo():
        for module in BLACKLISTED:
            # -n: what modprobe would do, without doing it: the install command, not insmod.
            out = host.run(f"modprobe -n -v {module}")
            assert re.search(r"install /(usr/)?bin/(false|true)", out.stdout + out.stderr), (module, out.stdout, out.stderr)
        loaded = host.check_output("cut -d' ' -f1 /proc/modules").split()
    assert not set(BLACKLISTED) & set(loaded), set(BLACKLISTED) & set(loaded)


@pytest.mark.checklist("PRE-HARD-6")
def test_su_restricted_to_group(host: Any) -> None:
    pam = host.file("/etc/pam.d/su").content_string
    lines = [line.split() for line in pam.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    wheel = [line for line in lines if len(line) > 2 and line[0] == "auth" and line[2] == "pam_wheel.so"]
    assert wheel and wheel[0][1] == "required", wheel
    group = next(arg.split("=", 1)[1] for arg in wheel[0] if arg.startswith("group="))
    assert host.group(group).exists
    # pam_wheel sits before the password prompt (pam_unix): a non-member is refused outright.
    auth = [line[2] for line in lines if line[0] == "auth" and len(line) > 2]
    assert "pam_unix.so" not in auth or auth.index("pam_wheel.so") < auth.index("pam_unix.so")


@pytest.mark.checklist("PRE-HARD-6")
def test_su_refused_to_non_member(host: Any) -> None:
    """A user outside the group gets 'Permission denied' from su even before a password."""
    with host.sudo():
        out = host.run("runuser -u nobody -- su -c true root </dev/null")
    assert out.rc != 0
    assert "permission denied" in (out.stdout + out.stderr).lower(), out.stderr


@pytest.mark.checklist("PRE-HARD-7")
def test_cron_and_at_allow_lists(host: Any) -> None:
    for name in ("/etc/cron.allow", "/etc/at.allow"):
        f = host.file(name)
        assert f.exists and (f.user, f.group) == ("root", "root") and f.mode & 0o037 == 0, name
        assert "root" in f.content_string.split()
    for name in ("/etc/cron.deny", "/etc/at.deny"):
        assert not host.file(name).exists, name
    crontab = host.file("/etc/crontab")
    assert crontab.mode & 0o077 == 0
    for d in ("/etc/cron.d", "/etc/cron.daily", "/etc/cron.hourly", "/etc/cron.weekly", "/etc/cron.monthly"):
        assert host.file(d).mode & 0o077 == 0, d


@pytest.mark.checklist("PRE-HARD-7")
def test_crontab_refused_to_unlisted_user(host: Any) -> None:
    if host.run("command -v crontab").rc != 0:
        pytest.skip("no crontab command on the target")
    with host.sudo():
        out = host.run("runuser -u nobody -- crontab -l")
    assert out.rc != 0
    assert "not allowed" in (out.stdout + out.stderr).lower(), out.stderr


SYSTEM_WATCHED = ["/etc/sudoers", "/etc/sudoers.d", "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d"]


def watched(host: Any) -> list:
    """What auditd watches: the layout's config and install directories, and the system's files."""
    L = layout(host)
    return [L.config_dir, L.install_dir] + SYSTEM_WATCHED


@pytest.mark.checklist("PRE-HARD-8")
def test_audit_rules_file(host: Any) -> None:
    L = layout(host)
    if in_container(host):
        pytest.skip(KERNEL_SKIP.format(what="the kernel's audit subsystem (not namespaced)"))
    rules = host.file("/etc/audit/rules.d/50-hub.rules").content_string
    for path in watched(host):
        assert re.search(rf"^-w {re.escape(path)}/? -p \w*w\w*a", rules, re.M), path
    assert f"path={L.env_file}" in rules and f"dir={L.data_dir}" in rules


@pytest.mark.checklist("PRE-HARD-8")
def test_auditd_running_with_hub_rules_loaded(host: Any) -> None:
    L = layout(host)
    if in_container(host):
        pytest.skip(KERNEL_SKIP.format(what="the kernel's audit subsystem (not namespaced)"))
    assert host.service("auditd").is_running and host.service("auditd").is_enabled
    with host.sudo():
        loaded = host.check_output("auditctl -l")
    for path in watched(host):
        # auditctl lists a watch as -w, or (newer kernels, directories) as a dir=/path= rule.
        watch = rf"-w {re.escape(path)}/? -p \w*w\w*a|-F (?:dir|path)={re.escape(path)}/? .*-F perm=\w*w\w*a"
        assert re.search(watch, loaded), (path, loaded)
    assert L.env_file in loaded and L.data_dir in loaded


@pytest.mark.checklist("PRE-HARD-8")
def test_audit_records_a_config_change(host: Any) -> None:
    """Touching a watched file produces an audit record with the hub's key."""
    L = layout(host)
    if in_container(host):
        pytest.skip(KERNEL_SKIP.format(what="the kernel's audit subsystem (not namespaced)"))
    with host.sudo():
        host.check_output(f"touch -a {L.config_dir}/config.toml")
        out = host.run("ausearch -k hub-config -ts recent --raw")
    assert out.rc == 0 and "hub-config" in out.stdout


@pytest.mark.checklist("PRE-HARD-9")
def test_legal_banner(host: Any) -> None:
    for name in ("/etc/issue", "/etc/issue.net"):
        text = host.file(name).content_string
        assert "authorized" in text.lower(), name
        # No OS name or version for an attacker to read before login.
        assert not re.search(r"\\[rsvmn]|debian|ubuntu|red hat|rocky", text, re.I), name


def active_lines(host: Any, path: str) -> list:
    """The non-comment lines of a file, whitespace collapsed."""
    return [" ".join(line.split()) for line in host.file(path).content_string.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.checklist("PRE-HARD-12")
def test_sudoers_d_root_only(host: Any) -> None:
    d = host.file("/etc/sudoers.d")
    assert d.is_directory and (d.user, d.group) == ("root", "root") and d.mode == 0o750, oct(d.mode)


@pytest.mark.checklist("PRE-HARD-12")
def test_sudo_policy_for_every_rule(host: Any) -> None:
    with host.sudo():
        check = host.run("visudo -c")
        lines = active_lines(host, "/etc/sudoers.d/00-hub-policy")
    assert check.rc == 0, check.stdout + check.stderr
    for setting in ("ignore_dot", "noexec", "requiretty"):
        assert f"Defaults {setting}" in lines, lines
    umask = [line for line in lines if line.startswith("Defaults umask=")]
    assert umask and int(umask[0].split("=", 1)[1], 8) & 0o077 == 0o077, umask
    exempt = [line for line in lines if line.startswith("Defaults:")]
    assert exempt and "!noexec" in exempt[0] and "!requiretty" in exempt[0], exempt


@pytest.mark.checklist("PRE-HARD-12")
def test_sudo_needs_a_terminal_for_other_accounts(host: Any) -> None:
    """Without a terminal (a web shell, a cron job) an account outside the exempt list gets no sudo."""
    with host.sudo():
        out = host.run("runuser -u nobody -- setsid -w sudo -n true </dev/null")
    assert out.rc != 0
    assert "must have a tty" in out.stdout + out.stderr, out.stderr


@pytest.mark.checklist("PRE-HARD-12")
def test_root_becomes_without_terminal_and_may_exec(host: Any) -> None:
    """What Ansible's become does with pipelining: sudo without a tty, a program that execs others."""
    with host.sudo():
        out = host.run("setsid -w sudo -n sh -c '/bin/true && echo exec-ok' </dev/null")
    assert out.rc == 0 and out.stdout.strip() == "exec-ok", out.stderr


def pam_modules(host: Any, path: str, kind: str) -> list:
    """(control, module, args) of one type in a PAM file."""
    out = []
    for line in active_lines(host, path):
        match = re.match(rf"^{kind} (\[[^]]*\]|\S+) (\S+)(.*)$", line)
        if match:
            out.append((match.group(1), match.group(2), match.group(3).split()))
    return out


@pytest.mark.checklist("PRE-HARD-13")
def test_faillock_around_pam_unix(host: Any) -> None:
    if host.system_info.distribution not in ("debian", "ubuntu"):
        pytest.skip("pam-auth-update profiles are Debian's and Ubuntu's")
    auth = pam_modules(host, "/etc/pam.d/common-auth", "auth")
    names = [(m, a[:1]) for _, m, a in auth]
    pre = names.index(("pam_faillock.so", ["preauth"]))
    unix = [m for m, _ in names].index("pam_unix.so")
    fail = names.index(("pam_faillock.so", ["authfail"]))
    assert pre < unix < fail, auth
    assert auth[fail][0] == "[default=die]" and auth[pre][0] == "required", auth
    account = pam_modules(host, "/etc/pam.d/common-account", "account")
    assert ("required", "pam_faillock.so", []) in account, account
    conf = dict(line.replace(" ", "").split("=", 1) for line in active_lines(host, "/etc/security/faillock.conf")
                if "=" in line)
    assert 1 <= int(conf["deny"]) <= 5 and int(conf["unlock_time"]) >= 300, conf
    assert int(conf["fail_interval"]) >= 300, conf


@pytest.mark.checklist("PRE-HARD-13")
def test_password_quality_history_and_hashing(host: Any) -> None:
    if host.system_info.distribution not in ("debian", "ubuntu"):
        pytest.skip("pam-auth-update profiles are Debian's and Ubuntu's")
    assert host.package("libpam-pwquality").is_installed
    password = pam_modules(host, "/etc/pam.d/common-password", "password")
    modules = [m for _, m, _ in password]
    assert modules.index("pam_pwquality.so") < modules.index("pam_unix.so"), password
    unix_args = password[modules.index("pam_unix.so")][2]
    assert "yescrypt" in unix_args or "sha512" in unix_args, unix_args
    opts = dict(a.split("=", 1) for a in unix_args if "=" in a)
    assert int(opts.get("remember", "0")) >= 1 and int(opts.get("rounds", "0")) >= 5, unix_args
    conf = dict(line.replace(" ", "").split("=", 1) for line in active_lines(host, "/etc/security/pwquality.conf")
                if "=" in line)
    assert int(conf["minlen"]) >= 12 and int(conf["minclass"]) >= 3, conf
    method = login_defs(host).get("ENCRYPT_METHOD", "")
    assert method.lower() in unix_args, (method, unix_args)
