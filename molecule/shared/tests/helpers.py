"""Helpers of the verification suite that are neither fixtures nor layout.

An assertion made right after an asynchronous action (a reload, a restart, a ban or an unban, a
timer, a socket that closes, a service that starts) waits here for its condition, with a
deadline and one message naming what did not happen: never a fixed sleep, never one probe.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    what: str,
    timeout: float = 15.0,
    interval: float = 0.5,
    done: Optional[Callable[[T], bool]] = None,
) -> T:
    """Call ``probe`` until its value is truthy (or ``done(value)`` holds), for at most
    ``timeout`` seconds; return that value. On the deadline, fail with ``what`` and the last
    value seen. The probe runs at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) if done is not None else bool(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last seen: {str(value)[-400:]!r})")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def nginx_pids(host: Any) -> Dict[str, List[int]]:
    """nginx's master and worker processes (workers shutting down after a reload included)."""
    out = host.check_output("ps -eo pid=,args= | grep '[n]ginx: '")
    pids: Dict[str, List[int]] = {"master": [], "worker": []}
    for line in out.splitlines():
        pid, args = line.strip().split(None, 1)
        pids["master" if "master process" in args else "worker"].append(int(pid))
    return pids


def wait_nginx_reloaded(host: Any, before: Dict[str, List[int]], timeout: float = 30.0) -> Dict[str, List[int]]:
    """Wait until a reload has finished: new workers run and every old one has exited.

    Until then an old worker closes, on its graceful shutdown, the HTTP/2 connections it holds
    that have no request yet, and a request already on its way on one of them fails
    (docs/deviations.md, "nginx reloads and HTTP/2 clients"): probe only after this."""
    old = set(before["worker"])

    def settled() -> Optional[Dict[str, List[int]]]:
        now = nginx_pids(host)
        workers = set(now["worker"])
        return now if workers and not workers & old else None

    after = wait_until(settled, "nginx's old workers exit and new ones run after the reload", timeout)
    assert after is not None
    return after


def wait_healthy(client: Any, seconds: float = 60.0) -> None:
    """Wait until the app answers /api/health with 200 (after a start, restart or restore)."""
    wait_until(lambda: client.get("/api/health").status, "/api/health answers 200", seconds, interval=1.0,
               done=lambda status: status == 200)
