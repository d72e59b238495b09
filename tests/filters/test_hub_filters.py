"""The hub.provision filters (plugins/filter/hub.py) on real command output.

The fixtures are what the commands print on the supported platforms (Debian 12 and 13, Ubuntu
22.04, Rocky and RHEL 9); the roles call the filters on a registered result's stdout_lines.
Each filter replaced a Jinja expression of a role's vars/main.yml and gives the same result
(tests/platforms renders every role with them; Molecule's idempotence, check and drift runs
use them on real hosts). Last, the filters through Ansible itself, by their full names.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hub_filters", ROOT / "plugins" / "filter" / "hub.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hub = _load()

# `sysctl -e KEY...` on a Debian 12 host (tabs in vector values, as sysctl prints them; a key
# the kernel lacks prints nothing with -e).
SYSCTL = """\
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 1
net.ipv4.tcp_syncookies = 1
net.ipv6.conf.all.accept_redirects = 1
kernel.kptr_restrict = 0
net.ipv4.tcp_rmem = 4096\t131072\t33554432
"""

# `dnf -q repolist --enabled`
DNF_ROCKY = """\
repo id                          repo name
appstream                        Rocky Linux 9 - AppStream
baseos                           Rocky Linux 9 - BaseOS
epel                             Extra Packages for Enterprise Linux 9 - x86_64
extras                           Rocky Linux 9 - Extras
"""
DNF_RHEL = """\
repo id                                      repo name
rhel-9-for-x86_64-appstream-rpms             Red Hat Enterprise Linux 9 for x86_64 - AppStream (RPMs)
rhel-9-for-x86_64-baseos-rpms                Red Hat Enterprise Linux 9 for x86_64 - BaseOS (RPMs)
"""

# `apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE)'` (one line per
# index target: Packages, Translation, Contents... hence the repeats).
APT_DEBIAN = "\n".join(["deb bookworm", "deb bookworm-updates", "deb bookworm-security"] * 3) + "\n"
APT_UBUNTU = """\
deb jammy
deb jammy-updates
deb jammy-backports
deb jammy-security
deb-src jammy-security
deb jammy-security
"""

# `ufw status verbose` after hub_firewall, with an extra rule from a network and a comment.
UFW = """\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     LIMIT IN    Anywhere                   # ssh
80/tcp                     ALLOW IN    Anywhere                   # http
443/tcp                    ALLOW IN    Anywhere                   # https
9100/tcp                   ALLOW IN    10.0.0.0/8                 # node exporter # scraped
22/tcp (v6)                LIMIT IN    Anywhere (v6)              # ssh
80/tcp (v6)                ALLOW IN    Anywhere (v6)              # http
443/tcp (v6)               ALLOW IN    Anywhere (v6)              # https

