"""HTTP client the fault benchmarks run *inside* a bench container (piped to `python3 -`):
standard library only (the container has no pip). The API key comes from HUB_BENCH_API_KEY
(passed with `podman exec -e HUB_BENCH_API_KEY`, so never on a command line).

    python3 - write BASE SECONDS MAX_REQUESTS THREADS PREFIX   # POST agents, JSON line per reply
    python3 - ids BASE                                          # every agent id, one JSON list

`write` is bounded by both SECONDS and MAX_REQUESTS; each line is
{"t": unix time at the reply, "status": HTTP status or 0, "id": agent id on 2xx, "error": text}.
"""
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE  # the bench container's self-signed certificate


def request(base, method, path, body=None, timeout=5.0):
    url = urllib.parse.urlsplit(base)
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=timeout, context=CTX)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    headers = {"X-API-Key": os.environ["HUB_BENCH_API_KEY"]}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def write(base, seconds, max_requests, threads, prefix):
    deadline = time.time() + seconds
    lock = threading.Lock()
    state = {"n": 0}

    def worker(tid):
        while time.time() < deadline:
            with lock:
                if state["n"] >= max_requests:
                    return
                state["n"] += 1
                n = state["n"]
            body = {"name": f"{prefix}-{n}", "type": "worker",
                    "capabilities": [{"name": "compute", "proficiency": 0.5}]}
            rec = {"n": n, "status": 0, "id": None, "error": None}
            try:
                status, text = request(base, "POST", "/api/agents", body)
                rec["status"] = status
                if 200 <= status < 300:
                    rec["id"] = json.loads(text)["id"]
                else:
                    rec["error"] = text[:300]
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:  # refused, reset or cut off while the app restarts
                rec["error"] = f"{type(exc).__name__}: {exc}"
            if not rec["id"]:
                # While the app is down, fail slowly: the request budget is for the writes
                # after it is back, not for a burst of 502s.
                time.sleep(0.25)
            rec["t"] = time.time()
            with lock:
                sys.stdout.write(json.dumps(rec) + "\n")
                sys.stdout.flush()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def ids(base):
    found = []
    offset = 0
    while True:
        status, text = request(base, "GET", f"/api/agents?limit=1000&offset={offset}", timeout=30)
        if status != 200:
            raise SystemExit(f"GET /api/agents: {status} {text[:200]}")
        page = json.loads(text)["agents"]
        found += [a["id"] for a in page]
        if len(page) < 1000:
            break
        offset += 1000
    print(json.dumps(found))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1] == "ids":
        ids(sys.argv[2])
    else:
        raise SystemExit(__doc__)
