"""Serve the API with uvicorn: sd_notify READY=1 once listening, SIGHUP reopens logs,
SIGTERM shuts down gracefully."""
from __future__ import annotations

import logging
import signal
from typing import Any, List, Optional

import uvicorn

from .config import Settings
from .db import SCHEMA_VERSION, DatabaseError, schema_version
from .logs import setup_logging
from .sdnotify import notify

LOG = logging.getLogger("multiagent_hive.server")


class NotifyingServer(uvicorn.Server):
    """uvicorn binds its sockets in startup(): READY=1 is sent only after that succeeded."""

    def __init__(self, config: uvicorn.Config, on_hup: Any) -> None:
        super().__init__(config)
        self.on_hup = on_hup

    async def startup(self, sockets: Optional[List[Any]] = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            import asyncio

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_hup)
            notify(f"READY=1\nSTATUS=listening on {self.config.host}:{self.config.port}")
            LOG.warning("multiagent-hive listening on %s:%s", self.config.host, self.config.port)

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
        proxy_headers=False,  # the app itself trusts X-Forwarded-For only from TRUSTED_PROXIES
        log_config=None,
        timeout_graceful_shutdown=10,
        ws_max_size=settings.max_body_bytes,
    )
    server = NotifyingServer(config, app.reopen_logs)
    try:
        server.run()
    finally:
        app.audit.close()
        store.close()
    return 0 if server.started else 1
