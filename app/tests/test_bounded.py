"""Bounded work per request: argon2 off the event loop in a bounded pool, pathological bodies
answered quickly with 4xx, the event loop free meanwhile."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List

import pytest

from conftest import PASSWORDS, settings_from
from multiagent_hive.security import HashingBusy, Passwords


def _blocking_passwords(env: Dict[str, str], workers: int, queue: int) -> "tuple[Passwords, threading.Event]":
    settings = settings_from({**env, "ARGON2_WORKERS": str(workers), "ARGON2_QUEUE": str(queue)})
    passwords = Passwords(settings)
    release = threading.Event()
    real = passwords.verify

    def slow_verify(stored: Any, password: str) -> bool:
        release.wait(10)
        return real(stored, password)

    passwords.verify = slow_verify  # type: ignore[method-assign]
    return passwords, release


def test_hash_pool_rejects_beyond_its_queue_and_keeps_the_loop_free(env: Dict[str, str]) -> None:
    passwords, release = _blocking_passwords(env, workers=1, queue=1)
    stored = passwords.hash("a-password-123")

    async def scenario() -> List[Any]:
        first = asyncio.ensure_future(passwords.verify_async(stored, "a-password-123"))
        second = asyncio.ensure_future(passwords.verify_async(stored, "wrong"))
        await asyncio.sleep(0.05)
        assert passwords.in_flight == 2
        # The loop is not blocked by the two pending hashes.
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        assert time.perf_counter() - started < 0.5
        with pytest.raises(HashingBusy) as busy:
            await passwords.verify_async(stored, "third")
        assert busy.value.retry_after >= 1
        release.set()
        results = await asyncio.gather(first, second)
        assert passwords.in_flight == 0
        # Room again once the queue drained.
        results.append(await passwords.hash_async("x-password-456"))
        return results

    try:
        ok, wrong, new_hash = asyncio.run(scenario())
    finally:
        release.set()
        passwords.close()
    assert ok is True and wrong is False and passwords.verify(new_hash, "x-password-456")


def test_login_gets_503_with_retry_after_when_the_pool_is_full(client: Any, hive_app: Any) -> None:
    passwords = hive_app.passwords
    passwords.limit = 0  # as if every worker and queue slot were taken
    resp = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert resp.json()["error"] == "server busy"
    passwords.limit = 1
    assert client.post("/api/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]}).status_code == 200