"""
UFW_INACTIVE = "Status: inactive\n"

# `sshd -V`: OpenSSH 9.x and later print the version (on stderr); older ones an "unknown
# option" and the version with their usage text.
SSHD_V = {
    "debian-12": {"rc": 0, "stdout": "", "stderr": "OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17 1 Jul 2025"},
    "debian-13": {"rc": 0, "stdout": "", "stderr": "OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.4 30 Sep 2025"},
    "ubuntu-22.04": {"rc": 1, "stdout": "", "stderr": "unknown option -- V\nOpenSSH_8.9p1 Ubuntu-3ubuntu0.13, OpenSSL 3.0.2 15 Mar 2022\n"
                     "usage: sshd [-46DdeGiqTtV] [-C connection_spec] [-c host_cert_file]"},
    "rhel-9": {"rc": 1, "stdout": "", "stderr": "unknown option -- V\nOpenSSH_8.7p1, OpenSSL 3.2.2 4 Jun 2024\nusage: sshd [-46DdeiqTt]"},
    "no-sshd": {"rc": 2, "stdout": "", "stderr": "[Errno 2] No such file or directory: b'/usr/sbin/sshd'"},
}

# `ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub`
KEYGEN_RSA = "3072 SHA256:k7XaQ0n0N3m4pS0r9d1oRz0o7gkGJ1Wf2F1nq3m8c0Y root@hub-debian12 (RSA)\n"
KEYGEN_MISSING = ""  # stderr only: "ssh-keygen: /etc/ssh/ssh_host_rsa_key.pub: No such file or directory"

# `sshd -T -C user=deploy,host=localhost,addr=127.0.0.1` (an excerpt).
SSHD_T = """\
port 22
addressfamily any
listenaddress [::]:22
listenaddress 0.0.0.0:22
permitrootlogin without-password
passwordauthentication no
kbdinteractiveauthentication no
pubkeyauthentication yes
authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2
authorizedkeyscommand none
kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org
maxauthtries 3
"""

# hub_os's read of login.defs (`awk '$1 ~ /^(UMASK|SHA_CRYPT_MIN_ROUNDS|...)$/ {print $1, $2}'`)
# on a fresh Debian 12 host: the SHA_CRYPT keys are only in comments there.
LOGIN_DEFS_DEBIAN = "UMASK 022\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\n"
# hub_os's file probe (`sh -c 'stat -c "%n %a %U %G" "$@"; sha1sum "$@"; exit 0' probe PATH...`)
# on a Debian 12 host: the files the role would write missing but /etc/issue(.net), the cron
# directories (sha1sum says "Is a directory" on stderr) and /etc/cron.deny.
FILE_PROBE = """\
/etc/issue 644 root root
/etc/issue.net 644 root root
/etc/crontab 644 root root
/etc/cron.d 755 root root
/etc/cron.daily 755 root root
/etc/cron.deny 644 root root
2091f3cdf20a245af8e5a27ed3143146a32b3a81  /etc/issue
61506ff7242aa3f7372c93e064268c0eda8348b8  /etc/issue.net
da39a3ee5e6b4b0d3255bfef95601890afd80709  /etc/cron.deny
"""
# `nginx -v` (on stderr); a host without nginx yet (the probe's failed_when: false).
NGINX_V = {
    "debian-12": {"rc": 0, "stdout": "", "stderr": "nginx version: nginx/1.22.1"},
    "ubuntu-22.04": {"rc": 0, "stdout": "", "stderr": "nginx version: nginx/1.18.0 (Ubuntu)"},
    "rhel-9": {"rc": 0, "stdout": "", "stderr": "nginx version: nginx/1.20.1"},
    "no-nginx": {"rc": 2, "stdout": "", "stderr": "", "msg": "[Errno 2] No such file or directory: b'/usr/sbin/nginx'"},
}

# The catalog of hub_ssh/vars/main.yml (kex).
KEX = [
    {"name": "mlkem768x25519-sha256", "since": "9.9"},
    {"name": "sntrup761x25519-sha512", "since": "9.9"},
    {"name": "sntrup761x25519-sha512@openssh.com", "since": "8.5"},
    {"name": "curve25519-sha256", "since": "7.4"},
    {"name": "curve25519-sha256@libssh.org", "since": "6.5"},
    {"name": "diffie-hellman-group18-sha512", "since": "7.3"},
    {"name": "diffie-hellman-group16-sha512", "since": "7.3"},
]


# --- packages --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("packages", "installed", "missing"), [
    (["nginx", "openssl"], ["nginx", "openssl", "curl"], False),
    (["nginx", "openssl"], ["nginx"], True),
    (["nginx"], [], True),
    (["nginx"], None, True),  # not known (a role on its own): install as usual
    ([], None, False),  # nothing to install
    ([], ["nginx"], False),
    ("prometheus-node-exporter", ["prometheus-node-exporter"], False),  # one name
    ("prometheus-node-exporter", ["prometheus"], True),
])
def test_packages_missing(packages: Any, installed: Any, missing: bool) -> None:
    assert hub.hub_packages_missing(packages, installed) is missing


@pytest.mark.parametrize(("packages", "installed", "present"), [
    (["gcc", "make"], ["gcc", "nginx"], True),
    (["gcc", "make"], ["nginx"], False),
    (["gcc"], [], False),
    (["gcc"], None, True),  # not known (a role on its own): remove as usual
    ([], None, True),
    ([], ["gcc"], False),  # nothing to remove
    ("gcc", ["gcc"], True),  # one name
    ("gcc", ["gcc-12"], False),
])
def test_packages_present(packages: Any, installed: Any, present: bool) -> None:
    """The counterpart of hub_packages_missing, for removals: the test it replaced was
    `hub_installed_packages is not defined or packages | intersect(hub_installed_packages) | length > 0`."""
    assert hub.hub_packages_present(packages, installed) is present
    if installed is not None:
        as_list = [packages] if isinstance(packages, str) else packages
        assert present is (len(set(as_list) & set(installed)) > 0)


# --- sysctl -----------------------------------------------------------------------------------------

def test_sysctl_parse() -> None:
    current = hub.hub_sysctl_parse(SYSCTL.splitlines())
    assert current["net.ipv4.tcp_syncookies"] == "1"
    assert current["net.ipv4.tcp_rmem"] == "4096\t131072\t33554432"
    assert len(current) == 6
    assert hub.hub_sysctl_parse(SYSCTL) == current  # stdout as well as stdout_lines
    assert hub.hub_sysctl_parse([]) == {}
    # An error line (without -e) has no " = ": left out; a value with " = " in it is kept whole.
    assert hub.hub_sysctl_parse(["sysctl: cannot stat /proc/sys/x/y: No such file or directory", "a.b = c = d"]) == {"a.b": "c = d"}


def test_sysctl_present_and_drift() -> None:
    current = hub.hub_sysctl_parse(SYSCTL)
    wanted = {
        "net.ipv4.conf.all.accept_redirects": "0",  # running: no drift
        "net.ipv4.conf.default.accept_redirects": "0",  # drift
        "net.ipv4.tcp_syncookies": 1,  # an int from an inventory: compared as text
        "kernel.kptr_restrict": "2",  # drift
        "net.ipv6.conf.default.accept_redirects": "0",  # the kernel lacks it: neither
    }
    present = hub.hub_sysctl_present(wanted, current)
    assert list(present) == ["net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects",
                             "net.ipv4.tcp_syncookies", "kernel.kptr_restrict"]
    assert hub.hub_sysctl_drift(wanted, current) == ["net.ipv4.conf.default.accept_redirects=0", "kernel.kptr_restrict=2"]
    # The probe before the first run in a container without the keys: nothing to do.
    assert hub.hub_sysctl_present(wanted, {}) == {} and hub.hub_sysctl_drift(wanted, {}) == []
    # The sysctl module sets what the drift list names: key=value splits back at the first "=".
    for item in hub.hub_sysctl_drift(wanted, current):
        key, value = item.split("=", 1)
        assert str(wanted[key]) == value


# --- package sources -------------------------------------------------------------------------------

def test_dnf_repo_ids() -> None:
    assert hub.hub_dnf_repo_ids(DNF_ROCKY.splitlines()) == ["appstream", "baseos", "epel", "extras"]
    assert hub.hub_dnf_repo_ids(DNF_RHEL) == ["rhel-9-for-x86_64-appstream-rpms", "rhel-9-for-x86_64-baseos-rpms"]
    assert hub.hub_dnf_repo_ids([]) == []
    assert hub.hub_dnf_repo_ids(["", "   continued name", "crb  CRB"]) == ["crb"]


def test_apt_security_suites() -> None:
    assert hub.hub_apt_security_suites(APT_DEBIAN.splitlines()) == ["bookworm-security"]
    assert hub.hub_apt_security_suites(APT_UBUNTU) == ["jammy-security"]  # deb-src left out
    assert hub.hub_apt_security_suites(["deb bookworm", "deb bookworm-updates"]) == []
    assert hub.hub_apt_security_suites([]) == []
    # The whole line must be "deb <suite>-security"; one spelling per suite, the first.
    assert hub.hub_apt_security_suites(["deb trixie-security ", "deb x trixie-security", "deb trixie-Security"]) == []
    assert hub.hub_apt_security_suites(["deb Trixie-security", "deb trixie-security"]) == ["Trixie-security"]


# --- ufw --------------------------------------------------------------------------------------------

def test_ufw_rules() -> None:
    assert hub.hub_ufw_rules(UFW.splitlines()) == [
        "22/tcp|LIMIT IN|Anywhere",
        "80/tcp|ALLOW IN|Anywhere",
        "443/tcp|ALLOW IN|Anywhere",
        "9100/tcp|ALLOW IN|10.0.0.0/8",
        "22/tcp (v6)|LIMIT IN|Anywhere (v6)",
        "80/tcp (v6)|ALLOW IN|Anywhere (v6)",
        "443/tcp (v6)|ALLOW IN|Anywhere (v6)",
    ]
    assert hub.hub_ufw_rules(UFW_INACTIVE) == []
    assert hub.hub_ufw_rules(["Anywhere                   DENY IN     192.0.2.7", "5000                       REJECT IN   Anywhere"]) == [
        "Anywhere|DENY IN|192.0.2.7", "5000|REJECT IN|Anywhere"]


def test_ufw_rule_listed() -> None:
    rules = hub.hub_ufw_rules(UFW)
    assert hub.hub_ufw_rule_listed(rules, "22/tcp", "LIMIT")
    assert not hub.hub_ufw_rule_listed(rules, "22/tcp", "ALLOW")  # ssh_limit switched off: the rule is due
    assert hub.hub_ufw_rule_listed(rules, "443/tcp", "ALLOW", "any")
    assert hub.hub_ufw_rule_listed(rules, "9100/tcp", "ALLOW", "10.0.0.0/8")
    assert not hub.hub_ufw_rule_listed(rules, "9100/tcp", "ALLOW")  # from anywhere: not listed
    assert not hub.hub_ufw_rule_listed(rules, "8080/tcp", "ALLOW")
    # Open to any source means IPv4 and IPv6 both: the https rule deleted for IPv4 only is due.
    without_v4 = [r for r in rules if r != "443/tcp|ALLOW IN|Anywhere"]
    assert not hub.hub_ufw_rule_listed(without_v4, "443/tcp", "ALLOW")
    assert not hub.hub_ufw_rule_listed(hub.hub_ufw_rules(UFW_INACTIVE), "22/tcp", "LIMIT")


# --- os: login.defs, the baseline's files -----------------------------------------------------------

LOGIN_DEFS_WANTED = {"UMASK": "027", "SHA_CRYPT_MIN_ROUNDS": 640000, "SHA_CRYPT_MAX_ROUNDS": 640000,
                     "PASS_MAX_DAYS": 365, "PASS_MIN_DAYS": 0, "PASS_WARN_AGE": 7}


def test_login_defs_parse_and_drift() -> None:
    current = hub.hub_login_defs_parse(LOGIN_DEFS_DEBIAN.splitlines())
    assert current == {"UMASK": "022", "PASS_MAX_DAYS": "99999", "PASS_MIN_DAYS": "0", "PASS_WARN_AGE": "7"}
    assert hub.hub_login_defs_parse(LOGIN_DEFS_DEBIAN) == current
    assert hub.hub_login_defs_parse(["UMASK "]) == {"UMASK": ""}  # awk's "$1 $2" of a key without value
    # Numbers compare as the strings login.defs holds; absent keys differ; order of the policy.
    assert hub.hub_login_defs_drift(LOGIN_DEFS_WANTED, current) == [
        {"key": "UMASK", "value": "027"}, {"key": "SHA_CRYPT_MIN_ROUNDS", "value": "640000"},
        {"key": "SHA_CRYPT_MAX_ROUNDS", "value": "640000"}, {"key": "PASS_MAX_DAYS", "value": "365"}]
    done = hub.hub_login_defs_parse([f"{k} {v}" for k, v in LOGIN_DEFS_WANTED.items()])
    assert hub.hub_login_defs_drift(LOGIN_DEFS_WANTED, done) == []


def test_stat_paths() -> None:
    paths = hub.hub_stat_paths(FILE_PROBE.splitlines())
    assert paths == ["/etc/issue", "/etc/issue.net", "/etc/crontab", "/etc/cron.d", "/etc/cron.daily", "/etc/cron.deny"]
    assert hub.hub_stat_paths(FILE_PROBE) == paths
    assert [p for p in ["/etc/cron.deny", "/etc/at.deny"] if p in paths] == ["/etc/cron.deny"]  # as files.yml selects
    assert hub.hub_stat_paths([]) == []


def test_files_drift() -> None:
    banner = "Authorized access only.\n"
    issue = {"dest": "/etc/issue", "content": banner, "mode": "0644", "notify": []}
    issue_net = {"dest": "/etc/issue.net", "content": banner, "mode": "0644", "notify": []}
    allow = {"dest": "/etc/cron.allow", "content": "root\n", "mode": "0640", "notify": []}
    files = [issue, issue_net, allow]
    # The distribution's banners, no allow list: everything differs.
    assert hub.hub_files_drift(files, FILE_PROBE.splitlines()) == files
    sha1 = hashlib.sha1(banner.encode()).hexdigest()
    written = FILE_PROBE.replace("2091f3cdf20a245af8e5a27ed3143146a32b3a81", sha1).replace(
        "61506ff7242aa3f7372c93e064268c0eda8348b8", sha1).replace("/etc/issue.net 644", "/etc/issue.net 600")
    # /etc/issue as written; /etc/issue.net with the content but another mode; the allow list missing.
    assert hub.hub_files_drift(files, written) == [issue_net, allow]
    owned = written.replace("/etc/issue 644 root root", "/etc/issue 644 root adm")
    assert issue in hub.hub_files_drift(files, owned)
    assert hub.hub_files_drift([], FILE_PROBE) == []


@pytest.mark.parametrize(("platform", "version"), [
    ("debian-12", "1.22.1"), ("ubuntu-22.04", "1.18.0"), ("rhel-9", "1.20.1"), ("no-nginx", "0.0.0")])
def test_nginx_version(platform: str, version: str) -> None:
    result = NGINX_V[platform]
    assert hub.hub_nginx_version(result) == version
    assert hub.hub_nginx_version(result["stderr"]) == version
    assert hub.hub_nginx_version({}) == "0.0.0"


# --- ssh ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("platform", "version"), [
    ("debian-12", "9.2"), ("debian-13", "10.0"), ("ubuntu-22.04", "8.9"), ("rhel-9", "8.7"), ("no-sshd", "0.0")])
def test_openssh_version(platform: str, version: str) -> None:
    result = SSHD_V[platform]
    assert hub.hub_openssh_version(result) == version  # the registered result
    assert hub.hub_openssh_version(f"{result['stdout']} {result['stderr']}") == version
    assert hub.hub_openssh_version({}) == "0.0"  # no probe (crypto switched off)
    assert hub.hub_openssh_version({"skipped": True, "changed": False}) == "0.0"


@pytest.mark.parametrize(("version", "names"), [
    ("0.0", []),
    ("6.5", ["curve25519-sha256@libssh.org"]),
    ("7.3", ["curve25519-sha256@libssh.org", "diffie-hellman-group18-sha512", "diffie-hellman-group16-sha512"]),
    ("8.7", ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
             "diffie-hellman-group18-sha512", "diffie-hellman-group16-sha512"]),
    ("9.9", [entry["name"] for entry in KEX]),
    ("10.0", [entry["name"] for entry in KEX]),  # 10.0 is newer than 9.9 (not a string comparison)
])
def test_algorithms_for(version: str, names: List[str]) -> None:
    assert hub.hub_algorithms_for(KEX, version) == names


def test_algorithms_for_refuses_a_version_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="not a dotted version"):
        hub.hub_algorithms_for(KEX, "OpenSSH_9.2p1")


def test_ssh_keygen_bits() -> None:
    assert hub.hub_ssh_keygen_bits(KEYGEN_RSA) == 3072
    assert hub.hub_ssh_keygen_bits({"stdout": "2048 SHA256:x root@old (RSA)", "stderr": ""}) == 2048
    assert hub.hub_ssh_keygen_bits(KEYGEN_MISSING) == 0
    assert hub.hub_ssh_keygen_bits(" 3072 SHA256:x") == 0  # the size starts the line


def test_sshd_settings_and_authorized_keys_files() -> None:
    settings = hub.hub_sshd_settings(SSHD_T.splitlines())
    assert settings["passwordauthentication"] == "no"
    assert settings["listenaddress"] == "0.0.0.0:22"  # a repeated keyword: the last line
    assert settings["kexalgorithms"].split(",")[0] == "sntrup761x25519-sha512@openssh.com"
    assert hub.hub_authorized_keys_files(settings, "/home/deploy", "deploy") == [
        "/home/deploy/.ssh/authorized_keys", "/home/deploy/.ssh/authorized_keys2"]
    expanded = {"authorizedkeysfile": "%h/.ssh/keys /etc/ssh/authorized_keys/%u keys/100%%"}
    assert hub.hub_authorized_keys_files(expanded, "/root", "root") == [
        "/root/.ssh/keys", "/etc/ssh/authorized_keys/root", "/root/keys/100%"]
    assert hub.hub_authorized_keys_files({}, "/root", "root") == ["/root/.ssh/authorized_keys"]  # sshd's default
    assert hub.hub_authorized_keys_files({"authorizedkeysfile": "none"}, "/root", "root") == ["/root/none"]


def test_moduli_below_regex_for_3072() -> None:
    # The string the roles' Jinja built before (plugins/filter/hub.py replaced it).
    assert hub.hub_moduli_below_regex(3072) == "[0-9]{1,3}|[0-2][0-9]{3}|30[0-6][0-9]{1}|307[0-0]"
    assert hub.hub_moduli_below_regex("3072") == hub.hub_moduli_below_regex(3072)


@pytest.mark.parametrize("min_bits", [2, 3, 9, 10, 11, 12, 100, 101, 102, 1000, 1001, 1024, 2000, 2001, 2048, 3072, 4096, 7680, 8192, 10001])
def test_moduli_below_regex_matches_exactly_the_smaller_sizes(min_bits: int) -> None:
    """Every size field around the limit and far beyond it: matched if and only if the
    modulus (field + 1 bits) is smaller than min_bits."""
    pattern = re.compile(f"(?:{hub.hub_moduli_below_regex(min_bits)})")
    for field in range(0, max(3 * min_bits, 12000)):
        assert bool(pattern.fullmatch(str(field))) is (field + 1 < min_bits), (min_bits, field)


def test_moduli_below_regex_on_moduli_lines() -> None:
    """As hub_ssh uses it: the fifth field of /etc/ssh/moduli lines."""
    small = re.compile(rf"^\S+\s+\S+\s+\S+\s+\S+\s+(?:{hub.hub_moduli_below_regex(3072)})\s")
    lines = {
        "20230315000000 2 6 100 2047 5 F0A1": True,
        "20230315000000 2 6 100 3070 5 F0A1": True,
        "20230315000000 2 6 100 3071 2 C1B7": False,
        "20230315000000 2 6 100 4095 5 D2E3": False,
        "20230315000000 2 6 100 8191 2 A9F0": False,
        "# Time Type Tests Tries Size Generator Modulus": False,
    }
    for line, removed in lines.items():
        assert bool(small.match(line)) is removed, line


@pytest.mark.parametrize("min_bits", [1, 0, -5])
def test_moduli_below_regex_refuses_a_meaningless_limit(min_bits: int) -> None:
    with pytest.raises(ValueError):
        hub.hub_moduli_below_regex(min_bits)


# What a Jinja "function" parsing command output looks like: an accumulator loop, a regex or a
# split over a registered result.
JINJA_PARSING_RE = re.compile(r"\.append\(|regex_search|regex_findall|map\('split'|\.split\(")


def test_no_output_parsing_left_in_the_roles_vars() -> None:
    """The roles' vars/*.yml hand command output to the filters instead of parsing it in Jinja."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted(ROOT.glob("roles/*/vars/*.yml"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if JINJA_PARSING_RE.search(line)]
    assert found == []


