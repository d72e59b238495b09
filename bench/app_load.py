#!/usr/bin/env python3
"""Load benchmark of the hub app (issues 3 and 13).

Starts `multiagent-hive` for real (temp env file with fresh secrets, temp database, logs and
metrics dir), creates an operator and an API key with the app's CLI, starts a bare uvicorn
hello-world app (bench/bare_app.py, same loop and parser) as the ceiling, and drives both with
wrk (a separate process, 127.0.0.1 only, every run bounded by -d). With --pin the servers run
on CPU 0 and wrk on CPU 1 (taskset), so the generator does not steal the server's core; on a
shared machine that is slower (measured: docs/benchmarks.md), so it is not the default. The
server's CPU time per request is reported too: the figure that does not depend on neighbours.

Prints a table and writes bench/results/app-load.json. Run with the project venv:

    /work/main/.venv/bin/python bench/app_load.py [--rounds 3 --duration 5 --connections 50] [--pin]

Setup: wrk is installed with apt-get when missing (Debian package `wrk`; needs root).
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "app" / "tests"))  # the pathological requests
import hubbench as hb

from pathological import PATHOLOGICAL, PATHOLOGICAL_AUTHENTICATED

BENCH = Path(__file__).resolve().parent
WRK_DIR = BENCH / "wrk"
# Issue 13 keeps the figures the app had before it was hardened, measured on this machine, as
# targets (issue 3's were 0.70, 1,000 req/s and 80 MB).
TARGETS = {
    "health_ratio_min": 1.00,      # hive GET /api/health at the bare app's rate
    "agents_rps_min": 2693.0,      # POST /api/agents
    "rss_mb_max": 76.7,            # RSS after 10,000 agent creations
    "rss_after_requests": 10_000,
    "agents_list_ratio_min": 0.50,  # authenticated GET /api/agents (100) >= 50 % of bare Starlette
    # While 100 clients log in back to back: every health probe answered, median under 50 ms
    # (the tail is reported; on the shared 2 cores it follows the machine's load).
    "login_storm_health_p50_ms_max": 50.0,
    # No request may hold the event loop for more than 50 ms of CPU (the server's CPU time per
    # request, each pathological request sent PATHOLOGICAL_REPEATS times).
    "pathological_cpu_ms_max": 50.0,
}
PATHOLOGICAL_REPEATS = 10
AGENTS_PAGE = "/api/agents?limit=100"
LOGIN_CONCURRENCY = 100
# The general per-address limit (RATE_LIMIT_PER_SECOND / RATE_LIMIT_BURST, default 1000/2000)
# would turn a single-client benchmark into a 429 benchmark; raised so throughput is measured.
RATE_LIMIT = "1000000"


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found: installing the Debian package", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is still missing after apt-get install")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hive_binary() -> str:
    beside = Path(sys.executable).parent / "multiagent-hive"
    if beside.exists():
        return str(beside)
    found = shutil.which("multiagent-hive")
    if not found:
        sys.exit("multiagent-hive not found: run with the project venv (/work/main/.venv/bin/python)")
    return found


def proc_status(pid: int) -> Dict[str, float]:
    """VmRSS and VmHWM (peak RSS) in MB."""
    out: Dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}: not ready after {timeout:.0f} s")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wrk = ensure_wrk()
        self.hive = hive_binary()
        self.tmp = Path(tempfile.mkdtemp(prefix="hub-bench-app-"))
        self.procs: List[subprocess.Popen] = []
        self.pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.server_prefix = ["taskset", "-c", "0"] if self.pin else []
        self.client_prefix = ["taskset", "-c", "1"] if self.pin else []

    # setup -------------------------------------------------------------------------------
    def write_env(self) -> None:
        self.hive_port = free_port()
        self.env_file = self.tmp / "environment"
        self.config_file = self.tmp / "config.toml"
        self.config_file.write_text("# empty: every setting comes from the environment file\n")
        settings = {
            "JWT_SECRET": secrets.token_hex(32),
            "DATABASE_ENCRYPTION_KEY": secrets.token_hex(32),
            "API_ENCRYPTION_KEY": secrets.token_hex(32),
            "DATABASE_PATH": str(self.tmp / "hive_persistence.db"),
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(self.hive_port),
            "METRICS_PORT": str(free_port()),
            "METRICS_DIR": str(self.tmp / "metrics"),
            "AUDIT_LOG_PATH": str(self.tmp / "audit.log"),
            "APP_LOG_PATH": str(self.tmp / "app.log"),
            "RATE_LIMIT_PER_SECOND": RATE_LIMIT,
            "RATE_LIMIT_BURST": RATE_LIMIT,
            # The login storm comes from one address: per-address login limits off its way, so
            # it measures the hashing pool (the per-account backoff counts failures only).
            "LOGIN_RATE_PER_MINUTE": RATE_LIMIT,
            "LOGIN_BURST": RATE_LIMIT,
        }
        for item in self.args.set:
            key, _, value = item.partition("=")
            settings[key] = value
        self.settings_shown = {k: v for k, v in settings.items() if "KEY" not in k and "SECRET" not in k}
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{k}={v}\n" for k, v in settings.items())

    def cli(self, *argv: str, stdin: Optional[str] = None) -> Dict[str, Any]:
        cmd = [self.hive, "--config", str(self.config_file), "--env-file", str(self.env_file), *argv]
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
        return json.loads(res.stdout)

    def prepare(self) -> None:
        self.write_env()
        self.cli("--init-database")
        self.password = secrets.token_urlsafe(24)
        self.cli("--ensure-user", "bench-operator", "--role", "operator", "--password-file", "-",
                 stdin=self.password)
        self.api_key = self.cli("--create-api-key", "--user", "bench-operator", "--key-name", "bench")["api_key"]

    def start(self) -> None:
        log = open(self.tmp / "hive.stderr", "wb")  # lives as long as the server
        self.hive_proc = subprocess.Popen(
            [*self.server_prefix, self.hive, "--config", str(self.config_file), "--env-file", str(self.env_file)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        self.procs.append(self.hive_proc)
        self.bare_port = free_port()
        self.bare_proc = subprocess.Popen(
            [*self.server_prefix, sys.executable, str(BENCH / "bare_app.py"), str(self.bare_port)],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "bare.stderr", "wb"),
        )
        self.procs.append(self.bare_proc)
        self.star_port = free_port()
        self.star_proc = subprocess.Popen(
            [*self.server_prefix, sys.executable, str(BENCH / "bare_app.py"), str(self.star_port), "starlette"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "starlette.stderr", "wb"),
        )
        self.procs.append(self.star_proc)
        wait_http(f"http://127.0.0.1:{self.star_port}/api/health", self.star_proc)
        wait_http(f"http://127.0.0.1:{self.hive_port}/api/health", self.hive_proc)
        wait_http(f"http://127.0.0.1:{self.bare_port}/api/health", self.bare_proc)
        # taskset execs the server, so the Popen pid is the server's own.
        time.sleep(1.0)
        self.rss_idle = proc_status(self.hive_proc.pid)
        self.bare_rss_idle = proc_status(self.bare_proc.pid)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # load --------------------------------------------------------------------------------
    def wrk_run(self, url: str, script: str, duration: float, server: subprocess.Popen,
                max_requests: Optional[int] = None) -> Dict[str, Any]:
        env = dict(os.environ, HUB_BENCH_WRK_DIR=str(WRK_DIR), HUB_BENCH_API_KEY=self.api_key)
        if max_requests:
            env["HUB_BENCH_MAX_REQUESTS"] = str(max_requests)
        cmd = [*self.client_prefix, self.wrk, "-t1", f"-c{self.args.connections}", f"-d{int(round(duration))}s",
               "--timeout", "5s", "-s", str(WRK_DIR / script), url]
        cpu0 = cpu_seconds(server.pid)
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60, check=False)
        cpu1 = cpu_seconds(server.pid)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if res.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({res.returncode}): {res.stdout}\n{res.stderr}")
        data = json.loads(line[len("WRKJSON "):])
        seconds = data["duration_us"] / 1e6
        data["rps"] = data["requests"] / seconds
        data["server_cpu_percent"] = 100.0 * (cpu1 - cpu0) / seconds
        data["server_cpu_ms_per_request"] = 1000.0 * (cpu1 - cpu0) / max(data["requests"], 1)
        data["failed"] = sum(data["errors"].values())
        return data

    def profile(self, name: str, url: str, script: str, py_spy: str) -> Dict[str, Any]:
        """One extra run of a hive load under py-spy (sampling, another process); returns the
        functions with the largest inclusive and self share of the samples."""
        out = self.tmp / f"profile-{script}.txt"
        duration = self.args.duration
        spy = subprocess.Popen(
            [*self.client_prefix, py_spy, "record", "--pid", str(self.hive_proc.pid), "--rate", "250",
             "--duration", str(duration + 1), "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        served = self.wrk_run(url, script, duration, self.hive_proc)["requests"]
        spy.wait(timeout=duration + 30)
        inclusive: Dict[str, int] = {}
        own: Dict[str, int] = {}
        total = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            total += n
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n
            own[frames[-1]] = own.get(frames[-1], 0) + n
        top = lambda d: [  # noqa: E731
            {"frame": f, "percent": round(100.0 * c / total, 1)}
            for f, c in sorted(d.items(), key=lambda kv: -kv[1])[:25]
        ]
        return {"load": name, "requests": served, "samples": total, "inclusive": top(inclusive), "self": top(own)}

    def pathological_cost(self) -> List[Dict[str, Any]]:
        """Server CPU per request for each pathological request of the regression tests, sent
        one after another (nothing else runs on the server meanwhile)."""
        cases = [(name, path, body, status, {}) for name, path, body, status, _reason in PATHOLOGICAL]
        cases += [(name, path, body, status, {"X-API-Key": self.api_key})
                  for name, path, body, status in PATHOLOGICAL_AUTHENTICATED]
        out = []
        for name, path, body, status, auth in cases:
            statuses: Dict[str, int] = {}
            slowest = 0.0
            cpu0 = cpu_seconds(self.hive_proc.pid)
            for _ in range(PATHOLOGICAL_REPEATS):
                conn = http.client.HTTPConnection("127.0.0.1", self.hive_port, timeout=30)
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body, {"Content-Type": "application/json", **auth})
                    resp = conn.getresponse()
                    resp.read()
                    got = resp.status
                finally:
                    conn.close()
                slowest = max(slowest, time.perf_counter() - started)
                statuses[str(got)] = statuses.get(str(got), 0) + 1
            cpu_ms = 1000.0 * (cpu_seconds(self.hive_proc.pid) - cpu0) / PATHOLOGICAL_REPEATS
            out.append({"request": name, "bytes": len(body), "expected": status, "statuses": statuses,
                        "server_cpu_ms_per_request": round(cpu_ms, 1), "slowest_wall_ms": round(1000.0 * slowest, 1)})
        return out

    def run(self) -> Dict[str, Any]:
        a = self.args
        hive_health = f"http://127.0.0.1:{self.hive_port}/api/health"
        bare_health = f"http://127.0.0.1:{self.bare_port}/api/health"
        hive_agents = f"http://127.0.0.1:{self.hive_port}/api/agents"
        loads = [
            ("bare GET /api/health", bare_health, "get.lua", self.bare_proc),
            ("starlette GET /api/health", f"http://127.0.0.1:{self.star_port}/api/health", "get.lua", self.star_proc),
            ("hive GET /api/health", hive_health, "get.lua", self.hive_proc),
            ("hive POST /api/agents", hive_agents, "post_agent.lua", self.hive_proc),
        ]
        # RSS checkpoint first: 10,000 agent creations on the fresh server, the worst case for
        # memory (every request adds an agent the hive keeps in memory).
        checkpoint = self.wrk_run(hive_agents, "post_agent.lua", 120, self.hive_proc,
                                  max_requests=TARGETS["rss_after_requests"])
        hive_requests = checkpoint["requests"]
        time.sleep(1.0)
        rss_10k = proc_status(self.hive_proc.pid)
        # The ceiling for the list: bare Starlette answering the very page the hive serves.
        page_file = self.tmp / "agents-page.json"
        req = urllib.request.Request(f"http://127.0.0.1:{self.hive_port}{AGENTS_PAGE}", headers={"X-API-Key": self.api_key})
        with urllib.request.urlopen(req, timeout=10) as resp:
            page_file.write_bytes(resp.read())
        page_agents = len(json.loads(page_file.read_bytes())["agents"])
        self.list_port = free_port()
        self.list_proc = subprocess.Popen(
            [*self.server_prefix, sys.executable, str(BENCH / "bare_app.py"), str(self.list_port), "agents", str(page_file)],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "list.stderr", "wb"),
        )
        self.procs.append(self.list_proc)
        wait_http(f"http://127.0.0.1:{self.list_port}/api/health", self.list_proc)
        loads += [
            ("starlette GET /api/agents (100)", f"http://127.0.0.1:{self.list_port}{AGENTS_PAGE}", "get.lua", self.list_proc),
            ("hive GET /api/agents (100)", f"http://127.0.0.1:{self.hive_port}{AGENTS_PAGE}", "get_auth.lua", self.hive_proc),
        ]
        for _name, url, script, proc in loads:  # warm-up, not recorded
            r = self.wrk_run(url, script, a.warmup, proc)
            if proc is self.hive_proc:
                hive_requests += r["requests"]
        runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name, *_ in loads}
        # Rounds alternate bare and hive, so a neighbour's burst on the shared machine hits
        # both sides of the ratio rather than one.
        for _ in range(a.rounds):
            for name, url, script, proc in loads:
                r = self.wrk_run(url, script, a.duration, proc)
                runs[name].append(r)
                if proc is self.hive_proc:
                    hive_requests += r["requests"]
        profiles = []
        if a.profile_with:
            for name, url, script, proc in loads:
                if proc is self.hive_proc:
                    profiles.append(self.profile(name, url, script, a.profile_with))
                    hive_requests += profiles[-1]["requests"]
        storm = asyncio.run(login_storm(self.hive_port, self.password, LOGIN_CONCURRENCY, a.duration))
        hive_requests += storm["requests"]
        pathological = self.pathological_cost()
        hive_requests += PATHOLOGICAL_REPEATS * len(pathological)
        worst = max(pathological, key=lambda p: p["server_cpu_ms_per_request"])
        time.sleep(1.0)
        rss_after = proc_status(self.hive_proc.pid)
        bare_rss_after = proc_status(self.bare_proc.pid)
        summary = {}
        for name, rs in runs.items():
            med = lambda key, rs=rs: statistics.median(r[key] for r in rs)  # noqa: E731
            summary[name] = {
                "rps": round(med("rps"), 1),
                "p50_ms": round(med("p50_us") / 1000, 2),
                "p99_ms": round(med("p99_us") / 1000, 2),
                "server_cpu_percent": round(med("server_cpu_percent"), 1),
                "server_cpu_ms_per_request": round(med("server_cpu_ms_per_request"), 3),
                # Requests per CPU-second of the server: what one uncontended core would
                # carry; unlike req/s it does not depend on what else the shared machine runs.
                "rps_per_server_cpu_second": round(1000.0 / med("server_cpu_ms_per_request"), 1),
                "failed": sum(r["failed"] for r in rs),
                "requests": sum(r["requests"] for r in rs),
                "rounds_rps": [round(r["rps"], 1) for r in rs],
            }
        bare = summary["bare GET /api/health"]["rps"]
        bare_cap = summary["bare GET /api/health"]["rps_per_server_cpu_second"]
        for name in summary:
            summary[name]["vs_bare"] = round(summary[name]["rps"] / bare, 3)
            summary[name]["vs_bare_per_cpu_second"] = round(summary[name]["rps_per_server_cpu_second"] / bare_cap, 3)
        health_ratio = summary["hive GET /api/health"]["vs_bare"]
        list_ratio = round(summary["hive GET /api/agents (100)"]["rps"] / summary["starlette GET /api/agents (100)"]["rps"], 3)
        list_ratio_cpu = round(
            summary["hive GET /api/agents (100)"]["rps_per_server_cpu_second"]
            / summary["starlette GET /api/agents (100)"]["rps_per_server_cpu_second"], 3)
        agents_rps = summary["hive POST /api/agents"]["rps"]
        rss_mb = rss_10k["VmRSS"]
        judged_rss = checkpoint["requests"] >= TARGETS["rss_after_requests"] and checkpoint["failed"] == 0
        no_failures = all(s["failed"] == 0 for s in summary.values())
        return {
            "benchmark": "app-load",
            "command": " ".join([Path(sys.executable).name, "bench/app_load.py", *sys.argv[1:]]),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(), "python": platform.python_version(),
                "loadavg_before": self.loadavg_before, "loadavg_after": list(os.getloadavg()),
                "note": "2 cores shared with other workloads; figures are medians of alternating rounds",
            },
            "setup": {
                "generator": "wrk 4.1 -t1 (Lua report script), 127.0.0.1 only, bounded by -d",
                "connections": a.connections, "duration_s": a.duration, "rounds": a.rounds, "warmup_s": a.warmup,
                "pinned": self.pin, "server_cpu": "0" if self.pin else "any", "generator_cpu": "1" if self.pin else "any",
                "auth": "X-API-Key of an operator created with --ensure-user/--create-api-key",
                "settings": self.settings_shown,
            },
            "results": summary,
            "memory_mb": {
                "hive_idle_rss": round(self.rss_idle["VmRSS"], 1),
                "hive_rss_after_10k_agent_creations": round(rss_10k["VmRSS"], 1),
                "checkpoint_requests": checkpoint["requests"],
                "hive_rss_after_load": round(rss_after["VmRSS"], 1),
                "hive_peak_rss": round(rss_after["VmHWM"], 1),
                "hive_requests_served": hive_requests,
                "agents_created": checkpoint["requests"] + sum(r["requests"] for r in runs["hive POST /api/agents"]),
                "bare_idle_rss": round(self.bare_rss_idle["VmRSS"], 1),
                "bare_peak_rss": round(bare_rss_after["VmHWM"], 1),
            },
            "agents_list": {"page_size": page_agents, "vs_starlette": list_ratio, "vs_starlette_per_cpu_second": list_ratio_cpu},
            "login_storm": storm,
            "pathological": {"repeats": PATHOLOGICAL_REPEATS, "requests": pathological},
            "profiles": profiles,
            "targets": {
                "health_at_least_bare_rate": {"value": health_ratio, "pass": health_ratio >= TARGETS["health_ratio_min"]},
                "agents_at_least_2693_rps": {"value": agents_rps, "pass": agents_rps >= TARGETS["agents_rps_min"]},
                "rss_at_most_76_7mb_after_10k_creations": {
                    "value": round(rss_mb, 1), "requests": checkpoint["requests"],
                    "pass": judged_rss and rss_mb <= TARGETS["rss_mb_max"],
                },
                "agents_list_at_least_50pct_of_starlette": {
                    "value": list_ratio, "pass": list_ratio >= TARGETS["agents_list_ratio_min"],
                },
                "health_answered_p50_under_50ms_during_login_storm": {
                    "value": storm["health_during"]["p50_ms"], "p99_ms": storm["health_during"]["p99_ms"],
                    "pass": storm["health_during"]["answered"] > 0 and storm["health_during"]["failed"] == 0
                    and storm["health_during"]["p50_ms"] < TARGETS["login_storm_health_p50_ms_max"],
                },
                "pathological_requests_at_most_50ms_cpu": {
                    "value": worst["server_cpu_ms_per_request"], "request": worst["request"],
                    "pass": worst["server_cpu_ms_per_request"] <= TARGETS["pathological_cpu_ms_max"]
                    and all(p["statuses"] == {str(p["expected"]): PATHOLOGICAL_REPEATS} for p in pathological),
                },
                "zero_failed_requests": {"pass": no_failures},
            },
        }


async def http_once(port: int, method: str, path: str, body: bytes = b"", timeout: float = 30.0) -> Tuple[int, float]:
    """One request on its own connection: (status or 0 on error, seconds)."""
    started = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        status = 0
    finally:
        if writer is not None:
            writer.close()
    return status, time.perf_counter() - started


def latency_stats(samples: List[Tuple[int, float]]) -> Dict[str, Any]:
    ok = sorted(t for status, t in samples if status == 200)
    pick = lambda q: round(1000.0 * ok[min(len(ok) - 1, int(q * len(ok)))], 2) if ok else None  # noqa: E731
    return {"answered": len(ok), "failed": len(samples) - len(ok), "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "max_ms": round(1000.0 * ok[-1], 2) if ok else None}


def health_probe(port: int, seconds: float, out: multiprocessing.Queue[List[Tuple[int, float]]]) -> None:
    """GET /api/health every 10 ms for `seconds`, each on a new connection; runs in its own
    process so the login clients' event loop does not delay it."""
    samples: List[Tuple[int, float]] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/api/health")
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            conn.close()
        samples.append((status, time.perf_counter() - started))
        time.sleep(0.01)
    out.put(samples)


