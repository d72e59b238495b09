"""The hub service (role hub_app): install, configuration, secrets, database, unit, logs."""
from __future__ import annotations

import json
import re
import time
from typing import Any, Dict

import pytest

from conftest import Client, layout
from helpers import wait_healthy, wait_until

SECRETS = ("JWT_SECRET", "DATABASE_ENCRYPTION_KEY", "API_ENCRYPTION_KEY")
SQLITE_PLAINTEXT_HEADER = "53514c69746520666f726d6174203300"  # "SQLite format 3\0"


def as_service(host: Any, command: str) -> Any:
    """Run an app command as the service account, as the guide's `sudo -u ai-orchestrator`."""
    return host.run(f"runuser -u {layout(host).user} -- {command}")


def env_values(host: Any) -> Dict[str, str]:
    L = layout(host)
    with host.sudo():
        text = host.file(L.env_file).content_string
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def unit_props(host: Any, *names: str) -> Dict[str, str]:
    L = layout(host)
    out = host.check_output(f"systemctl show {L.service} " + " ".join(f"-p {n}" for n in names))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.checklist("PRE-APP-4")
def test_app_installed_in_root_owned_venv(host: Any) -> None:
    L = layout(host)
    # releases/<version>-<key>/venv, reached through current; venv and multiagent-hive lead there.
    current = host.file(L.current)
    assert current.is_symlink
    release = current.linked_to
    assert re.fullmatch(re.escape(L.install_dir) + r"/releases/\d[^/]*-[0-9a-f]{12}", release), release
    venv = host.file(f"{release}/venv")
    assert venv.is_directory
    assert (venv.user, venv.group, venv.mode) == ("root", L.group, 0o750)
    assert host.file(L.venv).is_symlink and host.file(L.venv).linked_to == f"{release}/venv"
    link = host.file(L.app)
    assert link.is_symlink and link.linked_to == f"{release}/venv/bin/multiagent-hive"
    assert re.match(r"multiagent-hive \d", host.check_output(f"{L.app} --version"))
    with host.sudo():
        meta = json.loads(host.file(f"{release}/.release.json").content_string)
    assert release.endswith("/" + meta["release"]) and meta["version"] in host.check_output(f"{L.app} --version")
    assert f"ExecStart={{ path={L.current}/venv/bin/multiagent-hive" in host.check_output(
        f"systemctl show {L.service} -p ExecStart")
    # The service account runs the code but cannot change it.
    site = host.check_output(f"{L.venv}/bin/python -c 'import multiagent_hive, os; print(os.path.dirname(multiagent_hive.__file__))'")
    assert as_service(host, f"test -w {site}").rc != 0
    assert host.run(f"{L.venv}/bin/python -m pip check").rc == 0


@pytest.mark.checklist("PRE-APP-2")
def test_configuration_files_secured(host: Any) -> None:
    L = layout(host)
    with host.sudo():
        config = host.file(L.config_file)
        env = host.file(L.env_file)
        assert (config.user, config.group, config.mode) == (L.user, L.group, 0o640)
        assert (env.user, env.group, env.mode) == (L.user, L.group, 0o600)
    assert host.file(L.config_dir).mode & 0o007 == 0


@pytest.mark.checklist("PRE-APP-2")
def test_check_config_passes_as_service_account(host: Any) -> None:
    L = layout(host)
    result = as_service(host, f"{L.cli} --check-config")
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout)["message"] == "configuration valid"


@pytest.mark.checklist("PRE-APP-1")
def test_environment_variables_set(host: Any) -> None:
    L = layout(host)
    values = env_values(host)
    for key in ("DATABASE_PATH", "SERVER_HOST", "SERVER_PORT", "ENABLE_METRICS", "METRICS_PORT",
                "ENABLE_AUDIT_LOGGING", "AUDIT_LOG_PATH", "SECURITY_LOG_LEVEL", "RUST_LOG"):
        assert values.get(key), f"{key} missing from {L.env_file}"
    assert values["DATABASE_PATH"] == L.database
    assert values["SERVER_HOST"] == "127.0.0.1"  # nginx is the only client
    assert values["ENABLE_AUDIT_LOGGING"] == "true"
    props = unit_props(host, "EnvironmentFiles")
    assert L.env_file in props["EnvironmentFiles"]


