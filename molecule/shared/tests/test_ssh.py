"""Key-only SSH (role hub_ssh): the drop-in, the effective configuration sshd really uses
(`sshd -T`), and a password login refused by the running daemon."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

DROPIN = "/etc/ssh/sshd_config.d/00-hub-hardening.conf"


def is_debian_family(host: Any) -> bool:
    return host.system_info.distribution in ("debian", "ubuntu")


@pytest.fixture()
def effective(host: Any) -> Dict[str, str]:
    with host.sudo():
        out = host.check_output("sshd -T")
    values: Dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values


@pytest.mark.checklist("PRE-ACC-2")
def test_dropin_in_place(host: Any) -> None:
    f = host.file(DROPIN)
    assert f.exists
    assert (f.user, f.group) == ("root", "root")
    assert f.mode & 0o022 == 0
    with host.sudo():
        assert host.run("sshd -t").rc == 0


@pytest.mark.checklist("PRE-ACC-2")
def test_effective_key_only(effective: Dict[str, str]) -> None:
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective.get("challengeresponseauthentication", "no") == "no"
    assert effective["permitemptypasswords"] == "no"
    assert effective["pubkeyauthentication"] == "yes"
    # OpenSSH before 9.x prints prohibit-password under its old name without-password.
    assert effective["permitrootlogin"] in ("prohibit-password", "without-password", "no")


@pytest.mark.checklist("PRE-ACC-2")
def test_effective_limits(effective: Dict[str, str]) -> None:
    assert int(effective["maxauthtries"]) <= 3
    assert int(effective["logingracetime"]) <= 30
    assert effective["x11forwarding"] == "no"
    assert 0 < int(effective["clientaliveinterval"]) <= 300
    assert 0 < int(effective["clientalivecountmax"]) <= 2


@pytest.mark.checklist("PRE-ACC-2")
def test_sshd_running_and_enabled(host: Any) -> None:
    svc = host.service("ssh" if is_debian_family(host) else "sshd")
    assert svc.is_running
    assert svc.is_enabled


@pytest.mark.checklist("PRE-ACC-2")
def test_running_daemon_offers_publickey_only(host: Any, effective: Dict[str, str]) -> None:
    """Ask the live daemon (not its files) which methods it offers: publickey and nothing else."""
    if host.run("command -v ssh").rc != 0:
        pytest.skip("no ssh client on the target")
    port = effective["port"]
    cmd = (
        f"ssh -v -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o PubkeyAuthentication=no -o ConnectTimeout=10 hub-probe-nobody@127.0.0.1 true"
    )
    # ssh's own exit status is 255 here, which testinfra's ssh backend takes for a broken
    # connection to the target: report it on stderr instead.
    out = host.run(cmd + '; echo "probe-exit=$?" >&2')
    assert "probe-exit=0" not in out.stderr
    offered = [line for line in out.stderr.splitlines() if "Authentications that can continue:" in line]
    assert offered, out.stderr[-2000:]
    methods = set(offered[0].rsplit(":", 1)[1].strip().split(","))
    assert methods == {"publickey"}


# --- Beyond the guide: SSH cryptography (PRE-HARD-1) and session limits (PRE-HARD-2) ---------

REPO = Path(__file__).resolve().parents[3]
# Algorithms that must never be offered (ssh-audit fails or warns on each).
WEAK_KEX = re.compile(r"^(ecdh-sha2-nistp|diffie-hellman-group(1|14|-exchange)-sha1|diffie-hellman-group1-)")
WEAK_MAC = re.compile(r"(sha1|md5|umac-64|ripemd)")
# ssh-audit 2.5.0 (Debian 11/12) predates OpenSSH 9.0 making sntrup761 its default key exchange
# and still calls it experimental; newer ssh-audit does not. The only known warning tolerated.
TOLERATED_WARNINGS = {("kex", "sntrup761x25519-sha512@openssh.com", "using experimental algorithm")}
AUDIT_LINE = re.compile(r"^\((\w+)\) (\S+)\s+-- \[(fail|warn)\] (.*)$")
CVE_LINE = re.compile(r"^\(cve\) (CVE-(\d{4})-\d+)\s+-- (.*)$")


def ssh_audit_version() -> Tuple[int, ...]:
    out = subprocess.run(["ssh-audit", "-h"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"ssh-audit v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0, 0, 0)


def misread_version_cves(server: Tuple[int, int], cves: List[Tuple[str, int]]) -> bool:
    """ssh-audit before 3.0 compares "10.0" as lower than "7.x" and lists every old OpenSSH CVE
    against OpenSSH 10 (it lists none against 9.2). Only that pattern is recognised: the server
    is OpenSSH 10 or later, the installed ssh-audit is older than 3.0, and each CVE is from
    before 2019 (all fixed by OpenSSH 7.8)."""
    return bool(
        server >= (10, 0) and ssh_audit_version() < (3, 0, 0)
        and cves and all(year < 2019 for _, year in cves)
    )
CONT_LINE = re.compile(r"^\s+`- \[(fail|warn)\] (.*)$")


def openssh_version(host: Any) -> Tuple[int, int]:
    with host.sudo():
        out = host.run("sshd -V")
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    assert match, f"no OpenSSH version in sshd -V: {out.stderr!r}"
    return int(match.group(1)), int(match.group(2))


def uses_crypto_policies(host: Any) -> bool:
    return host.file("/etc/crypto-policies/back-ends/opensshserver.config").exists


@dataclass
class Remote:
    """How the controller reaches a target's sshd: address, port, login and key."""

    address: str
    port: str
    user: str
    key: Optional[str]


