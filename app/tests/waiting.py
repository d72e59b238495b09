"""Waiting on a condition in the app's tests, with a deadline and one message.

An assertion right after something asynchronous (a task handed to the hive, an executor
released, a commit queued, a server that starts) waits here for its condition: never a fixed
sleep followed by one look, which fails whenever the machine is slower than the sleep.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

TIMEOUT = 10.0


def wait_for(condition: Callable[[], object], what: str = "condition", timeout: float = TIMEOUT) -> None:
    """Poll `condition` (in this thread) until it is truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.01)


async def eventually(condition: Callable[[], object], what: str = "condition", timeout: float = TIMEOUT) -> None:
    """The same inside an event loop: the loop runs (tasks progress) between the polls."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.005)
