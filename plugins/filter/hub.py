# Copyright: hub-provision maintainers
# MIT License (see LICENSE)
"""Filters of the `hub.provision` collection: what the roles read out of command output, and
whether an install task has anything to install.

The roles call them by their full names (`hub.provision.hub_sysctl_parse`): Ansible finds a
collection's filters only so. In a clone, `playbooks/collections/` links this directory as the
collection hub.provision (docs/architecture.md). Each filter does what a Jinja expression in
the roles' `vars/main.yml` or tasks did before, to the same result (tests/filters). Plain Python
on the controller, no Ansible import: the registered results arrive as lists, dicts and strings.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Dict, List, Optional, Set, Tuple, Union

Lines = Union[str, Iterable[str]]


def _lines(output: Lines) -> List[str]:
    """A command's `stdout_lines`, or its `stdout` split into lines."""
    if isinstance(output, str):
        return output.splitlines()
    return [str(line) for line in output]


def _text(output: Union[str, Mapping[str, Any]], streams: Sequence[str]) -> str:
    """A string as it is, or a registered command result's streams joined by a space."""
    if isinstance(output, Mapping):
        return " ".join(str(output.get(stream) or "") for stream in streams)
    return str(output)


def _pairs(output: Lines, separator: str) -> Dict[str, str]:
    """{key: value} of the lines holding `separator`, split at its first occurrence (a key seen
    again: the last value)."""
    pairs: Dict[str, str] = {}
    for line in _lines(output):
        if separator in line:
            key, value = line.split(separator, 1)
            pairs[key] = value
    return pairs