def controller_route(host: Any, effective: Dict[str, str]) -> Remote:
    backend = host.backend
    port = effective["port"]
    if backend.NAME == "ansible":
        hostvars = backend.get_variables()
        key = str(hostvars.get("ansible_ssh_private_key_file", ""))
        if "{{" in key or not key:
            key = str(REPO / ".cache" / "ssh" / "id_ed25519")
        key_path = Path(key) if Path(key).is_absolute() else REPO / key
        return Remote(
            str(hostvars.get("ansible_host", backend.host.name)),
            str(hostvars.get("ansible_port", port)),
            str(hostvars.get("ansible_user", "root")),
            str(key_path) if key_path.exists() else None,
        )
    if backend.NAME in ("ssh", "safe-ssh", "paramiko") or backend.NAME.endswith("ssh"):
        # The ssh settings the suite itself uses (its ssh_config), as ssh resolves them.
        args = ["ssh", "-G"] + (["-F", backend.ssh_config] if getattr(backend, "ssh_config", None) else [])
        out = subprocess.run(args + [backend.host.name], capture_output=True, text=True, check=False)
        settings: Dict[str, str] = {}
        for line in out.stdout.splitlines():
            key, _, value = line.partition(" ")
            settings.setdefault(key, value)
        if out.returncode == 0 and settings.get("hostname"):
            keys = [k for k in [getattr(backend, "ssh_identity_file", None), settings.get("identityfile")] if k]
            key = next((str(Path(k).expanduser()) for k in keys if Path(k).expanduser().exists()), None)
            return Remote(settings["hostname"], settings.get("port", port), settings.get("user", "root"), key)
    if backend.NAME == "podman":
        out = subprocess.run(
            ["podman", "inspect", "--format",
             "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", backend.name],
            capture_output=True, text=True, check=False,
        )
        addresses = out.stdout.split()
        if out.returncode == 0 and addresses:
            key = REPO / ".cache" / "ssh" / "id_ed25519"
            return Remote(addresses[0], port, "root", str(key) if key.exists() else None)
    pytest.skip(f"the controller has no network route to this host ({backend.NAME} backend)")


