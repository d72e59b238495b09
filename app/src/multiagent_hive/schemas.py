"""Strict request schemas: unknown fields, wrong types and out-of-range values are rejected.

pydantic evaluates these annotations at runtime, so they use typing.List/Optional (Python 3.9)."""
import json
import re
from typing import Annotated, Any, Dict, List, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

NAME_RE = re.compile(r"[A-Za-z0-9 _-]{1,100}")
CAPABILITY_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")


def _capability_name(value: str) -> str:
    if not CAPABILITY_RE.fullmatch(value):
        raise ValueError("capability name must be 1-50 letters, digits, '_' or '-'")
    return value


# One rule for every capability name (offered by an agent or required by a task).
# The `pattern`s given with json_schema_extra only publish the rule in the OpenAPI document (so a
# fuzzer generates valid values too); the validators are what enforces it, with their messages.
CapabilityName = Annotated[
    str, AfterValidator(_capability_name), Field(json_schema_extra={"pattern": "^[A-Za-z0-9_-]{1,50}$"})
]
AGENT_TYPES = ("worker", "coordinator", "learner")
PRIORITIES = {"low": 0, "medium": 1, "high": 2, "critical": 3}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
# Markup or script in any text field is an attack probe, not data. Every quantifier is bounded
# and no two adjacent ones can match the same characters, so a search costs a constant per
# start position: linear in the text, whatever it holds (what an unbounded one cost:
# docs/benchmarks.md). "select ... from" is two searches instead of `.+`.
SUSPICIOUS_RE = re.compile(
    r"<[\s/]{0,16}(?:script|iframe|img|svg|object|embed|body|html)\b|javascript:|\bon[a-z]{2,24}\s{0,8}=|"
    r"\bunion\s{1,8}(?:all\s{1,8})?select\b|\b(?:drop|alter|truncate)\s{1,8}table\b|"
    r";\s{0,8}--|'\s{0,8}or\s{1,8}'?\d{1,20}'?\s{0,8}=\s{0,8}'?\d|\bsleep\s{0,8}\(|\bpg_sleep\b|\.\./",
    re.IGNORECASE,
)
SELECT_RE = re.compile(r"\bselect\b", re.IGNORECASE)
FROM_RE = re.compile(r"\bfrom\b", re.IGNORECASE)
# Only this much of one text is inspected: the check classifies input for the audit log, it is
# not what keeps bad input out (the strict schemas are).
MAX_INSPECTED_CHARS = 4096


def is_suspicious(text: str) -> bool:
    """Markup, script or SQL-injection shapes in the first MAX_INSPECTED_CHARS of text."""
    text = text[:MAX_INSPECTED_CHARS]
    if SUSPICIOUS_RE.search(text):
        return True
    select = SELECT_RE.search(text)
    return select is not None and FROM_RE.search(text, select.end() + 1) is not None


# A request body is at most this deep and holds at most this many values (every model here
# needs depth 3 and a few hundred values); beyond either it is a 400, before any validation.
MAX_JSON_DEPTH = 16
MAX_JSON_ITEMS = 10_000
# Inspected for attack shapes per request, over all of its strings together.
MAX_INSPECTED_TOTAL = 8192


class BadJson(ValueError):
    """A body that is not JSON, or is JSON nested too deeply or too big; the message says which."""


def parse_json(body: bytes) -> Any:
    """json.loads with bounds, linear in the body's size.

    Values are counted before parsing (commas and openers bound them from above, at C speed),
    so no parse builds a huge structure; the C parser's own recursion limit stops a body of
    thousands of `[` (a RecursionError, formerly a 500), and nesting below that but over
    MAX_JSON_DEPTH is refused after parsing by a walk that visits at most MAX_JSON_ITEMS values."""
    openers = body.count(b"[") + body.count(b"{")
    if body.count(b",") + openers >= MAX_JSON_ITEMS:
        raise BadJson(f"JSON body has more than {MAX_JSON_ITEMS} values")
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # includes UnicodeDecodeError
        raise BadJson("malformed JSON") from None
    if openers <= MAX_JSON_DEPTH:  # fewer openers than the limit (in strings too): no walk needed
        return data
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise BadJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return data


def suspicious_strings(data: Any) -> bool:
    """Whether any key or string in parsed JSON looks like an attack probe. At most
    MAX_INSPECTED_TOTAL characters are inspected in all, so the cost has a fixed ceiling."""
    budget = MAX_INSPECTED_TOTAL
    stack = [data]
    while stack and budget > 0:
        value = stack.pop()
        if isinstance(value, str):
            text = value[:budget]
            budget -= len(text)
            if is_suspicious(text):
                return True
        elif isinstance(value, dict):
            stack.extend(value.values())
            stack.extend(value.keys())
        elif isinstance(value, list):
            stack.extend(value)
    return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class Capability(Strict):
    name: CapabilityName
    proficiency: float = Field(ge=0.0, le=1.0)