def test_every_filter_is_exported() -> None:
    exported: Dict[str, Any] = hub.FilterModule().filters()
    public = sorted(name for name in vars(hub) if name.startswith("hub_"))
    assert sorted(exported) == public
    assert all(exported[name] is getattr(hub, name) for name in public)


# --- authorized keys and the algorithms sshd accepts ----------------------------------------------

# `sshd -T` lines of RHEL 9's DEFAULT crypto policy (opensshserver.config) and of
# an OpenSSH 8.4 host whose operator narrowed the list (the keyword's name before 8.5).
RHEL9_PUBKEY = ("ecdsa-sha2-nistp256,ecdsa-sha2-nistp256-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,"
                "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384,ecdsa-sha2-nistp384-cert-v01@openssh.com,"
                "ecdsa-sha2-nistp521,ecdsa-sha2-nistp521-cert-v01@openssh.com,ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,"
                "sk-ssh-ed25519@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,"
                "rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com")
RHEL9_SSHD_T = [f"pubkeyacceptedalgorithms {RHEL9_PUBKEY}",
                "casignaturealgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ecdsa-sha2-nistp256@openssh.com,"
                "ssh-ed25519,sk-ssh-ed25519@openssh.com,rsa-sha2-256,rsa-sha2-512",
                "authorizedkeyscommand none", "trustedusercakeys none"]
