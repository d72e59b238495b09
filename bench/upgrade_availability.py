#!/usr/bin/env python3
"""How long the hub is unavailable while playbooks/upgrade.yml switches a host to a new release.

A client inside the target container polls http://127.0.0.1:<hub_http_port>/api/health every 100 ms (the
app's own port; loopback of the container, nothing leaves it) while the controller runs
upgrade.yml with a copy of app/ whose version is bumped (and, with --migration, one compatible
migration added, so the run also takes the pre-upgrade backup and migrates). The poller stops by
itself after --max-seconds. Prints and writes: the playbook's wall time, the number of polls,
the failed ones, and the longest run of failures (first failed poll to the next success).

    python bench/upgrade_availability.py --container rel-a --inventory .cache/dev/rel-a/hosts.yml
    python bench/upgrade_availability.py ... --migration --runs 3

The host must already be converged (playbooks/site.yml). Each run deploys a new version
(1.0.0.postN...), so the host ends on a test build: re-run site.yml afterwards.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hubbench

REPO = hubbench.REPO

# Runs inside the container with its system python3: one GET every interval, each with a short
# timeout; a stop file or the deadline ends it. Prints one JSON list of [t, ok] pairs.
POLLER = r"""
import json, os, sys, time, urllib.request
interval, deadline, stop, url = float(sys.argv[1]), time.monotonic() + float(sys.argv[2]), sys.argv[3], sys.argv[4]
samples = []
t0 = time.monotonic()
while time.monotonic() < deadline and not os.path.exists(stop):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            ok = r.status == 200
    except Exception:
        ok = False
    samples.append([round(start - t0, 3), ok])
    time.sleep(max(0.0, interval - (time.monotonic() - start)))
print(json.dumps(samples))
"""


def bumped_source(work: Path, version: str, migration: bool) -> Path:
    dest = work / f"app-{version}"
    shutil.copytree(REPO / "app", dest, ignore=shutil.ignore_patterns(
        "__pycache__", "build", "dist", "*.egg-info", ".venv", ".pytest_cache"))
    for rel, pattern, repl in (
        ("pyproject.toml", r'^version = "[^"]+"', f'version = "{version}"'),
        ("src/multiagent_hive/__init__.py", r'^__version__ = "[^"]+"', f'__version__ = "{version}"'),
    ):
        path = dest / rel
        text, count = re.subn(pattern, repl, path.read_text(), count=1, flags=re.M)
        assert count == 1, rel
        path.write_text(text)
    if migration:
        db = dest / "src/multiagent_hive/db.py"
        text = db.read_text()
        top = max(int(n) for n in re.findall(r"^    \(\s*(\d+),", text, flags=re.M))
        entry = f'    ({top + 1}, "bench {version}", ["CREATE TABLE bench_{top + 1} (id INTEGER PRIMARY KEY)"]),\n'
        text, count = re.subn(r"^\]\nSCHEMA_VERSION = ", entry + "]\nSCHEMA_VERSION = ", text, count=1, flags=re.M)
        assert count == 1
        db.write_text(text)
    return dest


def outages(samples: List[List[Any]]) -> List[float]:
    """Lengths (s) of each run of failed polls: first failure to the next success."""
    result, down_since = [], None
    for t, ok in samples:
        if not ok and down_since is None:
            down_since = t
        elif ok and down_since is not None:
            result.append(round(t - down_since, 3))
            down_since = None
    if down_since is not None:
        result.append(round(samples[-1][0] - down_since, 3))
    return result


def one_run(args: argparse.Namespace, work: Path, version: str) -> Dict[str, Any]:
    source = bumped_source(work, version, args.migration)
    stop = "/tmp/.upgrade-availability-stop"
    hubbench.podman("exec", args.container, "rm", "-f", stop)
    poller = subprocess.Popen(
        ["podman", "exec", "-i", args.container, "python3", "-", "0.1", str(args.max_seconds), stop,
         f"http://127.0.0.1:{hubbench.HTTP_PORT}/api/health"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=hubbench.base_env())
    assert poller.stdin is not None
    poller.stdin.write(POLLER)
    poller.stdin.close()
    time.sleep(1.0)  # a second of healthy polls before the upgrade starts
    log = work / f"upgrade-{version}.log"
    started = time.monotonic()
    with open(log, "w") as handle:
        rc = subprocess.run(
            [str(hubbench.VENV_BIN / "ansible-playbook"), "-i", args.inventory, str(REPO / "playbooks/upgrade.yml"),
             "-e", f"hub_app_source_dir={source}", "-e", f"hub_app_wheelhouse_cache_dir={work / 'cache'}"],
            stdout=handle, stderr=subprocess.STDOUT, env=hubbench.base_env(), timeout=args.max_seconds,
        ).returncode
    wall = time.monotonic() - started
    time.sleep(1.0)
    hubbench.podman("exec", args.container, "touch", stop)
    assert poller.stdout is not None
    out = poller.stdout.read()
    poller.wait(timeout=30)
    hubbench.podman("exec", args.container, "rm", "-f", stop)
    samples = json.loads(out)
    down = outages(samples)
    failed = sum(1 for _t, ok in samples if not ok)
    if rc != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return {"version": version, "playbook_rc": rc, "playbook_seconds": round(wall, 1), "polls": len(samples),
            "failed_polls": failed, "outages_s": down, "longest_outage_s": max(down, default=0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True, help="the target's podman container (your own)")
    parser.add_argument("--inventory", required=True, help="inventory naming that container")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--migration", action="store_true", help="each build adds one compatible migration")
    parser.add_argument("--max-seconds", type=float, default=600, help="bound of each run and of the poller")
    parser.add_argument("--output", default=str(REPO / "bench/results/upgrade-availability.json"), help="'-' for none")
    args = parser.parse_args()
    hubbench.clean_up_on_sigterm()
    runs = []
    with tempfile.TemporaryDirectory(prefix="upgrade-availability-") as tmp:
        work = Path(tmp)
        stamp = time.strftime("%Y%m%d%H%M%S")
        for index in range(args.runs):
            run = one_run(args, work, f"1.0.0.post{stamp}{index}")
            runs.append(run)
            print(f"run {index + 1}: playbook {run['playbook_seconds']} s (rc {run['playbook_rc']}), "
                  f"{run['polls']} polls, {run['failed_polls']} failed, longest outage {run['longest_outage_s']} s")
    result = {"benchmark": "upgrade-availability", "container": args.container, "migration": args.migration,
              "poll_interval_s": 0.1, "runs": runs}
    hubbench.write_result(args.output, result)
    return 0 if all(r["playbook_rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
