"""The published API contract: an OpenAPI 3.1 document built from the route table and the
pydantic models in schemas.py, served at /api/openapi.json.

Starlette has no OpenAPI of its own, so every HTTP route declares its operations here, one
`operation(...)` call per path and method::

    operation("/api/agents", "POST", "Create an agent", role="operator",
              request=AgentCreate, responses={201: AgentOut})

- `role`: the least role the operation needs (None: no credentials needed). Authenticated
  operations document 401 and 403 and the two credential schemes.
- `request`: the JSON body model (415, 400 for malformed JSON and 422 are documented with it).
- `responses`: status -> response model (None: no body). Every operation also documents 429
  (rate limits), 503 (database unavailable or the password-hashing pool full) and 507.
- `query`: the query parameters, `Query(name, schema, description)`.

`document(routes)` refuses a route table with an undeclared HTTP route or method, and the test
suite builds it that way, so a new endpoint cannot go unpublished (the running service logs an
error and leaves such a route out of the document rather than failing the request).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import accounts as a
from . import schemas as s

LOG = logging.getLogger("multiagent_hive.openapi")
OPENAPI_PATH = "/api/openapi.json"
REF_TEMPLATE = "#/components/schemas/{model}"
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
COMMON_ERRORS = {
    429: "Rate limit exceeded (Retry-After says when to retry)",
    503: "Database unavailable or password hashing busy (Retry-After)",
    507: "Database volume full; nothing was saved",
}
STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No content", 400: "Malformed or too deeply nested JSON",
    401: "Missing, invalid or expired credentials", 403: "The role is not sufficient",
    404: "Not found", 409: "Conflict", 413: "Request body too large", 415: "Content type must be application/json",
    422: "Invalid input",
}


@dataclass(frozen=True)
class Query:
    name: str
    schema: Dict[str, Any]
    description: str = ""


@dataclass
class Operation:
    path: str
    method: str
    summary: str
    role: Optional[str] = "viewer"
    request: Optional[Type[BaseModel]] = None
    responses: Dict[int, Optional[Type[BaseModel]]] = field(default_factory=dict)
    query: Sequence[Query] = ()


OPERATIONS: Dict[Tuple[str, str], Operation] = {}


def operation(
    path: str,
    method: str,
    summary: str,
    *,
    role: Optional[str] = "viewer",
    request: Optional[Type[BaseModel]] = None,
    responses: Optional[Dict[int, Optional[Type[BaseModel]]]] = None,
    query: Sequence[Query] = (),
) -> Operation:
    """Declare (or re-declare) one operation of the contract."""
    op = Operation(path, method.upper(), summary, role, request, dict(responses or {200: None}), tuple(query))
    OPERATIONS[(path, op.method)] = op
    return op


PAGING = (
    Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size"),
    Query("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0}, "rows to skip"),
)
UUID_SCHEMA = {"type": "string", "pattern": UUID_PATTERN}

operation("/api/health", "GET", "Health: {status} without credentials, details with them",
          role=None, responses={200: s.HealthOut, 503: s.HealthOut})
operation(OPENAPI_PATH, "GET", "This document", role=None, responses={200: None})
operation("/api/auth/login", "POST", "Exchange a username and password for a JWT",
          role=None, request=s.Login, responses={200: s.TokenOut, 401: s.Error})
operation("/api/auth/api-keys", "POST", "Create an API key for the caller (shown once)",
          request=s.ApiKeyCreate, responses={201: s.ApiKeyOut})
operation("/api/admin/users", "GET", "List users", role="admin", responses={200: s.UserList})
operation("/api/admin/users", "POST", "Create a user", role="admin", request=s.UserCreate,
          responses={201: s.UserOut, 409: s.Error})
operation("/api/agents", "GET", "List agents, or search them by name or type", responses={200: s.AgentList},
          query=PAGING + (Query("query", {"type": "string", "maxLength": 200}, "substring of name or type"),))
operation("/api/agents", "POST", "Create an agent", role="operator", request=s.AgentCreate,
          responses={201: s.AgentOut})
operation("/api/agents/{agent_id}", "GET", "One agent", responses={200: s.AgentOut, 404: s.Error})
operation("/api/agents/{agent_id}", "DELETE", "Delete an idle agent", role="operator",
          responses={204: None, 404: s.Error, 409: s.Error})
operation("/api/tasks", "GET", "List tasks", responses={200: s.TaskList},
          query=PAGING + (Query("state", {"type": "string", "enum": ["Pending", "Assigned", "InProgress", "Completed", "Failed"]}),))
operation("/api/tasks", "POST", "Submit a task", role="operator", request=s.TaskCreate, responses={201: s.TaskOut})
operation("/api/tasks/{task_id}", "GET", "One task", responses={200: s.TaskOut, 404: s.Error})
operation("/api/hive/status", "GET", "Agent and task counts", responses={200: s.HiveStatusOut})
operation("/api/users/me/data", "GET", "Export everything stored about the caller", responses={200: s.MyDataOut})
operation("/api/users/me/data", "DELETE", "Erase the caller's account (the last admin cannot)",
          responses={200: s.ErasureOut, 409: s.Error})

# Credential lifecycle (accounts.py).
operation("/api/auth/password", "POST", "Change the caller's password (ends the other sessions; a fresh token)",
          request=a.PasswordChange, responses={200: a.TokenOut, 403: s.Error, 429: s.Error})
operation("/api/auth/api-keys", "GET", "The caller's API keys", responses={200: a.ApiKeyList})
operation("/api/auth/api-keys/{key_id:int}", "DELETE", "Revoke one of the caller's API keys",
          responses={204: None, 404: s.Error})
operation("/api/auth/revoke-sessions", "POST", "End every session and session-bound key of the caller",
          responses={200: a.AccountChangeOut})
operation("/api/ws/ticket", "POST", "A short-lived single-use ticket for /ws", responses={200: a.WsTicketOut})
for _path, _summary, _request in (
    ("/api/admin/users/{user_id:int}/password", "Reset a user's password", a.PasswordReset),
    ("/api/admin/users/{user_id:int}/role", "Change a user's role", a.RoleChange),
    ("/api/admin/users/{user_id:int}/disable", "Disable a user", None),
    ("/api/admin/users/{user_id:int}/enable", "Enable a user", None),
    ("/api/admin/users/{user_id:int}/revoke-sessions", "End every session of a user", None),
):
    operation(_path, "POST", _summary, role="admin", request=_request,
              responses={200: a.AccountChangeOut, 404: s.Error, 409: s.Error})
operation("/api/admin/users/{user_id:int}", "DELETE", "Delete a user", role="admin",
          responses={200: a.AccountChangeOut, 404: s.Error, 409: s.Error})
operation("/api/admin/users/{user_id:int}/api-keys", "GET", "A user's API keys", role="admin",
          responses={200: a.ApiKeyList, 404: s.Error})
operation("/api/admin/users/{user_id:int}/api-keys/{key_id:int}", "DELETE", "Revoke a user's API key", role="admin",
          responses={204: None, 404: s.Error})


def _path_parameters(path: str) -> List[Dict[str, Any]]:
    """Starlette's `{name}` (here always a UUID) and `{name:int}` parameters."""
    params = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name, _sep, convertor = part[1:-1].partition(":")
            schema = {"type": "integer", "minimum": 0} if convertor == "int" else dict(UUID_SCHEMA)
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _openapi_path(path: str) -> str:
    return "/".join(
        "{" + part[1:-1].partition(":")[0] + "}" if part.startswith("{") and part.endswith("}") else part
        for part in path.split("/")
    )


