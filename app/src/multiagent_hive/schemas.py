"""Strict request schemas: unknown fields, wrong types and out-of-range values are rejected.

pydantic evaluates these annotations at runtime, so they use typing.List/Optional (Python 3.9)."""
import re
from typing import Annotated, List, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

NAME_RE = re.compile(r"[A-Za-z0-9 _-]{1,100}")
CAPABILITY_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")


def _capability_name(value: str) -> str:
    if not CAPABILITY_RE.fullmatch(value):
        raise ValueError("capability name must be 1-50 letters, digits, '_' or '-'")
    return value


# One rule for every capability name (offered by an agent or required by a task).
CapabilityName = Annotated[str, AfterValidator(_capability_name)]
AGENT_TYPES = ("worker", "coordinator", "learner")
PRIORITIES = {"low": 0, "medium": 1, "high": 2, "critical": 3}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
# Markup or script in any text field is an attack probe, not data.
SUSPICIOUS_RE = re.compile(
    r"<\s*/?\s*(script|iframe|img|svg|object|embed|body|html)\b|javascript:|on\w+\s*=|"
    r"\bunion\s+(all\s+)?select\b|\bselect\b.+\bfrom\b|\b(drop|alter|truncate)\s+table\b|"
    r";\s*--|'\s*or\s+'?\d+'?\s*=\s*'?\d+|\bsleep\s*\(|\bpg_sleep\b|\.\./",
    re.IGNORECASE | re.DOTALL,
)


def is_suspicious(text: str) -> bool:
    return bool(SUSPICIOUS_RE.search(text))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class Capability(Strict):
    name: CapabilityName
    proficiency: float = Field(ge=0.0, le=1.0)


class RequiredCapability(Strict):
    name: CapabilityName
    min_proficiency: float = Field(default=0.0, ge=0.0, le=1.0)


class AgentCreate(Strict):
    name: str
    type: str
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
    description: str = Field(min_length=1, max_length=2000)
    priority: str = "medium"
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
    name: str = Field(default="api", min_length=1, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("name must be letters, digits, space, '-' or '_'")
        return value


class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=1, max_length=1024)
    role: str

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("admin", "operator", "viewer"):
            raise ValueError("role must be admin, operator or viewer")
        return value


def first_error(exc: Exception) -> str:
    """A short reason for a pydantic ValidationError, without echoing the input."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return "invalid input"
    reasons = []
    for err in errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        reasons.append(f"{loc}: {msg}")
    return "; ".join(reasons)