NARROWED_84_SSHD_T = ["pubkeyacceptedkeytypes ssh-ed25519-cert-v01@openssh.com,ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa",
                   "casignaturealgorithms ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256"]


@pytest.fixture(scope="module")
def real_keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Public keys of each type made by ssh-keygen: "TYPE BLOB COMMENT" lines."""
    out = tmp_path_factory.mktemp("keys")
    keys = {}
    for kind, bits in (("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"]), ("ecdsa", ["-b", "256"])):
        path = out / f"{kind}{bits[-1] if bits else ''}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", f"op@{kind}", "-f", str(path)],
                       check=True, capture_output=True, timeout=60)
        line = (path.with_suffix(".pub") if path.suffix else Path(str(path) + ".pub")).read_text().strip()
        keys[line.split()[0]] = line
    return keys


def test_authorized_key_types_of_real_keys_with_options(real_keys: Dict[str, str]) -> None:
    rng = random.Random(7)
    options = ['from="10.0.0.1,10.0.0.2"', 'command="echo a, b",no-pty', "no-agent-forwarding", "restrict"]
    lines = ["# an operator's keys", ""]
    expected = []
    for key_type, line in sorted(real_keys.items()):
        prefix = rng.choice(options)
        lines.append(f"{prefix} {line}")
        expected.append({"type": key_type, "cert_authority": False})
    ca_type, ca_line = sorted(real_keys.items())[0]
    lines.append(f'cert-authority,principals="ops,admin" {ca_line}')
    expected.append({"type": ca_type, "cert_authority": True})
    lines.append("garbage without a key")
    assert hub.hub_authorized_key_types("\n".join(lines) + "\n") == expected


def test_authorized_key_types_leave_out_what_sshd_cannot_use(real_keys: Dict[str, str]) -> None:
    """sshd refuses a line whose blob is another type than the line writes, or no key at all."""
    blob = real_keys["ssh-ed25519"].split()[1]
    assert hub.hub_authorized_key_types(f"ssh-rsa {blob} mislabelled") == []
    assert hub.hub_authorized_key_types(f"ssh-ed25519 {blob} right") == [{"type": "ssh-ed25519", "cert_authority": False}]
    assert hub.hub_authorized_key_types("ssh-ed25519 AAAAnotbase64!! x\nssh-ed25519 AAAA") == []


@pytest.mark.parametrize(("key_type", "rhel", "narrowed"), [
    ("ecdsa-sha2-nistp256", True, True), ("ecdsa-sha2-nistp384", True, False), ("ssh-ed25519", True, True),
    ("ssh-rsa", True, True), ("ssh-dss", False, False), ("sk-ssh-ed25519@openssh.com", True, False)])
def test_accepted_keys(key_type: str, rhel: bool, narrowed: bool) -> None:
    keys = [{"type": key_type, "cert_authority": False}]
    assert bool(hub.hub_accepted_keys(keys, hub.hub_sshd_settings(RHEL9_SSHD_T))) is rhel
    assert bool(hub.hub_accepted_keys(keys, hub.hub_sshd_settings(NARROWED_84_SSHD_T))) is narrowed


def test_accepted_keys_less_what_the_configuration_removes() -> None:
    settings = hub.hub_sshd_settings(RHEL9_SSHD_T)
    rsa = [{"type": "ssh-rsa", "cert_authority": False}]
    assert hub.hub_accepted_keys(rsa, settings, ["ssh-rsa", "ssh-rsa-cert-v01@openssh.com"]) == ["ssh-rsa"]
    assert hub.hub_accepted_keys(rsa, settings, ["rsa-sha2-256", "rsa-sha2-512"]) == []
    ecdsa = [{"type": "ecdsa-sha2-nistp256", "cert_authority": False}, {"type": "ssh-ed25519", "cert_authority": True}]
    assert hub.hub_accepted_keys(ecdsa, settings) == ["ecdsa-sha2-nistp256", "cert-authority ssh-ed25519"]
    # A CA whose signatures sshd no longer takes, or no certificate type left: refused.
    assert hub.hub_accepted_keys(ecdsa[1:], settings, ["ssh-ed25519"]) == []
    certificates = [a for a in RHEL9_PUBKEY.split(",") if a.endswith("-cert-v01@openssh.com")]
    assert hub.hub_accepted_keys(ecdsa[1:], settings, certificates) == []


# --- CRB (dnf repolist --all) ----------------------------------------------------------------------

def _repolist(rows: Dict[str, bool]) -> str:
    """`dnf -q repolist --all` as dnf prints it (names with spaces, status last)."""
    lines = [f"{'repo id':<60} {'repo name':<50} status"]
    lines += [f"{repo:<60} {'Repo ' + repo + ' (RPMs)':<50} {'enabled' if on else 'disabled'}" for repo, on in rows.items()]
    return "\n".join(lines) + "\n"


RHSM = "codeready-builder-for-rhel-9-x86_64-rpms"
CRB_CASES = [
    # Red Hat's CDN, or a Satellite the host is registered to: the same content labels.
    ({RHSM: False, "codeready-builder-for-rhel-9-x86_64-source-rpms": False, "rhel-9-for-x86_64-baseos-rpms": True,
      "satellite-client-6-for-rhel-9-x86_64-rpms": True, "ACME_EPEL_9_epel9_x86_64": True}, RHSM, "subscription-manager"),
    # EUS stream of a registered host.
    ({"codeready-builder-for-rhel-9-x86_64-eus-rpms": False, "rhel-9-for-x86_64-baseos-eus-rpms": True},
     "codeready-builder-for-rhel-9-x86_64-eus-rpms", "subscription-manager"),
    # RHUI: AWS, Azure, Google.
    ({"codeready-builder-for-rhel-9-rhui-debug-rpms": False, "codeready-builder-for-rhel-9-rhui-rpms": False,
      "rhel-9-baseos-rhui-rpms": True}, "codeready-builder-for-rhel-9-rhui-rpms", "dnf"),
    ({"codeready-builder-for-rhel-9-x86_64-rhui-source-rpms": False, "codeready-builder-for-rhel-9-x86_64-rhui-rpms": False,
      "rhui-microsoft-azure-rhel9": True}, "codeready-builder-for-rhel-9-x86_64-rhui-rpms", "dnf"),
    ({"rhui-codeready-builder-for-rhel-9-x86_64-rhui-rpms": False, "rhui-rhel-9-for-x86_64-baseos-rhui-rpms": True},
     "rhui-codeready-builder-for-rhel-9-x86_64-rhui-rpms", "dnf"),
    # A Satellite content view or a mirror as a .repo file.
    ({"ACME_Red_Hat_CodeReady_Linux_Builder_for_x86_64_RHEL_9_x86_64_RPMs": False,
      "ACME_Red_Hat_CodeReady_Linux_Builder_for_x86_64_RHEL_9_x86_64_Debug_RPMs": False},
     "ACME_Red_Hat_CodeReady_Linux_Builder_for_x86_64_RHEL_9_x86_64_RPMs", "dnf"),
    # Rocky and AlmaLinux.
    ({"baseos": True, "crb": False, "crb-source": False, "crb-debuginfo": False}, "crb", "dnf"),
    # Already enabled: nothing to do, whichever other CRB id there is.
    ({"crb": True, "codeready-builder-for-rhel-9-rhui-rpms": False}, "crb", "none"),
    ({RHSM: True}, RHSM, "none"),
]


@pytest.mark.parametrize(("repos", "repo", "method"), CRB_CASES)
def test_crb_repo_from_the_hosts_repositories(repos: Dict[str, bool], repo: str, method: str) -> None:
    states = hub.hub_dnf_repo_states(_repolist(repos))
    assert states == repos
    assert hub.hub_crb_repo(states, "9", "x86_64") == {"repo": repo, "method": method, "error": ""}


def test_crb_repo_is_the_operators_when_named() -> None:
    states = {RHSM: False, "mirror-crb": False, "mirror-baseos": True}
    assert hub.hub_crb_repo(states, 9, "x86_64", "mirror-crb") == {"repo": "mirror-crb", "method": "dnf", "error": ""}
    assert hub.hub_crb_repo(states, 9, "x86_64", RHSM)["method"] == "subscription-manager"
    missing = hub.hub_crb_repo(states, 9, "x86_64", "codeready-elsewhere")
    assert missing["method"] == "none" and "codeready-elsewhere (hub_base_crb_repo)" in missing["error"]


@pytest.mark.parametrize("seed", range(6))
def test_without_any_crb_repository_the_error_names_the_variables(seed: int) -> None:
    rng = random.Random(seed)
    names = ["baseos", "appstream", "extras", "epel", "rhel-9-for-x86_64-baseos-rpms", "crb-source",
             "codeready-builder-for-rhel-9-x86_64-debug-rpms", "mirror-appstream", "ACME_EPEL_9"]
    repos = {name: rng.random() < 0.5 for name in rng.sample(names, rng.randint(0, len(names)))}
    result = hub.hub_crb_repo(hub.hub_dnf_repo_states(_repolist(repos)), "9", "x86_64")
    assert result["method"] == "none" and result["repo"] == ""
    assert "hub_base_crb_repo" in result["error"] and "hub_base_crb_enabled" in result["error"]


def test_dnf_repo_states_ignore_the_header_and_blank_lines() -> None:
    assert hub.hub_dnf_repo_states("repo id   repo name   status\n\n") == {}
    assert hub.hub_dnf_repo_states(["crb  Rocky Linux 9 - CRB  disabled", "baseos  BaseOS  enabled"]) == {
        "crb": False, "baseos": True}


def test_selinux_modules() -> None:
    assert hub.hub_selinux_modules("abrt\naccountsd\nhub\n\n") == ["abrt", "accountsd", "hub"]
    assert hub.hub_selinux_modules(["100 abrt pp", "400 hub pp", "100 zoneminder pp"]) == ["abrt", "hub", "zoneminder"]
    assert "hub" not in hub.hub_selinux_modules(["hubble", "100 github pp"])


# --- listening ports ------------------------------------------------------------------------------

# listen_ports_facts' tcp_listen on a RHEL 9 host with Cockpit's socket, the hub's exporter and
# node exporter (ss could not name the process of the last one: pid 0).
TCP_LISTEN = [
    {"address": "0.0.0.0", "name": "sshd", "pid": 905, "port": 22, "protocol": "tcp", "stime": "", "user": "root"},
    {"address": "::", "name": "systemd", "pid": 1, "port": 9090, "protocol": "tcp", "stime": "", "user": "root"},
    {"address": "127.0.0.1", "name": "multiagent-hive", "pid": 1312, "port": 9464, "protocol": "tcp", "stime": "", "user": "ai-orchestrator"},
    {"address": "127.0.0.1", "name": "node_exporter", "pid": 1400, "port": 9100, "protocol": "tcp", "stime": "", "user": "node-exp"},
    {"address": "::1", "name": "", "pid": None, "port": 9100, "protocol": "tcp", "stime": "", "user": ""},
]
# `ps -o pid=,unit= -p 1,1312,1400` (a process outside any unit prints "-").
PS_UNITS = """\
      1 cockpit.socket
   1312 ai-orchestrator-exporter.service
   1400 -
