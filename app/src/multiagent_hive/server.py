"""Serve the API with uvicorn: sd_notify READY=1 once listening, SIGHUP reopens logs,
SIGTERM shuts down gracefully."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
from typing import Any, List, Optional

import uvicorn

from .config import Settings
from .db import SCHEMA_VERSION, DatabaseError, schema_version
from .logs import setup_logging
from .sdnotify import notify

LOG = logging.getLogger("multiagent_hive.server")
SOCKET_MODE = 0o660


class NotifyingServer(uvicorn.Server):
    """uvicorn binds its sockets in startup(): READY=1 is sent only after that succeeded."""

    def __init__(self, config: uvicorn.Config, on_hup: Any, socket_path: str = "") -> None:
        super().__init__(config)
        self.on_hup = on_hup
        self.socket_path = socket_path

    async def startup(self, sockets: Optional[List[Any]] = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            import asyncio

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_hup)
            where = f"{self.config.host}:{self.config.port}" + (f" and {self.socket_path}" if self.socket_path else "")
            notify(f"READY=1\nSTATUS=listening on {where}")
            LOG.warning("multiagent-hive listening on %s", where)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # uvicorn re-raises a captured SIGTERM after shutting down, so the process would die
        # by the signal; a graceful stop is a clean exit 0 here.
        if sig == signal.SIGTERM:
            self.should_exit = True
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Optional[List[Any]] = None) -> None:
        notify("STOPPING=1")
        await super().shutdown(sockets=sockets)


def serve(settings: Settings) -> int:
    from .api import create_app
    from .store import Store

    setup_logging(settings)
    try:
        store = Store(settings.database_path, settings.database_encryption_key)
    except DatabaseError as exc:
        LOG.error("%s", exc)
        return 1
    version = schema_version(store.conn)
    if version != SCHEMA_VERSION:
        LOG.error("database schema version %s is not current (%s): run --migrate", version, SCHEMA_VERSION)
        return 1
    metrics = None
    if settings.enable_metrics:
        from .metrics import RequestMetrics, prepare_dir

        prepare_dir(settings.metrics_dir)
        metrics = RequestMetrics(settings.metrics_dir)
    app = create_app(settings, store, metrics)
    config = uvicorn.Config(
        app,
        host=settings.server_host,
        port=settings.server_port,
        loop="auto",
        http="auto",
        ws="auto",
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the app reads X-Forwarded-For itself (api.HiveApp._client)
        log_config=None,
        timeout_graceful_shutdown=10,
        ws_max_size=settings.max_body_bytes,
    )
    server = NotifyingServer(config, app.reopen_logs, settings.server_socket)
    sockets: Optional[List[socket.socket]] = None
    socket_bound = False
    try:
        if settings.server_socket:
            sockets = []
            try:
                # TCP first: a second instance fails on the port before it replaces the socket
                # of the one that runs.
                sockets.append(bind_tcp(settings.server_host, settings.server_port))
                sockets.append(bind_unix(settings.server_socket))
                socket_bound = True
            except OSError as exc:
                LOG.error("cannot listen: %s", exc)
                return 1
        server.run(sockets=sockets)
    finally:
        for sock in sockets or []:
            sock.close()
        if socket_bound:
            with contextlib.suppress(OSError):
                os.unlink(settings.server_socket)
        app.audit.close()
        store.close()
    return 0 if server.started else 1


def bind_tcp(host: str, port: int) -> socket.socket:
    """What uvicorn binds for host and port, when it is handed its sockets instead."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"{host}:{port}: {exc.strerror or exc}") from exc
    return sock


def bind_unix(path: str) -> socket.socket:
    """The proxy's socket, mode 0660: who may connect is decided by the socket's group and its
    directory (the service unit makes it the proxy's group, set-group-ID, so the socket inherits
    it). A socket left behind by a killed process is replaced; any other file is not."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)
    except OSError as exc:
        sock.close()
        raise OSError(f"{path}: {exc.strerror or exc}") from exc
    return sock