@pytest.mark.checklist("PRE-APP-3")
def test_secrets_strong_distinct_and_not_leaked(host: Any) -> None:
    L = layout(host)
    values = env_values(host)
    secrets = [values.get(name, "") for name in SECRETS]
    for name, value in zip(SECRETS, secrets):
        assert re.fullmatch(r"[0-9a-f]{64}", value), f"{name} is not 64 hex characters"
    assert len(set(secrets)) == 3
    # Nowhere else: not in config.toml, the unit, the journal or the app's logs.
    with host.sudo():
        elsewhere = host.file(L.config_file).content_string
        elsewhere += host.check_output(f"systemctl cat {L.service}")
        elsewhere += host.check_output(f"journalctl -u {L.service} --no-pager -o cat")
        elsewhere += host.run(f"cat {L.log_dir}/*.log").stdout
    for name, value in zip(SECRETS, secrets):
        assert value not in elsewhere, f"{name} appears outside {L.env_file}"


@pytest.mark.checklist("PRE-DB-1")
def test_database_encrypted(host: Any) -> None:
    L = layout(host)
    with host.sudo():
        header = host.check_output(f"od -A n -t x1 -N 16 {L.database}").replace(" ", "").replace("\n", "")
    assert len(header) == 32
    assert header != SQLITE_PLAINTEXT_HEADER, "the database is a plaintext SQLite file"


@pytest.mark.checklist("PRE-DB-2")
def test_database_access_controls(host: Any) -> None:
    L = layout(host)
    with host.sudo():
        db = host.file(L.database)
        assert db.user == L.user and db.group == L.group
        assert db.mode in (0o600, 0o640)
    data = host.file(L.data_dir)
    assert (data.user, data.mode) == (L.user, 0o750)


@pytest.mark.checklist("PRE-DBC-1", "PRE-DBC-2")
def test_database_verifies(host: Any) -> None:
    L = layout(host)
    result = as_service(host, f"{L.cli} --verify-database")
    assert result.rc == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["integrity"] == "ok" and report["encrypted"] is True
    # --migrate on a current schema changes nothing.
    migrate = as_service(host, f"{L.cli} --migrate")
    assert migrate.rc == 0 and json.loads(migrate.stdout)["changed"] is False


@pytest.mark.checklist("PRE-DBC-3", "PRE-ACC-3")
def test_initial_admin_exists_and_rbac_holds(host: Any, app_client: Client, app_admin_token: str) -> None:
    with host.sudo():
        pw = host.file(layout(host).admin_password_file)
        assert (pw.user, pw.mode) == ("root", 0o600)
    assert app_client.get("/api/admin/users").status == 401
    resp = app_client.get("/api/admin/users", headers={"Authorization": f"Bearer {app_admin_token}"})
    assert resp.status == 200, resp.body
    roles = {u["username"]: u["role"] for u in resp.json()["users"]}
    assert roles.get("admin") == "admin"


@pytest.mark.checklist("PRE-SRV-1")
def test_unit_settings(host: Any) -> None:
    L = layout(host)
    props = unit_props(
        host, "Type", "NotifyAccess", "User", "Group", "WorkingDirectory", "Restart", "RestartUSec",
        "NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome", "ReadWritePaths",
        "ReadOnlyPaths", "MemoryMax", "LimitNPROC", "CapabilityBoundingSet", "MemoryDenyWriteExecute",
        "ExecStartPre", "UMask",
    )
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
    assert (props["User"], props["Group"]) == (L.user, L.group)
    assert props["WorkingDirectory"] == L.install_dir
    assert props["Restart"] == "always" and props["RestartUSec"] == "10s"
    assert props["NoNewPrivileges"] == "yes" and props["PrivateTmp"] == "yes"
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "yes"
    # and the directory of nginx's socket ("-": a missing one is the app's own clear error)
    assert set(props["ReadWritePaths"].split()) == {L.data_dir, L.log_dir, "-" + L.http_socket.rsplit("/", 1)[0]}
    assert L.config_dir in props["ReadOnlyPaths"].split()
    assert props["MemoryMax"] == str(4 * 1024 ** 3)
    assert props["LimitNPROC"] == "4096"
    assert props["CapabilityBoundingSet"] == "" and props["MemoryDenyWriteExecute"] == "yes"
    assert "--check-config" in props["ExecStartPre"]
    assert props["UMask"] == "0027"
    # Containers cap the hard nofile limit below 65536: check what the unit asks for.
    assert re.search(r"^LimitNOFILE=65536$", host.check_output(f"systemctl cat {L.service}"), re.M)


