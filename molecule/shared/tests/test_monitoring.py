"""Monitoring: node exporter, the app's metrics exporter and the log monitor (guide step 7)."""
from __future__ import annotations

import re
import shlex
import uuid
from typing import Any, List

import pytest

from conftest import layout
from helpers import wait_until

EXPORTER_UNIT = "ai-orchestrator-exporter"
MONITOR_UNIT = "ai-orchestrator-log-monitor"


def node_exporter_unit(host: Any) -> str:
    for name in ("prometheus-node-exporter", "node_exporter"):
        if host.service(name).is_enabled:
            return name
    raise AssertionError("no node exporter unit enabled")


def listeners(host: Any, port: int) -> List[str]:
    out = host.check_output("ss -ltnH")
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1] == str(port):
            found.append(fields[3].rsplit(":", 1)[0])
    return found


def metrics(host: Any, port: int) -> str:
    return host.check_output(f"curl -sf --max-time 10 http://127.0.0.1:{port}/metrics")


@pytest.mark.checklist("PRE-SRV-3", "MNT-PERF-D-1", "MNT-PERF-D-4")
def test_node_exporter_answers_on_loopback(host: Any) -> None:
    L = layout(host)
    assert host.service(node_exporter_unit(host)).is_running
    body = metrics(host, L.node_exporter_port)
    assert "node_cpu_seconds_total" in body
    assert "node_memory_MemAvailable_bytes" in body


@pytest.mark.checklist("PRE-SRV-3", "MNT-PERF-W-3")
@pytest.mark.parametrize("port_name", ["node_exporter_port", "metrics_port"])
def test_exporters_listen_on_loopback_only(host: Any, port_name: str) -> None:
    port = getattr(layout(host), port_name)
    addresses = listeners(host, port)
    assert addresses, f"nothing listens on {port}"
    assert set(addresses) <= {"127.0.0.1", "[::1]"}, addresses


@pytest.mark.checklist("PRE-SRV-3")
@pytest.mark.parametrize("port_name", ["node_exporter_port", "metrics_port"])
def test_firewall_does_not_open_exporter_ports(host: Any, port_name: str) -> None:
    port = getattr(layout(host), port_name)
    with host.sudo():
        if host.exists("ufw"):
            rules = host.check_output("ufw status")
            assert "Status: active" in rules
        elif host.exists("firewall-cmd"):
            rules = host.check_output("firewall-cmd --list-all")
        else:
            pytest.skip("neither ufw nor firewalld on this host")
    assert not re.search(rf"\b{port}\b", rules), rules


@pytest.mark.checklist("MNT-PERF-W-3")
def test_exporter_unit_hardened_and_verified(host: Any) -> None:
    L = layout(host)
    service = host.service(EXPORTER_UNIT)
    assert service.is_running and service.is_enabled
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {EXPORTER_UNIT} -p User -p Restart -p NoNewPrivileges -p ProtectSystem "
            "-p ExecStart -p After -p EnvironmentFiles"
        ).splitlines()
    )
    assert props["User"] == L.user
    assert props["Restart"] == "always"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert "--metrics" in props["ExecStart"]
    assert f"{L.service}.service" in props["After"]
    assert L.env_file in props["EnvironmentFiles"]
    with host.sudo():
        result = host.run(f"systemd-analyze verify /etc/systemd/system/{EXPORTER_UNIT}.service")
    assert result.rc == 0, result.stderr


@pytest.mark.checklist("MNT-PERF-W-3", "MNT-PERF-D-3")
def test_exporter_serves_app_metrics_after_a_request(host: Any, edge_client: Any) -> None:
    L = layout(host)
    assert edge_client.get("/api/health").status == 200
    body = metrics(host, L.metrics_port)
    assert re.search(r'^hive_http_requests_total\{.*status="200".*\} [1-9]', body, re.M), "no request counter"
    assert re.search(r"^hive_agents\{state=", body, re.M), "no agents gauge"
    assert re.search(r"^hive_tasks\{state=", body, re.M), "no tasks gauge"
    assert re.search(r"^hive_database_up 1", body, re.M)


# --- log monitor ------------------------------------------------------------------------------

def tail_follows(host: Any, parent: str, path: str) -> bool:
    """The monitor's `tail -F` (a child of `parent`) holds the file now at `path` open (the same
    inode: after a rotation, the new file). Until then a line written there is never seen."""
    with host.sudo():
        script = (f"for t in $(pgrep -P {shlex.quote(parent)} -x tail); do for f in /proc/$t/fd/*; do "
                  f"stat -L -c %i \"$f\" 2>/dev/null; done; done | grep -qx \"$(stat -c %i {shlex.quote(path)})\"")
        return bool(host.run(script).rc == 0)