def _http_operations(routes: Sequence[BaseRoute]) -> List[Tuple[str, str]]:
    found = []
    for route in routes:
        if isinstance(route, Route) and route.methods:
            for method in sorted(route.methods):
                if method != "HEAD":
                    found.append((route.path, method))
    return found


def document(routes: Sequence[BaseRoute], version: str, strict: bool = True) -> Dict[str, Any]:
    """The OpenAPI document of these routes. An undeclared route is a ValueError naming it, or
    with strict=False an error in the log and a route left out."""
    wanted = _http_operations(routes)
    missing = [f"{m} {p}" for p, m in wanted if (p, m) not in OPERATIONS]
    if missing:
        message = "routes without an openapi.operation(...) declaration: " + ", ".join(missing)
        if strict:
            raise ValueError(message)
        LOG.error("%s", message)
        wanted = [key for key in wanted if key in OPERATIONS]
    ops = [OPERATIONS[key] for key in wanted]
    models: Dict[Type[BaseModel], None] = {s.Error: None}
    for op in ops:
        if op.request is not None:
            models[op.request] = None
        for model in op.responses.values():
            if model is not None:
                models[model] = None
    from pydantic.json_schema import models_json_schema  # only the document needs it

    keyed = [(m, "validation") for m in models]
    refs, top = models_json_schema(keyed, ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
    components: Dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: Type[BaseModel]) -> Dict[str, Any]:
        return dict(refs[(model, "validation")])

    def json_content(model: Type[BaseModel]) -> Dict[str, Any]:
        return {"application/json": {"schema": ref(model)}}

    def retry_after() -> Dict[str, Any]:
        return {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}

    paths: Dict[str, Dict[str, Any]] = {}
    for op in ops:
        responses: Dict[str, Any] = {}
        for status, model in sorted(op.responses.items()):
            entry: Dict[str, Any] = {"description": STATUS_TEXT.get(status, "Response")}
            if model is not None:
                entry["content"] = json_content(model)
            elif status != 204:
                entry["content"] = {"application/json": {"schema": {"type": "object"}}}
            responses[str(status)] = entry
        extra = [429, 503, 507]
        if "{" in op.path:
            extra += [404]
        if op.role is not None:
            extra += [401, 403]
        if op.request is not None:
            extra += [400, 413, 415, 422]
        elif op.query:
            extra += [422]
        for status in extra:
            if str(status) not in responses:
                entry = {"description": COMMON_ERRORS.get(status) or STATUS_TEXT[status], "content": json_content(s.Error)}
                if status in (429, 503):
                    entry["headers"] = retry_after()
                responses[str(status)] = entry
        body: Dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op), "responses": responses}
        parameters = _path_parameters(op.path) + [
            {"name": q.name, "in": "query", "required": False, "schema": q.schema, "description": q.description}
            for q in op.query
        ]
        if parameters:
            body["parameters"] = parameters
        if op.request is not None:
            body["requestBody"] = {"required": True, "content": json_content(op.request)}
        if op.role is None:
            body["security"] = []
        else:
            body["description"] = f"Requires role {op.role} or higher."
        paths.setdefault(_openapi_path(op.path), {})[op.method.lower()] = body
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AI Orchestrator Hub API",
            "version": version,
            "description": "Generated from the service's route table and pydantic models.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


def _operation_id(op: Operation) -> str:
    words = [w.strip("{}") for w in _openapi_path(op.path).split("/") if w and w != "api"]
    return op.method.lower() + "_" + "_".join(w.replace("-", "_").replace(".", "_") for w in words)


def route(routes: Sequence[BaseRoute], version: str) -> Route:
    """GET /api/openapi.json for these routes (itself included). The document is built by the
    first request and kept: building it at start cost the idle service memory for a page few
    clients ask for (figures: docs/benchmarks.md)."""
    holder: List[bytes] = []

    async def endpoint(_request: Request) -> Response:
        if not holder:
            holder.append(json.dumps(document([*table, openapi], version, strict=False), separators=(",", ":")).encode())
        return Response(holder[0], media_type="application/json")

    table = list(routes)
    openapi = Route(OPENAPI_PATH, endpoint, methods=["GET"])
    return openapi