@pytest.mark.checklist("PRE-SRV-1")
def test_unit_exposure_at_most_2(host: Any) -> None:
    L = layout(host)
    out = host.check_output(f"systemd-analyze security {L.service} --no-pager")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert match, out[-500:]
    assert float(match.group(1)) <= 2.0, out[-2000:]


@pytest.mark.checklist("POST-AUDIT-1")
def test_service_running_healthy_and_auditing(host: Any, app_client: Client) -> None:
    L = layout(host)
    service = host.service(L.service)
    assert service.is_running and service.is_enabled
    assert app_client.get("/api/health").status == 200
    # Loopback only: nginx is the app's one client.
    assert host.socket(f"tcp://127.0.0.1:{L.http_port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{L.http_port}").is_listening
    # A failed login is audited as UnauthorizedAccess with the client address first.
    marker = f"nosuchuser{int(time.time() * 1000)}"
    resp = app_client.post("/api/auth/login", json_body={"username": marker, "password": "wrong-password"})
    assert resp.status == 401
    with host.sudo():
        audit = host.file(L.audit_log)
        assert audit.user == L.user and audit.mode & 0o007 == 0
        assert host.run(f"grep -E 'event=UnauthorizedAccess client_id=127.0.0.1 ' {L.audit_log}").rc == 0


@pytest.mark.checklist("PRE-SRV-4")
def test_logrotate_config_valid(host: Any) -> None:
    L = layout(host)
    with host.sudo():
        conf = host.file(f"/etc/logrotate.d/{L.service}").content_string
        result = host.run(f"logrotate -d /etc/logrotate.d/{L.service}")
    assert result.rc == 0, result.stderr
    for directive in ("daily", "missingok", "rotate 90", "compress", "delaycompress", "notifempty",
                      f"create 640 {L.user} {L.group}", "sharedscripts", "postrotate"):
        assert re.search(rf"^\s*{directive}\s*$", conf, re.M), directive


@pytest.mark.checklist("PRE-SRV-4", "POST-AUDIT-1", "MNT-PERF-D-2")
def test_forced_rotation_reopens_logs(host: Any, app_client: Client, admin_password: str) -> None:
    L = layout(host)
    login = {"username": "admin", "password": admin_password}
    assert app_client.post("/api/auth/login", json_body=login).status == 200  # audit.log not empty
    pid = unit_props(host, "MainPID")["MainPID"]
    with host.sudo():
        result = host.run(f"logrotate -f /etc/logrotate.d/{L.service}")
        assert result.rc == 0, result.stderr
        assert host.file(f"{L.audit_log}.1").exists
        # The app reopened its files (SIGHUP, not a restart): nothing still points at a rotated one.
        wait_until(lambda: host.run(f"ls -l /proc/{pid}/fd").stdout, "the app reopens its logs after the rotation",
                   10, done=lambda fds: ".log.1" not in fds)
        assert unit_props(host, "MainPID")["MainPID"] == pid
        new = host.file(L.audit_log)
        assert (new.user, new.group, new.mode) == (L.user, L.group, 0o640)
    assert app_client.post("/api/auth/login", json_body=login).status == 200

    def audit_log() -> str:
        with host.sudo():
            return str(host.file(L.audit_log).content_string)

    wait_until(audit_log, "the login after the rotation is in the new audit.log", 10,
               done=lambda text: "event=AuthenticationSuccess" in text)


@pytest.mark.checklist("MNT-PERF-D-3")
def test_killed_service_is_restarted(host: Any, app_client: Client) -> None:
    pid = unit_props(host, "MainPID")["MainPID"]
    assert pid != "0"
    host.run(f"kill -9 {pid}")
    wait_until(lambda: unit_props(host, "MainPID", "ActiveState"), "systemd restarts the killed service",
               45, interval=1.0,  # RestartSec=10 plus the start itself
               done=lambda props: props["ActiveState"] == "active" and props["MainPID"] not in ("0", pid))
    wait_healthy(app_client)