"""


def test_port_listeners() -> None:
    assert hub.hub_port_listeners(TCP_LISTEN, [9090]) == [
        {"port": 9090, "address": "::", "pid": 1, "name": "systemd"}]
    assert [e["pid"] for e in hub.hub_port_listeners(TCP_LISTEN, ["9100", 9464])] == [1312, 1400, 0]
    assert hub.hub_port_listeners(TCP_LISTEN, [8080]) == [] and hub.hub_port_listeners([], [22]) == []


def test_pid_units_and_foreign_listeners() -> None:
    units = hub.hub_pid_units(PS_UNITS)
    assert units == {1: "cockpit.socket", 1312: "ai-orchestrator-exporter.service", 1400: "-"}
    own = ["ai-orchestrator.service", "ai-orchestrator-exporter.service", "node_exporter.service"]
    listeners = hub.hub_port_listeners(TCP_LISTEN, [9090, 9464, 9100])
    assert hub.hub_foreign_listeners(listeners, units, own) == [
        "9090 (systemd, pid 1, cockpit.socket)", "9100 (?, pid 0, -)", "9100 (node_exporter, pid 1400, -)"]
    # Keys as strings (a dict after templating) and the hub's own units only: nothing foreign.
    mine = hub.hub_port_listeners(TCP_LISTEN, [9464])
    assert hub.hub_foreign_listeners(mine, {str(k): v for k, v in units.items()}, own) == []


# --- through Ansible -------------------------------------------------------------------------------

PLAYBOOK = """\
- name: The filters by their full names
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Call them as the roles do
      ansible.builtin.assert:
        that:
          - "{{ ufw | hub.provision.hub_ufw_rules | hub.provision.hub_ufw_rule_listed('22/tcp', 'LIMIT') }}"
          - "{{ probe | hub.provision.hub_openssh_version == '9.2' }}"
          - "{{ ['nginx'] | hub.provision.hub_packages_missing(none) }}"
          - "{{ not (['nginx'] | hub.provision.hub_packages_missing(['nginx', 'curl'])) }}"
          - "{{ ['gcc'] | hub.provision.hub_packages_present(['gcc', 'nginx']) }}"
          - "{{ nginx | hub.provision.hub_nginx_version == '1.22.1' }}"
