#!/usr/bin/env python3
"""Faults survived, nothing lost (issue 7): five fault scenarios on a converged bench container,
each printing PASS/FAIL with its figures; bench/results/faults.json.

  kill9       `kill -9` of the app under write load: systemd restarts it, every write that got
              a 2xx is still there afterwards
  wrongkey    a wrong DATABASE_ENCRYPTION_KEY: the service refuses to start with a clear
              message and creates no new database; the right key brings it back with all data
  backup      a backup (the cron script the role installs) taken during writes restores (into a
              scratch path) to a consistent database holding every write acknowledged before it
  diskfull    the database directory on a small tmpfs filled up: writes fail with 507 and a reason,
              nothing is corrupted, service resumes when space returns
  reboot      a full container restart: every service that ran comes back, the data is there and
              the verification suite (molecule/shared/tests) passes

Writes go from inside the container through nginx and TLS (https://127.0.0.1) with an
operator's API key; every load is bounded in requests and seconds.

    /work/main/.venv/bin/python bench/faults.py [--container hub-bench-1]
        [--scenarios kill9,wrongkey,backup,diskfull,reboot] [--keep]

Without an existing converged container of that name one is created and converged first, and
removed at the end (unless --keep).
"""
from __future__ import annotations

import argparse
import json
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hubbench as hb

BASE = "https://127.0.0.1"
HIVE = hb.HIVE
SERVICE = hb.SERVICE
USER = hb.SERVICE_USER
ENV_FILE = hb.ENV_FILE
DATA_DIR = hb.DATA_DIR
DB_PATH = f"{DATA_DIR}/hive_persistence.db"
CLIENT = (Path(__file__).resolve().parent / "hubclient.py").read_text()
SCENARIOS = ("kill9", "wrongkey", "backup", "diskfull", "reboot")


