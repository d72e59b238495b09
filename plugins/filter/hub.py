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

import hashlib
import re
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
        }