def run_ssh_audit(remote: Remote) -> str:
    """One ssh-audit run (several TCP connections). ufw's LIMIT rule rejects a sixth new
    connection within 30 s from the same source: on a refusal wait it out once and retry."""
    if shutil.which("ssh-audit") is None:
        pytest.fail("ssh-audit is not installed on the controller (scripts/bootstrap.sh installs it)")
    for attempt in range(2):
        out = subprocess.run(
            ["ssh-audit", "-n", "-l", "warn", "-t", "15", "-p", remote.port, remote.address],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if "cannot connect" not in out.stdout or attempt == 1:
            return out.stdout
        time.sleep(31)
    return ""


def audit_findings(report: str) -> Tuple[List[Tuple[str, str, str, str]], List[str]]:
    """(kind, algorithm, level, text) of every fail/warn line, and the unknown algorithms."""
    findings: List[Tuple[str, str, str, str]] = []
    unknown: List[str] = []
    current: Optional[Tuple[str, str]] = None
    section = ""
    for line in report.splitlines():
        if line.startswith("# "):
            section = line[2:].strip()
            current = None
            continue
        if section == "unknown algorithms" and line.strip():
            unknown.append(line.strip())
            continue
        match = AUDIT_LINE.match(line)
        if match:
            current = (match.group(1), match.group(2))
            findings.append((match.group(1), match.group(2), match.group(3), match.group(4).strip()))
            continue
        cont = CONT_LINE.match(line)
        if cont and current:
            findings.append((current[0], current[1], cont.group(1), cont.group(2).strip()))
    return findings, unknown


@pytest.fixture()
def audit_report(host: Any, effective: Dict[str, str]) -> str:
    remote = controller_route(host, effective)
    report = run_ssh_audit(remote)
    assert "# key exchange algorithms" in report, f"ssh-audit did not reach sshd: {report[-1500:]}"
    return report


@pytest.mark.checklist("PRE-HARD-1")
def test_ssh_audit_no_failures_or_warnings(host: Any, audit_report: str) -> None:
    """ssh-audit from the controller: no fail, and no warning except the tolerated one; an
    algorithm the installed ssh-audit does not know (newer than it) is listed, not judged."""
    findings, unknown = audit_findings(audit_report)
    cves = [(m.group(1), int(m.group(2))) for m in map(CVE_LINE.match, audit_report.splitlines()) if m]
    assert not cves or misread_version_cves(openssh_version(host), cves), f"ssh-audit lists CVEs: {cves}"
    fails = [f for f in findings if f[2] == "fail"]
    warnings = [
        f for f in findings
        if f[2] == "warn" and f[3] != "unknown algorithm" and f[1] not in unknown
        and (f[0], f[1], f[3]) not in TOLERATED_WARNINGS
    ]
    assert not fails, f"ssh-audit failures: {fails}"
    assert not warnings, f"ssh-audit warnings: {warnings} (unknown to this ssh-audit: {unknown})"


@pytest.mark.checklist("PRE-ACC-2", "PRE-HARD-1")
def test_ecdsa_user_keys_and_certificates_stay_accepted(effective: Dict[str, str]) -> None:
    """Operators (and Ansible) log in with ECDSA keys and certificates on every platform: neither
    the drop-in nor RHEL's crypto subpolicy may take them away."""
    pubkey = effective.get("pubkeyacceptedalgorithms", effective.get("pubkeyacceptedkeytypes", "")).split(",")
    assert {"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-ed25519"} <= set(pubkey), pubkey
    assert "ecdsa-sha2-nistp256-cert-v01@openssh.com" in pubkey, pubkey
    assert "ecdsa-sha2-nistp256" in effective["casignaturealgorithms"].split(","), effective["casignaturealgorithms"]


@pytest.mark.checklist("PRE-HARD-1")
def test_ssh_algorithms_strong(host: Any, effective: Dict[str, str]) -> None:
    kex = effective["kexalgorithms"].split(",")
    ciphers = effective["ciphers"].split(",")
    macs = effective["macs"].split(",")
    hostkeys = effective["hostkeyalgorithms"].split(",")
    assert [k for k in kex if WEAK_KEX.match(k)] == [], kex
    assert all(c.endswith(("-ctr", "-gcm@openssh.com")) or c.startswith("chacha20-poly1305") for c in ciphers), ciphers
    assert all("-etm@" in m for m in macs) and not [m for m in macs if WEAK_MAC.search(m)], macs
    if uses_crypto_policies(host):
        # The policy's one signature list makes HostKeyAlgorithms and the user key algorithms
        # alike, and ECDSA user keys stay accepted: sshd offers only the host keys it loads
        # (the HostKey lines: test_ssh_host_keys_ed25519_and_strong_rsa; ssh-audit sees the offer).
        assert all(h.startswith(("ssh-ed25519", "rsa-sha2-", "sk-ssh-ed25519", "ecdsa-sha2-", "sk-ecdsa-sha2-"))
                   for h in hostkeys), hostkeys
        return
    assert all(h.startswith(("ssh-ed25519", "rsa-sha2-", "sk-ssh-ed25519")) for h in hostkeys), hostkeys
    # Version-dependent choice: the best hybrid key exchange this OpenSSH has comes first.
    version = openssh_version(host)
    if version >= (9, 9):
        assert kex[0] == "mlkem768x25519-sha256", kex
    elif version >= (8, 5):
        assert kex[0] == "sntrup761x25519-sha512@openssh.com", kex
    else:
        assert kex[0] == "curve25519-sha256", kex
    assert "curve25519-sha256" in kex and "diffie-hellman-group16-sha512" in kex


@pytest.mark.checklist("PRE-HARD-1")
def test_ssh_host_keys_ed25519_and_strong_rsa(host: Any, effective: Dict[str, str]) -> None:
    with host.sudo():
        out = host.check_output("sshd -T | awk '$1 == \"hostkey\" {print $2}'")
        paths = out.split()
        assert paths and all(re.search(r"ssh_host_(ed25519|rsa)_key$", p) for p in paths), paths
        for path in paths:
            if path.endswith("_rsa_key"):
                bits = int(host.check_output(f"ssh-keygen -l -f {path}").split()[0])
                assert bits >= 3072, f"{path}: {bits} bits"


@pytest.mark.checklist("PRE-HARD-1")
def test_ssh_moduli_at_least_3072_bits(host: Any) -> None:
    moduli = host.file("/etc/ssh/moduli")
    if not moduli.exists:
        pytest.skip("no /etc/ssh/moduli: sshd uses its built-in groups")
    small = host.check_output("awk '$1 !~ /^#/ && NF >= 7 && $5 < 3071' /etc/ssh/moduli | wc -l")
    assert int(small) == 0


@pytest.mark.checklist("PRE-HARD-2")
def test_ssh_session_limits(effective: Dict[str, str]) -> None:
    for key in ("allowtcpforwarding", "allowagentforwarding", "x11forwarding", "permittunnel",
                "allowstreamlocalforwarding", "gatewayports", "permituserenvironment"):
        assert effective[key] == "no", (key, effective[key])
    assert effective["compression"] == "no"
    assert effective["loglevel"] == "VERBOSE"
    # Ansible (ControlMaster, Mitogen) and the verification suite multiplex sessions.
    assert 10 <= int(effective["maxsessions"]) <= 20
    assert int(effective["maxauthtries"]) <= 4


@pytest.mark.checklist("PRE-HARD-2")
def test_ssh_banner_shown(host: Any, effective: Dict[str, str]) -> None:
    banner = effective.get("banner", "none")
    assert banner != "none"
    f = host.file(banner)
    assert f.exists and "authori" in f.content_string.lower()


@pytest.mark.checklist("PRE-HARD-2")
def test_ssh_multiplexing_within_max_sessions(host: Any, effective: Dict[str, str], tmp_path: Path) -> None:
    """MaxSessions sessions at once over one multiplexed connection, as Ansible and make verify
    use it, all succeed (a lower MaxSessions breaks ControlMaster and Mitogen)."""
    remote = controller_route(host, effective)
    if remote.key is None:
        pytest.skip("no controller key for this host (.cache/ssh/id_ed25519 or ansible_ssh_private_key_file)")
    control = str(tmp_path / "mux")
    base = ["ssh", "-i", remote.key, "-p", remote.port, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"ControlPath={control}", f"{remote.user}@{remote.address}"]
    # ufw's LIMIT rule refuses a sixth new connection within 30 s from one source (ssh-audit's
    # own connections come just before): on a refusal wait the window out once, as run_ssh_audit.
    for attempt in range(2):
        master = subprocess.run(base[:1] + ["-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-fN"] + base[1:],
                                capture_output=True, text=True, timeout=60, check=False)
        if master.returncode == 0 or "Connection refused" not in master.stderr or attempt == 1:
            break
        time.sleep(31)
    assert master.returncode == 0, f"no SSH login from the controller: {master.stderr.strip()[-300:]}"
    try:
        sessions = int(effective["maxsessions"])
        procs = [subprocess.Popen(base + ["-o", "ControlMaster=no", "sleep 3; echo ok"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(sessions)]
        results = [p.communicate(timeout=60) for p in procs]
        ok = [out for out, _ in results if out.strip() == "ok"]
        assert len(ok) == sessions, [err for _, err in results if err][:3]
    finally:
        subprocess.run(base[:1] + ["-O", "exit"] + base[1:], capture_output=True, timeout=30, check=False)
