"""The target versions' own binaries, from Debian's archive, without installing them.

Each Debian release gets one root under .cache/platform-tools/<release>/root: the packages of
`PACKAGES` and their dependencies (apt's own resolution, on a private sources list and state, so
the machine's apt configuration is neither read nor changed), downloaded with `apt-get download`
and unpacked with `dpkg-deb -x`. No maintainer script runs. A tool then runs chrooted in that
root, in a mount namespace of its own with /proc and /dev (`run_in`), so a bullseye binary finds
bullseye's libraries (libssl1.1, its glibc) whatever the machine runs. Needs root, apt-get,
dpkg-deb, unshare and chroot (a stock Debian 12 has them all).

Run as a script to fill the cache: `python tests/platform_tools/tools.py bullseye bookworm`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "platform-tools"
MIRROR = os.environ.get("PLATFORM_CHECK_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# What each check runs, per release. nginx-core carries /usr/sbin/nginx (nginx-common the stock
# /etc/nginx); openssh-server pulls openssh-client (ssh-keygen); apparmor has apparmor_parser.
PACKAGES = ["openssh-server", "nginx-core", "nginx-common", "fail2ban", "python3-systemd", "systemd", "apparmor",
            "prometheus-node-exporter", "openssl", "dash", "coreutils"]
RELEASES = ("bullseye", "bookworm", "trixie")
# The versions the checks are meant to run: a different one in the archive fails the check
# instead of silently testing something else.
EXPECTED = {
    "bullseye": {"openssh-server": "1:8.4", "nginx-core": "1.18", "fail2ban": "0.11.2", "systemd": "247",
                 "apparmor": "2.13"},
    "bookworm": {"openssh-server": "1:9.2", "nginx-core": "1.22", "fail2ban": "1.0.2", "systemd": "252",
                 "apparmor": "3.0.8"},
    "trixie": {"openssh-server": "1:10.0", "nginx": "1.26", "fail2ban": "1.1.0", "systemd": "257",
               "apparmor": "4.1"},
}
# Releases whose base system is merged-/usr only (/bin a link to /usr/bin).
MERGED_USR = {"trixie"}
# trixie folded nginx-core into nginx.
RELEASE_PACKAGES = {"trixie": [p if p != "nginx-core" else "nginx" for p in PACKAGES]}


class ToolError(RuntimeError):
    """A tool could not be had: the message says why."""


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if run.returncode != 0:
        raise ToolError(f"{' '.join(cmd[:3])} ... failed ({run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return run  # type: ignore[no-any-return]


def _apt_options(base: Path, release: str) -> list[str]:
    (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "apt-cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = base / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {MIRROR} {release} main\n")
    return ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={base / 'lists'}", "-o", f"Dir::Cache={base / 'apt-cache'}",
            "-o", "Dir::State::status=/dev/null", "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=/dev/null", "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures::=amd64", "-o", "Debug::NoLocking=1"]


def _closure(opts: list[str], packages: list[str]) -> list[str]:
    """The packages and every dependency apt resolves for them (not Recommends or Suggests)."""
    out = _run(["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", *packages]).stdout
    return sorted({line.strip() for line in out.splitlines() if line and not line.startswith((" ", "<"))})


def root(release: str) -> Path:
    """The unpacked root of `release`, made on first use and kept (a stamp names its packages)."""
    if release not in RELEASES:
        raise ToolError(f"no tool set for release {release!r} (known: {', '.join(RELEASES)})")
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise ToolError(f"{tool} is not on PATH: the platform check fetches and runs Debian's binaries with it")
    base = CACHE / release
    target = base / "root"
    packages = RELEASE_PACKAGES.get(release, PACKAGES)
    wanted = hashlib.sha256(f"{MIRROR} {packages}".encode()).hexdigest()
    stamp = base / "root.stamp"
    if stamp.is_file() and stamp.read_text() == wanted and target.is_dir():
        return target
    opts = _apt_options(base, release)
    _run(["apt-get", *opts, "-q", "update"], timeout=600)
    names = _closure(opts, packages)
    archives = base / "debs"
    archives.mkdir(exist_ok=True)
    _run(["apt-get", *opts, "-q", "download", *names], cwd=archives, timeout=1200)
    debs = {}
    for deb in archives.glob("*.deb"):
        debs.setdefault(deb.name.split("_", 1)[0], []).append(deb)
    missing = sorted(set(names) - set(debs))
    if missing:
        raise ToolError(f"{release}: apt-get download brought no package for {missing}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if release in MERGED_USR:
        # Its packages install under /usr only; a merged-/usr base system supplies the links.
        for link in ("bin", "sbin", "lib", "lib64"):
            (target / "usr" / link).mkdir(parents=True, exist_ok=True)
            (target / link).symlink_to(f"usr/{link}")
    for name in names:
        # The newest of what was downloaded for this name (an older run may have left another).
        deb = sorted(debs[name], key=lambda p: p.stat().st_mtime)[-1]
        _run(["dpkg-deb", "-x", str(deb), str(target)])
    _prepare(target)
    stamp.write_text(wanted)
    return target


def _prepare(target: Path) -> None:
    """What the packages' maintainer scripts and the base system would have made."""
    for directory in ("proc", "dev", "tmp", "run/sshd", "var/log", "var/lib/nginx", "var/run/fail2ban", "check"):
        (target / directory).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    etc = target / "etc"
    # sshd -t wants its privilege separation user; nginx its worker user.
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                                "sshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nadm:x:4:\nwww-data:x:33:\nnogroup:x:65534:\n")
    if not (target / "bin" / "sh").exists() and (target / "bin" / "dash").exists():
        (target / "bin" / "sh").symlink_to("dash")
    (etc / "passwd").write_text((etc / "passwd").read_text() + "nginx:x:990:990:nginx:/var/lib/nginx:/sbin/nologin\n")
    (etc / "group").write_text((etc / "group").read_text() + "nginx:x:990:\n")
    # Debian's postinst writes sshd_config from the package's copy.
    stock = target / "usr/share/openssh/sshd_config"
    if stock.is_file() and not (etc / "ssh/sshd_config").exists():
        shutil.copy(stock, etc / "ssh/sshd_config")


