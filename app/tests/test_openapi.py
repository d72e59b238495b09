"""The published API contract: /api/openapi.json covers every route, and schemathesis finds no
5xx and no response that breaks it, fuzzing the real server process (bounded to ~2 minutes)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

from multiagent_hive import __version__, openapi

from liveserver import live_server

# Operations that end the fuzzer's own session when they succeed on its own account (erasure,
# revoking sessions, disabling/deleting/demoting a user id that can be its own): run separately,
# after everything else, so they cannot turn the rest of the run into 401s.
SESSION_ENDING = r"^/api/(users/me/data|auth/revoke-sessions|admin/users/\{user_id\}.*)$"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)
MAX_EXAMPLES = 25
# The whole fuzzing run's wall-clock budget (both selections): about 2 minutes, a failure past it.
BUDGET_SECONDS = 150.0


def test_every_route_is_declared_and_served(client: Any, hive_app: Any) -> None:
    document = openapi.document(hive_app.starlette.routes, __version__)  # raises on an undeclared route
    resp = client.get(openapi.OPENAPI_PATH)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == json.loads(json.dumps(document))
    assert document["openapi"] == "3.1.0"
    login = document["paths"]["/api/auth/login"]["post"]
    assert login["security"] == [] and login["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Login"
    }
    agents = document["paths"]["/api/agents"]["post"]
    assert {"201", "401", "403", "422", "429", "503"} <= set(agents["responses"])
    assert "pattern" in document["components"]["schemas"]["AgentCreate"]["properties"]["name"]


def test_an_undeclared_route_is_refused() -> None:
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(_request: Any) -> Response:
        return Response()

    try:
        openapi.document([Route("/api/undeclared", endpoint, methods=["PUT"])], __version__)
    except ValueError as exc:
        assert "PUT /api/undeclared" in str(exc)
    else:
        raise AssertionError("an undeclared route was published")


def _schemathesis(
    workdir: Path, base: str, token: str, deadline: float, *selection: str
) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).parent / "st"
    assert st.exists(), "schemathesis is missing: install the app's test extras (make bootstrap)"
    command: List[str] = [
        str(st), "run", base + openapi.OPENAPI_PATH, "--url", base,
        "-H", "Authorization: Bearer " + token,
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", "20261126",
        "--request-timeout", "10", "--no-color", *selection,
    ]
    # Its example database (.schemathesis/) goes to the test's own directory, not the checkout.
    remaining = deadline - time.monotonic()
    assert remaining > 0, f"schemathesis: the {BUDGET_SECONDS:.0f} s budget was spent before {selection}"
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=remaining, cwd=workdir)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"schemathesis {selection} ran past the {BUDGET_SECONDS:.0f} s budget") from exc


def test_schemathesis_finds_no_5xx_and_no_contract_break(tmp_path: Path) -> None:
    # Limits high enough that the fuzzer reaches the logic, not only 429s (429 is documented).
    with live_server(tmp_path, LOGIN_BURST=1000, LOGIN_RATE_PER_MINUTE=6000) as live:
        started = time.monotonic()
        deadline = started + BUDGET_SECONDS
        results = [
            _schemathesis(tmp_path, live.base, live.token("admin"), deadline, "--exclude-path-regex", SESSION_ENDING),
            _schemathesis(tmp_path, live.base, live.token("admin"), deadline, "--include-path-regex", SESSION_ENDING),
        ]
        elapsed = time.monotonic() - started
        server_log = (tmp_path / "server.out").read_text()
    for result in results:
        assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:] + server_log[-3000:]
        assert " passed" in result.stdout and "Operations:" in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in server_log, server_log[-5000:]
    print(f"schemathesis: {elapsed:.1f} s")
