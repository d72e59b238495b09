"""Agents, the task queue and executors, GDPR, WebSocket events and metrics."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from multiagent_hive.hive import BuiltinExecutor, Hive, fit_score
from multiagent_hive.store import Store

from conftest import PASSWORDS, audit_lines, init_db, login, settings_from
from executors import Gate
from waiting import eventually, wait_for


def test_fit_score() -> None:
    agent = {"capabilities": [{"name": "nlp", "proficiency": 0.9}, {"name": "vision", "proficiency": 0.4}]}
    assert fit_score(agent, []) == 0.5
    assert fit_score(agent, [{"name": "nlp", "min_proficiency": 0.5}]) == 0.9
    assert fit_score(agent, [{"name": "vision", "min_proficiency": 0.5}]) is None
    assert fit_score(agent, [{"name": "audio", "min_proficiency": 0.0}]) is None
    assert fit_score(agent, [{"name": "nlp"}, {"name": "vision"}]) == pytest.approx(0.65)


def test_concurrent_creations_share_one_commit_and_each_waits_for_it(settings: Any) -> None:
    """Agents created in the same turn of the loop are one transaction; every creator returns
    only after the COMMIT, and a creator cancelled while it waited still leaves its agent both
    stored and known (the database and memory never disagree)."""

    async def scenario() -> None:
        store = Store(settings.database_path, settings.database_encryption_key)
        hive = Hive(store, Gate())
        await hive.start()
        batches: List[int] = []
        real = store.execute_each

        def counting(statements: List[Any]) -> List[Any]:
            batches.append(len(statements))
            return real(statements)

        store.execute_each = counting  # type: ignore[method-assign]
        try:
            agents = await asyncio.gather(*(hive.create_agent(f"a{i}", "worker", [], None) for i in range(20)))
            assert batches == [20]
            stored = {a["id"] for a in store.list_agents(100, 0)}
            assert {a["id"] for a in agents} == stored == set(hive.agents)

            waiter = asyncio.ensure_future(hive.create_agent("cancelled", "worker", [], None))
            await asyncio.sleep(0)  # queued for the next commit
            waiter.cancel()
            await eventually(lambda: "cancelled" in {a["name"] for a in store.list_agents(100, 0)},
                             "the cancelled creation's commit")
            assert "cancelled" in {a["name"] for a in hive.agents.values()}
        finally:
            await hive.stop()
            store.close()

    asyncio.run(scenario())


def test_one_failing_row_does_not_fail_its_batch(settings: Any) -> None:
    store = Store(settings.database_path, settings.database_encryption_key)
    try:
        good = ("INSERT INTO users (username, role, password_hash, pseudonym, created_at) VALUES (?, 'viewer', 'x', ?, 'now')",)
        errors = store.execute_each([
            (good[0], ("batch-one", "p-batch-one")),
            (good[0], ("admin", "p-dup")),  # username taken: a constraint error for this row only
            (good[0], ("batch-two", "p-batch-two")),
        ])
        assert errors[0] is None and errors[2] is None and errors[1] is not None
        assert store.user_by_name("batch-one") and store.user_by_name("batch-two")
    finally:
        store.close()


def test_task_lifecycle_through_api(client: Any, operator: Dict[str, str], viewer: Dict[str, str]) -> None:
    weak_agent = {"name": "weak", "type": "worker", "capabilities": [{"name": "nlp", "proficiency": 0.6}]}
    strong_agent = {"name": "strong", "type": "specialist:nlp", "capabilities": [{"name": "nlp", "proficiency": 0.95}]}
    weak = client.post("/api/agents", headers=operator, json=weak_agent).json()
    strong = client.post("/api/agents", headers=operator, json=strong_agent).json()
    task_spec = {"description": "summarise the report", "priority": "high", "required_capabilities": [{"name": "nlp", "min_proficiency": 0.5}]}
    resp = client.post("/api/tasks", headers=operator, json=task_spec)
    assert resp.status_code == 201
    task = resp.json()
    assert task["priority"] == "high"
    wait_for(lambda: client.get(f"/api/tasks/{task['id']}", headers=viewer).json()["state"] == "Completed")
    done = client.get(f"/api/tasks/{task['id']}", headers=viewer).json()
    assert done["assigned_agent"] == strong["id"] != weak["id"]
    assert done["result"]["executor"] == "builtin" and done["result"]["fit"] == 0.95
    assert client.get(f"/api/agents/{strong['id']}", headers=viewer).json()["tasks_completed"] == 1
    status = client.get("/api/hive/status", headers=viewer).json()
    assert status["agents"]["total"] == 2 and status["tasks"]["by_state"]["Completed"] == 1
    assert client.get("/api/tasks", params={"state": "Completed"}, headers=viewer).json()["tasks"][0]["id"] == task["id"]
    assert client.get("/api/tasks", params={"state": "Bogus"}, headers=viewer).status_code == 422
    assert client.get("/api/tasks/not-a-uuid", headers=viewer).status_code == 404
    assert client.post("/api/tasks", headers=viewer, json={"description": "x"}).status_code == 403


def test_task_waits_for_a_capable_agent(client: Any, operator: Dict[str, str], viewer: Dict[str, str]) -> None:
    task_spec = {"description": "see", "required_capabilities": [{"name": "vision", "min_proficiency": 0.5}]}
    task = client.post("/api/tasks", headers=operator, json=task_spec).json()
    client.post("/api/agents", headers=operator, json={"name": "blind", "type": "worker"})
    time.sleep(0.1)
    assert client.get(f"/api/tasks/{task['id']}", headers=viewer).json()["state"] == "Pending"
    client.post("/api/agents", headers=operator, json={"name": "eye", "type": "worker", "capabilities": [{"name": "vision", "proficiency": 0.7}]})
    wait_for(lambda: client.get(f"/api/tasks/{task['id']}", headers=viewer).json()["state"] == "Completed")


@pytest.mark.parametrize("bad", [
    {"description": "x", "priority": "urgent"},
    {"description": ""},
    {"description": "<script>x</script>"},
    {"description": "x", "required_capabilities": [{"name": "nlp", "min_proficiency": 2}]},
    {"description": "x", "owner": "me"},
])
def test_task_schema(client: Any, operator: Dict[str, str], bad: Dict[str, Any]) -> None:
    assert client.post("/api/tasks", headers=operator, json=bad).status_code == 422


def test_failing_executor_marks_task_failed(env: Dict[str, str]) -> None:
    from starlette.testclient import TestClient

    from multiagent_hive.api import create_app

    env["TASK_EXECUTOR"] = "executors:failing"
    s = settings_from(env)
    init_db(s)
    app = create_app(s)
    try:
        with TestClient(app) as c:
            op = login(c, "operator")
            c.post("/api/agents", headers=op, json={"name": "a", "type": "worker"})
            task = c.post("/api/tasks", headers=op, json={"description": "doomed"}).json()
            wait_for(lambda: c.get(f"/api/tasks/{task['id']}", headers=op).json()["state"] == "Failed")
            assert c.get(f"/api/tasks/{task['id']}", headers=op).json()["error"] == "model unavailable"
    finally:
        app.audit.close()
        app.store.close()


def test_priority_queue_and_state_machine(settings: Any) -> None:
    """With the only agent busy, queued tasks are handed out highest priority first, and every
    transition Pending -> Assigned -> InProgress -> Completed is persisted and announced."""

    async def scenario() -> List[Dict[str, Any]]:
        store = Store(settings.database_path, settings.database_encryption_key)
        gate = Gate()
        hive = Hive(store, gate)
        events: List[Dict[str, Any]] = []
        hive.listeners.add(lambda e: events.append({"type": e["type"], **{k: e["data"].get(k) for k in ("id", "state", "priority")}}))
        await hive.start()
        first = await hive.create_task("first", "low", [], None)
        agent = await hive.create_agent("solo", "worker", [], None)
        await eventually(lambda: gate.started, "the first task starts")
        assert agent["state"] == "busy" and gate.started[0][0] == first["id"]
        low = await hive.create_task("low", "low", [], None)
        critical = await hive.create_task("critical", "critical", [], None)
        medium = await hive.create_task("medium", "medium", [], None)
        order = []
        for started in range(2, 5):  # release the running task; the next one starts
            assert gate.event is not None
            gate.event.set()
            await eventually(lambda n=started: len(gate.started) >= n, f"task {started} starts")
            gate.event.clear()
        order = [task_id for task_id, _ in gate.started]
        assert order == [first["id"], critical["id"], medium["id"], low["id"]]
        gate.event.set()
        await eventually(lambda: store.counts_by_state("tasks") == {"Completed": 4}, "the four tasks complete")
        await hive.stop()
        store.close()
        return [e for e in events if e["id"] == first["id"]]

    events = asyncio.run(scenario())
    assert [e["state"] for e in events if e["type"] in ("task_created", "task_updated")] == ["Pending", "Assigned", "InProgress", "Completed"]


def test_interrupted_tasks_requeued_on_start(settings: Any) -> None:
    async def scenario() -> str:
        store = Store(settings.database_path, settings.database_encryption_key)
        gate = Gate()
        hive = Hive(store, gate)
        await hive.start()
        await hive.create_agent("a", "worker", [], None)
        task = await hive.create_task("t", "medium", [], None)
        await eventually(lambda: store.get_task(task["id"])["state"] == "InProgress", "the task runs")
        await hive.stop()  # e.g. SIGTERM mid-task
        hive2 = Hive(store, BuiltinExecutor(1))
        await hive2.start()
        await eventually(lambda: store.get_task(task["id"])["state"] == "Completed", "the requeued task completes")
        await hive2.stop()
        state = store.get_task(task["id"])["state"]
        store.close()
        return state

    assert asyncio.run(scenario()) == "Completed"


def test_agent_get_delete(client: Any, operator: Dict[str, str], viewer: Dict[str, str]) -> None:
    agent = client.post("/api/agents", headers=operator, json={"name": "tmp", "type": "coordinator"}).json()
    assert client.get(f"/api/agents/{agent['id']}", headers=viewer).json()["type"] == "coordinator"
    assert client.delete(f"/api/agents/{agent['id']}", headers=viewer).status_code == 403
    assert client.delete(f"/api/agents/{agent['id']}", headers=operator).status_code == 204
    assert client.get(f"/api/agents/{agent['id']}", headers=viewer).status_code == 404
    assert client.delete(f"/api/agents/{agent['id']}", headers=operator).status_code == 404


def test_busy_agent_cannot_be_deleted(settings: Any) -> None:
    async def scenario() -> None:
        store = Store(settings.database_path, settings.database_encryption_key)
        gate = Gate()
        hive = Hive(store, gate)
        await hive.start()
        agent = await hive.create_agent("a", "worker", [], None)
        await hive.create_task("t", "medium", [], None)
        await eventually(lambda: agent["state"] == "busy", "the agent takes the task")
        assert hive.delete_agent(agent["id"]) == "busy"
        assert gate.event is not None
        gate.event.set()
        await eventually(lambda: agent["state"] == "idle", "the agent finishes the task")
        assert hive.delete_agent(agent["id"]) is None
        await hive.stop()
        store.close()

    asyncio.run(scenario())


# -- GDPR ------------------------------------------------------------------------------------
def test_guide_gdpr_export_and_erasure(client: Any, operator: Dict[str, str], admin: Dict[str, str], settings: Any) -> None:
    agent = client.post("/api/agents", headers=operator, json={"name": "mine", "type": "worker"}).json()
    client.post("/api/auth/api-keys", headers=operator, json={"name": "laptop"})
    export = client.get("/api/users/me/data", headers=operator)
    assert export.status_code == 200
    data = export.json()
    assert data["user"]["username"] == "operator"
    pseudonym = data["user"]["pseudonym"]
    assert [a["id"] for a in data["agents"]] == [agent["id"]]
    assert [k["name"] for k in data["api_keys"]] == ["laptop"] and "key_hash" not in export.text
    assert any(e["event"] == "AuthenticationSuccess" for e in data["audit_events"])
    assert any(f"event=DataExport client_id=203.0.113.7 user={pseudonym}" in line for line in audit_lines(settings))

    erased = client.delete("/api/users/me/data", headers=operator)
    assert erased.status_code == 200 and erased.json()["erased"] is True
    # the token of an erased user stops working at once, and so does the password
    assert client.get("/api/users/me/data", headers=operator).status_code == 401
    assert client.post("/api/auth/login", json={"username": "operator", "password": PASSWORDS["operator"]}).status_code == 401
    store = client.app.store
    assert store.user_by_name("operator") is None
    assert store.one("SELECT count(*) AS n FROM audit_events WHERE username = 'operator'")["n"] == 0
    assert store.one("SELECT count(*) AS n FROM audit_events WHERE user_ref = ?", (pseudonym,))["n"] >= 2
    assert store.one("SELECT count(*) AS n FROM users WHERE pseudonym = ?", (pseudonym,))["n"] == 0
    assert client.get(f"/api/agents/{agent['id']}", headers=admin).status_code == 200  # the hive keeps its agent
    assert any(f"event=DataErasure client_id=203.0.113.7 user={pseudonym}" in line for line in audit_lines(settings))
    assert not any("operator" in line for line in audit_lines(settings))


def test_last_admin_cannot_erase_itself(client: Any, admin: Dict[str, str]) -> None:
    assert client.delete("/api/users/me/data", headers=admin).status_code == 409
    assert client.get("/api/users/me/data").status_code == 401


# -- WebSocket -------------------------------------------------------------------------------
def test_websocket_requires_auth(client: Any, settings: Any) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws?token=forged") as ws:
            ws.receive_json()
    assert sum("path=/ws" in line for line in audit_lines(settings)) == 2


def test_websocket_status_then_events(client: Any, operator: Dict[str, str]) -> None:
    ticket = client.post("/api/ws/ticket", headers=operator).json()["ticket"]
    with client.websocket_connect(f"/ws?ticket={ticket}") as ws:
        first = ws.receive_json()
        assert first["type"] == "status" and "agents" in first["data"]
        agent = client.post("/api/agents", headers=operator, json={"name": "live", "type": "worker"}).json()
        event = ws.receive_json()
        assert event["type"] == "agent_created" and event["data"]["id"] == agent["id"]
        task = client.post("/api/tasks", headers=operator, json={"description": "go"}).json()
        seen = []
        while not any(e["type"] == "task_updated" and e["data"]["state"] == "Completed" for e in seen):
            seen.append(ws.receive_json())
        states = [e["data"]["state"] for e in seen if e["type"].startswith("task") and e["data"]["id"] == task["id"]]
        assert states == ["Pending", "Assigned", "InProgress", "Completed"]
        assert {"agent_updated"} <= {e["type"] for e in seen}
    with client.websocket_connect("/ws", headers=operator) as ws:
        assert ws.receive_json()["type"] == "status"


# -- metrics ---------------------------------------------------------------------------------
def test_metrics_recorded_and_exported(env: Dict[str, str], tmp_path: Path) -> None:
    from prometheus_client import generate_latest
    from starlette.testclient import TestClient

    from multiagent_hive.api import create_app
    from multiagent_hive.metrics import RequestMetrics, build_registry, prepare_dir

    env["ENABLE_METRICS"] = "true"
    s = settings_from(env)
    init_db(s)
    prepare_dir(s.metrics_dir)
    app = create_app(s, metrics=RequestMetrics(s.metrics_dir))
    try:
        with TestClient(app) as c:
            op = login(c, "operator")
            agent_id = c.post("/api/agents", headers=op, json={"name": "m", "type": "worker"}).json()["id"]
            c.get(f"/api/agents/{agent_id}", headers=op)
            c.get("/api/admin/users")
            c.get("/nothing-here")
    finally:
        app.audit.close()
        app.store.close()
    text = generate_latest(build_registry(s)).decode()
    assert 'hive_http_requests_total{method="POST",route="/api/agents",status="201"} 1.0' in text
    assert 'hive_http_requests_total{method="GET",route="/api/agents/{agent_id}",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'hive_http_request_duration_seconds_count{method="POST",route="/api/auth/login"} 1.0' in text
    assert 'hive_audit_events_total{event="AuthenticationRequired"} 1.0' in text
    assert 'hive_agents{state="idle"} 1.0' in text
    assert 'hive_tasks{state="Completed"} 0.0' in text
    assert "hive_database_up 1.0" in text
    size = [line for line in text.splitlines() if line.startswith("hive_database_size_bytes ")][0]
    assert float(size.split()[1]) > 0


def test_exporter_reports_database_down(tmp_path: Path, env: Dict[str, str]) -> None:
    from prometheus_client import generate_latest

    from multiagent_hive.metrics import build_registry

    s = settings_from(env)  # no database initialised
    text = generate_latest(build_registry(s)).decode()
    assert "hive_database_up 0.0" in text
    assert not Path(s.database_path).exists()
