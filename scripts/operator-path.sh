#!/usr/bin/env bash
# The operator's path over SSH, end to end, on the built-in local target (hub-provision-local),
# which Ansible and the verification suite reach over SSH through the roles' own firewall (ufw
# LIMIT on 22/tcp, the fail2ban sshd jail), as an operator reaches a production host:
#   make deploy (first converge); make verify twice back to back; every drift of
#   molecule/shared/drifts.yml injected at once; make drift (exit 3, every drift named, no failed
#   task); one repair run (site.yml, plus the operator steps the drift list names, e.g. the admin
#   password reset); a run that changes nothing; make verify; the incident playbook on a
#   compromised account (its sessions and API keys revoked, the account disabled, the evidence
#   fetched, the service resumed); the restore playbook on the incident's emergency backup (the
#   revocation stays in force, every earlier session ends); make destroy.
# Each step's new SSH connections to the target are counted from its sshd log and printed
# (reports/operator-path/connections.txt); docs/operators.md has the figures.
#   scripts/operator-path.sh          (KEEP=1 keeps the target afterwards)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="$here/images/containers.conf"
export ANSIBLE_CONFIG="$here/ansible.cfg"
target=hub-provision-local
inventory=inventories/local
logs="$here/reports/operator-path"
rm -rf "$logs"
mkdir -p "$logs"
counts="$logs/connections.txt"
start=$(date +%s)

step() { printf '\n=== operator-path: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
# From sshd's own log (read with podman exec, which is not an SSH connection; the roles set
# LogLevel VERBOSE): new TCP connections from the controller, and accepted logins, since a moment.
# The controller's connections come from the gateway of the target's network (the subnet of
# scripts/local-target.sh).
controller=10.89.210.1
conns_since() {
  podman exec "$target" journalctl -q -o cat --since "@$1" 2>/dev/null |
    grep -c "^Connection from $controller port " || true
}
logins_since() {
  podman exec "$target" journalctl -q -o cat --since "@$1" 2>/dev/null |
    grep -cE '^Accepted (publickey|password|keyboard-interactive)' || true
}
# name, expected exit status (a make target's: its recipe's), command...: run it, keep its log,
# count its SSH logins.
run() {
  local name=$1 want=$2 since t0 rc=0 n c
  shift 2
  step "$name"
  since=$(date +%s)
  t0=$since
  "$@" >"$logs/$name.log" 2>&1 || rc=$?
  # make exits 2 whatever its recipe exited with; the recipe's own status is on make's last line
  # ("make[1]: ..." when this script itself runs under make, as in make test).
  local failed='^make(\[[0-9]+\])?: \*\*\* \[.*\] Error [0-9]+$'
  if [ "$rc" -ne 0 ] && grep -qE "$failed" "$logs/$name.log"; then
    rc=$(grep -oE "$failed" "$logs/$name.log" | tail -n 1 | grep -oE '[0-9]+$' || echo "$rc")
  fi
  podman exec "$target" journalctl --sync 2>/dev/null || true # sshd's lines of the last login are in the journal
  n=$(logins_since "$since")
  c=$(conns_since "$since")
  # sshd logs "Connection from" only at LogLevel VERBOSE, which the first converge sets midway.
  [ "$c" -ge "$n" ] || c=$n
  printf '%-14s exit=%s  new ssh connections=%s (logins %s)  %ss  (%s)\n' \
    "$name" "$rc" "$c" "$n" "$(( $(date +%s) - t0 ))" "$*" | tee -a "$counts"
  if [ "$rc" != "$want" ]; then
    tail -n 60 "$logs/$name.log"
    echo "operator-path: FAILED: $name exited $rc, expected $want (full log: $logs/$name.log)" >&2
    exit 1
  fi
}

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    step destroy
    make --no-print-directory destroy >"$logs/destroy.log" 2>&1 || tail -n 20 "$logs/destroy.log"
  fi
}
trap cleanup EXIT

# A target left by an earlier run would not be a first converge.
make --no-print-directory destroy >/dev/null 2>&1 || true
run deploy 0 make --no-print-directory deploy
scripts/recap.py "$logs/deploy.log" | grep -v '^    ' || true
run verify-1 0 make --no-print-directory verify INVENTORY="$inventory"
run verify-2 0 make --no-print-directory verify INVENTORY="$inventory"
grep -E '^(PASS|FAIL):' "$logs/verify-2.log" || true

