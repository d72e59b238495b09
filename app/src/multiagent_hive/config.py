"""Settings: TOML config file < environment file < process environment."""
from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 targets
    import tomli as tomllib

DEFAULT_CONFIG = "/etc/ai-orchestrator/config.toml"
DEFAULT_ENV_FILE = "/etc/ai-orchestrator/environment"

SECRET_KEYS = ("jwt_secret", "database_encryption_key", "api_encryption_key")
MIN_SECRET_BYTES = 32

LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "off": "CRITICAL",
}

# Environment variables the guide's environment file sets that have no meaning here.
IGNORED_ENV = {"RUST_BACKTRACE"}


class ConfigError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Settings:
    jwt_secret: str = ""
    database_encryption_key: str = ""
    api_encryption_key: str = ""
    database_path: str = "/var/lib/ai-orchestrator/hive_persistence.db"
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    enable_metrics: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090
    metrics_dir: str = "/var/lib/ai-orchestrator/metrics"
    enable_audit_logging: bool = True
    audit_log_path: str = "/var/log/ai-orchestrator/audit.log"
    app_log_path: str = "/var/log/ai-orchestrator/app.log"
    security_log_level: str = "info"
    log_level: str = "info"
    trusted_proxies: str = "127.0.0.1,::1"
    # A Unix socket for the reverse proxy, beside the TCP listener. When set, X-Forwarded-For is
    # read only from connections on this socket (whoever may open it is the proxy) and never on
    # TCP, where any local process could otherwise name any client address.
    server_socket: str = ""
    jwt_expiry_seconds: int = 3600
    max_body_bytes: int = 1048576
    rate_limit_per_second: float = 1000.0
    rate_limit_burst: int = 2000
    login_rate_per_minute: float = 10.0
    login_burst: int = 5
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    # Password hashes running at once (threads) and waiting beyond those; more gets a 503.
    argon2_workers: int = 2
    argon2_queue: int = 32
    min_password_length: int = 12
    task_executor: str = "builtin"
    task_duration_ms: int = 5
    websocket_queue_size: int = 256
    websocket_max_per_user: int = 8
    # Origins (scheme://host[:port], comma-separated) a browser may open /ws from; empty: only
    # the host it connected to (same origin).
    websocket_allowed_origins: str = ""
    # Tasks waiting for an agent, at most; one more gets 503 (each is held in memory).
    max_pending_tasks: int = 100000
    # audit_events rows older than this are deleted (hourly and at start); 0 keeps them forever.
    audit_retention_days: int = 400
    # Where each value came from (for --check-config); not a setting.
    sources: Dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        """Every setting except the secrets, which show only whether they are set: a Settings in
        a traceback, a log line or a debugger must not leak them."""
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in SECRET_KEYS:
                shown.append(f"{f.name}={'<redacted>' if value else '<unset>'}")
            else:
                shown.append(f"{f.name}={value!r}")
        return "Settings(" + ", ".join(shown) + ")"

    __str__ = __repr__

    def trusted_networks(self) -> List[Union[ipaddress.IPv4Network, ipaddress.IPv6Network]]:
        return [ipaddress.ip_network(p.strip(), strict=False) for p in self.trusted_proxies.split(",") if p.strip()]

    def allowed_origins(self) -> List[str]:
        return [o.strip().lower().rstrip("/") for o in self.websocket_allowed_origins.split(",") if o.strip()]

    def python_log_level(self) -> str:
        return LOG_LEVELS.get(self.log_level.lower(), "INFO")


SETTING_FIELDS = {f.name: f for f in fields(Settings) if f.name != "sources"}
_TYPES = {name: type(getattr(Settings(), name)) for name in SETTING_FIELDS}


def _coerce(name: str, value: Any, origin: str) -> Tuple[Any, Optional[str]]:
    want = _TYPES[name]
    if want is bool:
        if isinstance(value, bool):
            return value, None
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True, None
        if text in ("0", "false", "no", "off"):
            return False, None
        return None, f"{name.upper()} ({origin}) must be true or false, got {value!r}"
    if want is int:
        if isinstance(value, bool):
            return None, f"{name.upper()} ({origin}) must be an integer, got {value!r}"
        try:
            return int(str(value).strip()), None
        except ValueError:
            return None, f"{name.upper()} ({origin}) must be an integer, got {value!r}"
    if want is float:
        if isinstance(value, bool):
            return None, f"{name.upper()} ({origin}) must be a number, got {value!r}"
        try:
            return float(str(value).strip()), None
        except ValueError:
            return None, f"{name.upper()} ({origin}) must be a number, got {value!r}"
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None, f"{name.upper()} ({origin}) must be a string, got {value!r}"
    return str(value), None


