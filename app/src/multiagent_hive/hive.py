"""The hive: agents, a priority queue of tasks, capability-based assignment, executors."""
from __future__ import annotations

import asyncio
import bisect
import importlib
import itertools
import logging
import sys
import time
import uuid
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Protocol, Set, Tuple

from .schemas import PRIORITIES, PRIORITY_NAMES
from .store import GroupCommit, Store, utcnow

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
    module_name, _sep, attr = spec.partition(":")
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


class QueueFull(Exception):
    """MAX_PENDING_TASKS tasks wait for an agent already: the new one is refused, not kept."""


Entry = Tuple[int, int, str]  # (-priority, seq, task id): sorts most urgent first


def requirement(task: Dict[str, Any]) -> FrozenSet[str]:
    return frozenset(c["name"] for c in task["required_capabilities"])


class Hive:
    """Dispatch keeps one invariant: after each pass no idle agent can do any pending task.
    So a pass looks only at what changed since the last one: a new task is matched against the
    idle agents holding its capabilities, and an agent that became idle against the pending
    tasks whose capabilities it holds (queues per set of required capabilities, found through
    their first capability). A task no agent can do costs nothing after its first pass."""

    def __init__(self, store: Store, executor: Executor, max_pending: Optional[int] = None) -> None:
        self.store = store
        self.writes = GroupCommit(store)
        self.executor = executor
        self.max_pending = max_pending
        self.tasks_committing = 0
        self.agents: Dict[str, Dict[str, Any]] = {}
        self.pending: Dict[str, Dict[str, Any]] = {}
        self.entries: Dict[str, Entry] = {}
        # Pending tasks by the set of capability names they require, each sorted by Entry.
        self.queues: Dict[FrozenSet[str], List[Entry]] = {}
        self.queues_by_first: Dict[str, Set[FrozenSet[str]]] = {}
        self.idle: Dict[str, Dict[str, Any]] = {}
        self.idle_by_capability: Dict[str, Set[str]] = {}
        self.order: Dict[str, int] = {}  # agents by age: the older wins a tie
        self.fresh_agents: Dict[str, Dict[str, Any]] = {}
        self.fresh_tasks: List[Dict[str, Any]] = []
        self.seq = itertools.count()
        self.listeners: Set[Listener] = set()
        self.running: Set[asyncio.Task[None]] = set()
        self.wakeup: Optional[asyncio.Event] = None
        self.dispatcher: Optional[asyncio.Task[None]] = None
        self.started_at = time.time()
        self.completed = 0
        self.failed = 0
        # Tasks by state, counted from the database once at start and kept by every change
        # here (this process is the only writer): status() costs no table scan.
        self.task_counts: Optional[Dict[str, int]] = None

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        for agent in self.store.load_agents():
            if agent["state"] != IDLE or agent["current_task"]:
                agent.update(state=IDLE, current_task=None, updated_at=utcnow())
                self.store.update_agent(agent)
            self._add_agent(agent)
        # Work interrupted by a stop goes back to the queue.
        for task in self.store.unfinished_tasks():
            if task["state"] != PENDING:
                task.update(state=PENDING, assigned_agent=None, updated_at=utcnow())
                self.store.update_task(task)
            self._enqueue(task)
        self.task_counts = self.store.counts_by_state("tasks")
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
    async def create_agent(
        self, name: str, kind: str, capabilities: List[Dict[str, Any]], created_by: Optional[int]
    ) -> Dict[str, Any]:
        """Stored (group commit), then known here and announced."""
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

        def created() -> None:
            self._add_agent(agent)
            self._emit("agent_created", agent)
            self._wake()

        await self.writes.write(Store.agent_insert(agent, created_by), created)
        return agent

    def delete_agent(self, agent_id: str) -> Optional[str]:
        """None when deleted; otherwise the reason it was not."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return "not found"
        if agent["state"] == BUSY:
            return "busy"
        self.store.delete_agent(agent_id)
        self._not_idle(agent)
        del self.agents[agent_id]
        self.order.pop(agent_id, None)
        self._emit("agent_deleted", {"id": agent_id})
        return None

    def _add_agent(self, agent: Dict[str, Any]) -> None:
        # Types and capability names come from a small vocabulary: one string each, not one
        # per agent.
        agent["type"] = sys.intern(agent["type"])
        for cap in agent["capabilities"]:
            cap["name"] = sys.intern(cap["name"])
        self.agents[agent["id"]] = agent
        self.order[agent["id"]] = next(self.seq)
        if agent["state"] == IDLE:
            self._now_idle(agent)

    def _now_idle(self, agent: Dict[str, Any]) -> None:
        self.idle[agent["id"]] = agent
        for cap in agent["capabilities"]:
            self.idle_by_capability.setdefault(cap["name"], set()).add(agent["id"])
        self.fresh_agents[agent["id"]] = agent

    def _not_idle(self, agent: Dict[str, Any]) -> None:
        if self.idle.pop(agent["id"], None) is None:
            return
        self.fresh_agents.pop(agent["id"], None)
        for cap in agent["capabilities"]:
            holders = self.idle_by_capability.get(cap["name"])
            if holders is not None:
                holders.discard(agent["id"])
                if not holders:
                    del self.idle_by_capability[cap["name"]]

    def _set_agent(self, agent: Dict[str, Any], state: str, task_id: Optional[str]) -> None:
        agent.update(state=state, current_task=task_id, updated_at=utcnow())
        self.store.update_agent(agent)
        if state == IDLE:
            self._now_idle(agent)
        else:
            self._not_idle(agent)
        self._emit("agent_updated", agent)

    # tasks -----------------------------------------------------------------------------
    async def create_task(
        self, description: str, priority: str, required: List[Dict[str, Any]], created_by: Optional[int]
    ) -> Dict[str, Any]:
        """Stored (group commit), then queued and announced; refused while the queue is full,
        counting the tasks still waiting for their commit."""
        if self.max_pending is not None and len(self.pending) + self.tasks_committing >= self.max_pending:
            raise QueueFull()
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

        def created() -> None:
            self._count(None, PENDING)
            self._enqueue(task)
            self._emit("task_created", public_task(task))
            self._wake()

        self.tasks_committing += 1
        try:
            await self.writes.write(Store.task_insert(task, created_by), created)
        finally:
            self.tasks_committing -= 1
        return task

    def _enqueue(self, task: Dict[str, Any]) -> None:
        entry: Entry = (-task["priority"], next(self.seq), task["id"])
        self.pending[task["id"]] = task
        self.entries[task["id"]] = entry
        key = requirement(task)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = []
            self.queues_by_first.setdefault(min(key) if key else "", set()).add(key)
        bisect.insort(queue, entry)
        self.fresh_tasks.append(task)

    def _dequeue(self, task: Dict[str, Any]) -> None:
        del self.pending[task["id"]]
        entry = self.entries.pop(task["id"])
        key = requirement(task)
        queue = self.queues[key]
        del queue[bisect.bisect_left(queue, entry)]
        if not queue:
            del self.queues[key]
            first = min(key) if key else ""
            self.queues_by_first[first].discard(key)
            if not self.queues_by_first[first]:
                del self.queues_by_first[first]

    def _count(self, old: Optional[str], new: str) -> None:
        if self.task_counts is None:
            return
        if old is not None:
            self.task_counts[old] = self.task_counts.get(old, 0) - 1
        self.task_counts[new] = self.task_counts.get(new, 0) + 1

    def _set_task(self, task: Dict[str, Any], state: str, **changes: Any) -> None:
        old = task["state"]
        task.update(state=state, updated_at=utcnow(), **changes)
        self.store.update_task(task)
        self._count(old, state)
        self._emit("task_updated", public_task(task))

    def best_agent(self, task: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The idle agent that fits the task best (None if none can do it)."""
        names = requirement(task)
        candidates: Iterable[Dict[str, Any]]
        if names:
            holders = sorted((self.idle_by_capability.get(n, set()) for n in names), key=len)
            candidates = [self.idle[i] for i in holders[0].intersection(*holders[1:])]
        else:
            candidates = self.idle.values()
        best: Optional[Dict[str, Any]] = None
        best_key: Tuple[float, int, int] = (-1.0, 0, 0)
        for agent in candidates:
            score = fit_score(agent, task["required_capabilities"])
            if score is None:
                continue
            # Best fit first; among equals the agent that has done the least work, then the oldest.
            key = (score, -agent["tasks_completed"], -self.order[agent["id"]])
            if best is None or key > best_key:
                best, best_key = agent, key
        return best

    def best_task(self, agent: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The most urgent pending task this agent can do, looking only at the queues whose
        required capabilities it holds."""
        held = {c["name"] for c in agent["capabilities"]}
        best: Optional[Dict[str, Any]] = None
        best_entry: Optional[Entry] = None
        for first in ("", *held):
            for key in self.queues_by_first.get(first, ()):
                if not key <= held:
                    continue
                for entry in self.queues[key]:
                    if best_entry is not None and entry >= best_entry:
                        break
                    task = self.pending[entry[2]]
                    if fit_score(agent, task["required_capabilities"]) is not None:
                        best, best_entry = task, entry
                        break
        return best

    def _assign(self, task: Dict[str, Any], agent: Dict[str, Any]) -> None:
        self._dequeue(task)
        self._set_agent(agent, BUSY, task["id"])
        self._set_task(task, ASSIGNED, assigned_agent=agent["id"])
        job = asyncio.ensure_future(self._run(task, agent))
        self.running.add(job)
        job.add_done_callback(self.running.discard)

    def assign_pending(self) -> int:
        """Hand pending tasks, most urgent first, to the best-fitting idle agents; only agents
        that became idle and tasks that arrived since the last pass are considered."""
        assigned = 0
        fresh_agents = list(self.fresh_agents.values())
        self.fresh_agents.clear()
        fresh_tasks, self.fresh_tasks = self.fresh_tasks, []
        # Newly idle agents first, each taking the most urgent task it can do (that task still
        # goes to whichever idle agent fits it best, which may be another newly idle one).
        for agent in fresh_agents:
            while agent["id"] in self.idle:
                task = self.best_task(agent)
                if task is None:
                    break
                chosen = self.best_agent(task)
                assert chosen is not None  # `agent` itself fits
                self._assign(task, chosen)
                assigned += 1
        # New tasks against every idle agent (older idle agents could do no older task).
        waiting = [t for t in fresh_tasks if t["id"] in self.pending]
        for new_task in sorted(waiting, key=lambda t: self.entries[t["id"]]):
            if not self.idle:
                break
            fitting = self.best_agent(new_task)
            if fitting is not None:
                self._assign(new_task, fitting)
                assigned += 1
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
            except Exception as exc:  # noqa: BLE001 - whatever an executor raises fails its task, not the dispatcher
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
    def list_agents(self, limit: int, offset: int) -> List[Dict[str, Any]]:
        """A page of agents, oldest first: the same rows as Store.list_agents, from memory.
        This process is the only writer and keeps every agent here in creation order (start()
        loads them ORDER BY created_at), so the page costs no query and no JSON decoding."""
        return list(itertools.islice(self.agents.values(), offset, offset + limit))

    def search_agents(self, query: str, limit: int, offset: int) -> List[Dict[str, Any]]:
        """Agents whose name or type contains the query, case-insensitively, oldest first: the
        rows Store.search_agents's LIKE finds (names and types are ASCII), from memory, and the
        walk stops once the page is full (figures: docs/benchmarks.md). Lower-cased as it walks:
        a copy of every name kept for this cost more memory than the walk costs time."""
        needle = query.lower()
        found = (a for a in self.agents.values() if needle in a["name"].lower() or needle in a["type"].lower())
        return list(itertools.islice(found, offset, offset + limit))

    def status(self) -> Dict[str, Any]:
        # Every agent is idle (and then in self.idle) or busy: counted without a walk over them.
        agents_by_state = {IDLE: len(self.idle), BUSY: len(self.agents) - len(self.idle)}
        tasks = self.task_counts if self.task_counts is not None else self.store.counts_by_state("tasks")
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