"""


def test_the_repository_is_the_collection_for_its_playbooks() -> None:
    """In a clone, playbooks/collections shows plugins/ as the collection hub.provision: Ansible
    looks there first for the playbooks beside it (playbooks/*.yml), and Molecule and
    tests/platforms name it in their collections path. A relative link, so any clone has it."""
    link = ROOT / "playbooks" / "collections" / "ansible_collections" / "hub" / "provision" / "plugins"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (ROOT / "plugins").resolve()
    # Its metadata is the repository's galaxy.yml (Mitogen lists every collection and Ansible warns
    # about one without metadata); nothing else: no loop, nothing shipped twice.
    assert sorted(p.name for p in link.parent.iterdir()) == ["galaxy.yml", "plugins"]
    assert (link.parent / "galaxy.yml").resolve() == (ROOT / "galaxy.yml").resolve()


def test_ansible_finds_the_filters_by_their_full_names(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "none.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "playbooks" / "collections"))
    binary = Path(sys.executable).parent / "ansible-playbook"
    extra = json.dumps({"ufw": UFW.splitlines(), "probe": SSHD_V["debian-12"], "nginx": NGINX_V["debian-12"]})
    result = subprocess.run([str(binary) if binary.exists() else "ansible-playbook", "-i", "localhost,", "-c", "local",
                             "play.yml", "-e", extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout
