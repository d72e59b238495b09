#!/usr/bin/env python3
"""Shared helpers of the stack benchmarks: test containers of their own (hub-bench-N, from
localhost/hub-provision/debian:12, privileged systemd, on the podman network `hub-bench`,
never the host's), an inventory in a temp dir, timed runs of playbooks/site.yml.

Also a small command line for the other bench scripts and for people:

    python bench/hubbench.py up hub-bench-1        # create (if missing) and converge
    python bench/hubbench.py down hub-bench-1      # remove
    python bench/hubbench.py ready                 # are all nine roles committed?
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

REPO = Path(__file__).resolve().parent.parent
# hubtools (the PLAY RECAP parser the scripts use too) is not installed: it sits at the
# repository root. The bench scripts run as `python bench/x.py`, with bench/ on sys.path.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from hubtools.ansible_log import parse_recap  # noqa: E402  (re-exported: hb.parse_recap)

VENV_BIN = REPO / ".venv" / "bin"
IMAGE = "localhost/hub-provision/debian:12"
NETWORK = "hub-bench"
PREFIX = "hub-bench-"
# The service layout the bench hosts run: hub_common's defaults, the roles' one place for it.
LAYOUT: Dict[str, Any] = yaml.safe_load((REPO / "roles" / "hub_common" / "defaults" / "main.yml").read_text())
SERVICE_USER: str = LAYOUT["hub_service_user"]
SERVICE: str = LAYOUT["hub_service_name"]
INSTALL_DIR: str = LAYOUT["hub_install_dir"]
DATA_DIR: str = LAYOUT["hub_data_dir"]
BACKUP_DIR: str = LAYOUT["hub_backup_dir"]
HTTP_PORT: int = int(LAYOUT["hub_http_port"])
ENV_FILE = f"{LAYOUT['hub_config_dir']}/environment"
CONFIG_FILE = f"{LAYOUT['hub_config_dir']}/config.toml"
# The app's command line as the roles run it: the entry point with the layout's configuration
# files (hub_common's hub_config_args); HIVE is the same for a shell command line.
HIVE_ARGV = [f"{INSTALL_DIR}/multiagent-hive", "--config", CONFIG_FILE, "--env-file", ENV_FILE]
HIVE = " ".join(HIVE_ARGV)
ROLES = ("hub_base", "hub_firewall", "hub_ssh", "hub_app", "hub_backup", "hub_nginx",
         "hub_fail2ban", "hub_mac", "hub_monitoring")


def base_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.setdefault("CONTAINERS_CONF", str(REPO / "images" / "containers.conf"))
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def write_result(path: str, result: Dict[str, Any]) -> None:
    """A benchmark's JSON result at `path` ('-': none)."""
    if path == "-":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def clean_up_on_sigterm() -> None:
    """SIGTERM (kill, a CI timeout) exits through the `finally` blocks that stop the servers and
    remove the containers a bench started, instead of leaving them behind."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _check_name(name: str) -> None:
    if not re.fullmatch(re.escape(PREFIX) + r"[a-z0-9-]+", name):
        raise ValueError(f"{name}: bench containers are named {PREFIX}*")


def podman(*args: str, check: bool = True, capture: bool = True, timeout: float = 300,
           input_text: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=base_env(), check=check, text=True, input=input_text,
                          capture_output=capture, timeout=timeout)


def sh(name: str, script: str, check: bool = True, timeout: float = 300,
       input_text: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a shell script inside a bench container."""
    _check_name(name)
    args = ["exec", "-i", name, "/bin/bash", "-c", script] if input_text is not None else \
        ["exec", name, "/bin/bash", "-c", script]
    res = podman(*args, check=False, timeout=timeout, input_text=input_text)
    if check and res.returncode != 0:
        raise RuntimeError(f"{name}: `{script[:120]}` exited {res.returncode}: {res.stderr.strip()[-800:]}")
    return res


def exists(name: str) -> bool:
    return podman("container", "exists", name, check=False).returncode == 0


