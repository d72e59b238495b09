"""The hub service (role hub_app): install, configuration, secrets, database, unit, logs."""
from __future__ import annotations

import json
import re
import time
from typing import Any, Dict

import pytest

from conftest import Client

APP = "/opt/ai-orchestrator/multiagent-hive"
VENV = "/opt/ai-orchestrator/venv"
CURRENT = "/opt/ai-orchestrator/current"
ENV_FILE = "/etc/ai-orchestrator/environment"
CONFIG = "/etc/ai-orchestrator/config.toml"
DB = "/var/lib/ai-orchestrator/hive_persistence.db"
LOG_DIR = "/var/log/ai-orchestrator"
AUDIT_LOG = f"{LOG_DIR}/audit.log"
UNIT = "ai-orchestrator"
SECRETS = ("JWT_SECRET", "DATABASE_ENCRYPTION_KEY", "API_ENCRYPTION_KEY")
SQLITE_PLAINTEXT_HEADER = "53514c69746520666f726d6174203300"  # "SQLite format 3\0"


def as_service(host: Any, command: str) -> Any:
    """Run an app command as the service account, as the guide's `sudo -u ai-orchestrator`."""
    return host.run(f"runuser -u ai-orchestrator -- {command}")


def env_values(host: Any) -> Dict[str, str]:
    with host.sudo():
        text = host.file(ENV_FILE).content_string
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def unit_props(host: Any, *names: str) -> Dict[str, str]:
    out = host.check_output(f"systemctl show {UNIT} " + " ".join(f"-p {n}" for n in names))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_healthy(client: Client, seconds: int = 60) -> None:
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline:
        status = client.get("/api/health").status
        if status == 200:
            return
        time.sleep(1)
    raise AssertionError(f"/api/health answered {status} for {seconds}s")


@pytest.mark.checklist("PRE-APP-4")
def test_app_installed_in_root_owned_venv(host: Any) -> None:
    # releases/<version>-<key>/venv, reached through current; venv and multiagent-hive lead there.
    current = host.file(CURRENT)
    assert current.is_symlink
    release = current.linked_to
    assert re.fullmatch(r"/opt/ai-orchestrator/releases/\d[^/]*-[0-9a-f]{12}", release), release
    venv = host.file(f"{release}/venv")
    assert venv.is_directory
    assert (venv.user, venv.group, venv.mode) == ("root", "ai-orchestrator", 0o750)
    assert host.file(VENV).is_symlink and host.file(VENV).linked_to == f"{release}/venv"
    link = host.file(APP)
    assert link.is_symlink and link.linked_to == f"{release}/venv/bin/multiagent-hive"
    assert re.match(r"multiagent-hive \d", host.check_output(f"{APP} --version"))
    with host.sudo():
        meta = json.loads(host.file(f"{release}/.release.json").content_string)
    assert release.endswith("/" + meta["release"]) and meta["version"] in host.check_output(f"{APP} --version")
    assert "ExecStart={ path=/opt/ai-orchestrator/current/venv/bin/multiagent-hive" in host.check_output(
        f"systemctl show {UNIT} -p ExecStart")
    # The service account runs the code but cannot change it.
    site = host.check_output(f"{VENV}/bin/python -c 'import multiagent_hive, os; print(os.path.dirname(multiagent_hive.__file__))'")
    assert as_service(host, f"test -w {site}").rc != 0
    assert host.run(f"{VENV}/bin/python -m pip check").rc == 0


@pytest.mark.checklist("PRE-APP-2")
def test_configuration_files_secured(host: Any) -> None:
    with host.sudo():
        config = host.file(CONFIG)
        env = host.file(ENV_FILE)
        assert (config.user, config.group, config.mode) == ("ai-orchestrator", "ai-orchestrator", 0o640)
        assert (env.user, env.group, env.mode) == ("ai-orchestrator", "ai-orchestrator", 0o600)
    assert host.file("/etc/ai-orchestrator").mode & 0o007 == 0


@pytest.mark.checklist("PRE-APP-2")
def test_check_config_passes_as_service_account(host: Any) -> None:
    result = as_service(host, f"{APP} --check-config")
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout)["message"] == "configuration valid"