class Faults:
    def __init__(self, name: str) -> None:
        self.name = name
        self.api_key = ""

    # helpers -----------------------------------------------------------------------------
    def sh(self, script: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return hb.sh(self.name, script, check=check, timeout=timeout)

    def hive(self, args: str, env: str = "", check: bool = True, as_root: bool = False) -> Dict[str, Any]:
        """The app's CLI on the target, as the service account (as the guide runs it)."""
        prefix = "" if as_root else f"runuser -u {USER} -- "
        res = self.sh(f"{prefix}env {env} {HIVE} {args}", check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"multiagent-hive {args}: exit {res.returncode}: {res.stderr.strip()}")
        try:
            out: Dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
        except ValueError:
            out = {"stdout": res.stdout}
        out["_rc"] = res.returncode
        out["_stderr"] = res.stderr.strip()
        return out

    def prepare(self) -> None:
        password = secrets.token_urlsafe(24)
        res = hb.podman("exec", "-i", self.name, "runuser", "-u", USER, "--", *hb.HIVE_ARGV,
                        "--ensure-user", "bench-faults", "--role", "operator", "--password-file", "-",
                        input_text=password, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"--ensure-user: {res.stderr.strip()}")
        self.api_key = self.hive("--create-api-key --user bench-faults --key-name faults")["api_key"]

    def client(self, *args: str) -> subprocess.Popen:
        env = hb.base_env(HUB_BENCH_API_KEY=self.api_key)
        proc = subprocess.Popen(
            ["podman", "exec", "-i", "-e", "HUB_BENCH_API_KEY", self.name, "python3", "-", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdin is not None
        proc.stdin.write(CLIENT)
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch the closed pipe
        return proc

    def writer(self, seconds: float, max_requests: int, threads: int, prefix: str) -> subprocess.Popen:
        return self.client("write", BASE, str(seconds), str(max_requests), str(threads), prefix)

    @staticmethod
    def collect(proc: subprocess.Popen, timeout: float) -> List[Dict[str, Any]]:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"writer failed: {err.strip()[-500:]}")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def ids(self) -> Set[str]:
        proc = self.client("ids", BASE)
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"listing agents failed: {err.strip()[-300:]}")
        return set(json.loads(out))

    def main_pid(self) -> int:
        return int(self.sh(f"systemctl show -p MainPID --value {SERVICE}").stdout.strip() or 0)

    def n_restarts(self) -> int:
        return int(self.sh(f"systemctl show -p NRestarts --value {SERVICE}").stdout.strip() or 0)

    def health(self) -> int:
        res = self.sh(f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 3 {BASE}/api/health", check=False)
        return int(res.stdout.strip() or 0)

    def wait_healthy(self, timeout: float = 90) -> Optional[float]:
        """Seconds until /api/health through nginx answers 200, None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.health() == 200:
                return time.monotonic() - started
            time.sleep(0.25)
        return None

    def journal_since(self, since: str, unit: str = SERVICE) -> str:
        return self.sh(f"journalctl -u {unit} --since {shlex.quote(since)} --no-pager -o cat", check=False).stdout

    def now(self) -> str:
        return self.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()

    # scenarios ---------------------------------------------------------------------------
    def kill9(self) -> Dict[str, Any]:
        pid0, restarts0 = self.main_pid(), self.n_restarts()
        # Bounded by time and count, with room for writes on both sides of the kill: a writer
        # that finished its budget before the kill would prove nothing.
        w = self.writer(seconds=40, max_requests=20000, threads=4, prefix="kill9")
        time.sleep(5)
        t_kill, wall_kill = time.monotonic(), time.time()
        self.sh(f"kill -9 {pid0}")
        up_after = self.wait_healthy(90)
        downtime = None if up_after is None else round(time.monotonic() - t_kill, 2)
        wall_up = time.time()
        records = self.collect(w, timeout=150)
        acked = {r["id"] for r in records if r["id"]}
        present = self.ids()
        missing = acked - present
        pid1, restarts1 = self.main_pid(), self.n_restarts()
        failed = [r for r in records if not r["id"]]
        acked_before = sum(1 for r in records if r["id"] and r["t"] < wall_kill)
        acked_after = sum(1 for r in records if r["id"] and r["t"] > wall_up)
        ok = bool(acked) and not missing and pid1 not in (0, pid0) and restarts1 == restarts0 + 1 \
            and downtime is not None and acked_before > 0 and acked_after > 0
        return {"pass": ok, "requests": len(records), "acked_2xx": len(acked), "failed_during_restart": len(failed),
                "acked_before_kill": acked_before, "acked_after_restart": acked_after, "missing_after_restart": len(missing),
                "downtime_s": downtime, "pid_before": pid0, "pid_after": pid1,
                "systemd_restarts": restarts1 - restarts0,
                "failure_kinds": sorted({(f["error"] or "")[:60] for f in failed})[:5]}

    def wrongkey(self) -> Dict[str, Any]:
        before = self.ids()
        self.sh(f"systemctl stop {SERVICE}")
        files0 = self.sh(f"ls -1 {DATA_DIR}").stdout.split()
        sum0 = self.sh(f"sha256sum {DB_PATH}").stdout.split()[0]
        self.sh(f"cp -p {ENV_FILE} /root/hub-bench-environment.orig")
        since = self.now()
        time.sleep(1)
        # A different, valid-looking key (64 hex digits), written without echoing any key.
        self.sh(f"key=$(openssl rand -hex 32 2>/dev/null || head -c32 /dev/urandom | od -An -tx1 | tr -d ' \\n'); "
                f"sed -i \"s/^DATABASE_ENCRYPTION_KEY=.*/DATABASE_ENCRYPTION_KEY=$key/\" {ENV_FILE}")
        start = self.sh(f"timeout 60 systemctl start {SERVICE}", check=False)
        time.sleep(3)
        state = self.sh(f"systemctl is-active {SERVICE}", check=False).stdout.strip()
        health_wrong = self.health()
        log = self.journal_since(since)
        self.sh(f"systemctl stop {SERVICE}", check=False)
        files1 = self.sh(f"ls -1 {DATA_DIR}").stdout.split()
        sum1 = self.sh(f"sha256sum {DB_PATH}").stdout.split()[0]
        # The right key back.
        self.sh(f"cp -p /root/hub-bench-environment.orig {ENV_FILE} && rm -f /root/hub-bench-environment.orig")
        self.sh(f"systemctl reset-failed {SERVICE}", check=False)
        self.sh(f"systemctl start {SERVICE}")
        up = self.wait_healthy(60)
        after = self.ids() if up is not None else set()
        reason = [ln for ln in log.splitlines() if any(w in ln.lower() for w in ("key", "database", "not a database"))]
        refused = start.returncode != 0 and state != "active" and health_wrong != 200
        ok = refused and bool(reason) and files0 == files1 and sum0 == sum1 and up is not None and before <= after
        return {"pass": ok, "start_exit_with_wrong_key": start.returncode, "state_with_wrong_key": state,
                "health_with_wrong_key": health_wrong, "message": reason[:3],
                "files_unchanged": files0 == files1, "database_bytes_unchanged": sum0 == sum1,
                "agents_before": len(before), "agents_after_right_key": len(after),
                "all_data_back": before <= after, "recovery_s": None if up is None else round(up, 2)}

    def backup_script(self) -> str:
        res = self.sh("grep -ho '/[^ ]*backup-ai-orchestrator[^ ]*' /etc/cron.d/* 2>/dev/null | head -1", check=False)
        return res.stdout.strip() or "/usr/local/bin/backup-ai-orchestrator"

    def backup(self) -> Dict[str, Any]:
        script = self.backup_script()
        w = self.writer(seconds=30, max_requests=1500, threads=4, prefix="backup")
        time.sleep(4)
        t0 = float(self.sh("date +%s.%N").stdout)
        res = self.sh(f"{script}", check=False, timeout=300)
        t1 = float(self.sh("date +%s.%N").stdout)
        records = self.collect(w, timeout=120)
        files = self.sh(f"ls -1t {hb.BACKUP_DIR}/hive_backup_*.db.gz | head -1", check=False).stdout.split()
        if res.returncode != 0 or not files:
            return {"pass": False, "backup_exit": res.returncode, "output": (res.stdout + res.stderr)[-500:]}
        newest = files[0]
        acked_before = {r["id"] for r in records if r["id"] and r["t"] < t0}
        acked_during = {r["id"] for r in records if r["id"] and t0 <= r["t"] <= t1}
        acked_all = {r["id"] for r in records if r["id"]}
        # Restore into a scratch path (process environment beats the env file), then verify it.
        scratch = "/var/tmp/hub-bench-restore"
        self.sh(f"rm -rf {scratch} && install -d -o {USER} -g {hb.LAYOUT['hub_service_group']} -m 0700 {scratch}")
        env = f"DATABASE_PATH={scratch}/hive.db"
        restore = self.hive(f"--restore {newest}", env=env, check=False)
        verify = self.hive("--verify-database", env=env, check=False)
        counted = self.hive(f"--verify-backup {scratch}/hive.db", env=env, check=False)
        ids_sql = (f"runuser -u {USER} -- env {env} {hb.INSTALL_DIR}/venv/bin/python -c "
                   + shlex.quote(
                       "import json,os;from multiagent_hive.config import load_settings as L;"
                       f"from multiagent_hive import db;s=L({hb.CONFIG_FILE!r},{ENV_FILE!r});"
                       "c=db.connect(s.database_path,s.database_encryption_key,readonly=True);"
                       "print(json.dumps([r[0] for r in c.execute('SELECT id FROM agents')]))"))
        restored_ids = set(json.loads(self.sh(ids_sql).stdout))
        self.sh(f"rm -rf {scratch}")
        missing_before = acked_before - restored_ids
        unknown = restored_ids - self.ids()
        ok = (restore["_rc"] == 0 and verify["_rc"] == 0 and verify.get("integrity") == "ok"
              and not missing_before and not unknown and bool(acked_during | acked_before))
        return {"pass": ok, "backup_script": script, "backup_s": round(t1 - t0, 2), "backup_file": newest,
                "writes_acked_before_backup": len(acked_before), "writes_acked_during_backup": len(acked_during),
                "writes_acked_total": len(acked_all), "agents_in_restored_db": len(restored_ids),
                "acked_before_missing_in_restore": len(missing_before), "rows_not_in_live_db": len(unknown),
                "restore_rc": restore["_rc"], "verify_database": {k: verify.get(k) for k in ("integrity", "schema_version", "encrypted")},
                "verify_backup_counts": counted.get("counts")}

    def diskfull(self) -> Dict[str, Any]:
        mnt = "/mnt/hub-bench-db"
        self.sh(f"systemctl stop {SERVICE}")
        used_kb = int(self.sh(f"du -sk {DATA_DIR} | cut -f1").stdout.strip())
        size_kb = used_kb + 4096
        self.sh(f"mkdir -p {mnt} && mount -t tmpfs -o size={size_kb}k,mode=0750 hub-bench-db {mnt} && "
                f"cp -a {DATA_DIR}/. {mnt}/ && chown --reference={DATA_DIR} {mnt} && "
                f"mount --bind {mnt} {DATA_DIR}")
        result: Dict[str, Any] = {"tmpfs_kb": size_kb}
        try:
            self.sh(f"systemctl start {SERVICE}")
            if self.wait_healthy(60) is None:
                raise RuntimeError("app did not come up on the tmpfs")
            pid0 = self.main_pid()
            pre = self.collect(self.writer(seconds=10, max_requests=50, threads=2, prefix="prefull"), timeout=60)
            # Fill every free block, then write until the first failure (bounded).
            self.sh(f"dd if=/dev/zero of={DATA_DIR}/hub-bench-filler bs=64k status=none || true")
            since = self.now()
            full = self.collect(self.writer(seconds=30, max_requests=600, threads=2, prefix="full"), timeout=90)
            failed = [r for r in full if not r["id"]]
            first_fail = next((r for r in full if not r["id"]), None)
            log = self.journal_since(since)
            reason = [ln for ln in log.splitlines() if "full" in ln.lower() or "space" in ln.lower()][:3]
            health_full = self.health()
            self.sh(f"rm -f {DATA_DIR}/hub-bench-filler")
            time.sleep(1)
            post = self.collect(self.writer(seconds=10, max_requests=50, threads=2, prefix="postfull"), timeout=60)
            pid1 = self.main_pid()
            acked = {r["id"] for r in pre + full + post if r["id"]}
            present = self.ids()
            verify = self.hive("--verify-database", check=False)
            ok = (bool(failed) and first_fail is not None and first_fail["status"] == 507
                  and all(r["id"] for r in post) and len(post) > 0
                  and verify["_rc"] == 0 and verify.get("integrity") == "ok" and acked <= present)
            result.update({
                "pass": ok, "acked_before_full": sum(1 for r in pre if r["id"]),
                "writes_while_full": len(full), "failed_while_full": len(failed),
                "acked_while_full": len(full) - len(failed),
                "first_failure": None if first_fail is None else {"status": first_fail["status"],
                                                                   "body": (first_fail["error"] or "")[:200]},
                "journal": reason, "health_while_full": health_full,
                "writes_after_space_returned": len(post), "acked_after_space_returned": sum(1 for r in post if r["id"]),
                "acked_missing": len(acked - present), "integrity": verify.get("integrity"),
                "verify_error": verify["_stderr"][-200:] if verify["_rc"] else "",
                "restarted": pid1 != pid0,
            })
        finally:
            # Data written on the tmpfs goes back to the real directory.
            self.sh(f"systemctl stop {SERVICE}", check=False)
            self.sh(f"rm -f {mnt}/hub-bench-filler; umount {DATA_DIR} && "
                    f"rm -f {DATA_DIR}/hive_persistence.db {DATA_DIR}/hive_persistence.db-wal {DATA_DIR}/hive_persistence.db-shm && "
                    f"cp -a {mnt}/. {DATA_DIR}/ && umount {mnt} && rmdir {mnt}", check=False)
            self.sh(f"systemctl reset-failed {SERVICE}; systemctl start {SERVICE}", check=False)
            back = self.wait_healthy(60)
            result["service_back_on_disk"] = back is not None
            if back is None:
                result["pass"] = False
        return result

    def reboot(self, verify_suite: bool) -> Dict[str, Any]:
        before_ids = self.ids()
        list_cmd = "systemctl list-units --type=service --state=running --no-legend --plain | awk '{print $1}'"
        running0 = set(self.sh(list_cmd).stdout.split())
        t0 = time.monotonic()
        hb.podman("restart", "--time", "30", self.name, timeout=180)
        state = hb.wait_boot(self.name, 180)
        up = self.wait_healthy(120)
        boot_s = round(time.monotonic() - t0, 1)
        time.sleep(5)  # units started after boot (timers, the log monitor) settle
        running1 = set(self.sh(list_cmd).stdout.split())
        failed_units = self.sh("systemctl --failed --no-legend --plain | awk '{print $1}'", check=False).stdout.split()
        after_ids = self.ids() if up is not None else set()
        missing = sorted(running0 - running1)
        suite: Dict[str, Any] = {}
        if verify_suite:
            started = time.monotonic()
            res = subprocess.run([str(hb.VENV_BIN / "pytest"), "molecule/shared/tests", f"--hosts=podman://{self.name}",
                                  "-p", "no:cacheprovider", "-q", "--tb=line"],
                                 cwd=hb.REPO, env=hb.base_env(), capture_output=True, text=True, timeout=1800, check=False)
            lines = res.stdout.strip().splitlines()
            suite = {"rc": res.returncode, "summary": lines[-1] if lines else "", "wall_s": round(time.monotonic() - started, 1),
                     "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:10]}
        ok = (up is not None and not missing and not failed_units and before_ids <= after_ids
              and (not verify_suite or suite["rc"] == 0))
        return {"pass": ok, "boot_state": state, "until_healthy_s": boot_s,
                "services_running_before": len(running0), "services_not_back": missing, "failed_units": failed_units,
                "agents_before": len(before_ids), "agents_after": len(after_ids), "verification_suite": suite}


def main() -> int:
    p = argparse.ArgumentParser(description="five fault scenarios on a converged bench container")
    p.add_argument("--container", default=hb.PREFIX + "1")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--no-suite", action="store_true", help="skip the verification suite after the reboot")
    p.add_argument("--keep", action="store_true", help="keep a container this run created")
    p.add_argument("--out", default=str(hb.REPO / "bench" / "results" / "faults.json"))
    args = p.parse_args()
    hb.clean_up_on_sigterm()
    chosen = [s for s in args.scenarios.split(",") if s]
    for s in chosen:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s}")
    missing = hb.roles_ready()
    if missing:
        print("not all roles are committed yet: " + ", ".join(missing), file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-faults-"))
    created = hb.ensure_converged(args.container, workdir)
    f = Faults(args.container)
    results: Dict[str, Any] = {}
    try:
        f.prepare()
        runners: Dict[str, Callable[[], Dict[str, Any]]] = {
            "kill9": f.kill9, "wrongkey": f.wrongkey, "backup": f.backup, "diskfull": f.diskfull,
            "reboot": lambda: f.reboot(not args.no_suite),
        }
        for s in chosen:
            print(f"[faults] {s} ...", flush=True)
            started = time.monotonic()
            try:
                results[s] = runners[s]()
            except Exception as exc:  # noqa: BLE001 - a broken scenario is a FAIL with its reason, the others still run
                results[s] = {"pass": False, "error": f"{type(exc).__name__}: {exc}"}
            results[s]["scenario_s"] = round(time.monotonic() - started, 1)
            print(f"{'PASS' if results[s]['pass'] else 'FAIL'}  {s}: "
                  + json.dumps({k: v for k, v in results[s].items() if k != 'pass'}), flush=True)
    finally:
        if created and not args.keep:
            hb.remove([args.container])
            hb.remove_network_if_unused()
    out = {"benchmark": "faults", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": "python bench/faults.py " + " ".join(sys.argv[1:]), "container": args.container,
           "image": hb.IMAGE, "results": results}
    print(f"\n{sum(1 for r in results.values() if r['pass'])} passed, "
          f"{sum(1 for r in results.values() if not r['pass'])} failed")
    hb.write_result(args.out, out)
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
