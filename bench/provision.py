#!/usr/bin/env python3
"""Speed and scale of provisioning (issue 7): playbooks/site.yml on 1 and on 4 local
containers at once.

Phases (all by default):
  first1  a fresh hub-bench-1: first converge, timed
  first4  four fresh containers hub-bench-1..4: first converge at once, timed
  rerun   idempotent re-runs of the four converged hosts, per settings variant, on one host
          (--limit hub-bench-1) and on all four; each must report changed=0 failed=0
  verify  the verification suite (molecule/shared/tests, podman backend) on hub-bench-1
          after the last variant, so the fastest setting is shown to leave a correct host

Variants (environment over the repo's ansible.cfg, and how the hosts are reached):
  ssh            ansible.cfg as committed, over SSH (root with a bench key put into the
                 containers, to their addresses on the bench network; the roles allow root
                 by key only): Mitogen's linear strategy (plugins/strategy/mitogen_linear.py),
                 forks 20, gathering=smart with the jsonfile fact cache. How `make deploy`
                 and production connect; the first converges use it too
  ssh-linear     ANSIBLE_STRATEGY=linear: Ansible's own strategy with pipelining and
                 ControlPersist, i.e. what Mitogen buys
  ssh-linear-no-pipelining  and what pipelining buys on top of that
  ssh-no-fact-cache  ANSIBLE_GATHERING=implicit + memory cache: facts gathered on every run
  podman         ansible.cfg as committed over `podman exec` (Mitogen turns the podman
                 connection into one persistent interpreter per container)
  podman-linear  the podman connection with Ansible's linear strategy (no pipelining there:
                 containers.podman.podman has has_pipelining=False)

At most four containers of this bench exist at a time; all are removed at the end unless
--keep. Writes bench/results/provision.json and prints a table.

    /work/main/.venv/bin/python bench/provision.py [--phases first1,first4,rerun,verify]
        [--variants ssh,ssh-linear,...] [--hosts 4] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hubbench as hb

# variant: (connection, environment over ansible.cfg); the first is the committed setting
VARIANTS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "ssh": ("ssh", {}),
    "ssh-linear": ("ssh", {"ANSIBLE_STRATEGY": "linear"}),
    "ssh-linear-no-pipelining": ("ssh", {"ANSIBLE_STRATEGY": "linear", "ANSIBLE_PIPELINING": "false"}),
    "ssh-no-fact-cache": ("ssh", {"ANSIBLE_GATHERING": "implicit", "ANSIBLE_CACHE_PLUGIN": "memory"}),
    "podman": ("podman", {}),
    "podman-linear": ("podman", {"ANSIBLE_STRATEGY": "linear"}),
}
COMMITTED = "ssh"
TARGET_RERUN_1_HOST_S = 30.0
TARGET_RATIO_4_TO_1 = 1.6


def variant_env(variant: str, workdir: Path) -> Dict[str, str]:
    return {"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(workdir / "facts"), **VARIANTS[variant][1]}


def ssh_inventory(workdir: Path, names: List[str]) -> Path:
    """Root over SSH with a throwaway key: the key goes into each container's root account
    (podman exec), the inventory names each container's address on the bench network."""
    key = workdir / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hub-bench", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text()
    hosts = {}
    for name in names:
        hb.podman("exec", "-i", name, "/bin/bash", "-c",
                  "install -d -m 0700 /root/.ssh && touch /root/.ssh/authorized_keys && "
                  "chmod 600 /root/.ssh/authorized_keys && "
                  "sed -i '/ hub-bench$/d' /root/.ssh/authorized_keys && cat >> /root/.ssh/authorized_keys",
                  input_text=pub)
        addr = hb.podman("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout.strip()
        hosts[name] = {
            "ansible_connection": "ssh", "ansible_host": addr, "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            # Mitogen's ssh reads this, not the -o options above
            "ansible_host_key_checking": False,
        }
    inv_dir = workdir / "inventory-ssh"
    hb.write_inventory(inv_dir, names)
    hb.write_hosts(inv_dir, hosts)
    return inv_dir / "hosts.yml"


def summarize(run: Dict[str, Any], hosts: List[str]) -> Dict[str, Any]:
    recap = run["recap"]
    per_host = [recap.get(h, {}) for h in hosts]
    ok = bool(per_host) and all(r and r["failed"] == 0 and r["unreachable"] == 0 for r in per_host) and run["rc"] == 0
    first = per_host[0] if per_host and per_host[0] else {}
    return {
        "hosts": len(hosts),
        "wall_s": run["wall_s"],
        "s_per_host": round(run["wall_s"] / len(hosts), 1),
        "tasks_per_host": first.get("ok", 0) + first.get("skipped", 0) + first.get("failed", 0),
        "ok": first.get("ok"), "skipped": first.get("skipped"),
        "changed_total": sum(r.get("changed", 0) for r in per_host),
        "failed_total": sum(r.get("failed", 0) + r.get("unreachable", 0) for r in per_host),
        "rc": run["rc"],
        "controller_cpu_s": run["controller_cpu_s"],
        "targets_cpu_s": run["targets_cpu_s"],
        # On this many cores no schedule can finish sooner than all the CPU work divided by them.
        "cpu_bound_floor_s": (round((run["controller_cpu_s"] + run["targets_cpu_s"]) / (os.cpu_count() or 1), 1)
                              if run["targets_cpu_s"] is not None else None),
        "succeeded": ok,
        "command": run["command"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description="site.yml on 1 and 4 bench containers: first converge and re-runs")
    p.add_argument("--phases", default="first1,first4,rerun,verify")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--hosts", type=int, default=4, choices=range(1, 5), help="size of the multi-host set (1-4)")
    p.add_argument("--first1-from", metavar="JSON", help="record a first converge of hub-bench-1 that "
                   "`hubbench.py up` printed (instead of running phase first1 again)")
    p.add_argument("--no-final-check", action="store_true",
                   help="skip the committed setting's re-run after the other variants (it checks they left nothing to change)")
    p.add_argument("--keep", action="store_true", help="keep the containers (and the temp dir) afterwards")
    p.add_argument("--force", action="store_true", help="run even if not all nine roles are committed")
    p.add_argument("--out", default=str(hb.REPO / "bench" / "results" / "provision.json"))
    args = p.parse_args()
    hb.clean_up_on_sigterm()
    phases = args.phases.split(",")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v}; choose from {', '.join(VARIANTS)}")
    missing = hb.roles_ready()
    if missing and not args.force:
        print("not all roles are committed yet: " + ", ".join(missing) + " (--force to run anyway)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-provision-"))
    names = [f"{hb.PREFIX}{i}" for i in range(1, args.hosts + 1)]
    one = names[:1]
    result: Dict[str, Any] = {
        "benchmark": "provision",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/provision.py " + " ".join(sys.argv[1:]),
        "image": hb.IMAGE,
        "hosts_multi": args.hosts,
        "loadavg_before": list(os.getloadavg()),
        "first_converge": {},
        "rerun": {},
        "targets": {},
    }
    if args.first1_from:
        up = json.loads(Path(args.first1_from).read_text())
        recap = up["recap"].get(one[0], {})
        result["first_converge"]["1"] = {
            "hosts": 1, "wall_s": up["wall_s"], "s_per_host": up["wall_s"],
            "tasks_per_host": recap.get("ok", 0) + recap.get("skipped", 0) + recap.get("failed", 0),
            "ok": recap.get("ok"), "skipped": recap.get("skipped"), "changed_total": recap.get("changed"),
            "failed_total": recap.get("failed", 0) + recap.get("unreachable", 0), "rc": up["rc"],
            "succeeded": up["rc"] == 0, "command": "python bench/hubbench.py up hub-bench-1"}
    log_dir = workdir / "logs"
    log_dir.mkdir()
    inventories: Dict[str, Path] = {}

    def inventory_for(variant: str) -> Path:
        connection = VARIANTS[variant][0]
        if connection not in inventories:
            inventories[connection] = (ssh_inventory(workdir, names) if connection == "ssh"
                                       else hb.write_inventory(workdir / "inventory-podman", names, connection="podman"))
        return inventories[connection]

    def step(label: str, inventory: Path, hosts: List[str], env: Dict[str, str], limit: str = "") -> Dict[str, Any]:
        print(f"[provision] {label} ...", flush=True)
        run = hb.run_playbook(inventory, log_dir / f"{label}.log", env, limit=limit or None, containers=hosts)
        s = summarize(run, hosts)
        s["log"] = str(log_dir / f"{label}.log")
        print(f"[provision] {label}: {s['wall_s']} s, rc {s['rc']}, changed {s['changed_total']}, "
              f"failed {s['failed_total']}", flush=True)
        return s

    try:
        if "first1" in phases:
            hb.create(one)
            result["first_converge"]["1"] = step(
                "first-1", ssh_inventory(workdir / "first1", one), one, variant_env(COMMITTED, workdir / "first1"))
            if "first4" in phases and len(names) > 1:
                hb.remove(one)
                inventories.clear()  # new containers, new addresses
        if "first4" in phases and len(names) > 1:
            hb.create(names)
            result["first_converge"][str(len(names))] = step(
                f"first-{len(names)}", inventory_for(COMMITTED), names, variant_env(COMMITTED, workdir))
        if ("rerun" in phases or "verify" in phases) and not all(hb.exists(n) for n in names):
            raise SystemExit(f"re-runs need converged {', '.join(names)}: add first1/first4 to --phases")
        if "rerun" in phases:
            for variant in variants:
                env = variant_env(variant, workdir)
                inventory = inventory_for(variant)
                r1 = step(f"rerun-{variant}-1", inventory, one, env, limit=one[0])
                entry = {"1": r1, "ratio": None}
                correct = r1["succeeded"] and r1["changed_total"] == 0
                if len(names) > 1:
                    rn = step(f"rerun-{variant}-{len(names)}", inventory, names, env)
                    entry[str(len(names))] = rn
                    entry["ratio"] = round(rn["wall_s"] / r1["wall_s"], 2) if r1["wall_s"] else None
                    correct = correct and rn["succeeded"] and rn["changed_total"] == 0
                entry["correct"] = correct
                result["rerun"][variant] = entry
            # After the other settings, the committed one must still find nothing to change.
            if variants and variants[-1] != COMMITTED and not args.no_final_check:
                check = step(f"rerun-{COMMITTED}-after", inventory_for(COMMITTED), names, variant_env(COMMITTED, workdir))
                result["rerun_committed_after_variants"] = check
        if "verify" in phases:
            print("[provision] verification suite on hub-bench-1 ...", flush=True)
            started = time.monotonic()
            res = subprocess.run(
                [str(hb.VENV_BIN / "pytest"), "molecule/shared/tests", f"--hosts=podman://{one[0]}",
                 "-p", "no:cacheprovider", "-q", "-x", "--tb=line"],
                cwd=hb.REPO, env=hb.base_env(), capture_output=True, text=True, timeout=1800, check=False)
            tail = res.stdout.strip().splitlines()[-1:] or [""]
            result["verify"] = {"rc": res.returncode, "summary": tail[0], "wall_s": round(time.monotonic() - started, 1)}
            (log_dir / "verify.log").write_text(res.stdout + res.stderr)
            print(f"[provision] verify: rc {res.returncode}: {tail[0]}", flush=True)
    finally:
        if not args.keep:
            hb.remove(names)
            hb.remove_network_if_unused()
        print(f"[provision] logs in {log_dir}", file=sys.stderr)

    # Targets: one host re-run <= 30 s; N hosts within 1.6x one host; best correct variant.
    correct = {v: r for v, r in result["rerun"].items() if r["correct"]}
    if correct:
        best = min(correct, key=lambda v: correct[v].get(str(len(names)), correct[v]["1"])["wall_s"])
        b = correct[best]
        result["best_variant"] = best
        result["targets"] = {
            "rerun_one_host_within_30s": {"value": b["1"]["wall_s"], "variant": best,
                                          "pass": b["1"]["wall_s"] <= TARGET_RERUN_1_HOST_S},
        }
        if len(names) > 1:
            result["targets"]["four_hosts_within_1_6x_one"] = {
                "value": b["ratio"], "variant": best, "pass": b["ratio"] is not None and b["ratio"] <= TARGET_RATIO_4_TO_1}
        base = result["rerun"].get(COMMITTED)
        if base:
            result["targets"]["committed_rerun_one_host_within_30s"] = {
                "value": base["1"]["wall_s"], "pass": base["1"]["wall_s"] <= TARGET_RERUN_1_HOST_S}
        if base and len(names) > 1:
            result["targets"]["committed_four_hosts_within_1_6x_one"] = {
                "value": base["ratio"], "pass": base["ratio"] is not None and base["ratio"] <= TARGET_RATIO_4_TO_1}
    first = result["first_converge"]
    if "1" in first and str(len(names)) in first:
        result["first_converge"]["ratio"] = round(first[str(len(names))]["wall_s"] / first["1"]["wall_s"], 2)

    def row(label: str, s: Dict[str, Any]) -> None:
        print(f"{label:<28}{s['hosts']:>6}{s['wall_s']:>9}{s['s_per_host']:>8}{s['tasks_per_host']:>11}"
              f"{s['changed_total']:>9}{s['failed_total']:>8}{s['controller_cpu_s']!s:>9}{s['targets_cpu_s']!s:>9}"
              f"{s['cpu_bound_floor_s']!s:>8}")

    print(f"\n{'run':<28}{'hosts':>6}{'wall s':>9}{'s/host':>8}{'tasks/host':>11}{'changed':>9}{'failed':>8}"
          f"{'ctl cpu':>9}{'tgt cpu':>9}{'floor':>8}")
    for key in ("1", str(len(names))):
        if key in first:
            row("first converge", first[key])
    if "ratio" in first:
        print(f"{'  first converge ratio':<28}{'':>6}{first['ratio']:>9}")
    for variant, r in result["rerun"].items():
        for key in sorted({"1", str(len(names))}):
            row("re-run " + variant, r[key])
        print(f"{'  ratio ' + variant:<28}{'':>6}{r['ratio']!s:>9}{'':>8}{'':>11}  {'correct' if r['correct'] else 'NOT CORRECT'}")
    print(f"(ctl/tgt cpu: CPU seconds of the controller and of the target containers; floor: both "
          f"divided by the {os.cpu_count()} cores, the shortest wall time any schedule could reach)")
    if "verify" in result:
        print(f"verification suite on {one[0]}: {result['verify']['summary']}")
    for name, t in result["targets"].items():
        print(f"  {'PASS' if t['pass'] else 'FAIL'}  {name} ({t['value']})")
    hb.write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
