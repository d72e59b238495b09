"""Database backups (role hub_backup) and the recovery round trip."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, List

import pytest

from conftest import Client, forget_admin_tokens, layout
from helpers import wait_healthy

SCRIPT = "/usr/local/bin/backup-ai-orchestrator"
CRON_FILE = "/etc/cron.d/ai-orchestrator-backup"


def as_service(host: Any, command: str) -> Any:
    return host.run(f"runuser -u {layout(host).user} -- {command}")


def backups(host: Any) -> List[str]:
    L = layout(host)
    out = host.run(f"ls -1 {L.backup_dir}").stdout.split()
    return sorted(name for name in out if name.startswith("hive_backup_") and name.endswith(".db.gz"))


def run_backup(host: Any, env: str = "") -> Any:
    # Backups are named by the second: never two in the same one.
    time.sleep(1.1)
    return host.run(f"{env} {SCRIPT}")


@pytest.mark.checklist("PRE-DB-3")
def test_backup_script_and_schedule(host: Any) -> None:
    L = layout(host)
    script = host.file(SCRIPT)
    assert (script.user, script.group) == ("root", L.group)
    assert script.mode & 0o022 == 0 and script.mode & 0o010
    assert host.run(f"bash -n {SCRIPT}").rc == 0
    cron = host.file(CRON_FILE)
    assert cron.user == "root" and cron.mode & 0o022 == 0
    entries = [line.split() for line in cron.content_string.splitlines() if line.strip() and not line.startswith("#")]
    assert ["0", "2", "*", "*", "*", L.user, SCRIPT] in entries
    cron_unit = "crond" if host.system_info.distribution in ("rhel", "rocky", "centos", "almalinux") else "cron"
    assert host.service(cron_unit).is_running
    directory = host.file(L.backup_dir)
    assert (directory.user, directory.mode) == (L.user, 0o750)


@pytest.mark.checklist("PRE-DB-3", "PRE-DBC-4", "MNT-SEC-W-4")
def test_backup_run_writes_a_verified_private_backup(host: Any) -> None:
    L = layout(host)
    before = set(backups(host))
    result = run_backup(host)
    assert result.rc == 0, result.stderr
    assert "Backup completed" in result.stdout
    new = sorted(set(backups(host)) - before)
    assert len(new) == 1
    path = f"{L.backup_dir}/{new[0]}"
    made = host.file(path)
    assert (made.user, made.mode) == (L.user, 0o600)
    assert host.run(f"gzip -t {path}").rc == 0
    verify = as_service(host, f"{L.cli} --verify-backup {path}")
    assert verify.rc == 0, verify.stderr
    assert json.loads(verify.stdout)["integrity"] == "ok"
    # Still ciphertext inside the gzip.
    header = host.check_output(f"gzip -dc {path} | head -c 16 | od -A n -t x1").replace(" ", "").replace("\n", "")
    assert header != "53514c69746520666f726d6174203300"
    assert new[0] in host.check_output("journalctl -t backup-ai-orchestrator --no-pager -o cat")


@pytest.mark.checklist("PRE-DB-3")
def test_retention_only_after_a_good_backup(host: Any) -> None:
    L = layout(host)
    old = f"{L.backup_dir}/hive_backup_20000101_000000.db.gz"
    emergency = f"{L.backup_dir}/emergency_backup_20000101_000000.db"
    try:
        for path in (old, emergency):
            host.check_output(f"runuser -u {L.user} -- touch -d '40 days ago' {path}")
        # A failing backup (the wrong key: the process environment wins over the env file)
        # exits non-zero, leaves no partial file and deletes nothing.
        before = set(backups(host))
        failed = run_backup(host, env="DATABASE_ENCRYPTION_KEY=" + "0" * 64)
        assert failed.rc != 0
        assert "Backup FAILED" in failed.stderr
        assert set(backups(host)) == before
        assert host.file(old).exists
        # A good one removes what is older than the retention, and only hive_backup_* files.
        good = run_backup(host)
        assert good.rc == 0, good.stderr
        assert not host.file(old).exists
        assert host.file(emergency).exists
    finally:
        host.run(f"rm -f {old} {emergency}")


@pytest.mark.checklist("PRE-DB-4", "MNT-SEC-M-3", "MNT-COMP-A-3")
def test_backup_restore_round_trip_loses_no_rows(host: Any, app_client: Client, app_admin_token: str) -> None:
    L = layout(host)
    auth = {"Authorization": f"Bearer {app_admin_token}"}
    kept, lost = f"kept-{uuid.uuid4().hex[:8]}", f"lost-{uuid.uuid4().hex[:8]}"
    assert app_client.post("/api/agents", headers=auth, json_body={"name": kept, "type": "worker"}).status == 201
    result = run_backup(host)
    assert result.rc == 0, result.stderr
    latest = f"{L.backup_dir}/{backups(host)[-1]}"
    assert app_client.post("/api/agents", headers=auth, json_body={"name": lost, "type": "worker"}).status == 201
    try:
        host.check_output(f"systemctl stop {L.service}")
        restored = as_service(host, f"{L.cli} --restore {latest}")
        assert restored.rc == 0, restored.stderr
        previous = json.loads(restored.stdout)["previous"]
        assert previous and host.file(previous).exists  # the pre-restore copy for a rollback
        verify = as_service(host, f"{L.cli} --verify-database")
        assert verify.rc == 0, verify.stderr
    finally:
        host.run(f"systemctl start {L.service}")
        forget_admin_tokens()  # every session from before the restore has ended
    wait_healthy(app_client)
    # The admin's JWT from before the restore is refused now.
    assert app_client.get("/api/agents", headers=auth).status == 401
    token = app_client.post(
        "/api/auth/login",
        json_body={"username": "admin", "password": host.file(L.admin_password_file).content_string.strip()},
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    def found(name: str) -> bool:
        resp = app_client.get(f"/api/agents?query={name}", headers=auth)
        assert resp.status == 200, resp.body
        return name in {a["name"] for a in resp.json()["agents"]}

    assert found(kept), "the agent created before the backup is missing after the restore"
    assert not found(lost), "the restore did not bring the database back to the backup"