class RequiredCapability(Strict):
    name: CapabilityName
    min_proficiency: float = Field(default=0.0, ge=0.0, le=1.0)


class AgentCreate(Strict):
    name: str = Field(json_schema_extra={"pattern": "^[A-Za-z0-9 _-]{1,100}$"})
    type: str = Field(
        json_schema_extra={"pattern": "^(worker|coordinator|learner|specialist:[A-Za-z0-9_-]{1,50})$"}
    )
    capabilities: List[Capability] = Field(default_factory=list, max_length=50)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("name must be 1-100 characters of letters, digits, space, '-' or '_'")
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value in AGENT_TYPES:
            return value
        if value.startswith("specialist:") and CAPABILITY_RE.fullmatch(value[len("specialist:"):]):
            return value
        raise ValueError("type must be worker, coordinator, learner or specialist:NAME")

    @field_validator("capabilities")
    @classmethod
    def _unique(cls, value: List[Capability]) -> List[Capability]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError("capability names must be unique")
        return value


class TaskCreate(Strict):
    description: str = Field(min_length=1, max_length=2000, json_schema_extra={"pattern": r"^[^<>\x00-\x08\x0b-\x1f\x7f]*$"})
    priority: str = Field(default="medium", json_schema_extra={"enum": list(PRIORITIES)})
    required_capabilities: List[RequiredCapability] = Field(default_factory=list, max_length=20)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if any(ord(ch) < 32 and ch not in "\t\n" for ch in value) or "\x7f" in value:
            raise ValueError("description must not contain control characters")
        if "<" in value or ">" in value:
            raise ValueError("description must not contain markup ('<' or '>')")
        return value

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: str) -> str:
        if value not in PRIORITIES:
            raise ValueError("priority must be low, medium, high or critical")
        return value


class Login(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class ApiKeyCreate(Strict):
    name: str = Field(default="api", min_length=1, max_length=64, json_schema_extra={"pattern": "^[A-Za-z0-9 _-]{1,64}$"})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("name must be letters, digits, space, '-' or '_'")
        return value


def check_role(value: str) -> str:
    """A user's role, as every model that takes one checks it."""
    if value not in ("admin", "operator", "viewer"):
        raise ValueError("role must be admin, operator or viewer")
    return value


class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=1, max_length=1024)
    role: Annotated[str, Field(json_schema_extra={"enum": ["admin", "operator", "viewer"]}), AfterValidator(check_role)]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def first_error(exc: Exception) -> str:
    """A short reason for a pydantic ValidationError, without echoing the input."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return "invalid input"
    reasons = []
    for err in errors(include_input=False, include_url=False)[:5]:
        # A location can be a client's key of any length: it is cut, as it goes to the logs.
        loc = ".".join(_short(str(p)) for p in err.get("loc", ())) or "body"
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        reasons.append(f"{loc}: {msg}")
    return "; ".join(reasons)


# -- response models: the published contract (/api/openapi.json), checked by schemathesis ------
# Not strict and not closed: they describe what the service sends; a field added later is not a
# breaking change for clients.
class Error(BaseModel):
    error: str
    detail: Optional[str] = None
    limit: Optional[int] = None


class HealthOut(BaseModel):
    """Without credentials only `status`; with them the details as well."""

    status: str
    version: Optional[str] = None
    database: Optional[str] = None
    uptime_seconds: Optional[float] = None
    agents: Optional[int] = None
    tasks: Optional[int] = None


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


class ApiKeyOut(BaseModel):
    """The key itself is shown once, here."""

    api_key: str
    id: int
    name: str
    prefix: str
    created_at: str


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    created_at: Optional[str] = None


class UserList(BaseModel):
    users: List[UserOut]


class AgentOut(BaseModel):
    id: str
    name: str
    type: str
    capabilities: List[Capability]
    state: str
    current_task: Optional[str]
    tasks_completed: int
    created_at: str
    updated_at: str


class AgentList(BaseModel):
    agents: List[AgentOut]


class TaskOut(BaseModel):
    id: str
    description: str
    priority: str
    required_capabilities: List[RequiredCapability]
    state: str
    assigned_agent: Optional[str]
    result: Optional[Dict[str, Any]]
    error: Optional[str]
    created_at: str
    updated_at: str


class TaskList(BaseModel):
    tasks: List[TaskOut]


class StateCounts(BaseModel):
    total: int
    by_state: Dict[str, int]
    queued: Optional[int] = None


class HiveStatusOut(BaseModel):
    agents: StateCounts
    tasks: StateCounts
    uptime_seconds: float


class MyDataOut(BaseModel):
    """Everything stored about the caller (GDPR export)."""

    user: Dict[str, Any]
    api_keys: List[Dict[str, Any]]
    agents: List[AgentOut]
    tasks: List[TaskOut]
    audit_events: List[Dict[str, Any]]
    exported_at: str


class ErasureOut(BaseModel):
    erased: bool
    api_keys: int
    agents_unlinked: int
    tasks_unlinked: int
    audit_events_pseudonymised: int
