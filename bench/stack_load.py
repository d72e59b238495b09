#!/usr/bin/env python3
"""Load through the real stack (issue 7): the guide's load test, through nginx and TLS, inside a
converged bench container, beside nginx answering a static 200 in the same run (the ceiling),
and the guide's memory check (the app's RSS after 60 s idle and after the load).

The guide runs `ab -n 1000 -c 100 .../api/health` and `ab -n 1000 -c 50 .../api/agents` against
the app's own port; here the same requests go to https://127.0.0.1 (nginx, TLS, the hub site),
/api/agents with an operator's API key. ab (apache2-utils) is installed in the container by this
bench, not by the roles. The ceiling is a temporary nginx server block, added by this bench and
removed afterwards: 127.0.0.1:8443 only, TLS with the hub site's own certificate and key,
`return 200` for every request. Each load runs as the guide writes it (HTTP/1.0, one TLS
handshake per request) and with keep-alive (-k).

    /work/main/.venv/bin/python bench/stack_load.py [--container hub-bench-1] [--keep]

Writes bench/results/stack-load.json and prints a table. Without an existing converged container
of that name one is created and converged first, and removed at the end (unless --keep).
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hubbench as hb

HIVE = hb.HIVE
USER = hb.SERVICE_USER
CEILING_PORT = 8443
CEILING_CONF = "/etc/nginx/conf.d/zz-hub-bench-ceiling.conf"
AGENT_BODY = '{"name": "stack-bench", "type": "worker", "capabilities": [{"name": "compute", "proficiency": 0.7}]}'


def parse_ab(text: str) -> Dict[str, Any]:
    def num(pattern: str, default: float = 0.0) -> float:
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else default

    pct = {int(p): float(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.M)}
    return {
        "complete": int(num(r"^Complete requests:\s+(\d+)")),
        "failed": int(num(r"^Failed requests:\s+(\d+)")),
        "non_2xx": int(num(r"^Non-2xx responses:\s+(\d+)")),
        "rps": num(r"^Requests per second:\s+([\d.]+)"),
        "p50_ms": pct.get(50), "p99_ms": pct.get(99), "max_ms": pct.get(100),
        "time_s": num(r"^Time taken for tests:\s+([\d.]+)"),
    }


class StackLoad:
    def __init__(self, name: str) -> None:
        self.name = name

    def sh(self, script: str, check: bool = True, timeout: float = 300) -> Any:
        return hb.sh(self.name, script, check=check, timeout=timeout)

    def rss(self) -> Dict[str, Any]:
        pid = self.sh(f"systemctl show -p MainPID --value {hb.SERVICE}").stdout.strip()
        status = self.sh(f"grep -E '^(VmRSS|VmHWM)' /proc/{pid}/status").stdout
        values = {k: round(int(v) / 1024, 1) for k, v in re.findall(r"(VmRSS|VmHWM):\s+(\d+) kB", status)}
        # The guide's own check, on the service's main process (pgrep alone also finds the
        # metrics exporter, a second multiagent-hive process, and ps -p then gets two pids).
        ps = self.sh(f"ps -p {pid} -o pid,ppid,%mem,%cpu,rss,cmd --no-headers").stdout.strip()
        return {"pid": int(pid), "rss_mb": values.get("VmRSS"), "peak_rss_mb": values.get("VmHWM"), "ps": ps}

    def setup(self) -> None:
        self.sh("command -v ab >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get update -qq && "
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null)", timeout=600)
        password = secrets.token_urlsafe(24)
        res = hb.podman("exec", "-i", self.name, "runuser", "-u", USER, "--", *hb.HIVE_ARGV, "--ensure-user",
                        "bench-stack", "--role", "operator", "--password-file", "-", input_text=password, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"--ensure-user: {res.stderr.strip()}")
        out = self.sh(f"runuser -u {USER} -- {HIVE} --create-api-key --user bench-stack --key-name stack")
        # The key stays in a root-only file in the container; ab reads it from there.
        key = json.loads(out.stdout)["api_key"]
        hb.podman("exec", "-i", self.name, "/bin/bash", "-c",
                  "umask 077; cat > /root/hub-bench-key; printf '%s' "
                  + shlex.quote(AGENT_BODY) + " > /root/hub-bench-agent.json", input_text=key)
        # The hub site's certificate, for a ceiling with the same TLS work per request.
        conf = self.sh("nginx -T 2>/dev/null").stdout
        cert = re.search(r"^\s*ssl_certificate\s+(\S+);", conf, re.M)
        key_file = re.search(r"^\s*ssl_certificate_key\s+(\S+);", conf, re.M)
        if not cert or not key_file:
            raise RuntimeError("no ssl_certificate in nginx -T: is the hub site converged?")
        if "include /etc/nginx/conf.d/*.conf" not in conf:
            raise RuntimeError("nginx does not include conf.d: cannot add the ceiling server block")
        block = (
            "# hub-bench: temporary ceiling for bench/stack_load.py, removed when it ends.\n"
            f"server {{\n    listen 127.0.0.1:{CEILING_PORT} ssl;\n    server_name _;\n"
            f"    ssl_certificate {cert.group(1)};\n    ssl_certificate_key {key_file.group(1)};\n"
            "    access_log off;\n    location / {\n        default_type application/json;\n"
            "        return 200 '{\"status\":\"ok\"}';\n    }\n}\n"
        )
        hb.podman("exec", "-i", self.name, "/bin/bash", "-c", f"cat > {CEILING_CONF}", input_text=block)
        self.sh("nginx -t -q && systemctl reload nginx")
        time.sleep(1)

    def teardown(self) -> None:
        self.sh(f"rm -f {CEILING_CONF} /root/hub-bench-key /root/hub-bench-agent.json; "
                "nginx -t -q && systemctl reload nginx", check=False)

    def ab(self, n: int, c: int, url: str, keepalive: bool, auth: bool = False, post: bool = False) -> Dict[str, Any]:
        opts = f"-n {n} -c {c} -s 30 -r"
        if keepalive:
            opts += " -k"
        if auth:
            opts += ' -H "X-API-Key: $(cat /root/hub-bench-key)"'
        if post:
            opts += " -p /root/hub-bench-agent.json -T application/json"
        res = self.sh(f"ab {opts} {url} 2>&1", check=False, timeout=600)
        out = parse_ab(res.stdout)
        out["ab_exit"] = res.returncode
        if res.returncode != 0 or out["complete"] == 0:
            out["output_tail"] = res.stdout[-600:]
        return out

    def run(self, idle_s: int) -> Dict[str, Any]:
        # The guide's memory check: start the service, 60 s idle, then its memory.
        self.sh(f"systemctl restart {hb.SERVICE}")
        for _ in range(60):
            if self.sh("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/api/health", check=False).stdout == "200":
                break
            time.sleep(0.5)
        time.sleep(idle_s)
        rss_idle = self.rss()
        loads: List[Dict[str, Any]] = []
        plan = [
            ("nginx static 200 (ceiling)", 1000, 100, f"https://127.0.0.1:{CEILING_PORT}/", {}),
            ("GET /api/health", 1000, 100, "https://127.0.0.1/api/health", {}),
            ("nginx static 200 (ceiling)", 1000, 50, f"https://127.0.0.1:{CEILING_PORT}/", {}),
            ("GET /api/agents (API key)", 1000, 50, "https://127.0.0.1/api/agents", {"auth": True}),
            ("POST /api/agents (API key)", 1000, 50, "https://127.0.0.1/api/agents", {"auth": True, "post": True}),
        ]
        for keepalive in (False, True):
            for label, n, c, url, kw in plan:
                r = self.ab(n, c, url, keepalive, **kw)
                r.update({"load": label, "n": n, "c": c, "keepalive": keepalive,
                          "command": f"ab -n {n} -c {c}{' -k' if keepalive else ''}"
                                     f"{' -H X-API-Key:...' if kw.get('auth') else ''}"
                                     f"{' -p agent.json -T application/json' if kw.get('post') else ''} {url}"})
                loads.append(r)
                print(f"[stack] {r['command']}: {r['rps']} req/s, failed {r['failed']}, non-2xx {r['non_2xx']}",
                      flush=True)
        time.sleep(2)
        rss_after = self.rss()
        return {"loads": loads, "memory": {"idle_s": idle_s, "after_idle": rss_idle, "after_load": rss_after}}


def main() -> int:
    p = argparse.ArgumentParser(description="the guide's ab load test through nginx + TLS, with a static ceiling")
    p.add_argument("--container", default=hb.PREFIX + "1")
    p.add_argument("--idle", type=int, default=60, help="seconds idle before the first memory reading (guide: 60)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=str(hb.REPO / "bench" / "results" / "stack-load.json"))
    args = p.parse_args()
    hb.clean_up_on_sigterm()
    missing = hb.roles_ready()
    if missing:
        print("not all roles are committed yet: " + ", ".join(missing), file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-stack-"))
    created = hb.ensure_converged(args.container, workdir)
    bench = StackLoad(args.container)
    try:
        bench.setup()
        data = bench.run(args.idle)
    finally:
        bench.teardown()
        if created and not args.keep:
            hb.remove([args.container])
            hb.remove_network_if_unused()
    ceilings: Dict[Any, Optional[float]] = {(row["c"], row["keepalive"]): row["rps"] for row in data["loads"] if "ceiling" in row["load"]}
    for load in data["loads"]:
        ceiling = ceilings.get((load["c"], load["keepalive"]))
        load["vs_ceiling"] = round(load["rps"] / ceiling, 3) if ceiling else None
    app_loads = [row for row in data["loads"] if "ceiling" not in row["load"]]
    guide = [row for row in app_loads if not row["keepalive"] and row["load"] in ("GET /api/health", "GET /api/agents (API key)")]
    result = {
        "benchmark": "stack-load", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/stack_load.py " + " ".join(sys.argv[1:]), "container": args.container,
        "image": hb.IMAGE, "path": f"ab in the container -> nginx (TLS, hub site) -> app on 127.0.0.1:{hb.HTTP_PORT}",
        **data,
        "targets": {
            "guide_loads_zero_failed": {"pass": all(row["failed"] == 0 and row["non_2xx"] == 0 and row["complete"] == row["n"]
                                                    for row in guide)},
            "all_loads_zero_failed": {"pass": all(row["failed"] == 0 and row["non_2xx"] == 0 and row["complete"] == row["n"]
                                                  for row in data["loads"])},
        },
    }
    print(f"\n{'load':<30}{'c':>4}{'keep':>6}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'vs ceil':>9}{'failed':>8}{'non2xx':>8}")
    for row in data["loads"]:
        print(f"{row['load']:<30}{row['c']:>4}{'yes' if row['keepalive'] else 'no':>6}{row['rps']:>9.0f}"
              f"{row['p50_ms'] or 0:>8.0f}{row['p99_ms'] or 0:>8.0f}{row['vs_ceiling'] or 0:>9.2f}{row['failed']:>8}{row['non_2xx']:>8}")
    m = data["memory"]
    print(f"\napp RSS after {m['idle_s']} s idle: {m['after_idle']['rss_mb']} MB; after the loads: "
          f"{m['after_load']['rss_mb']} MB (peak {m['after_load']['peak_rss_mb']} MB)")
    print(f"guide's ps: {m['after_load']['ps']}")
    for name, t in result["targets"].items():
        print(f"  {'PASS' if t['pass'] else 'FAIL'}  {name}")
    hb.write_result(args.out, result)
    return 0 if result["targets"]["guide_loads_zero_failed"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
