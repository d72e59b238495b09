"""RHEL 9's sshd settings under DEFAULT plus a policy module, without a RHEL host.

RHEL's sshd reads its algorithms from /etc/crypto-policies/back-ends/opensshserver.config, which
update-crypto-policies writes from the policy in force. The upstream tool (gitlab.com:
redhat-crypto/fedora-crypto-policies) is not packaged by Debian and not on PyPI, and CI reaches
neither GitLab nor an RPM repository, so this is a small model of what it does for the OpenSSH
server back-end, written from its documentation (crypto-policies(7), "Policy modules") and from
what its OpenSSH generator writes:

- a module line `property@scope = values` applies to sshd when the scope is SSH, openssh or
  openssh-server (or no scope); values all of the form `-X`, `X+` or `+X` remove, append or
  prepend (X may be a glob such as `*-CBC`); otherwise the list is replaced; enums and integers
  (`etm`, `ssh_certs`, `min_rsa_size`) are set;
- the `sign` list gives HostKeyAlgorithms, PubkeyAcceptedAlgorithms and
  HostbasedAcceptedAlgorithms (with certificate forms when ssh_certs is on) and
  CASignatureAlgorithms: one list for host keys, user keys and certificate authorities alike.

When a checkout of the upstream tool is at hand (PLATFORM_CHECK_CRYPTO_POLICIES, see the tests),
the tests build the same policy with it too and compare the sign-derived lines.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Dict, List, Tuple, Union

# RHEL 9's DEFAULT policy, the properties the OpenSSH server back-end reads, scoped to SSH
# (DEFAULT.pol of crypto-policies 20240828 in RHEL 9.5, `cipher@SSH = -*-CBC` applied).
RHEL9_DEFAULT: Dict[str, Union[List[str], str, int]] = {
    "cipher": ["AES-256-GCM", "AES-256-CCM", "CHACHA20-POLY1305", "AES-256-CTR", "AES-128-GCM", "AES-128-CCM",
               "AES-128-CTR"],
    "mac": ["AEAD", "HMAC-SHA2-256", "HMAC-SHA1", "UMAC-128", "HMAC-SHA2-384", "HMAC-SHA2-512"],
    "group": ["X25519", "SECP256R1", "X448", "SECP521R1", "SECP384R1", "FFDHE-2048", "FFDHE-3072", "FFDHE-4096",
              "FFDHE-6144", "FFDHE-8192"],
    "hash": ["SHA2-256", "SHA2-384", "SHA2-512", "SHA3-256", "SHA3-384", "SHA3-512", "SHA2-224", "SHA3-224",
             "SHAKE-256"],
    "sign": ["ECDSA-SHA3-256", "ECDSA-SHA2-256", "ECDSA-SHA2-256-FIDO", "ECDSA-SHA3-384", "ECDSA-SHA2-384",
             "ECDSA-SHA3-512", "ECDSA-SHA2-512", "EDDSA-ED25519", "EDDSA-ED25519-FIDO", "EDDSA-ED448",
             "RSA-PSS-SHA3-256", "RSA-PSS-SHA2-256", "RSA-PSS-SHA3-384", "RSA-PSS-SHA2-384", "RSA-PSS-SHA3-512",
             "RSA-PSS-SHA2-512", "RSA-PSS-RSAE-SHA3-256", "RSA-PSS-RSAE-SHA2-256", "RSA-PSS-RSAE-SHA3-384",
             "RSA-PSS-RSAE-SHA2-384", "RSA-PSS-RSAE-SHA3-512", "RSA-PSS-RSAE-SHA2-512", "RSA-SHA3-256",
             "RSA-SHA2-256", "RSA-SHA3-384", "RSA-SHA2-384", "RSA-SHA3-512", "RSA-SHA2-512", "ECDSA-SHA2-224",
             "RSA-PSS-SHA2-224", "RSA-SHA2-224", "ECDSA-SHA3-224", "RSA-PSS-SHA3-224", "RSA-SHA3-224"],
    "key_exchange": ["ECDHE", "RSA", "DHE", "DHE-RSA", "PSK", "DHE-PSK", "ECDHE-PSK", "RSA-PSK", "ECDHE-GSS",
                     "DHE-GSS"],
    "etm": "ANY",
    "ssh_certs": 1,
    "arbitrary_dh_groups": 1,
    "min_rsa_size": 2048,
}

SSHD_SCOPES = {"ssh", "openssh", "openssh-server"}

# Policy names to OpenSSH's (what the OpenSSH generator maps; names without an entry are not
# written for sshd).
CIPHERS = {"AES-256-GCM": "aes256-gcm@openssh.com", "CHACHA20-POLY1305": "chacha20-poly1305@openssh.com",
           "AES-256-CTR": "aes256-ctr", "AES-192-CTR": "aes192-ctr", "AES-128-GCM": "aes128-gcm@openssh.com",
           "AES-128-CTR": "aes128-ctr", "AES-256-CBC": "aes256-cbc", "AES-192-CBC": "aes192-cbc",
           "AES-128-CBC": "aes128-cbc", "3DES-CBC": "3des-cbc"}
MACS_ETM = {"HMAC-SHA1": "hmac-sha1-etm@openssh.com", "UMAC-64": "umac-64-etm@openssh.com",
            "UMAC-128": "umac-128-etm@openssh.com", "HMAC-SHA2-256": "hmac-sha2-256-etm@openssh.com",
            "HMAC-SHA2-512": "hmac-sha2-512-etm@openssh.com"}
MACS = {"HMAC-SHA1": "hmac-sha1", "UMAC-64": "umac-64@openssh.com", "UMAC-128": "umac-128@openssh.com",
        "HMAC-SHA2-256": "hmac-sha2-256", "HMAC-SHA2-512": "hmac-sha2-512"}
KEX: Dict[Tuple[str, str, str], List[str]] = {
    ("ECDHE", "X25519", "SHA2-256"): ["curve25519-sha256", "curve25519-sha256@libssh.org"],
    ("ECDHE", "SECP256R1", "SHA2-256"): ["ecdh-sha2-nistp256"],
    ("ECDHE", "SECP384R1", "SHA2-384"): ["ecdh-sha2-nistp384"],
    ("ECDHE", "SECP521R1", "SHA2-512"): ["ecdh-sha2-nistp521"],
    ("DHE", "FFDHE-2048", "SHA2-256"): ["diffie-hellman-group14-sha256"],
    ("DHE", "FFDHE-4096", "SHA2-512"): ["diffie-hellman-group16-sha512"],
    ("DHE", "FFDHE-8192", "SHA2-512"): ["diffie-hellman-group18-sha512"],
    ("DHE", "FFDHE-2048", "SHA1"): ["diffie-hellman-group14-sha1"],
}
GROUP_EXCHANGE = {("DHE", "SHA2-256"): ["diffie-hellman-group-exchange-sha256"],
                  ("DHE", "SHA1"): ["diffie-hellman-group-exchange-sha1"]}
GSS_KEX: Dict[Tuple[str, str, str], List[str]] = {
    ("ECDHE-GSS", "X25519", "SHA2-256"): ["gss-curve25519-sha256-"],
    ("ECDHE-GSS", "SECP256R1", "SHA2-256"): ["gss-nistp256-sha256-"],
    ("DHE-GSS", "FFDHE-2048", "SHA2-256"): ["gss-group14-sha256-"],
    ("DHE-GSS", "FFDHE-4096", "SHA2-512"): ["gss-group16-sha512-"],
}
SIGN = {"RSA-SHA1": "ssh-rsa", "RSA-SHA2-256": "rsa-sha2-256", "RSA-SHA2-512": "rsa-sha2-512",
        "ECDSA-SHA2-256": "ecdsa-sha2-nistp256", "ECDSA-SHA2-256-FIDO": "sk-ecdsa-sha2-nistp256@openssh.com",
        "ECDSA-SHA2-384": "ecdsa-sha2-nistp384", "ECDSA-SHA2-512": "ecdsa-sha2-nistp521",
        "EDDSA-ED25519": "ssh-ed25519", "EDDSA-ED25519-FIDO": "sk-ssh-ed25519@openssh.com"}
SIGN_CERTS = {"RSA-SHA1": "ssh-rsa-cert-v01@openssh.com", "RSA-SHA2-256": "rsa-sha2-256-cert-v01@openssh.com",
              "RSA-SHA2-512": "rsa-sha2-512-cert-v01@openssh.com",
              "ECDSA-SHA2-256": "ecdsa-sha2-nistp256-cert-v01@openssh.com",
              "ECDSA-SHA2-256-FIDO": "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
              "ECDSA-SHA2-384": "ecdsa-sha2-nistp384-cert-v01@openssh.com",
              "ECDSA-SHA2-512": "ecdsa-sha2-nistp521-cert-v01@openssh.com",
              "EDDSA-ED25519": "ssh-ed25519-cert-v01@openssh.com",
              "EDDSA-ED25519-FIDO": "sk-ssh-ed25519-cert-v01@openssh.com"}

LINE = re.compile(r"^\s*([a-z_0-9]+)(?:@(\{[^}]*\}|[A-Za-z0-9_-]+))?\s*=\s*(.*?)\s*$")


class PolicyError(ValueError):
    """A module line this model (and crypto-policies) cannot read."""


def _scopes(text: str) -> set[str]:
    return {s.strip().lower() for s in text.strip("{}").split(",")}


def apply_module(policy: Dict[str, Union[List[str], str, int]], module: str) -> Dict[str, Union[List[str], str, int]]:
    """The policy with the module's lines for sshd applied (a copy)."""
    result = {k: list(v) if isinstance(v, list) else v for k, v in policy.items()}
    for number, raw in enumerate(module.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LINE.match(line)
        if not match:
            raise PolicyError(f"line {number}: {raw!r} is not `property[@scope] = values`")
        prop, scope, values = match.group(1), match.group(2), match.group(3).split()
        if scope and not (_scopes(scope) & SSHD_SCOPES):
            continue
        current = result.get(prop)
        if isinstance(current, list):
            if values and all(v.startswith("-") or v.endswith("+") or v.startswith("+") for v in values):
                for value in values:
                    if value.startswith("-"):
                        current[:] = [a for a in current if not fnmatch.fnmatchcase(a, value[1:])]
                    elif value.endswith("+"):
                        current[:] = [a for a in current if a != value[:-1]] + [value[:-1]]
                    else:
                        current[:] = [value[1:]] + [a for a in current if a != value[1:]]
            else:
                current[:] = values
        elif prop in ("etm",):
            result[prop] = values[0]
        elif prop in ("ssh_certs", "arbitrary_dh_groups", "min_rsa_size"):
            result[prop] = int(values[0])
        else:
            raise PolicyError(f"line {number}: property {prop!r} is not one the OpenSSH server back-end reads")
    return result


def _names(items: List[str], table: Dict[str, str]) -> List[str]:
    return [table[i] for i in items if table.get(i)]


def opensshserver_config(policy: Dict[str, Union[List[str], str, int]]) -> str:
    """What the back-end file would say (the lines sshd reads)."""
    def lst(name: str) -> List[str]:
        value = policy[name]
        assert isinstance(value, list)
        return value
    lines = []
    ciphers = _names(lst("cipher"), CIPHERS)
    if ciphers:
        lines.append("Ciphers " + ",".join(ciphers))
    macs: List[str] = []
    if policy["etm"] != "DISABLE_ETM":
        macs += _names(lst("mac"), MACS_ETM)
    if policy["etm"] != "DISABLE_NON_ETM":
        macs += _names(lst("mac"), MACS)
    if macs:
        lines.append("MACs " + ",".join(macs))
    kex: List[str] = []
    gss: List[str] = []
    for kx in lst("key_exchange"):
        for hash_ in lst("hash"):
            if policy["arbitrary_dh_groups"]:
                kex += GROUP_EXCHANGE.get((kx, hash_), [])
            for group in lst("group"):
                kex += KEX.get((kx, group, hash_), [])
                gss += GSS_KEX.get((kx, group, hash_), [])
    lines.append("GSSAPIKexAlgorithms " + ",".join(gss) if gss else "GSSAPIKeyExchange no")
    if kex:
        lines.append("KexAlgorithms " + ",".join(kex))
    keys: List[str] = []
    for sign in lst("sign"):
        keys += _names([sign], SIGN)
        if policy["ssh_certs"]:
            keys += _names([sign], SIGN_CERTS)
    if keys:
        lines += ["HostKeyAlgorithms " + ",".join(keys), "PubkeyAcceptedAlgorithms " + ",".join(keys),
                  "HostbasedAcceptedAlgorithms " + ",".join(keys)]
    ca = _names(lst("sign"), SIGN)
    if ca:
        lines.append("CASignatureAlgorithms " + ",".join(ca))
    if int(policy["min_rsa_size"]) > 0:
        lines.append(f"RequiredRSASize {policy['min_rsa_size']}")
    return "\n".join(lines) + "\n"


def settings(config: str) -> Dict[str, List[str]]:
    """keyword (lower case) -> its comma-separated list, from an opensshserver.config."""
    out: Dict[str, List[str]] = {}
    for line in config.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[0].lower()] = parts[1].strip().split(",")
    return out