def restart_monitor(host: Any) -> None:
    """A fresh minute for the rate limit, then wait until tail follows the audit log."""
    with host.sudo():
        host.check_output(f"systemctl restart {MONITOR_UNIT}")
    audit_log = layout(host).audit_log

    def following() -> bool:
        with host.sudo():
            pid = host.check_output(f"systemctl show -p MainPID --value {MONITOR_UNIT}").strip()
        return pid != "0" and tail_follows(host, pid, audit_log)

    wait_until(following, f"the restarted log monitor follows {audit_log}", 15)


def wait_for_alert(host: Any, marker: str, seconds: int = 10) -> str:
    alerts = f"{layout(host).log_dir}/alerts.log"

    def found() -> str:
        with host.sudo():
            return str(host.run(f"grep -F {shlex.quote(marker)} {alerts}").stdout)

    return wait_until(found, f"an alert for {marker} in {alerts}", seconds)


def unauthorized_request(edge_client: Any) -> str:
    """A request the real app answers 401 and logs as UnauthorizedAccess (an invalid token: a
    request without any credential is AuthenticationRequired), with a marker in the path."""
    marker = "mon" + uuid.uuid4().hex[:12]
    assert edge_client.get(f"/api/agents/{marker}", headers={"Authorization": "Bearer forged.token.value"}).status == 401
    return marker


@pytest.mark.checklist("MNT-SEC-W-3", "PRE-ISO-4")
def test_log_monitor_is_supervised_and_unprivileged(host: Any) -> None:
    service = host.service(MONITOR_UNIT)
    assert service.is_running and service.is_enabled
    assert host.check_output(f"systemctl show -p Restart --value {MONITOR_UNIT}").strip() == "always"
    assert host.check_output(f"systemctl show -p User --value {MONITOR_UNIT}").strip() not in ("", "root")


@pytest.mark.checklist("MNT-SEC-W-3", "PRE-ISO-4")
def test_log_monitor_alerts_and_follows_rotation(host: Any, edge_client: Any) -> None:
    L = layout(host)
    restart_monitor(host)
    marker = unauthorized_request(edge_client)
    line = wait_for_alert(host, marker)
    assert "UnauthorizedAccess" in line and "result=sent" in line, line
    with host.sudo():
        inode = host.check_output(f"stat -c %i {L.audit_log}")
        host.check_output(f"logrotate -f /etc/logrotate.d/{L.service}")
        assert host.check_output(f"stat -c %i {L.audit_log}") != inode, "audit.log was not rotated"
        pid = host.check_output(f"systemctl show -p MainPID --value {MONITOR_UNIT}").strip()
    # tail -F finds the new file on its next check of the name (about once a second).
    wait_until(lambda: tail_follows(host, pid, L.audit_log), "the log monitor follows the new audit.log", 15)
    marker = unauthorized_request(edge_client)
    assert "UnauthorizedAccess" in wait_for_alert(host, marker, 15)


@pytest.mark.checklist("MNT-SEC-W-3")
def test_log_monitor_rate_limits_a_flood(host: Any) -> None:
    """The installed monitor on a scratch file: 20 distinct lines, at most 3 alerts a minute."""
    tmp = host.check_output("mktemp -d").strip()
    pid = ""
    try:
        host.check_output(f"touch {tmp}/log")
        pid = host.check_output(
            f"setsid /usr/local/bin/monitor-ai-orchestrator-logs --command 'cat >> {tmp}/sent' "
            f"--alerts-log {tmp}/alerts --max-per-minute 3 --pattern UnauthorizedAccess {tmp}/log "
            f">/dev/null 2>&1 < /dev/null & echo $!"
        ).strip()
        wait_until(lambda: tail_follows(host, pid, f"{tmp}/log"), "the scratch monitor follows its log", 15)
        host.check_output(
            f"for i in $(seq 1 20); do echo \"2026-01-01T00:00:00.000Z event=UnauthorizedAccess "
            f"client_id=192.0.2.$i\" >> {tmp}/log; done"
        )
        wait_until(lambda: host.run(f"cat {tmp}/alerts").stdout.splitlines(), "3 alerts of the flood",
                            15, done=lambda lines: len(lines) >= 3)
        # Every line read by tail (its offset at the end of the file) before the count is final.
        wait_until(lambda: host.run(
            f"t=$(pgrep -P {pid} -x tail) && for f in /proc/$t/fd/*; do [ \"$(readlink $f)\" = {tmp}/log ] && "
            f"awk '/^pos:/ {{print $2}}' /proc/$t/fdinfo/${{f##*/}}; done").stdout.strip(),
            "tail reads the whole flood", 15, done=lambda pos: pos == host.check_output(f"stat -c %s {tmp}/log").strip())
        alerts = host.check_output(f"cat {tmp}/alerts").splitlines()
        sent = host.check_output(f"cat {tmp}/sent").splitlines()
        assert len(alerts) == 3, alerts
        assert len(sent) == 3, sent
        assert "client_id=192.0.2.1" in alerts[0]
    finally:
        if pid:
            host.run(f"kill {pid} 2>/dev/null")
        host.run(f"rm -rf {tmp}")
