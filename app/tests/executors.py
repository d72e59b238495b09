"""Executors for tests: TASK_EXECUTOR=executors:failing etc."""
from __future__ import annotations

import asyncio
from typing import Any, Dict


class Failing:
    async def execute(self, task: Dict[str, Any], agent: Dict[str, Any]) -> Dict[str, Any]:
        raise RuntimeError("model unavailable")


class Gate:
    """Holds every task until release() is called."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None
        self.started: list = []

    async def execute(self, task: Dict[str, Any], agent: Dict[str, Any]) -> Dict[str, Any]:
        if self.event is None:
            self.event = asyncio.Event()
        self.started.append((task["id"], agent["id"]))
        await self.event.wait()
        return {"done": True}


def failing() -> Failing:
    return Failing()
