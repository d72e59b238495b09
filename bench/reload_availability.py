#!/usr/bin/env python3
"""nginx reload availability: failed requests per reload, per kind of client.

Inside a converged container, POLLERS curl loops request https://127.0.0.1/.env (nginx answers
403 itself: the app is not in the way) while the deploy hook (`ai-orchestrator-nginx-reload`,
what certbot runs after a renewal) reloads nginx RELOADS times; each reload waits until the old
workers have exited before the next. Every request's status and curl exit code is kept; a
failed request is any answer but 403 (curl's `000` is a connection that failed).

The clients, each its own round of RELOADS reloads:
  h2            curl's default over TLS: HTTP/2 (ALPN), no retry
  h2-retry-once HTTP/2, one retry on any error (`--retry 1 --retry-all-errors`)
  http1.1       HTTP/1.1, no retry

An HTTP/2 connection that an old worker has accepted and set up, but on which no request has
arrived yet, is idle: the graceful shutdown of a reload closes it (GOAWAY, no stream processed),
and a client whose request was already on its way sees the connection fail (curl exit 16). No
nginx setting keeps such connections open; HTTP/1.1 connections waiting for their first request
are not idle and are served (docs/deviations.md, "nginx reloads and HTTP/2 clients").

    /work/main/.venv/bin/python bench/reload_availability.py [--container hub-bench-1]
        [--reloads 30] [--pollers 4] [--clients h2,h2-retry-once,http1.1] [--keep]

Any running hub container will do (a dev target: `scripts/dev-target.sh up NAME`). Without one
of that name (hub-bench-N) one is created and converged first, and
removed at the end (unless --keep). Loads are bounded: RELOADS reloads, each at most 10 s.
Writes bench/results/reload-availability.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hubbench as hb

CLIENTS: Dict[str, str] = {
    "h2": "",
    "h2-retry-once": "--retry 1 --retry-all-errors",
    "http1.1": "--http1.1",
}
RELOAD_HOOK = "/usr/local/sbin/ai-orchestrator-nginx-reload"

# One round inside the container: pollers until a stop file goes, RELOADS reloads, each settled
# (no old worker left, at most 10 s) before the next; then one line per request.
ROUND = r"""
set -u
reloads=$1; pollers=$2; shift 2
dir=$(mktemp -d); : > "$dir/run"
for p in $(seq "$pollers"); do
  ( while [ -e "$dir/run" ]; do
      curl -sk "$@" -o /dev/null -w '%{http_code} %{exitcode}\n' https://127.0.0.1/.env 2>/dev/null
    done > "$dir/poll.$p" ) &
done
sleep 0.5
start=$(date +%s.%N)
for r in $(seq "$reloads"); do
  old=$(pgrep -f '^nginx: worker' | tr '\n' ' ')
  HOOK || echo "reload $r failed" >&2
  for _ in $(seq 200); do
    left=0; for pid in $old; do [ -e "/proc/$pid" ] && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.05
  done
done
end=$(date +%s.%N)
sleep 0.5; rm "$dir/run"; wait
awk -v s="$start" -v e="$end" 'BEGIN { printf "seconds %.1f\n", e - s }'
cat "$dir"/poll.*
rm -rf "$dir"
""".replace("HOOK", RELOAD_HOOK)


def one_round(container: str, client: str, reloads: int, pollers: int) -> Dict[str, Any]:
    args = CLIENTS[client].split()
    res = hb.podman("exec", container, "bash", "-c", ROUND, "round", str(reloads), str(pollers), *args,
                    timeout=60 + reloads * 15)
    seconds = 0.0
    requests, failed = 0, 0
    failures: Dict[str, int] = {}
    for line in res.stdout.splitlines():
        if line.startswith("seconds "):
            seconds = float(line.split()[1])
            continue
        fields = line.split()
        if len(fields) != 2:
            continue
        requests += 1
        if fields[0] != "403":
            failed += 1
            key = f"http {fields[0]}, curl exit {fields[1]}"
            failures[key] = failures.get(key, 0) + 1
    if res.returncode != 0 or "failed" in res.stderr:
        raise RuntimeError(f"{client}: a reload failed: {res.stderr.strip()[-500:]}")
    return {
        "client": client, "curl_options": CLIENTS[client], "reloads": reloads, "pollers": pollers,
        "requests": requests, "failed": failed, "failed_per_reload": round(failed / reloads, 3),
        "failed_per_1000_requests": round(1000 * failed / requests, 2) if requests else None,
        "failures": failures, "seconds": round(seconds, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--container", default=hb.PREFIX + "1")
    p.add_argument("--reloads", type=int, default=30)
    p.add_argument("--pollers", type=int, default=4)
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=str(hb.REPO / "bench" / "results" / "reload-availability.json"))
    args = p.parse_args()
    clients = args.clients.split(",")
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        p.error(f"unknown client {', '.join(unknown)} (known: {', '.join(CLIENTS)})")
    if not 1 <= args.reloads <= 500 or not 1 <= args.pollers <= 16:
        p.error("--reloads 1..500 and --pollers 1..16 (the load stays bounded)")
    hb.clean_up_on_sigterm()
    # Any running hub container (a dev target too); a missing one is made as a bench container.
    running = hb.exists(args.container) and hb.podman(
        "exec", args.container, "systemctl", "is-active", "nginx", check=False).returncode == 0
    created = False if running else hb.ensure_converged(args.container, Path(tempfile.mkdtemp(prefix="hub-bench-")))
    try:
        rounds: List[Dict[str, Any]] = []
        for client in clients:
            rounds.append(one_round(args.container, client, args.reloads, args.pollers))
            r = rounds[-1]
            print(f"{client:14} {r['reloads']} reloads, {r['requests']} requests: {r['failed']} failed "
                  f"({r['failed_per_reload']} per reload) {r['failures'] or ''}")
        hb.write_result(args.out, {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "container": args.container, "rounds": rounds})
    finally:
        if created and not args.keep:
            hb.remove([args.container])
            hb.remove_network_if_unused()
    return 0


if __name__ == "__main__":
    sys.exit(main())
