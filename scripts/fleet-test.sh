#!/usr/bin/env bash
# The fleet path (docs/operators.md) on two hosts of its own, hub-fleet-1 (Debian 12) and
# hub-fleet-2 (Debian 13), reached over SSH through the roles' firewall, with an inventory whose
# secrets are in an encrypted vault.yml, as an operator runs it against production:
#   - without the vault, deploy, verify and drift stop and say how to pass it;
#   - make deploy INVENTORY=... VAULT='--vault-id ...': both hosts converge with the vault's
#     admin password; make verify (ANSIBLE_VAULT_PASSWORD_FILE) passes on both, its new SSH
#     connections counted per host; scripts/drift.sh --ask-vault-pass: no drift (exit 0);
#   - every layout variable changed in turn, in check mode (scripts/drift.sh -e NAME=VALUE): exit 3,
#     the change named, no failed task, and nothing created on the host;
#   - the emergency playbooks refuse both hosts at once naming hub_allow_fleet_wide, and their
#     old extra-var names naming the new ones, with nothing done; incident-response.yml with
#     --limit runs on hub-fleet-2 only, and hub-fleet-1's service is never interrupted.
#   scripts/fleet-test.sh           (KEEP=1 keeps the hosts and the work directory;
#                                    VERIFY_ARGS='-k ...' narrows the verification suite)
# Exit: 0 every check passed; 1 a check failed (each is one ok/FAIL line).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
hosts=(hub-fleet-1 hub-fleet-2)
images=(debian:12 debian:13)
work=$(mktemp -d "${TMPDIR:-/tmp}/hub-fleet.XXXXXX")
inv="$work/inventory"
pass="$work/vault-pass"
failures=0
started=$SECONDS
# shellcheck source=scripts/lib/layout.sh
. scripts/lib/layout.sh
service_name=$(layout hub_service_name)
admin_password_file=$(layout hub_admin_password_file)

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    for h in "${hosts[@]}"; do scripts/dev-target.sh down "$h"; done
    rm -rf "$work"
  else
    echo "kept: ${hosts[*]}, inventory and logs in $work"
  fi
}
trap cleanup EXIT

say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started)); }
check() { # check WHAT COMMAND...: one ok/FAIL line; a failure is counted, the script goes on
  local what=$1
  shift
  if "$@"; then echo "ok   - $what"; else echo "FAIL - $what"; failures=$((failures + 1)); fi
}
# run LOG COMMAND...: the command's output to LOG, its exit status in $rc
run() {
  local log=$1
  shift
  rc=0
  "$@" >"$log" 2>&1 || rc=$?
}
# make's last line holds its recipe's status ("make: *** [Makefile:NN: drift] Error 3").
make_status() { grep -oE '^make(\[[0-9]+\])?: \*\*\* \[.*\] Error [0-9]+$' "$1" | tail -n 1 | grep -oE '[0-9]+$' || echo 0; }
# in_log LOG TEXT: the text is in the log, Ansible's wrapped YAML output joined into one line.
in_log() { tr -s ' \n' ' ' <"$1" | grep -qF -- "$2"; }
no_failed_task() { ! grep -qE '^(fatal|failed): ' "$1" && grep -qE 'failed=0 ' "$1"; }
# The service's start time on a host: unchanged means it was never stopped.
since() { podman exec "$1" systemctl show -p ActiveEnterTimestampMonotonic --value "$service_name"; }
active() { podman exec "$1" systemctl is-active --quiet "$service_name"; }
# New SSH connections from the controller a host's sshd logged since a moment (the roles'
# LogLevel VERBOSE; read with podman exec, which is not an SSH connection). The suite's own
# connections from inside the host (loopback, which ufw does not limit) are not the controller's.
connections_since() {
  podman exec "$1" journalctl -q -o cat -u ssh --since "@$2" 2>/dev/null |
    grep '^Connection from ' | grep -vc '^Connection from 127\.0\.0\.1 ' || true
}

say "two hosts and an inventory with an encrypted vault"
mkdir -p "$inv/group_vars/hub"
printf -- '---\nall:\n  children:\n    hub:\n      hosts:\n' >"$inv/hosts.yml"
for i in "${!hosts[@]}"; do
  h=${hosts[$i]}
  scripts/dev-target.sh down "$h"
  address=$(sed -n 's/^ *ansible_host: //p' "$(scripts/dev-target.sh up "$h" "${images[$i]}")")
  printf '        %s:\n          ansible_host: %s\n' "$h" "$address" >>"$inv/hosts.yml"
