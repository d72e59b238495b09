#!/usr/bin/env python3
"""What a hostile client can make the hub store and hold: the audit log's growth under a flood of
anonymous requests, and the GDPR export of a user holding many audit rows.

Starts the real service (`python -m multiagent_hive`, app/tests/liveserver.py) on 127.0.0.1 with
a temp database and logs, then
- flood: N requests without credentials (GET /api/agents, /api/tasks, /api/hive/status in turn)
  from one client over keep-alive connections; reports the new audit.log lines and audit_events
  rows against the requests and the flood's seconds;
- export: inserts R audit rows for the viewer (straight into the database, as a year of forbidden
  requests would leave them), then streams GET /api/users/me/data; reports bytes, seconds and the
  server's resident memory before and at its peak (VmHWM).

    .venv/bin/python bench/audit_growth.py [--requests 10000] [--rows 1000000] [--skip-export]

PYTHONPATH=<other checkout>/app/src runs another version of the app the same way (a before/after
comparison in one session). Prints JSON.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "app" / "tests"))
from liveserver import live_server


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def audit_rows(env: Dict[str, str]) -> int:
    from multiagent_hive.store import Store

    store = Store(env["DATABASE_PATH"], env["DATABASE_ENCRYPTION_KEY"])
    try:
        row = store.one("SELECT count(*) AS n FROM audit_events")
        return int(row["n"]) if row else 0
    finally:
        store.close()


def flood(port: int, requests: int, connections: int) -> Dict[str, int]:
    paths = ("/api/agents", "/api/tasks", "/api/hive/status")
    statuses: Dict[int, int] = {}
    lock = threading.Lock()

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: Dict[int, int] = {}
        for i in range(count):
            conn.request("GET", paths[i % 3])
            resp = conn.getresponse()
            resp.read()
            mine[resp.status] = mine.get(resp.status, 0) + 1
        conn.close()
        with lock:
            for code, n in mine.items():
                statuses[code] = statuses.get(code, 0) + n

    share = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def run_flood(requests: int, connections: int) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hive-flood-") as tmp:
        with live_server(Path(tmp)) as live:
            audit = Path(live.env["AUDIT_LOG_PATH"])
            lines_before = len(audit.read_text().splitlines()) if audit.exists() else 0
            rows_before = audit_rows(live.env)
            started = time.monotonic()
            statuses = flood(int(live.base.rsplit(":", 1)[1]), requests, connections)
            seconds = time.monotonic() - started
            time.sleep(1.5)  # the last second's repeated= lines
        lines = len(audit.read_text().splitlines()) - lines_before
        rows = audit_rows(live.env) - rows_before
    return {"requests": requests, "connections": connections, "seconds": round(seconds, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "audit_log_lines": lines, "audit_rows": rows,
            "lines_per_request": round(lines / requests, 4), "lines_per_second": round(lines / max(seconds, 1e-9), 1)}


def run_export(rows: int) -> Dict[str, Any]:
    from multiagent_hive.store import Store

    with tempfile.TemporaryDirectory(prefix="hive-export-") as tmp:
        with live_server(Path(tmp)) as live:
            token = live.token("viewer")
            store = Store(live.env["DATABASE_PATH"], live.env["DATABASE_ENCRYPTION_KEY"])
            try:
                viewer = store.user_by_name("viewer")
                assert viewer is not None
                started = time.monotonic()
                batch = 50_000
                for first in range(0, rows, batch):
                    with store.transaction() as conn:
                        conn.executemany(
                            "INSERT INTO audit_events (ts, event, client_id, user_id, user_ref, username, detail)"
                            " VALUES (?, 'AccessDenied', '192.0.2.7', ?, ?, 'viewer', ?)",
                            [(f"2026-01-01T00:00:{i % 60:02d}.000Z", viewer["id"], viewer["pseudonym"],
                              f"method=POST path=/api/agents detail=role%20viewer%20lacks%20operator n={i}")
                             for i in range(first, min(rows, first + batch))],
                        )
                insert_seconds = time.monotonic() - started
            finally:
                store.close()
            pid = live.proc.pid
            rss_before = proc_kib(pid, "VmRSS")
            conn = http.client.HTTPConnection("127.0.0.1", int(live.base.rsplit(":", 1)[1]), timeout=600)
            started = time.monotonic()
            conn.request("GET", "/api/users/me/data", headers={"Authorization": "Bearer " + token})
            resp = conn.getresponse()
            size = 0
            events = 0
            tail = b""
            first_byte = None
            while True:
                chunk = resp.read(65536)
                if not chunk:
                    break
                if first_byte is None:
                    first_byte = time.monotonic() - started
                events += (tail[-11:] + chunk).count(b'AccessDenied')
                tail = chunk
                size += len(chunk)
            seconds = time.monotonic() - started
            conn.close()
            peak = proc_kib(pid, "VmHWM")
            rss_after = proc_kib(pid, "VmRSS")
    return {"rows": rows, "status": resp.status, "insert_seconds": round(insert_seconds, 1),
            "export_bytes": size, "export_rows_seen": events, "seconds": round(seconds, 1),
            "first_byte_seconds": round(first_byte or 0.0, 3),
            "rss_before_mib": round(rss_before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(rss_after / 1024, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--skip-flood", action="store_true")
    p.add_argument("--skip-export", action="store_true")
    args = p.parse_args()
    result: Dict[str, Any] = {}
    if not args.skip_flood:
        result["flood"] = run_flood(args.requests, args.connections)
        print(json.dumps({"flood": result["flood"]}), flush=True)
    if not args.skip_export:
        result["export"] = run_export(args.rows)
        print(json.dumps({"export": result["export"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