@pytest.mark.checklist("PRE-APP-1")
def test_environment_variables_set(host: Any) -> None:
    values = env_values(host)
    for key in ("DATABASE_PATH", "SERVER_HOST", "SERVER_PORT", "ENABLE_METRICS", "METRICS_PORT",
                "ENABLE_AUDIT_LOGGING", "AUDIT_LOG_PATH", "SECURITY_LOG_LEVEL", "RUST_LOG"):
        assert values.get(key), f"{key} missing from {ENV_FILE}"
    assert values["DATABASE_PATH"] == DB
    assert values["SERVER_HOST"] == "127.0.0.1"  # nginx is the only client
    assert values["ENABLE_AUDIT_LOGGING"] == "true"
    props = unit_props(host, "EnvironmentFiles")
    assert ENV_FILE in props["EnvironmentFiles"]


@pytest.mark.checklist("PRE-APP-3")
def test_secrets_strong_distinct_and_not_leaked(host: Any) -> None:
    values = env_values(host)
    secrets = [values.get(name, "") for name in SECRETS]
    for name, value in zip(SECRETS, secrets):
        assert re.fullmatch(r"[0-9a-f]{64}", value), f"{name} is not 64 hex characters"
    assert len(set(secrets)) == 3
    # Nowhere else: not in config.toml, the unit, the journal or the app's logs.
    with host.sudo():
        elsewhere = host.file(CONFIG).content_string
        elsewhere += host.check_output(f"systemctl cat {UNIT}")
        elsewhere += host.check_output(f"journalctl -u {UNIT} --no-pager -o cat")
        elsewhere += host.run(f"cat {LOG_DIR}/*.log").stdout
    for name, value in zip(SECRETS, secrets):
        assert value not in elsewhere, f"{name} appears outside {ENV_FILE}"


@pytest.mark.checklist("PRE-DB-1")
def test_database_encrypted(host: Any) -> None:
    with host.sudo():
        header = host.check_output(f"od -A n -t x1 -N 16 {DB}").replace(" ", "").replace("\n", "")
    assert len(header) == 32
    assert header != SQLITE_PLAINTEXT_HEADER, "the database is a plaintext SQLite file"


@pytest.mark.checklist("PRE-DB-2")
def test_database_access_controls(host: Any) -> None:
    with host.sudo():
        db = host.file(DB)
        assert db.user == "ai-orchestrator" and db.group == "ai-orchestrator"
        assert db.mode in (0o600, 0o640)
    data = host.file("/var/lib/ai-orchestrator")
    assert (data.user, data.mode) == ("ai-orchestrator", 0o750)


@pytest.mark.checklist("PRE-DBC-1", "PRE-DBC-2")
def test_database_verifies(host: Any) -> None:
    result = as_service(host, f"{APP} --verify-database")
    assert result.rc == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["integrity"] == "ok" and report["encrypted"] is True
    # --migrate on a current schema changes nothing.
    migrate = as_service(host, f"{APP} --migrate")
    assert migrate.rc == 0 and json.loads(migrate.stdout)["changed"] is False


@pytest.mark.checklist("PRE-DBC-3", "PRE-ACC-3")
def test_initial_admin_exists_and_rbac_holds(host: Any, app_client: Client, app_admin_token: str) -> None:
    with host.sudo():
        pw = host.file("/root/.ai-orchestrator-admin-password")
        assert (pw.user, pw.mode) == ("root", 0o600)
    assert app_client.get("/api/admin/users").status == 401
    resp = app_client.get("/api/admin/users", headers={"Authorization": f"Bearer {app_admin_token}"})
    assert resp.status == 200, resp.body
    roles = {u["username"]: u["role"] for u in resp.json()["users"]}
    assert roles.get("admin") == "admin"


@pytest.mark.checklist("PRE-SRV-1")
def test_unit_settings(host: Any) -> None:
    props = unit_props(
        host, "Type", "NotifyAccess", "User", "Group", "WorkingDirectory", "Restart", "RestartUSec",
        "NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome", "ReadWritePaths",
        "ReadOnlyPaths", "MemoryMax", "LimitNPROC", "CapabilityBoundingSet", "MemoryDenyWriteExecute",
        "ExecStartPre", "UMask",
    )
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
    assert (props["User"], props["Group"]) == ("ai-orchestrator", "ai-orchestrator")
    assert props["WorkingDirectory"] == "/opt/ai-orchestrator"
    assert props["Restart"] == "always" and props["RestartUSec"] == "10s"
    assert props["NoNewPrivileges"] == "yes" and props["PrivateTmp"] == "yes"
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "yes"
    assert set(props["ReadWritePaths"].split()) == {"/var/lib/ai-orchestrator", "/var/log/ai-orchestrator"}
    assert "/etc/ai-orchestrator" in props["ReadOnlyPaths"].split()
    assert props["MemoryMax"] == str(4 * 1024 ** 3)
    assert props["LimitNPROC"] == "4096"
    assert props["CapabilityBoundingSet"] == "" and props["MemoryDenyWriteExecute"] == "yes"
    assert "--check-config" in props["ExecStartPre"]
    assert props["UMask"] == "0027"
    # Containers cap the hard nofile limit below 65536: check what the unit asks for.
    assert re.search(r"^LimitNOFILE=65536$", host.check_output(f"systemctl cat {UNIT}"), re.M)


