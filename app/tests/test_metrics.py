"""The serving process's buffered request metrics, as the exporter reads them."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# In a child process: RequestMetrics binds prometheus_client's value class process-wide.
SCRIPT = textwrap.dedent(
    """
    import sys
    from multiagent_hive.metrics import RequestMetrics, ServiceCollector

    metrics = RequestMetrics(sys.argv[1])
    for seconds in (0.0001, 0.003, 0.003, 0.2, 7.0):
        metrics.observe("GET", "/api/health", 200, seconds)
    metrics.observe("POST", "/api/agents", 201, 0.02)
    assert not list(ServiceCollector(sys.argv[1]).collect()), "nothing is written before a flush"
    metrics.flush()
    metrics.flush()  # a second flush adds nothing
    for family in ServiceCollector(sys.argv[1]).collect():
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            print(f"{sample.name}|{labels}|{sample.value:.4f}")
    """
)


def test_metrics_flush_sums_like_single_observations(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    samples = dict(line.rsplit("|", 1) for line in out.splitlines())

    def value(name: str, labels: str) -> float:
        return float(samples[f"{name}|{labels}"])

    health = "method=GET,route=/api/health"
    assert value("hive_http_requests_total", health + ",status=200") == 5
    assert value("hive_http_request_duration_seconds_count", health) == 5
    assert abs(value("hive_http_request_duration_seconds_sum", health) - 7.2061) < 1e-3
    cumulative = {"0.0005": 1, "0.0025": 1, "0.005": 3, "0.25": 4, "5.0": 4, "+Inf": 5}
    for bound, count in cumulative.items():
        assert value("hive_http_request_duration_seconds_bucket", f"le={bound},{health}") == count, bound
    assert value("hive_http_requests_total", "method=POST,route=/api/agents,status=201") == 1
