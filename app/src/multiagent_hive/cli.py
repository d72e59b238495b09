"""`multiagent-hive`: the service and its admin commands (docs/architecture.md is the contract)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional

from . import __version__, db
from .config import ConfigError, Settings, load_settings, validate

EXIT_CONFIG = 2
EXIT_FAIL = 1
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multiagent-hive",
        description="AI Orchestrator Hub. Without a command it serves HTTP.",
        allow_abbrev=False,
    )
    p.add_argument("--config", help="TOML config file (default /etc/ai-orchestrator/config.toml)")
    p.add_argument("--env-file", help="KEY=VALUE environment file (default /etc/ai-orchestrator/environment)")
    cmd = p.add_mutually_exclusive_group()
    cmd.add_argument("--check-config", action="store_true", help="validate the configuration")
    cmd.add_argument("--init-database", action="store_true", help="create the encrypted database if absent")
    cmd.add_argument("--migrate", action="store_true", help="apply pending schema migrations")
    cmd.add_argument("--verify-database", action="store_true", help="key, integrity and schema check")
    cmd.add_argument("--schema-info", action="store_true",
                     help="schema version, newest supported, pending migrations, backward compatibility")
    cmd.add_argument("--backup", metavar="DEST", help="consistent encrypted copy of the database")
    cmd.add_argument("--verify-backup", metavar="FILE", help="check a .db or .db.gz backup")
    cmd.add_argument("--restore", metavar="SRC", help="restore the database from a .db or .db.gz backup")
    cmd.add_argument("--ensure-user", metavar="NAME", help="create a user if missing")
    cmd.add_argument("--create-api-key", action="store_true", help="create an API key for --user")
    cmd.add_argument("--disable-user", metavar="NAME", help="disable a user: ends their sessions, refuses their keys")
    cmd.add_argument("--enable-user", metavar="NAME", help="enable a disabled user again")
    cmd.add_argument("--revoke-sessions", metavar="NAME", help="end every JWT of a user and delete all their API keys")
    cmd.add_argument("--reset-password", metavar="NAME", help="set a user's password from --password-file; ends their sessions")
    cmd.add_argument("--metrics", action="store_true", help="run the Prometheus metrics exporter")
    cmd.add_argument("--version", action="store_true", help="print the version")
    p.add_argument("--role", choices=("admin", "operator", "viewer"), help="role for --ensure-user")
    p.add_argument("--password-file", metavar="FILE",
                   help="password for --ensure-user and --reset-password: a file, or - for stdin")
    p.add_argument("--user", metavar="NAME", help="owner of the key for --create-api-key")
    p.add_argument("--key-name", metavar="LABEL", default="cli", help="label of the key for --create-api-key")
    return p


def _settings(args: argparse.Namespace, scope: str) -> Settings:
    try:
        settings = load_settings(args.config, args.env_file)
    except ConfigError as exc:
        raise CommandError("\n".join(exc.problems), EXIT_CONFIG) from exc
    problems = validate(settings, scope)
    if problems:
        raise CommandError("\n".join(problems), EXIT_CONFIG)
    return settings


def _read_password(source: Optional[str]) -> str:
    if not source:
        raise CommandError("--password-file FILE (or - for stdin) is required", EXIT_CONFIG)
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise CommandError(f"cannot read password: {exc}") from exc
    return text.rstrip("\r\n")


def cmd_check_config(args: argparse.Namespace) -> Dict[str, Any]:
    settings = _settings(args, "all")
    return {
        "changed": False,
        "message": "configuration valid",
        "database_path": settings.database_path,
        "server": f"{settings.server_host}:{settings.server_port}",
        "socket": settings.server_socket or None,
        "metrics": f"{settings.metrics_host}:{settings.metrics_port}" if settings.enable_metrics else None,
        "audit_log": settings.audit_log_path if settings.enable_audit_logging else None,
    }


def cmd_ensure_user(args: argparse.Namespace) -> Dict[str, Any]:
    from .security import Passwords
    from .store import Store

    name = args.ensure_user
    if not USERNAME_RE.fullmatch(name):
        raise CommandError("user name must be 1-64 characters of letters, digits, '.', '_' or '-'", EXIT_CONFIG)
    if not args.role:
        raise CommandError("--role admin|operator|viewer is required", EXIT_CONFIG)
    settings = _settings(args, "users")
    store = Store(settings.database_path, settings.database_encryption_key)
    try:
        existing = store.user_by_name(name)
        if existing:
            return {"changed": False, "message": f"user {name} exists", "user": name, "role": existing["role"]}
        password = _read_password(args.password_file)
        if len(password) < settings.min_password_length:
            raise CommandError(f"password must be at least {settings.min_password_length} characters")
        user_id = store.create_user(name, args.role, Passwords(settings).hash(password))
        return {"changed": True, "message": f"created user {name}", "user": name, "role": args.role, "id": user_id}
    finally:
        store.close()


def cmd_create_api_key(args: argparse.Namespace) -> Dict[str, Any]:
    from .logs import AuditLog
    from .security import ApiKeys
    from .store import Store

    if not args.user:
        raise CommandError("--user NAME is required", EXIT_CONFIG)
    if not re.fullmatch(r"[A-Za-z0-9 _.-]{1,64}", args.key_name):
        raise CommandError("--key-name must be 1-64 characters of letters, digits, space, '.', '_' or '-'", EXIT_CONFIG)
    settings = _settings(args, "users")
    keys = ApiKeys(settings)
    store = Store(settings.database_path, settings.database_encryption_key)
    try:
        user = store.user_by_name(args.user)
        if not user:
            raise CommandError(f"user {args.user} does not exist")
        key = keys.new()
        meta = store.create_api_key(user["id"], args.key_name, keys.digest(key), key[:12], via="cli")
        audit = AuditLog(settings, sink=store.insert_audit)
        try:
            audit.event("AccountChange", "127.0.0.1", None, action="api-key-create", target=user["pseudonym"],
                        key_id=meta["id"], via="cli")
        finally:
            audit.close()
        return {"changed": True, "message": f"created API key for {args.user}", "api_key": key, **meta}
    finally:
        store.close()


def _account_change(args: argparse.Namespace, name: str, action: str) -> Dict[str, Any]:
    """--disable-user, --enable-user, --revoke-sessions, --reset-password: the same changes as the
    admin API, audited (AccountChange via=cli). A running service sees them at its next request
    and closes open WebSockets within its re-check interval."""
    from .logs import AuditLog
    from .security import Passwords
    from .store import Store

    if not USERNAME_RE.fullmatch(name):
        raise CommandError("user name must be 1-64 characters of letters, digits, '.', '_' or '-'", EXIT_CONFIG)
    settings = _settings(args, "users")
    password = None
    if action == "password-reset":
        password = _read_password(args.password_file)
        if len(password) < settings.min_password_length:
            raise CommandError(f"password must be at least {settings.min_password_length} characters")
    store = Store(settings.database_path, settings.database_encryption_key)
    audit = AuditLog(settings, sink=store.insert_audit)
    try:
        user = store.user_by_name(name)
        if not user:
            raise CommandError(f"user {name} does not exist")
        result: Dict[str, Any] = {"user": name}
        if action in ("disable", "enable"):
            if bool(user["disabled"]) == (action == "disable"):
                return {"changed": False, "message": f"user {name} is already {action}d", **result}
            if action == "disable" and user["role"] == "admin" and store.count_admins() <= 1:
                raise CommandError(f"{name} is the last enabled admin: enable or create another admin first")
            store.set_disabled(user["id"], action == "disable")
        elif action == "revoke-sessions":
            result["api_keys_revoked"] = store.revoke_sessions(user["id"])
        else:
            assert password is not None
            store.set_password(user["id"], Passwords(settings).hash(password))
        audit.event("AccountChange", "127.0.0.1", None, action=action, target=user["pseudonym"], via="cli",
                    api_keys=result.get("api_keys_revoked"))
        messages = {
            "disable": f"disabled {name}; their sessions ended",
            "enable": f"enabled {name}",
            "revoke-sessions": f"ended every session of {name} and deleted their API keys",
            "password-reset": f"set a new password for {name}; their sessions ended",
        }
        return {"changed": True, "message": messages[action], **result}
    finally:
        audit.close()
        store.close()


def run(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"multiagent-hive {__version__}")
        return 0
    os.umask(0o027)
    try:
        if args.metrics:
            from .metrics import run_exporter

            return run_exporter(_settings(args, "metrics"))
        if args.check_config:
            result = cmd_check_config(args)
        elif args.init_database:
            s = _settings(args, "database")
            result = db.init_database(s.database_path, s.database_encryption_key)
        elif args.migrate:
            s = _settings(args, "database")
            conn = db.connect(s.database_path, s.database_encryption_key)
            try:
                applied = db.migrate(conn)
                version = db.schema_version(conn)
            finally:
                conn.close()
            result = {
                "changed": bool(applied),
                "message": f"applied migrations {applied}" if applied else "schema is current",
                "applied": applied,
                "schema_version": version,
            }
        elif args.schema_info:
            s = _settings(args, "database")
            result = db.schema_info(s.database_path, s.database_encryption_key)
        elif args.verify_database:
            s = _settings(args, "database")
            result = db.verify_database(s.database_path, s.database_encryption_key)
        elif args.backup:
            s = _settings(args, "database")
            result = db.backup(s.database_path, s.database_encryption_key, args.backup)
        elif args.verify_backup:
            s = _settings(args, "database")
            result = db.verify_backup(args.verify_backup, s.database_encryption_key)
        elif args.restore:
            s = _settings(args, "database")
            from .journal import journal_path
            from .store import replay_journal

            journal_file = journal_path(s.database_path)
            result = db.restore(
                s.database_path, s.database_encryption_key, args.restore,
                after=lambda conn: replay_journal(conn, s.database_encryption_key, journal_file),
            )
        elif args.ensure_user:
            result = cmd_ensure_user(args)
        elif args.create_api_key:
            result = cmd_create_api_key(args)
        elif args.disable_user:
            result = _account_change(args, args.disable_user, "disable")
        elif args.enable_user:
            result = _account_change(args, args.enable_user, "enable")
        elif args.revoke_sessions:
            result = _account_change(args, args.revoke_sessions, "revoke-sessions")
        elif args.reset_password:
            result = _account_change(args, args.reset_password, "password-reset")
        else:
            from .server import serve

            return serve(_settings(args, "all"))
    except CommandError as exc:
        print(f"multiagent-hive: {exc}", file=sys.stderr)
        return exc.code
    except db.DatabaseError as exc:
        print(f"multiagent-hive: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(json.dumps(result, sort_keys=True))
    return 0


def main() -> None:
    sys.exit(run())