run drift-inject 0 ansible-playbook -i "$inventory" molecule/shared/inject-drift.yml
# make drift exits 3 (drift found, nothing failed); every listed drift must be named.
run drift-detect 3 env DRIFT_LOG="$logs/drift-detect.ansible.log" \
  make --no-print-directory drift INVENTORY="$inventory"
grep -v '^  ' "$logs/drift-detect.log" | grep -v '^make' || true
scripts/drift-report.py "$logs/drift-detect.ansible.log" --expect-all | grep 'expected drifts'
if grep -q 'FAILED' "$logs/drift-detect.log"; then
  echo "operator-path: a task FAILED in the drift run" >&2
  exit 1
fi

# The repair: one ansible-playbook run of site.yml and the drift list's operator steps.
mapfile -t steps < <(scripts/drift-report.py --operator-steps)
run drift-repair 0 ansible-playbook -i "$inventory" playbooks/site.yml "${steps[@]}"
scripts/recap.py "$logs/drift-repair.log" >/dev/null
run drift-rerun 0 make --no-print-directory deploy
scripts/recap.py "$logs/drift-rerun.log" --expect-unchanged
run verify-3 0 make --no-print-directory verify INVENTORY="$inventory"
grep -E '^(PASS|FAIL):' "$logs/verify-3.log" || true

# Incident response on a compromised account, through nginx as a client would see it: a JWT
# and an API key that work, then playbooks/incident-response.yml with the account named, then
# neither works, the account cannot log in, the admin still can, and the evidence is here.
hub_url="https://127.0.0.1:${HTTPS_PORT:-8443}"
# shellcheck source=scripts/lib/layout.sh
. scripts/lib/layout.sh
# api METHOD PATH [HEADER]: the HTTP status; the body (JSON) from stdin when not a terminal, the
# answer in $logs/api.json. Passwords travel on stdin, never on a command line; the test's own
# short-lived tokens are curl -H arguments (seen in this controller's process list meanwhile).
api() {
  local data=()
  [ -t 0 ] || data=(-H 'Content-Type: application/json' --data-binary @-)
  curl -ksS -o "$logs/api.json" -w '%{http_code}' -X "$1" ${3:+-H "$3"} "${data[@]}" "$hub_url$2"
}
answer() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$logs/api.json" "$1"; }
expect() { # expect WHAT WANTED GOT
  if [ "$2" != "$3" ]; then
    echo "operator-path: FAILED: $1: HTTP $3, expected $2 ($(head -c 300 "$logs/api.json"))" >&2
    exit 1
  fi
  echo "ok   - $1 ($3)"
}
step incident-prepare
suspect=incident-suspect
suspect_pw=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
admin_login=$(podman exec "$target" cat "$(layout hub_admin_password_file)" |
  python3 -c 'import json, sys; print(json.dumps({"username": "admin", "password": sys.stdin.read().strip()}))')
expect "admin login" 200 "$(api POST /api/auth/login <<<"$admin_login")"
admin_auth="Authorization: Bearer $(answer access_token)"
expect "the suspect's account created" 201 "$(api POST /api/admin/users "$admin_auth" \
  <<<"{\"username\": \"$suspect\", \"password\": \"$suspect_pw\", \"role\": \"operator\"}")"
suspect_login="{\"username\": \"$suspect\", \"password\": \"$suspect_pw\"}"
expect "the suspect's login" 200 "$(api POST /api/auth/login <<<"$suspect_login")"
suspect_jwt="Authorization: Bearer $(answer access_token)"
expect "the suspect's API key created" 201 "$(api POST /api/auth/api-keys "$suspect_jwt" <<<'{"name": "stolen"}')"
suspect_key="X-API-Key: $(answer api_key)"
expect "the suspect's JWT works" 200 "$(api GET /api/agents "$suspect_jwt" </dev/null)"
expect "the suspect's API key works" 200 "$(api GET /api/agents "$suspect_key" </dev/null)"

