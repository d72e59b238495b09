#!/usr/bin/env bash
# What differs on the hub hosts of an inventory from what the playbook manages: a check-mode run
# (`--check --diff`, nothing changes on the hosts), summarised per host, one line per changed
# task with the artifact it touches. The full log with every diff stays under reports/.
#   scripts/drift.sh INVENTORY [extra ansible-playbook args, e.g. --limit host or --tags nginx]
# The vault as ansible-playbook takes it: --vault-password-file FILE, --vault-id LABEL@SOURCE,
# --ask-vault-pass (the prompt is on the terminal), or ANSIBLE_VAULT_PASSWORD_FILE /
# ANSIBLE_VAULT_IDENTITY_LIST in the environment.
# Exit: 0 no drift; 3 drift (a normal run, `make deploy` or ansible-playbook, would correct it);
# 1 the run failed (a failed or unreachable host); 2 usage error.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
inventory=${1:-}
if [ -z "$inventory" ] || [ ! -e "$inventory" ]; then
  echo "usage: scripts/drift.sh INVENTORY [ansible-playbook args]" >&2
  exit 2
fi
shift
name=$(basename "${inventory%/}")
name=${name%.yml}
name=${name%.yaml}
mkdir -p reports
# DRIFT_LOG: where to keep the full log (scripts/operator-path.sh reads it again).
log=${DRIFT_LOG:-reports/drift-$name-$(date -u +%Y%m%dT%H%M%SZ).log}
echo "drift: $name: ansible-playbook --check --diff (full log: $log)"
rc=0
ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
  ansible-playbook -i "$inventory" playbooks/site.yml --check --diff "$@" >"$log" 2>&1 || rc=$?
report_rc=0
scripts/drift-report.py "$log" || report_rc=$?
# A playbook that failed before its recap (syntax, vault, inventory) leaves no host summary.
vault_error=0
[ "$rc" -eq 0 ] || ! grep -qiE 'no vault secrets|vault secrets? (found|not found)|decrypt' "$log" || vault_error=1
if [ "$rc" -ne 0 ] && { [ "$report_rc" -ne 1 ] || [ "$vault_error" = 1 ]; }; then
  tail -n 20 "$log" >&2
  if [ "$vault_error" = 1 ]; then
    echo "drift: $inventory holds vault-encrypted data: pass the vault as to ansible-playbook" \
      "(--vault-password-file FILE, --vault-id LABEL@SOURCE, --ask-vault-pass; make drift VAULT='...')" >&2
  fi
  echo "drift: ansible-playbook exited $rc" >&2
  exit 1
fi
exit "$report_rc"
