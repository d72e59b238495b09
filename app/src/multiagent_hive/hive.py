"""The hive: agents, a priority queue of tasks, capability-based assignment, executors."""
from __future__ import annotations

import asyncio
import heapq
import importlib
import itertools
import logging
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Protocol, Set, Tuple


from .schemas import PRIORITIES, PRIORITY_NAMES
from .store import Store, utcnow

LOG = logging.getLogger("multiagent_hive.hive")

PENDING, ASSIGNED, IN_PROGRESS, COMPLETED, FAILED = "Pending", "Assigned", "InProgress", "Completed", "Failed"
TASK_STATES = (PENDING, ASSIGNED, IN_PROGRESS, COMPLETED, FAILED)
IDLE, BUSY = "idle", "busy"
AGENT_STATES = (IDLE, BUSY)


class Executor(Protocol):
    """Runs one task on one agent; returns a JSON-serialisable result or raises to fail it."""

    async def execute(self, task: Dict[str, Any], agent: Dict[str, Any]) -> Dict[str, Any]:
        ...


class BuiltinExecutor:
    """Completes every task: holds the agent for the configured work time, then records which
    agent did it, how well its capabilities matched and how long it took."""

    def __init__(self, duration_ms: int = 5) -> None:
        self.duration = duration_ms / 1000.0

    async def execute(self, task: Dict[str, Any], agent: Dict[str, Any]) -> Dict[str, Any]:
        started = time.monotonic()
        if self.duration:
            await asyncio.sleep(self.duration)
        return {
            "executor": "builtin",
            "agent": agent["name"],
            "agent_type": agent["type"],
            "fit": round(fit_score(agent, task["required_capabilities"]) or 0.0, 4),
            "duration_ms": round((time.monotonic() - started) * 1000.0, 3),
            "summary": f"{agent['name']} completed: {task['description'][:200]}",
        }


def load_executor(spec: str, duration_ms: int) -> Executor:
    """`builtin`, or `package.module:factory` where factory() returns an Executor."""
    if spec == "builtin":
        return BuiltinExecutor(duration_ms)
    module_name, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    executor = factory()
    if not callable(getattr(executor, "execute", None)):
        raise TypeError(f"{spec} did not return an object with execute()")
    return executor  # type: ignore[no-any-return]


def fit_score(agent: Dict[str, Any], required: List[Dict[str, Any]]) -> Optional[float]:
    """None when the agent lacks a required capability (or its proficiency is too low);
    otherwise the mean proficiency over the required capabilities (0.5 when none required,
    so any idle agent qualifies)."""
    if not required:
        return 0.5
    have = {c["name"]: c["proficiency"] for c in agent["capabilities"]}
    total = 0.0
    for need in required:
        level = have.get(need["name"])
        if level is None or level < need.get("min_proficiency", 0.0):
            return None
        total += level
    return total / len(required)


Listener = Callable[[Dict[str, Any]], None]