def wait_boot(name: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise RuntimeError(f"{name}: systemd not booted after {timeout:.0f} s (state {state!r})")


def create(names: Iterable[str], image: str = IMAGE) -> None:
    """Start fresh systemd containers (an existing one of the same name is replaced)."""
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", NETWORK)
    names = list(names)
    for name in names:
        _check_name(name)
        podman("rm", "-f", "--time", "5", name, check=False)
        # Privileged for systemd, ufw and fail2ban inside; a podman network of its own.
        podman("run", "-d", "--name", name, "--hostname", name, "--privileged", "--systemd=always",
               "--network", NETWORK, image, "/sbin/init")
    for name in names:
        wait_boot(name)


def remove(names: Iterable[str]) -> None:
    for name in names:
        _check_name(name)
        podman("rm", "-f", "--time", "5", name, check=False)


def remove_network_if_unused() -> None:
    res = podman("ps", "-a", "--filter", f"network={NETWORK}", "--format", "{{.Names}}", check=False)
    if res.returncode == 0 and not res.stdout.strip():
        podman("network", "rm", NETWORK, check=False)


def write_hosts(directory: Path, hosts: Dict[str, Dict[str, Any]]) -> None:
    (directory / "hosts.yml").write_text(json.dumps({"all": {"children": {"hub": {"hosts": hosts}}}}, indent=2))


def write_inventory(directory: Path, names: List[str], connection: str = "containers.podman.podman") -> Path:
    """A hub group of podman-reached containers with the local target's group_vars (less its
    connection settings)."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts = {n: {"ansible_connection": connection, "ansible_host": n} for n in names}
    write_hosts(directory, hosts)
    gv = directory / "group_vars" / "all"
    gv.mkdir(parents=True, exist_ok=True)
    # The local target's settings (site name, TLS mode), not how it is reached: each bench
    # inventory says that per host.
    for src in sorted((REPO / "inventories" / "local" / "group_vars").glob("*/*.yml")):
        if src.name != "connection.yml":
            shutil.copy(src, gv / f"{src.parent.name}-{src.name}")
    return directory / "hosts.yml"


def container_cpu_seconds(name: str) -> Optional[float]:
    """CPU time used so far by everything in the container (its cgroup: cgroup v2 cpu.stat or
    v1 cpuacct); None when the cgroup cannot be read."""
    path = podman("inspect", "-f", "{{.State.CgroupPath}}", name, check=False).stdout.strip()
    if not path:
        return None
    try:
        for line in Path(f"/sys/fs/cgroup{path}/cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    try:
        return int(Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        return None


def run_playbook(inventory: Path, log: Path, env_extra: Optional[Dict[str, str]] = None,
                 limit: Optional[str] = None, args: Iterable[str] = (),
                 playbook: str = "playbooks/site.yml", timeout: float = 3600,
                 containers: Iterable[str] = ()) -> Dict[str, Any]:
    """Run a playbook, timed; output to LOG; returns wall time, rc, the recap per host and the
    CPU seconds the controller (ansible-playbook and its workers) and the CONTAINERS used."""
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), playbook, *args]
    if limit:
        cmd += ["--limit", limit]
    containers = list(containers)
    cpu_before = {n: container_cpu_seconds(n) for n in containers}
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(log, "w") as out:
        res = subprocess.run(cmd, cwd=REPO, env=base_env(**(env_extra or {})), stdout=out,
                             stderr=subprocess.STDOUT, timeout=timeout, check=False)
    wall = time.monotonic() - started
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after = {n: container_cpu_seconds(n) for n in containers}
    used = [cpu_after[n] - cpu_before[n] for n in containers  # type: ignore[operator]
            if cpu_before[n] is not None and cpu_after[n] is not None]
    recap = parse_recap(log.read_text(errors="replace"))
    return {"wall_s": round(wall, 1), "rc": res.returncode, "recap": recap,
            "controller_cpu_s": round(own_after.ru_utime + own_after.ru_stime
                                      - own_before.ru_utime - own_before.ru_stime, 1),
            "targets_cpu_s": round(sum(used), 1) if len(used) == len(containers) and used else None,
            "command": " ".join(["ansible-playbook", *cmd[1:]])}


def roles_ready() -> List[str]:
    """What is still missing before a converge makes sense: uncommitted roles."""
    tracked = subprocess.run(["git", "ls-files", "roles"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    return [r for r in ROLES if f"roles/{r}/tasks/main.yml" not in tracked]


def converge(names: List[str], workdir: Optional[Path] = None) -> Dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="hub-bench-"))
    inventory = write_inventory(workdir / "inventory", names)
    result = run_playbook(inventory, workdir / "converge.log",
                          {"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(workdir / "facts")})
    result["log"] = str(workdir / "converge.log")
    result["inventory"] = str(inventory)
    return result


def ensure_converged(name: str, workdir: Path) -> bool:
    """Create and converge NAME unless it already runs a converged hub; True if created here."""
    _check_name(name)
    if exists(name) and sh(name, "systemctl is-active ai-orchestrator nginx", check=False).returncode == 0:
        return False
    create([name])
    result = converge([name], workdir)
    if result["rc"] != 0:
        raise RuntimeError(f"converge of {name} failed (rc {result['rc']}), see {result['log']}")
    return True


def main(argv: List[str]) -> int:
    if not argv or argv[0] not in ("up", "down", "ready"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "ready":
        missing = roles_ready()
        print("all nine roles committed" if not missing else "not committed yet: " + ", ".join(missing))
        return 0 if not missing else 1
    names = argv[1:] or [PREFIX + "1"]
    if argv[0] == "down":
        remove(names)
        remove_network_if_unused()
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    create([n for n in names if not exists(n)])
    result = converge(names, workdir)
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=2))
    return 0 if result["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