def run_in(target: Path, argv: list[str], files: dict[str, str] | None = None,
           timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run argv chrooted in target with `files` (absolute path -> text) laid over it: an overlay
    mount in a mount namespace of its own, with /proc, /dev and /sys (systemd 247 wants its cgroup), so the cached root is never
    written and the mounts end with the command."""
    with tempfile.TemporaryDirectory(prefix="platform-check-") as scratch:
        upper, work, merged = (Path(scratch) / d for d in ("upper", "work", "merged"))
        for d in (upper, work, merged, upper / "proc", upper / "dev", upper / "sys"):
            d.mkdir()
        for path, text in (files or {}).items():
            dest = upper / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            if text.startswith("#!"):
                dest.chmod(0o755)
        script = ('mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" '
                  '&& mount -t proc proc "$4/proc" && mount --rbind /dev "$4/dev" && mount --rbind /sys "$4/sys" && root=$4 && shift 4 '
                  '&& exec chroot "$root" "$@"')
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "SYSTEMD_LOG_COLOR": "0",
               "SYSTEMD_PAGER": "", "TERM": "dumb"}
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script, "sh",
                               str(target), str(upper), str(work), str(merged), *argv],
                              capture_output=True, text=True, timeout=timeout, check=False, env=env)


def version(target: Path, package: str) -> str:
    """The version of `package` unpacked in target (from the .deb it came from)."""
    base = target.parent / "debs"
    debs = sorted(base.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        raise ToolError(f"{package} is not in {base}")
    return debs[-1].name.split("_")[1].replace("%3a", ":")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(RELEASES):
        print(name, root(name))