def parse_env_file(path: str) -> Dict[str, str]:
    """KEY=VALUE lines, # comments, optional `export`, optional matching quotes."""
    values: Dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ConfigError([f"{path}:{number}: not a KEY=VALUE line"])
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key] = value
    return values


def _rust_log_level(value: str) -> str:
    """RUST_LOG may be `warn` or `warn,hyper=info`: take the global directive."""
    for part in value.split(","):
        part = part.strip()
        if part and "=" not in part:
            return part
    return "info"


def load_settings(
    config_path: Optional[str] = None,
    env_file: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Settings:
    """Resolve settings. Raises ConfigError listing every problem with the sources."""
    problems: List[str] = []
    raw: Dict[str, Tuple[Any, str]] = {}

    explicit_config = config_path is not None
    config_path = config_path or DEFAULT_CONFIG
    if os.path.exists(config_path):
        try:
            with open(config_path, "rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"config file {config_path}: {exc}")
            data = {}
        for key, value in data.items():
            name = key.lower()
            if name not in SETTING_FIELDS:
                problems.append(f"config file {config_path}: unknown setting {key!r}")
                continue
            raw[name] = (value, f"config file {config_path}")
    elif explicit_config:
        problems.append(f"config file {config_path} does not exist")

    def apply_env(values: Mapping[str, str], origin: str) -> None:
        for key, value in values.items():
            if key in IGNORED_ENV:
                continue
            if key == "RUST_LOG":
                if "LOG_LEVEL" not in values:
                    raw["log_level"] = (_rust_log_level(value), origin + " (RUST_LOG)")
                continue
            name = key.lower()
            if key.isupper() and name in SETTING_FIELDS:
                raw[name] = (value, origin)

    explicit_env = env_file is not None
    env_file = env_file or DEFAULT_ENV_FILE
    if os.path.exists(env_file):
        try:
            apply_env(parse_env_file(env_file), f"env file {env_file}")
        except OSError as exc:
            problems.append(f"env file {env_file}: {exc}")
        except ConfigError as exc:
            problems.extend(exc.problems)
    elif explicit_env:
        problems.append(f"env file {env_file} does not exist")

    apply_env(dict(os.environ if environ is None else environ), "environment")

    settings = Settings()
    for name, (value, origin) in raw.items():
        coerced, problem = _coerce(name, value, origin)
        if problem:
            problems.append(problem)
            continue
        setattr(settings, name, coerced)
        settings.sources[name] = origin
    if problems:
        raise ConfigError(problems)
    return settings


def _writable_file(path: str, what: str) -> Optional[str]:
    if not os.path.isabs(path):
        return f"{what} {path!r} must be an absolute path"
    if os.path.isdir(path):
        return f"{what} {path} is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else f"{what} {path} is not writable"
    parent = os.path.dirname(path) or "/"
    if not os.path.isdir(parent):
        return f"{what} {path}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{what} {path}: directory {parent} is not writable"
    return None


# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


def _socket_path(path: str) -> Optional[str]:
    """SERVER_SOCKET's form only: its directory may be created just before the service starts
    (a runtime directory), after the configuration files were validated."""
    if not os.path.isabs(path):
        return f"SERVER_SOCKET {path!r} must be an absolute path"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        return f"SERVER_SOCKET {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes"
    if path.endswith("/") or os.path.isdir(path):
        return f"SERVER_SOCKET {path} is a directory"
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        return f"SERVER_SOCKET {path} exists and is not a socket"
    return None


def _writable_dir(path: str, what: str) -> Optional[str]:
    if not os.path.isabs(path):
        return f"{what} {path!r} must be an absolute path"
    if os.path.isdir(path):
        return None if os.access(path, os.W_OK | os.X_OK) else f"{what} {path} is not writable"
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
        return None
    return f"{what} {path} does not exist and cannot be created in {parent}"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host))