done
# The test hosts' connection settings and site name; the secrets only in the vault.
cp inventories/local/group_vars/hub/connection.yml inventories/local/group_vars/hub/main.yml "$inv/group_vars/hub/"
(umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$pass")
# Every secret, as inventories/production/group_vars/hub/vault.yml.example has them: with the
# keys in the vault, a moved hub_config_dir (a new environment file) keeps the same database key.
admin_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
{
  echo '---'
  for key in hub_app_jwt_secret hub_app_database_encryption_key hub_app_api_encryption_key; do
    echo "$key: \"$(python3 -c 'import secrets; print(secrets.token_hex(32))')\""
  done
  echo "hub_app_admin_password: \"$admin_password\""
} >"$inv/group_vars/hub/vault.yml"
ansible-vault encrypt --vault-id "fleet@$pass" "$inv/group_vars/hub/vault.yml" >/dev/null
check "vault.yml is encrypted" grep -qF 'ANSIBLE_VAULT;1.2;AES256;fleet' "$inv/group_vars/hub/vault.yml"
vault=(--vault-id "fleet@$pass")

say "without the vault: each command stops and names the options"
run "$work/0-verify.log" scripts/verify.sh "$inv"
check "scripts/verify.sh exits 2 (got $rc)" test "$rc" = 2
check "scripts/verify.sh names the vault options" in_log "$work/0-verify.log" "--vault-id LABEL@SOURCE"
run "$work/0-drift.log" scripts/drift.sh "$inv"
check "scripts/drift.sh exits 1 (got $rc)" test "$rc" = 1
check "scripts/drift.sh names the vault options" in_log "$work/0-drift.log" "--vault-id LABEL@SOURCE"
run "$work/0-deploy.log" scripts/deploy.sh "$inv"
check "scripts/deploy.sh fails (got $rc)" test "$rc" -ne 0
check "ansible-playbook says it has no vault secret" in_log "$work/0-deploy.log" "no vault secrets"

say "make deploy INVENTORY=... VAULT='--vault-id fleet@FILE' (both hosts)"
t0=$SECONDS
run "$work/1-deploy.log" make --no-print-directory deploy INVENTORY="$inv" VAULT="${vault[*]}"
echo "deploy: $((SECONDS - t0)) s; $(scripts/recap.py "$work/1-deploy.log" | grep -v '^    ' | tr '\n' ' ')"
check "make deploy succeeds (got $rc)" test "$rc" = 0
for h in "${hosts[@]}"; do
  check "$h: the admin password is the vault's" test "$(podman exec "$h" cat "$admin_password_file")" = "$admin_password"
done

say "make verify (ANSIBLE_VAULT_PASSWORD_FILE) on both hosts, SSH connections counted"
t0=$(date +%s)
read -r -a verify_args <<<"${VERIFY_ARGS:-}"
run "$work/2-verify.log" env ANSIBLE_VAULT_PASSWORD_FILE="$pass" \
  make --no-print-directory verify INVENTORY="$inv" VAULT="${verify_args[*]}"
echo "verify: $(($(date +%s) - t0)) s; $(grep -E '^verify: (testing|.* host)|passed|failed' "$work/2-verify.log" | tail -n 3 | tr '\n' ' ')"
if [ -z "${VERIFY_ARGS:-}" ]; then
  check "make verify passes on both hosts (got $rc, status $(make_status "$work/2-verify.log"))" test "$rc" = 0
else
  # A narrowed suite leaves the other items without a test: the report fails them (exit 1).
  check "the narrowed suite passes on both hosts (status $(make_status "$work/2-verify.log"))" \
    bash -c "grep -qE '^[0-9]+ passed' '$work/2-verify.log' && ! grep -qE '[0-9]+ (failed|errors?)[, ]' '$work/2-verify.log' && [ '$(make_status "$work/2-verify.log")' -le 1 ]"
fi
check "the report covers both hosts" grep -q "hub-fleet-1.*hub-fleet-2\|hub-fleet-2.*hub-fleet-1" "$work/2-verify.log"
sleep 1
for h in "${hosts[@]}"; do
  n=$(connections_since "$h" "$t0")
  echo "$h: make verify opened $n new SSH connections"
  check "$h: make verify stays within the SSH budget (5, got $n)" test "$n" -le 5
done

say "scripts/drift.sh --ask-vault-pass (the password on stdin, no terminal): no drift"
run "$work/3-drift.log" setsid -w scripts/drift.sh "$inv" --ask-vault-pass <"$pass"
grep -E '^[a-z0-9-]+: ' "$work/3-drift.log" || true
check "no drift on either host (exit 0, got $rc)" test "$rc" = 0

say "every layout variable changed in check mode: a preview, exit 3, no failed task"
# NAME=VALUE, and a path or task name the report must show for it.
layout_changes=(
  "hub_service_user=hubfleet|service account"
  "hub_service_group=hubfleet|service group"
  "hub_install_dir=/srv/hubfleet|/srv/hubfleet"
  "hub_config_dir=/etc/hubfleet|/etc/hubfleet"
  "hub_data_dir=/srv/hubfleet-data|/srv/hubfleet-data"
  "hub_log_dir=/var/log/hubfleet|/var/log/hubfleet"
  "hub_backup_dir=/srv/hubfleet-backups|/srv/hubfleet-backups"
)
# Two at a time, one per host (each run is one SSH connection to its host).
check_layout() { # check_layout HOST NAME=VALUE: drift.sh's exit status in LOG.rc
  local log="$work/4-check-${2%%=*}.log" rc=0
  DRIFT_LOG="$log.ansible" scripts/drift.sh "$inv" "${vault[@]}" --limit "$1" -e "$2" >"$log" 2>&1 || rc=$?
  echo "$rc" >"$log.rc"
}
t0=$SECONDS
for ((i = 0; i < ${#layout_changes[@]}; i += 2)); do
  for j in 0 1; do
    change=${layout_changes[$((i + j))]:-}
    [ -z "$change" ] || check_layout "${hosts[$j]}" "${change%%|*}" &
  done
  wait
done
echo "${#layout_changes[@]} check runs: $((SECONDS - t0)) s"
i=0
for change in "${layout_changes[@]}"; do
  setting=${change%%|*} shown=${change#*|}
  h=${hosts[$((i % 2))]}
  i=$((i + 1))
  log="$work/4-check-${setting%%=*}.log"
  rc=$(cat "$log.rc")
  echo "$setting on $h: $(grep -E "^$h: " "$log" || echo 'no summary')"
  check "$setting: drift exits 3 (got $rc)" test "$rc" = 3
  check "$setting: no failed task" no_failed_task "$log.ansible"
  check "$setting: the report names $shown" in_log "$log" "$shown"
done
check "check mode created nothing (no account hubfleet)" \
  bash -c "! podman exec hub-fleet-1 getent passwd hubfleet && ! podman exec hub-fleet-2 getent passwd hubfleet"
check "check mode created nothing (no /srv/hubfleet)" \
  bash -c "! podman exec hub-fleet-1 test -e /srv/hubfleet && ! podman exec hub-fleet-2 test -e /srv/hubfleet"

say "the emergency playbooks refuse both hosts at once, and their old extra-var names"
before1=$(since hub-fleet-1)
before2=$(since hub-fleet-2)
for pb in restore incident-response reset-admin-password; do
  run "$work/5-$pb.log" ansible-playbook -i "$inv" "${vault[@]}" "playbooks/$pb.yml"
  check "$pb.yml on two hosts is refused (exit 2, got $rc)" test "$rc" = 2
  check "$pb.yml's refusal names hub_allow_fleet_wide" in_log "$work/5-$pb.log" "-e hub_allow_fleet_wide=true"
done
for old in "restore backup_file=x hub_restore_backup_file" "incident-response resume_service=true hub_incident_resume_service" \
  "incident-response incident_output_dir=/tmp hub_incident_output_dir" "reset-admin-password reset_admin_force=true hub_reset_admin_force"; do
  read -r pb setting new <<<"$old"
  run "$work/5-$pb-${setting%%=*}.log" ansible-playbook -i "$inv" "${vault[@]}" "playbooks/$pb.yml" --limit hub-fleet-2 -e "$setting"
  check "$pb.yml -e $setting is refused (exit 2, got $rc)" test "$rc" = 2
  check "$pb.yml -e $setting: the refusal names $new" \
    in_log "$work/5-$pb-${setting%%=*}.log" "-e ${setting%%=*} is no longer read: pass -e $new instead"
done
check "hub-fleet-1's service was not interrupted" test "$(since hub-fleet-1)" = "$before1"
check "hub-fleet-2's service was not interrupted" test "$(since hub-fleet-2)" = "$before2"

say "incident-response.yml --limit hub-fleet-2"
run "$work/6-incident.log" ansible-playbook -i "$inv" "${vault[@]}" playbooks/incident-response.yml --limit hub-fleet-2 \
  -e hub_incident_resume_service=true -e "hub_incident_output_dir=$work/incident"
check "incident-response.yml on one host succeeds (got $rc)" test "$rc" = 0
check "the evidence of hub-fleet-2 was fetched" compgen -G "$work/incident/incident-hub-fleet-2-*/evidence.tar.gz"
check "no evidence of hub-fleet-1" bash -c "! compgen -G '$work/incident/incident-hub-fleet-1-*'"
check "hub-fleet-2's service was stopped and resumed" bash -c "[ '$(since hub-fleet-2)' != '$before2' ]"
check "hub-fleet-2's service runs again" active hub-fleet-2
check "hub-fleet-1's service was not interrupted" test "$(since hub-fleet-1)" = "$before1"

say "done: $failures failure(s) in $((SECONDS - started)) s"
[ "$failures" -eq 0 ]