class Hive:
    def __init__(self, store: Store, executor: Executor) -> None:
        self.store = store
        self.executor = executor
        self.agents: Dict[str, Dict[str, Any]] = {}
        self.queue: List[Tuple[int, int, str]] = []  # (-priority, seq, task id)
        self.pending: Dict[str, Dict[str, Any]] = {}
        self.seq = itertools.count()
        self.listeners: Set[Listener] = set()
        self.running: Set["asyncio.Task[None]"] = set()
        self.wakeup: Optional[asyncio.Event] = None
        self.dispatcher: Optional["asyncio.Task[None]"] = None
        self.started_at = time.time()
        self.completed = 0
        self.failed = 0

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        for agent in self.store.load_agents():
            if agent["state"] != IDLE or agent["current_task"]:
                agent.update(state=IDLE, current_task=None, updated_at=utcnow())
                self.store.update_agent(agent)
            self.agents[agent["id"]] = agent
        # Work interrupted by a stop goes back to the queue.
        for task in self.store.unfinished_tasks():
            if task["state"] != PENDING:
                task.update(state=PENDING, assigned_agent=None, updated_at=utcnow())
                self.store.update_task(task)
            self._enqueue(task)
        self.wakeup = asyncio.Event()
        self.dispatcher = asyncio.ensure_future(self._dispatch_loop())
        self._wake()

    async def stop(self) -> None:
        if self.dispatcher:
            self.dispatcher.cancel()
            await asyncio.gather(self.dispatcher, return_exceptions=True)
        for job in list(self.running):
            job.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)

    # events ----------------------------------------------------------------------------
    def _emit(self, kind: str, data: Dict[str, Any]) -> None:
        event = {"type": kind, "data": data}
        for listener in list(self.listeners):
            listener(event)

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()

    # agents ----------------------------------------------------------------------------
    def create_agent(self, name: str, kind: str, capabilities: List[Dict[str, Any]], created_by: Optional[int]) -> Dict[str, Any]:
        now = utcnow()
        agent = {
            "id": str(uuid.uuid4()),
            "name": name,
            "type": kind,
            "capabilities": capabilities,
            "state": IDLE,
            "current_task": None,
            "tasks_completed": 0,
            "created_at": now,
            "updated_at": now,
        }
        self.store.insert_agent(agent, created_by)
        self.agents[agent["id"]] = agent
        self._emit("agent_created", agent)
        self._wake()
        return agent

    def delete_agent(self, agent_id: str) -> Optional[str]:
        """None when deleted; otherwise the reason it was not."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return "not found"
        if agent["state"] == BUSY:
            return "busy"
        self.store.delete_agent(agent_id)
        del self.agents[agent_id]
        self._emit("agent_deleted", {"id": agent_id})
        return None

    def _set_agent(self, agent: Dict[str, Any], state: str, task_id: Optional[str]) -> None:
        agent.update(state=state, current_task=task_id, updated_at=utcnow())
        self.store.update_agent(agent)
        self._emit("agent_updated", agent)

    # tasks -----------------------------------------------------------------------------
    def create_task(self, description: str, priority: str, required: List[Dict[str, Any]], created_by: Optional[int]) -> Dict[str, Any]:
        now = utcnow()
        task = {
            "id": str(uuid.uuid4()),
            "description": description,
            "priority": PRIORITIES[priority],
            "required_capabilities": required,
            "state": PENDING,
            "assigned_agent": None,
            "result": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
        }
        self.store.insert_task(task, created_by)
        self._enqueue(task)
        self._emit("task_created", public_task(task))
        self._wake()
        return task

    def _enqueue(self, task: Dict[str, Any]) -> None:
        self.pending[task["id"]] = task
        heapq.heappush(self.queue, (-task["priority"], next(self.seq), task["id"]))

    def _set_task(self, task: Dict[str, Any], state: str, **changes: Any) -> None:
        task.update(state=state, updated_at=utcnow(), **changes)
        self.store.update_task(task)
        self._emit("task_updated", public_task(task))

    def best_agent(self, task: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        best: Optional[Dict[str, Any]] = None
        best_key: Tuple[float, int] = (-1.0, 0)
        for agent in self.agents.values():
            if agent["state"] != IDLE:
                continue
            score = fit_score(agent, task["required_capabilities"])
            if score is None:
                continue
            # Best fit first; among equals the agent that has done the least work.
            key = (score, -agent["tasks_completed"])
            if best is None or key > best_key:
                best, best_key = agent, key
        return best

    def assign_pending(self) -> int:
        """Hand queued tasks, highest priority first, to the best-fitting idle agents."""
        assigned = 0
        skipped: List[Tuple[int, int, str]] = []
        while self.queue and any(a["state"] == IDLE for a in self.agents.values()):
            entry = heapq.heappop(self.queue)
            task = self.pending.get(entry[2])
            if task is None:
                continue
            agent = self.best_agent(task)
            if agent is None:
                skipped.append(entry)  # no idle agent can do it yet; lower priorities may fit
                continue
            del self.pending[task["id"]]
            self._set_agent(agent, BUSY, task["id"])
            self._set_task(task, ASSIGNED, assigned_agent=agent["id"])
            job = asyncio.ensure_future(self._run(task, agent))
            self.running.add(job)
            job.add_done_callback(self.running.discard)
            assigned += 1
        for entry in skipped:
            heapq.heappush(self.queue, entry)
        return assigned

    async def _dispatch_loop(self) -> None:
        assert self.wakeup is not None
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            try:
                self.assign_pending()
            except Exception:
                LOG.exception("task dispatch failed")

    async def _run(self, task: Dict[str, Any], agent: Dict[str, Any]) -> None:
        try:
            self._set_task(task, IN_PROGRESS)
            try:
                result = await self.executor.execute(dict(task), dict(agent))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("task %s failed on agent %s: %s", task["id"], agent["id"], exc)
                self._set_task(task, FAILED, error=str(exc)[:500] or type(exc).__name__)
                self.failed += 1
            else:
                self._set_task(task, COMPLETED, result=result)
                self.completed += 1
                agent["tasks_completed"] += 1
        finally:
            if agent["id"] in self.agents:
                self._set_agent(agent, IDLE, None)
            self._wake()

    # views -----------------------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        agents_by_state = {state: 0 for state in AGENT_STATES}
        for agent in self.agents.values():
            agents_by_state[agent["state"]] = agents_by_state.get(agent["state"], 0) + 1
        tasks = self.store.counts_by_state("tasks")
        return {
            "agents": {"total": len(self.agents), "by_state": agents_by_state},
            "tasks": {
                "total": sum(tasks.values()),
                "queued": len(self.pending),
                "by_state": {state: tasks.get(state, 0) for state in TASK_STATES},
            },
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }


def public_task(task: Dict[str, Any]) -> Dict[str, Any]:
    view = dict(task)
    view["priority"] = PRIORITY_NAMES.get(task["priority"], str(task["priority"]))
    return view