def validate(settings: Settings, scope: str = "all") -> List[str]:
    """Every problem with the settings a command needs.

    scope: "all" (serve, --check-config), "database" (db commands), "users" (user/key
    commands), "metrics" (the exporter).
    """
    problems: List[str] = []
    needed: Tuple[str, ...]
    if scope in ("all", "users"):
        needed = SECRET_KEYS
    elif scope in ("database", "metrics"):
        needed = ("database_encryption_key",)
    else:
        needed = ()
    for name in needed:
        value = getattr(settings, name)
        if not value:
            problems.append(f"{name.upper()} is not set")
        elif len(value.encode("utf-8")) < MIN_SECRET_BYTES:
            problems.append(f"{name.upper()} is shorter than {MIN_SECRET_BYTES} bytes")
    if scope == "all":
        seen: Dict[str, str] = {}
        for name in SECRET_KEYS:
            value = getattr(settings, name)
            if value and value in seen:
                problems.append(f"{name.upper()} must differ from {seen[value].upper()}")
            seen.setdefault(value, name)

    problem = _writable_file(settings.database_path, "DATABASE_PATH")
    if problem:
        problems.append(problem)
    if scope != "all" and scope != "metrics":
        return problems

    for name in ("server_port", "metrics_port"):
        port = getattr(settings, name)
        if not 1 <= port <= 65535:
            problems.append(f"{name.upper()} {port} is not a valid port (1-65535)")
    for name in ("server_host", "metrics_host"):
        if not _valid_host(getattr(settings, name)):
            problems.append(f"{name.upper()} {getattr(settings, name)!r} is not an address or host name")
    if settings.enable_metrics and settings.server_port == settings.metrics_port:
        problems.append(f"SERVER_PORT and METRICS_PORT are both {settings.server_port}")
    if settings.enable_metrics or scope == "metrics":
        problem = _writable_dir(settings.metrics_dir, "METRICS_DIR")
        if problem:
            problems.append(problem)
    if scope == "metrics":
        return problems

    if settings.enable_audit_logging:
        problem = _writable_file(settings.audit_log_path, "AUDIT_LOG_PATH")
        if problem:
            problems.append(problem)
    if settings.app_log_path:
        problem = _writable_file(settings.app_log_path, "APP_LOG_PATH")
        if problem:
            problems.append(problem)
    for name in ("log_level", "security_log_level"):
        if getattr(settings, name).lower() not in LOG_LEVELS:
            problems.append(f"{name.upper()} {getattr(settings, name)!r} is not one of {', '.join(LOG_LEVELS)}")
    try:
        settings.trusted_networks()
    except ValueError as exc:
        problems.append(f"TRUSTED_PROXIES: {exc}")
    for origin in settings.allowed_origins():
        if not re.fullmatch(r"https?://[a-z0-9.\[\]:-]+", origin):
            problems.append(f"WEBSOCKET_ALLOWED_ORIGINS: {origin!r} is not scheme://host[:port]")
    if settings.server_socket:
        problem = _socket_path(settings.server_socket)
        if problem:
            problems.append(problem)
    positive = (
        "jwt_expiry_seconds", "max_body_bytes", "rate_limit_per_second", "rate_limit_burst",
        "login_rate_per_minute", "login_burst", "argon2_time_cost", "argon2_parallelism",
        "websocket_queue_size", "argon2_workers", "websocket_max_per_user", "max_pending_tasks",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            problems.append(f"{name.upper()} must be positive")
    if settings.argon2_memory_kib < 8 * settings.argon2_parallelism:
        problems.append("ARGON2_MEMORY_KIB must be at least 8 x ARGON2_PARALLELISM")
    if settings.audit_retention_days < 0:
        problems.append("AUDIT_RETENTION_DAYS must not be negative (0 keeps audit events forever)")
    if settings.argon2_queue < 0:
        problems.append("ARGON2_QUEUE must not be negative")
    if settings.task_duration_ms < 0:
        problems.append("TASK_DURATION_MS must not be negative")
    if settings.min_password_length < 8:
        problems.append("MIN_PASSWORD_LENGTH must be at least 8")
    if settings.task_executor != "builtin" and not re.fullmatch(
        r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", settings.task_executor
    ):
        problems.append("TASK_EXECUTOR must be 'builtin' or 'package.module:factory'")
    return problems
