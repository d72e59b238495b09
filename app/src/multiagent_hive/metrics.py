"""Prometheus metrics.

The serving process never binds a metrics port: it writes its counters and histograms with
prometheus_client's multiprocess mode into METRICS_DIR. `multiagent-hive --metrics` is the
only process that listens on METRICS_HOST:METRICS_PORT; it aggregates those files and adds
gauges read from the database at scrape time.
"""
from __future__ import annotations

import bisect
import glob
import logging
import os
import re
import signal
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .config import Settings

LOG = logging.getLogger("multiagent_hive.metrics")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def prepare_dir(path: str) -> None:
    """Create METRICS_DIR and remove the files of processes that are gone (prometheus_client's
    multiprocess mode requires this at start, or dead processes' counters would be summed).
    Files of a live process are kept: an instance that fails to start must not wipe them."""
    os.makedirs(path, mode=0o750, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        match = re.search(r"_(\d+)\.db$", stale)
        if match and int(match.group(1)) != os.getpid() and _alive(int(match.group(1))):
            continue
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    """A running multiagent-hive (a reused pid of another program does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"multiagent" in handle.read()
    except OSError:
        return False


class RequestMetrics:
    """The serving process's metrics, written to METRICS_DIR.

    Request observations are summed in memory and written by `flush`, which the app calls
    every FLUSH_SECONDS and at shutdown: a multiprocess update takes a lock, a getpid and an
    mmap write per value (three per request), which cost a tenth of a health request's time.
    Scrapes therefore see request figures at most FLUSH_SECONDS old."""

    FLUSH_SECONDS = 1.0

    def __init__(self, metrics_dir: str) -> None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        from prometheus_client import Counter, Histogram, values

        # Bound here rather than at import, so the directory comes from the settings.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        self.requests = Counter(
            "hive_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=None,
        )
        self.latency = Histogram(
            "hive_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.audit = Counter(
            "hive_audit_events", "Security audit events by type", ["event"], registry=None
        )
        self._pending_requests: Dict[Tuple[str, str, int], int] = {}
        # per (method, route): [sum of seconds, count in bucket 0, ..., count in +Inf]
        self._pending_latency: Dict[Tuple[str, str], List[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1
        sums = self._pending_latency.get((method, route))
        if sums is None:
            sums = self._pending_latency[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        sums[0] += seconds
        sums[1 + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # buckets are "le"

    def flush(self) -> None:
        requests, self._pending_requests = self._pending_requests, {}
        latency, self._pending_latency = self._pending_latency, {}
        for (method, route, status), count in requests.items():
            self.requests.labels(method, route, str(status)).inc(count)
        for (method, route), sums in latency.items():
            # Histogram has no public "add n observations": its value objects take the sums
            # (prometheus_client is pinned in app/constraints.txt; test_metrics_flush checks).
            child = self.latency.labels(method, route)
            child._sum.inc(sums[0])
            for bucket, observed in zip(child._buckets, sums[1:]):
                if observed:
                    bucket.inc(observed)

    def audit_event(self, event: str) -> None:
        self.audit.labels(event).inc()


class DatabaseCollector:
    """Gauges computed at scrape time from the (encrypted) database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Any = None
        self.lock = threading.Lock()

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .hive import AGENT_STATES, TASK_STATES
        from .store import Store

        up = GaugeMetricFamily("hive_database_up", "1 when the exporter can read the database")
        agents = GaugeMetricFamily("hive_agents", "Agents by state", labels=["state"])
        tasks = GaugeMetricFamily("hive_tasks", "Tasks by state", labels=["state"])
        users = GaugeMetricFamily("hive_users", "User accounts")
        size = GaugeMetricFamily("hive_database_size_bytes", "Database file size including WAL")
        with self.lock:
            try:
                if self.store is None:
                    self.store = Store(self.settings.database_path, self.settings.database_encryption_key)
                agent_counts = self.store.counts_by_state("agents")
                task_counts = self.store.counts_by_state("tasks")
                user_count = self.store.one("SELECT count(*) AS n FROM users")["n"]
                size.add_metric([], self.store.size_bytes())
            except Exception as exc:  # noqa: BLE001 - a missing or locked db is a scrape result, not a crash
                LOG.warning("database not readable: %s", exc)
                if self.store is not None:
                    try:
                        self.store.close()
                    except Exception:  # noqa: BLE001 - dropping a broken handle; the scrape reports down either way
                        pass
                    self.store = None
                up.add_metric([], 0)
                yield up
                return
        up.add_metric([], 1)
        for state in AGENT_STATES:
            agents.add_metric([state], agent_counts.get(state, 0))
        for state in TASK_STATES:
            tasks.add_metric([state], task_counts.get(state, 0))
        users.add_metric([], user_count)
        yield from (up, agents, tasks, users, size)


class ServiceCollector:
    """The serving process's multiprocess files; nothing while the service has not started."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterable[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        if not os.path.isdir(self.path):
            return iter(())
        files = glob.glob(os.path.join(self.path, "*.db"))
        merged: Iterable[Any] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        return merged


def build_registry(settings: Settings) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(settings.metrics_dir))  # type: ignore[arg-type]
    registry.register(DatabaseCollector(settings))  # type: ignore[arg-type]
    return registry


def run_exporter(settings: Settings, ready: Optional[threading.Event] = None) -> int:
    from prometheus_client import start_http_server

    from .logs import setup_logging
    from .sdnotify import notify

    setup_logging(settings, to_file=False)
    if not settings.enable_metrics:
        LOG.error("ENABLE_METRICS is false: the exporter has nothing to serve")
        return 2
    registry = build_registry(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_host, registry)
    except OSError as exc:
        LOG.error("cannot listen on %s:%s: %s", settings.metrics_host, settings.metrics_port, exc)
        return 1
    LOG.warning("metrics exporter listening on %s:%s", settings.metrics_host, settings.metrics_port)
    notify("READY=1\nSTATUS=serving /metrics")
    if ready is not None:
        ready.set()
    stop.wait()
    notify("STOPPING=1")
    server.shutdown()
    server.server_close()
    return 0