def _version(text: str) -> Tuple[int, ...]:
    """A dotted version ("9.9", "10.0") as numbers, compared as the `version` test compares them."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", text):
        raise ValueError(f"not a dotted version number: {text!r}")
    return tuple(int(part) for part in text.split("."))


# --- Packages (every role's install task) ------------------------------------------------------

def hub_packages_missing(packages: Iterable[str], installed: Optional[Iterable[str]]) -> bool:
    """Whether an install task has anything to do: some of `packages` is not in `installed`.

    `installed` is `hub_installed_packages` (set by playbooks/site.yml from package_facts), or
    None when it is not known (a role used on its own): then any package counts as missing and
    the task runs as usual. No package at all: nothing is missing.
    """
    if isinstance(packages, str):
        packages = [packages]
    have: Set[str] = set() if installed is None else set(installed)
    return any(name not in have for name in packages)


def hub_packages_present(packages: Iterable[str], installed: Optional[Iterable[str]]) -> bool:
    """Whether a removal task has anything to do: some of `packages` is in `installed`.

    The counterpart of hub_packages_missing, for `state: absent`. `installed` None (not known: a
    role used on its own): the task runs as usual.
    """
    if installed is None:
        return True
    if isinstance(packages, str):
        packages = [packages]
    have = set(installed)
    return any(name in have for name in packages)


# --- hub_base: sysctl, package sources ------------------------------------------------------------

def hub_sysctl_parse(output: Lines) -> Dict[str, str]:
    """`sysctl -e KEY...` output ("net.ipv4.tcp_syncookies = 1") as {key: running value}; keys
    the kernel lacks are absent (-e prints nothing for them)."""
    return _pairs(output, " = ")


def hub_sysctl_present(wanted: Mapping[str, Any], current: Mapping[str, str]) -> Dict[str, Any]:
    """The wanted settings whose key this kernel has (`current`, from hub_sysctl_parse)."""
    return {key: value for key, value in wanted.items() if key in current}


def hub_sysctl_drift(wanted: Mapping[str, Any], current: Mapping[str, str]) -> List[str]:
    """The wanted settings this kernel has but does not run now, as "key=value", in the order
    of `wanted`."""
    return [f"{key}={value}" for key, value in hub_sysctl_present(wanted, current).items() if str(value) != current[key]]


def hub_dnf_repo_ids(output: Lines) -> List[str]:
    """The repository ids of `dnf -q repolist --enabled` (the "repo id" header and blank lines
    left out)."""
    ids = [line.split()[0] for line in _lines(output) if re.match(r"\S", line)]
    return [repo for repo in ids if repo != "repo"]


def hub_dnf_repo_states(output: Lines) -> Dict[str, bool]:
    """`dnf -q repolist --all` ("crb   Rocky Linux 9 - CRB   disabled") as {repo id: enabled};
    the "repo id ... status" header and blank lines left out."""
    states: Dict[str, bool] = {}
    for line in _lines(output):
        fields = line.split()
        if len(fields) >= 2 and re.match(r"\S", line) and fields[0] != "repo" and fields[-1] in ("enabled", "disabled"):
            states[fields[0]] = fields[-1] == "enabled"
    return states


# A CodeReady Builder repository of any source, never its source or debug twin: the RHSM id
# (CDN, or a Satellite the host is registered to: the same content labels), RHUI ids of the
# clouds' pay-as-you-go images (codeready-builder-for-rhel-9-rhui-rpms, ...-x86_64-rhui-rpms,
# rhui-codeready-builder-...), Satellite or mirror repositories published as .repo files
# (<Org>_<Product>_..._CodeReady_Linux_Builder_...), and `crb` of the rebuilds.
_CRB_RE = re.compile(r"(?i)(codeready|^crb$)")
_CRB_EXCLUDED_RE = re.compile(r"(?i)(source|debug|srpm)")


def hub_crb_repo(states: Mapping[str, bool], major: Union[int, str], arch: str, wanted: str = "") -> Dict[str, str]:
    """How to enable CRB on this host, from its repositories (hub_dnf_repo_states):
    {"repo": id, "method": "subscription-manager" | "dnf" | "none", "error": ""}.

    `wanted` (hub_base_crb_repo) names the id; else the host's own: the RHSM id
    codeready-builder-for-rhel-<major>-<arch>-rpms (present only where subscription-manager
    registered the host: redhat.repo is its file, which dnf config-manager cannot change for long),
    then a RHUI id, then any other CodeReady Builder id (Satellite, a mirror), then `crb`.
    "none": already enabled, nothing to do. No such repository: "error" says so and names the
    variables, "method" is "none"."""
    rhsm = f"codeready-builder-for-rhel-{major}-{arch}-rpms"
    # The content labels subscription-manager writes (the EUS/E4S/AUS streams' too).
    rhsm_re = re.compile(rf"^codeready-builder-(?:beta-)?for-rhel-{re.escape(str(major))}-{re.escape(arch)}(?:-(?:eus|e4s|aus))?-rpms$")
    candidates = [repo for repo in states if _CRB_RE.search(repo) and not _CRB_EXCLUDED_RE.search(repo)]
    if wanted:
        chosen = wanted if wanted in states else ""
    else:
        ranked = ([r for r in candidates if r == rhsm]
                  + [r for r in candidates if r != rhsm and rhsm_re.match(r)]
                  + [r for r in candidates if "rhui" in r.lower()]
                  + [r for r in candidates if r != "crb" and not rhsm_re.match(r) and "rhui" not in r.lower()]
                  + [r for r in candidates if r == "crb"])
        enabled = [r for r in ranked if states[r]]
        chosen = (enabled or ranked or [""])[0]
    if not chosen:
        missing = f"the repository {wanted} (hub_base_crb_repo)" if wanted else "a CodeReady Builder (CRB) repository"
        return {"repo": wanted, "method": "none", "error": (
            f"This host has no {missing} among its dnf repositories ({len(states)} listed by dnf repolist "
            "--all): register it (subscription-manager, Satellite) or add the repository, set "
            "hub_base_crb_repo to the id of the one it has, or set hub_base_crb_enabled: false where "
            "EPEL's packages need nothing from CRB.")}
    if states[chosen]:
        return {"repo": chosen, "method": "none", "error": ""}
    return {"repo": chosen, "method": "subscription-manager" if rhsm_re.match(chosen) else "dnf", "error": ""}


def hub_apt_security_suites(output: Lines) -> List[str]:
    """The -security suites of `apt-get indextargets --format '$(TARGET_OF) $(RELEASE)'` ("deb
    bookworm-security"), each once (first spelling kept, case ignored as Jinja's `unique`)."""
    suites: List[str] = []
    seen: Set[str] = set()
    for line in _lines(output):
        if re.match(r"^deb \S+-security$", line):
            suite = line.split()[-1]
            if suite.lower() not in seen:
                seen.add(suite.lower())
                suites.append(suite)
    return suites


# --- hub_os: login.defs, the baseline's files ----------------------------------------------------

def hub_login_defs_parse(output: Lines) -> Dict[str, str]:
    """The role's read of login.defs (awk printing "KEY VALUE" of the keys it sets: "UMASK 022")
    as {key: value}; keys the file does not set (or only in a comment) are absent."""
    return _pairs(output, " ")


def hub_login_defs_drift(wanted: Mapping[str, Any], current: Mapping[str, str]) -> List[Dict[str, str]]:
    """The wanted settings whose value in `current` (hub_login_defs_parse) differs or is absent,
    as [{key, value}] (the value as a string), in the order of `wanted`."""
    return [{"key": key, "value": str(value)} for key, value in wanted.items() if current.get(key) != str(value)]


# "SHA1  PATH", a line of sha1sum's; the probe's other lines are stat's "PATH MODE OWNER GROUP".
_SHA1SUM_RE = re.compile(r"^[0-9a-f]{40}  ")


def hub_stat_paths(output: Lines) -> List[str]:
    """The paths the role's file probe (`stat -c "%n %a %U %G" PATH...; sha1sum PATH...`) found:
    those of its stat lines, in order (a missing path prints nothing on stdout)."""
    return [line.rsplit(" ", 3)[0] for line in _lines(output) if line and not _SHA1SUM_RE.match(line)]


def hub_files_drift(files: Iterable[Mapping[str, Any]], output: Lines) -> List[Mapping[str, Any]]:
    """The files ([{dest, content, mode, ...}]) that the file probe's output does not show as the
    role writes them: "DEST MODE root root" (mode without its leading zeros: "644") and
    "SHA1-OF-CONTENT  DEST" must both be among its lines; missing files differ."""
    lines = set(_lines(output))
    drift = []
    for entry in files:
        dest = str(entry["dest"])
        stat_line = f"{dest} {str(entry['mode']).lstrip('0')} root root"
        sum_line = f"{hashlib.sha1(str(entry['content']).encode('utf-8')).hexdigest()}  {dest}"
        if stat_line not in lines or sum_line not in lines:
            drift.append(entry)
    return drift


# --- hub_nginx --------------------------------------------------------------------------------------

def hub_nginx_version(output: Union[str, Mapping[str, Any]]) -> str:
    """The nginx release ("1.22.1") in `nginx -v` output ("nginx version: nginx/1.22.1", on
    stderr: a string, or the registered result); "0.0.0" when there is none (no nginx yet)."""
    found = re.search(r"[0-9]+\.[0-9]+\.[0-9]+", _text(output, ("stderr",)))
    return found.group(0) if found else "0.0.0"


# --- hub_firewall: ufw ----------------------------------------------------------------------------

def hub_ufw_rules(output: Lines) -> List[str]:
    """The rules `ufw status verbose` lists, one "TO|ACTION|FROM" string each, comments dropped:
    "22/tcp|LIMIT IN|Anywhere", "22/tcp (v6)|LIMIT IN|Anywhere (v6)"."""
    rules = []
    for line in _lines(output):
        if re.search(r"\s(ALLOW|DENY|REJECT|LIMIT) IN\s", line):
            rule = re.sub(r"\s*#.*$", "", line).strip()
            rules.append(re.sub(r"\s{2,}", "|", rule))
    return rules


def hub_ufw_rule_listed(rules: Iterable[str], to: str, action: str, source: str = "any") -> bool:
    """Whether `rules` (hub_ufw_rules) list the rule TO ("443/tcp") ACTION ("ALLOW", "LIMIT")
    from SOURCE: "any" (the default) means for IPv4 and IPv6 both, else one address or network."""
    if source == "any":
        wanted = {f"{to}|{action} IN|Anywhere", f"{to} (v6)|{action} IN|Anywhere (v6)"}
    else:
        wanted = {f"{to}|{action} IN|{source}"}
    return wanted <= set(rules)


# --- hub_ssh: OpenSSH version, algorithms, host keys, moduli, sshd -T ----------------------------

def hub_openssh_version(output: Union[str, Mapping[str, Any]]) -> str:
    """The OpenSSH release ("9.2") in `sshd -V` output (a string, or the registered result: its
    stdout and stderr, where sshd prints it, older sshd with their usage text); "0.0" when
    there is none (no sshd)."""
    found = re.search(r"OpenSSH_([0-9]+\.[0-9]+)", _text(output, ("stdout", "stderr")))
    return found.group(1) if found else "0.0"


def hub_algorithms_for(catalog: Iterable[Mapping[str, Any]], version: str) -> List[str]:
    """The names in `catalog` ([{name, since}], in order of preference) that OpenSSH `version`
    has: those whose `since` release is not newer."""
    have = _version(str(version))
    return [str(entry["name"]) for entry in catalog if _version(str(entry["since"])) <= have]


def hub_ssh_keygen_bits(output: Union[str, Mapping[str, Any]]) -> int:
    """A key's size from `ssh-keygen -l` ("3072 SHA256:... root@host (RSA)", or the registered
    result's stdout); 0 when there is none."""
    found = re.match(r"[0-9]+", _text(output, ("stdout",)))
    return int(found.group(0)) if found else 0


def hub_moduli_below_regex(min_bits: Union[int, str]) -> str:
    """A regular expression (an alternation, for a group) that matches, in full, the size field
    of /etc/ssh/moduli lines of moduli smaller than `min_bits` bits. The field is the size minus
    one, so the numbers below min_bits - 1, written digit by digit: 3072 gives
    "[0-9]{1,3}|[0-2][0-9]{3}|30[0-6][0-9]{1}|307[0-0]" (3070 and below)."""
    bits = int(min_bits)
    if bits < 2:
        raise ValueError(f"a moduli size limit must be 2 bits or more, not {min_bits!r}")
    limit = str(bits - 1)
    alternatives = []
    if len(limit) > 1:
        alternatives.append(f"[0-9]{{1,{len(limit) - 1}}}")  # fewer digits
    for i, digit in enumerate(limit):
        if digit != "0":  # this digit smaller, the ones before the same, any after
            rest = f"[0-9]{{{len(limit) - i - 1}}}" if i < len(limit) - 1 else ""
            alternatives.append(f"{limit[:i]}[0-{int(digit) - 1}]{rest}")
    return "|".join(alternatives)


def hub_sshd_settings(output: Lines) -> Dict[str, str]:
    """`sshd -T` output ("passwordauthentication no") as {keyword: value}."""
    return _pairs(output, " ")


def hub_authorized_keys_files(settings: Mapping[str, str], home: str, user: str) -> List[str]:
    """The authorized keys files sshd reads for `user` (home `home`): AuthorizedKeysFile of
    `settings` (hub_sshd_settings; sshd's default when absent) with %h, %u and %% expanded,
    relative paths taken from the home directory."""
    files = []
    for token in str(settings.get("authorizedkeysfile", ".ssh/authorized_keys")).split():
        path = token.replace("%h", home).replace("%u", user).replace("%%", "%")
        files.append(path if path.startswith("/") else f"{home}/{path}")
    return files


# The signature algorithms a key of each type can log in with (an RSA key signs with SHA-2 or,
# on old clients, SHA-1); a certificate's type is its key type with -cert-v01@openssh.com.
_KEY_SIGNATURES = {
    "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
    "ssh-dss": ["ssh-dss"],
    "ssh-ed25519": ["ssh-ed25519"],
    "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
    "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
    "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
    "sk-ecdsa-sha2-nistp256@openssh.com": ["sk-ecdsa-sha2-nistp256@openssh.com"],
    "sk-ssh-ed25519@openssh.com": ["sk-ssh-ed25519@openssh.com"],
}
_KEY_LINE_RE = re.compile(r"(?:^|[\s,])([A-Za-z0-9@.\-]+)\s+(AAAA[0-9A-Za-z+/]+=*)")


def _blob_type(blob: str) -> str:
    """The key type a public key blob names in its first field ("" when it is not one)."""
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
        return raw[4:4 + length].decode("ascii") if 0 < length < 64 else ""
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return ""


def _options(text: str) -> List[str]:
    """An authorized_keys line's options ("from=\"a,b\",no-pty,cert-authority"), split at the
    commas outside double quotes."""
    options, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            options.append(current.strip())
            current = ""
        else:
            current += char
    return options + [current.strip()] if current.strip() else options


def hub_authorized_key_types(text: str) -> List[Dict[str, Any]]:
    """The keys of an authorized_keys file, as [{type, cert_authority}]: the key's type, and
    whether the line trusts a certificate authority (the `cert-authority` option). Comments and
    blank lines left out, and lines sshd cannot use either: no key, a blob that does not decode,
    or one of another type than the line writes (sshd refuses the mismatch)."""
    keys: List[Dict[str, Any]] = []
    for line in _lines(text):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = _KEY_LINE_RE.search(line)
        if not found:
            continue
        key_type = found.group(1)
        if _blob_type(found.group(2)) != key_type:
            continue
        options = _options(line[:found.start(1)].rstrip(", \t"))
        keys.append({"type": key_type, "cert_authority": "cert-authority" in options})
    return keys


def hub_accepted_keys(keys: Iterable[Mapping[str, Any]], settings: Mapping[str, str],
                      removed: Iterable[str] = ()) -> List[str]:
    """The keys (hub_authorized_key_types) a login can use under sshd `settings`
    (hub_sshd_settings of `sshd -T`) once the algorithms in `removed` are taken away: a key when
    PubkeyAcceptedAlgorithms (PubkeyAcceptedKeyTypes before OpenSSH 8.5) has an algorithm it signs
    with; a cert-authority key when CASignatureAlgorithms has one and a certificate type is
    accepted. Each as its type ("cert-authority TYPE" for those), in file order."""
    gone = set(removed)
    pubkey_value = settings.get("pubkeyacceptedalgorithms", settings.get("pubkeyacceptedkeytypes", ""))
    pubkey = {a for a in pubkey_value.split(",") if a} - gone
    ca = {a for a in settings.get("casignaturealgorithms", "").split(",") if a} - gone
    accepted = []
    for key in keys:
        signs = set(_KEY_SIGNATURES.get(str(key["type"]), [str(key["type"])]))
        if key.get("cert_authority"):
            if signs & ca and any(a.endswith("-cert-v01@openssh.com") for a in pubkey):
                accepted.append(f"cert-authority {key['type']}")
        elif signs & pubkey:
            accepted.append(str(key["type"]))
    return accepted


def hub_selinux_modules(output: Lines) -> List[str]:
    """The module names of `semodule --list-modules=standard` (one per line; `full` adds the
    priority before the name and the language after it: "400 hub pp")."""
    names = []
    for line in _lines(output):
        fields = line.split()
        if fields:
            names.append(fields[1] if len(fields) >= 3 and fields[0].isdigit() else fields[0])
    return names


# --- Listening ports (hub_monitoring's check before it binds) --------------------------------------

def hub_port_listeners(listeners: Iterable[Mapping[str, Any]], ports: Iterable[Union[int, str]]) -> List[Dict[str, Any]]:
    """The listeners (listen_ports_facts' tcp_listen: [{address, port, pid, name, ...}]) on one
    of `ports`, as [{port, address, pid, name}] (pid 0 when ss could not tell, name "?")."""
    wanted = {int(port) for port in ports}
    found = []
    for entry in listeners:
        if int(entry.get("port", -1)) in wanted:
            found.append({"port": int(entry["port"]), "address": str(entry.get("address", "")),
                          "pid": int(entry.get("pid") or 0), "name": str(entry.get("name") or "?")})
    return found


def hub_pid_units(output: Lines) -> Dict[int, str]:
    """`ps -o pid=,unit= -p PID...` output ("  812 cockpit.socket") as {pid: systemd unit}; a
    process outside any unit shows "-"."""
    units: Dict[int, str] = {}
    for line in _lines(output):
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            units[int(parts[0])] = parts[1]
    return units


def hub_foreign_listeners(listeners: Iterable[Mapping[str, Any]], units: Mapping[Any, str],
                          own_units: Iterable[str]) -> List[str]:
    """The listeners (hub_port_listeners) whose process belongs to none of `own_units`, as
    "PORT (NAME, pid PID, UNIT)" strings: a port the hub would bind that something else holds.
    `units` maps pids (hub_pid_units; keys may be strings after templating) to units."""
    ours = set(own_units)
    by_pid = {int(pid): unit for pid, unit in units.items()}
    foreign = []
    for entry in listeners:
        unit = by_pid.get(int(entry["pid"]), "-")
        if unit not in ours:
            foreign.append(f"{entry['port']} ({entry['name']}, pid {entry['pid']}, {unit})")
    return sorted(set(foreign))


class FilterModule:
    """hub.provision filters."""

    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {
            "hub_packages_missing": hub_packages_missing,
            "hub_packages_present": hub_packages_present,
            "hub_sysctl_parse": hub_sysctl_parse,
            "hub_sysctl_present": hub_sysctl_present,
            "hub_sysctl_drift": hub_sysctl_drift,
            "hub_dnf_repo_ids": hub_dnf_repo_ids,
            "hub_dnf_repo_states": hub_dnf_repo_states,
            "hub_crb_repo": hub_crb_repo,
            "hub_apt_security_suites": hub_apt_security_suites,
            "hub_login_defs_parse": hub_login_defs_parse,
            "hub_login_defs_drift": hub_login_defs_drift,
            "hub_stat_paths": hub_stat_paths,
            "hub_files_drift": hub_files_drift,
            "hub_nginx_version": hub_nginx_version,
            "hub_ufw_rules": hub_ufw_rules,
            "hub_ufw_rule_listed": hub_ufw_rule_listed,
            "hub_openssh_version": hub_openssh_version,
            "hub_algorithms_for": hub_algorithms_for,
            "hub_ssh_keygen_bits": hub_ssh_keygen_bits,
            "hub_moduli_below_regex": hub_moduli_below_regex,
            "hub_sshd_settings": hub_sshd_settings,
            "hub_authorized_keys_files": hub_authorized_keys_files,
            "hub_authorized_key_types": hub_authorized_key_types,
            "hub_accepted_keys": hub_accepted_keys,
            "hub_selinux_modules": hub_selinux_modules,
            "hub_port_listeners": hub_port_listeners,
            "hub_pid_units": hub_pid_units,
            "hub_foreign_listeners": hub_foreign_listeners,
        }