run incident 0 ansible-playbook -i "$inventory" playbooks/incident-response.yml --limit hub-local \
  -e "hub_incident_revoke_user=$suspect" -e hub_incident_disable_user=true -e hub_incident_resume_service=true \
  -e "hub_incident_output_dir=$logs/incident"
for _ in $(seq 30); do [ "$(api GET /api/health </dev/null)" = 200 ] && break; sleep 1; done
expect "health once the service is resumed" 200 "$(api GET /api/health </dev/null)"
expect "the suspect's JWT is refused" 401 "$(api GET /api/agents "$suspect_jwt" </dev/null)"
expect "the suspect's API key is refused" 401 "$(api GET /api/agents "$suspect_key" </dev/null)"
expect "the suspect cannot log in (disabled)" 401 "$(api POST /api/auth/login <<<"$suspect_login")"
expect "the admin still logs in" 200 "$(api POST /api/auth/login <<<"$admin_login")"
evidence=$(find "$logs/incident" -name evidence.tar.gz | head -n 1)
summary=$(tar -xzOf "$evidence" summary.txt)
grep -E '^(emergency backup|revoked user|disabled user):' <<<"$summary"
if ! grep -q "^revoked user: .*$suspect" <<<"$summary" || ! grep -q "^disabled user: .*$suspect" <<<"$summary"; then
  echo "operator-path: FAILED: the evidence summary does not record the revocation of $suspect" >&2
  exit 1
fi

# A restore after a revocation: the incident's emergency backup was taken before the suspect's
# sessions and keys were revoked. playbooks/restore.yml restores it over SSH; the credential
# journal keeps the revocation and the disable in force, and every session from before the
# restore ends (the admin's JWT too: the admin logs in again).
step restore-prepare
expect "the admin's JWT works before the restore" 200 "$(api GET /api/agents "$admin_auth" </dev/null)"
emergency=$(sed -n 's/^emergency backup: \([^ ]*\) .*/\1/p' <<<"$summary")
[ -n "$emergency" ] || { echo "operator-path: FAILED: no emergency backup in the evidence summary" >&2; exit 1; }
run restore 0 ansible-playbook -i "$inventory" playbooks/restore.yml --limit hub-local -e "hub_restore_backup_file=$emergency"
if ! grep -oE 'Credentials: every session ended[^"]*' "$logs/restore.log"; then
  echo "operator-path: FAILED: restore.yml did not report what it did to the credentials" >&2
  exit 1
fi
for _ in $(seq 30); do [ "$(api GET /api/health </dev/null)" = 200 ] && break; sleep 1; done
expect "health after the restore" 200 "$(api GET /api/health </dev/null)"
expect "the suspect's API key stays revoked after the restore" 401 "$(api GET /api/agents "$suspect_key" </dev/null)"
expect "the suspect's JWT stays refused after the restore" 401 "$(api GET /api/agents "$suspect_jwt" </dev/null)"
expect "the suspect stays disabled after the restore" 401 "$(api POST /api/auth/login <<<"$suspect_login")"
expect "the admin's JWT from before the restore is refused" 401 "$(api GET /api/agents "$admin_auth" </dev/null)"
expect "the admin logs in after the restore" 200 "$(api POST /api/auth/login <<<"$admin_login")"
expect "the admin's new JWT works" 200 "$(api GET /api/agents "Authorization: Bearer $(answer access_token)" </dev/null)"

# The firewall's view of the whole path: the most new connections from the controller within
# any 30 s (ufw's LIMIT rejects the 6th). Every step above passed, so none was rejected; this
# shows the margin.
peak=$(podman exec "$target" journalctl -q -o short-unix --since "@$start" |
  awk -v c="Connection from $controller port " 'index($0, c) { print int($1) }' |
  python3 -c 'import sys
t = sorted(int(x) for x in sys.stdin)
print(max((sum(1 for u in t if s <= u < s + 30) for s in t), default=0))')
echo "most new SSH connections from the controller within 30 s: $peak (ufw LIMIT rejects the 6th)" |
  tee -a "$counts"
echo
cat "$counts"
if [ "$peak" -ge 6 ]; then
  echo "operator-path: $peak new SSH connections within 30 s: the firewall would refuse the 6th" >&2
  exit 1
fi
echo "operator-path passed in $(( $(date +%s) - start ))s"
