"""Key-only SSH (role hub_ssh): the drop-in, the effective configuration sshd really uses
(`sshd -T`), and a password login refused by the running daemon."""
from __future__ import annotations

from typing import Any, Dict

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
    out = host.run(cmd)
    assert out.rc != 0
    offered = [line for line in out.stderr.splitlines() if "Authentications that can continue:" in line]
    assert offered, out.stderr[-2000:]
    methods = set(offered[0].rsplit(":", 1)[1].strip().split(","))
    assert methods == {"publickey"}