def probe_in_process(port: int, seconds: float) -> Tuple[multiprocessing.Process, multiprocessing.Queue[List[Tuple[int, float]]]]:
    queue: multiprocessing.Queue[List[Tuple[int, float]]] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=health_probe, args=(port, seconds, queue), daemon=True)
    proc.start()
    return proc, queue


async def login_storm(port: int, password: str, concurrency: int, seconds: float, username: str = "bench-operator") -> Dict[str, Any]:
    """`concurrency` clients logging in back to back with the right password for `seconds`,
    while a probe in another process asks GET /api/health every 10 ms (alone for a second
    first, for the baseline)."""
    body = json.dumps({"username": username, "password": password}).encode()
    proc, queue = probe_in_process(port, 1.0)
    idle = queue.get(timeout=30)
    proc.join()
    logins: List[Tuple[int, float]] = []

    async def client(until: float) -> None:
        while time.monotonic() < until:
            logins.append(await http_once(port, "POST", "/api/auth/login", body))

    proc, queue = probe_in_process(port, seconds)
    started = time.monotonic()
    await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    during = queue.get(timeout=60)
    proc.join()
    statuses: Dict[str, int] = {}
    for status, _ in logins:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = sorted(t for status, t in logins if status == 200)
    return {
        "concurrency": concurrency, "seconds": round(elapsed, 1), "requests": len(logins) + len(during) + len(idle),
        "logins_by_status": statuses,
        "logins_ok_per_second": round(len(ok) / elapsed, 1),
        "login_ok_p50_ms": round(1000.0 * ok[len(ok) // 2], 1) if ok else None,
        "health_idle": latency_stats(idle),
        "health_during": latency_stats(during),
    }


def print_table(result: Dict[str, Any]) -> None:
    print(f"\n{'load':<27}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>9}{'cpu %':>7}"
          f"{'req/cpu-s':>11}{'vs bare':>9}{'failed':>8}")
    for name, s in result["results"].items():
        print(f"{name:<27}{s['rps']:>8.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['vs_bare']:>9.2f}"
              f"{s['server_cpu_percent']:>7.0f}{s['rps_per_server_cpu_second']:>11.0f}"
              f"{s['vs_bare_per_cpu_second']:>9.2f}{s['failed']:>8}")
    print("(cpu %: the server's share of a core during the run; req/cpu-s: requests per CPU-second"
          " of the server, what one free core would carry)")
    m = result["memory_mb"]
    print(f"\nhive RSS: idle {m['hive_idle_rss']} MB, after {m['checkpoint_requests']} agent creations "
          f"{m['hive_rss_after_10k_agent_creations']} MB; after {m['hive_requests_served']} requests "
          f"({m['agents_created']} agents) {m['hive_rss_after_load']} MB, peak {m['hive_peak_rss']} MB; "
          f"bare app peak {m['bare_peak_rss']} MB")
    li = result["agents_list"]
    print(f"\nGET /api/agents (page of {li['page_size']}): {li['vs_starlette']} of bare Starlette serving the same JSON"
          f" ({li['vs_starlette_per_cpu_second']} per server CPU-second)")
    st = result["login_storm"]
    print(f"login storm ({st['concurrency']} clients, {st['seconds']} s): logins by status {st['logins_by_status']},"
          f" {st['logins_ok_per_second']} ok/s, ok p50 {st['login_ok_p50_ms']} ms; health idle {st['health_idle']},"
          f" during {st['health_during']}")
    pa = result["pathological"]
    print(f"\npathological requests (each sent {pa['repeats']} times): server CPU ms per request, slowest wall ms")
    for p in pa["requests"]:
        print(f"  {p['request']:<58}{p['bytes']:>9} B  {p['statuses']}  {p['server_cpu_ms_per_request']:>6.1f} ms"
              f"  {p['slowest_wall_ms']:>7.1f} ms")
    print("targets:")
    for name, t in result["targets"].items():
        value = f" ({t['value']})" if "value" in t else ""
        print(f"  {'PASS' if t['pass'] else 'FAIL'}  {name}{value}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5.0, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=int, default=2.0, help="seconds of unrecorded warm-up per load")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (one thread)")
    p.add_argument("--pin", action="store_true",
                   help="pin the servers to CPU 0 and wrk to CPU 1 (helps on an idle machine; on a shared one "
                        "it hurts: the pinned core is shared with everything else)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra app setting in the env file (e.g. ENABLE_METRICS=false) for experiments")
    p.add_argument("--profile-with", metavar="PY_SPY",
                   help="path of a py-spy binary: profile one extra run of each hive load (not in the figures)")
    p.add_argument("--out", default=str(BENCH / "results" / "app-load.json"), help="JSON result file ('-' for none)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = p.parse_args()
    hb.clean_up_on_sigterm()
    if args.duration <= 0 or args.duration > 120 or args.rounds < 1 or args.rounds > 10:
        p.error("--duration must be in (0, 120] and --rounds in [1, 10]: the run stays bounded")

    bench = Bench(args)
    bench.loadavg_before = list(os.getloadavg())
    try:
        bench.prepare()
        bench.start()
        result = bench.run()
    finally:
        bench.stop()
        if args.keep:
            print(f"kept {bench.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    print_table(result)
    hb.write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