@pytest.mark.checklist("PRE-SRV-1")
def test_unit_exposure_at_most_2(host: Any) -> None:
    out = host.check_output(f"systemd-analyze security {UNIT} --no-pager")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert match, out[-500:]
    assert float(match.group(1)) <= 2.0, out[-2000:]


@pytest.mark.checklist("POST-AUDIT-1")
def test_service_running_healthy_and_auditing(host: Any, app_client: Client) -> None:
    service = host.service(UNIT)
    assert service.is_running and service.is_enabled
    assert app_client.get("/api/health").status == 200
    # Loopback only: nginx is the app's one client.
    assert host.socket("tcp://127.0.0.1:8080").is_listening
    assert not host.socket("tcp://0.0.0.0:8080").is_listening
    # A failed login is audited as UnauthorizedAccess with the client address first.
    marker = f"nosuchuser{int(time.time() * 1000)}"
    resp = app_client.post("/api/auth/login", json_body={"username": marker, "password": "wrong-password"})
    assert resp.status == 401
    with host.sudo():
        audit = host.file(AUDIT_LOG)
        assert audit.user == "ai-orchestrator" and audit.mode & 0o007 == 0
        assert host.run(f"grep -E 'event=UnauthorizedAccess client_id=127.0.0.1 ' {AUDIT_LOG}").rc == 0


@pytest.mark.checklist("PRE-SRV-4")
def test_logrotate_config_valid(host: Any) -> None:
    with host.sudo():
        conf = host.file("/etc/logrotate.d/ai-orchestrator").content_string
        result = host.run("logrotate -d /etc/logrotate.d/ai-orchestrator")
    assert result.rc == 0, result.stderr
    for directive in ("daily", "missingok", "rotate 90", "compress", "delaycompress", "notifempty",
                      "create 640 ai-orchestrator ai-orchestrator", "sharedscripts", "postrotate"):
        assert re.search(rf"^\s*{directive}\s*$", conf, re.M), directive


@pytest.mark.checklist("PRE-SRV-4", "POST-AUDIT-1", "MNT-PERF-D-2")
def test_forced_rotation_reopens_logs(host: Any, app_client: Client, admin_password: str) -> None:
    login = {"username": "admin", "password": admin_password}
    assert app_client.post("/api/auth/login", json_body=login).status == 200  # audit.log not empty
    pid = unit_props(host, "MainPID")["MainPID"]
    with host.sudo():
        result = host.run("logrotate -f /etc/logrotate.d/ai-orchestrator")
        assert result.rc == 0, result.stderr
        assert host.file(f"{AUDIT_LOG}.1").exists
        # The app reopened its files (SIGHUP, not a restart): nothing still points at a rotated one.
        deadline = time.monotonic() + 10
        while True:
            fds = host.run(f"ls -l /proc/{pid}/fd").stdout
            if ".log.1" not in fds or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ".log.1" not in fds, fds
        assert unit_props(host, "MainPID")["MainPID"] == pid
        new = host.file(AUDIT_LOG)
        assert (new.user, new.group, new.mode) == ("ai-orchestrator", "ai-orchestrator", 0o640)
        before = int(host.check_output(f"wc -l < {AUDIT_LOG}"))
    assert app_client.post("/api/auth/login", json_body=login).status == 200
    with host.sudo():
        deadline = time.monotonic() + 10
        while int(host.check_output(f"wc -l < {AUDIT_LOG}")) <= before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "event=AuthenticationSuccess" in host.file(AUDIT_LOG).content_string


@pytest.mark.checklist("MNT-PERF-D-3")
def test_killed_service_is_restarted(host: Any, app_client: Client) -> None:
    pid = unit_props(host, "MainPID")["MainPID"]
    assert pid != "0"
    host.run(f"kill -9 {pid}")
    deadline = time.monotonic() + 45  # RestartSec=10 plus the start itself
    new_pid = pid
    while time.monotonic() < deadline:
        props = unit_props(host, "MainPID", "ActiveState")
        new_pid = props["MainPID"]
        if props["ActiveState"] == "active" and new_pid not in ("0", pid):
            break
        time.sleep(1)
    assert new_pid not in ("0", pid), "systemd did not restart the killed service"
    wait_healthy(app_client)
