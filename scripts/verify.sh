#!/usr/bin/env bash
# The verification suite (molecule/shared/tests) against the hub hosts of any inventory, and the
# compliance report: reports/compliance-NAME.md (people), .json (machines), .xml (JUnit, CI).
#   scripts/verify.sh INVENTORY [vault options] [extra pytest args, e.g. -k postdeploy]
# The vault as ansible-playbook takes it (anywhere after INVENTORY; they go to ansible-inventory,
# which reads the inventory): --vault-password-file FILE, --vault-id LABEL@SOURCE,
# --ask-vault-pass, or ANSIBLE_VAULT_PASSWORD_FILE / ANSIBLE_VAULT_IDENTITY_LIST in the environment.
# Hosts reached through podman are tested with `podman exec`. Every other host through ssh with
# the inventory's address, user, port, key and ssh args (checklist/inventory.py writes them to an
# ssh config for this run), sudo when the inventory becomes another user, and ONE multiplexed
# TCP connection per host for the whole run: the roles' firewall rate-limits new SSH connections
# (docs/operators.md has the counts). Each host is probed once first; an unreachable host gets
# one line here and in the report, and is not tested.
# Exit: 0 every automated item passed (unattested manual items are listed, they do not fail);
# 1 an item failed; 2 unusable input (inventory without hub hosts, invalid hub_attestations,
# the suite did not run) or a host could not be reached.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
inventory=${1:?usage: scripts/verify.sh INVENTORY [vault options] [pytest args]}
shift
# The vault options for ansible-inventory, everything else for pytest (which has no --vault-*).
vault_args=()
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --vault-id | --vault-password-file | --vault-pass-file)
      [ $# -ge 2 ] || { echo "verify: $1 needs a value" >&2; exit 2; }
      vault_args+=("$1" "$2")
      shift 2
      ;;
    --vault-id=* | --vault-password-file=* | --vault-pass-file=* | --ask-vault-pass | --ask-vault-password | -J)
      vault_args+=("$1")
      shift
      ;;
    *)
      pytest_args+=("$1")
      shift
      ;;
  esac
done
name=$(basename "${inventory%/}")
name=${name%.yml}
name=${name%.yaml}
reports="$here/reports"
mkdir -p "$reports"
summary="$reports/.verify-$name-inventory.json"
results="$reports/.verify-$name-results.json"
junit="$reports/compliance-$name.xml"
# PROBE_TIMEOUT: seconds to wait for a host's first connection.
probe_timeout=${PROBE_TIMEOUT:-10}

# The ssh config and the multiplexing sockets of this run, in a short path (a socket path is at
# most 104 characters). The masters are closed and the directory removed when the run ends.
ctl=$(mktemp -d /tmp/hubv.XXXXXX)
ssh_config="$ctl/ssh_config"
ssh_hosts=()
# Run by the EXIT trap below (shellcheck 0.11 does not see that one).
# shellcheck disable=SC2329
cleanup() {
  local h
  for h in "${ssh_hosts[@]}"; do
    ssh -F "$ssh_config" -O exit "$h" >/dev/null 2>&1 || true
  done
  rm -rf "$ctl"
}
trap cleanup EXIT

# Only the host list, the ssh settings and hub_attestations are kept from the inventory.
if ! ansible-inventory -i "$inventory" "${vault_args[@]}" --list 2>"$ctl/inventory.err" |
  python3 -m checklist.inventory --ssh-config "$ssh_config" --control-dir "$ctl" >"$summary"; then
  cat "$ctl/inventory.err" >&2
  if grep -qi vault "$ctl/inventory.err"; then
    echo "verify: $inventory holds vault-encrypted data: pass the vault as to ansible-playbook" \
      "(--vault-password-file FILE, --vault-id LABEL@SOURCE, --ask-vault-pass; make verify VAULT='...')" >&2
  fi
  echo "verify: cannot read the hub hosts of $inventory" >&2
  exit 2
fi
# Fail on a malformed attestation before spending minutes on the suite.
python3 -m checklist.report --check-attestations --inventory "$summary" || exit 2

mapfile -t rows < <(python3 -c '
import json, sys
for h in json.load(open(sys.argv[1]))["hosts"]:
    print(h["name"], h["address"], h["testinfra"])' "$summary")
echo "verify: $name: ${#rows[@]} host(s)"

# Reachability, once per host and all hosts at once: this connection becomes the host's master,
# which the whole suite then shares.
declare -A probe_pid=()
for row in "${rows[@]}"; do
  read -r host address spec <<<"$row"
  case "$spec" in
    ssh://* | safe-ssh://*)
      ssh_hosts+=("$host")
      ssh -F "$ssh_config" -o ConnectTimeout="$probe_timeout" "$host" true \
        </dev/null >/dev/null 2>"$ctl/probe-$host.err" &
      probe_pid[$host]=$!
      ;;
  esac
done
specs=()
unreachable=()
for row in "${rows[@]}"; do
  read -r host address spec <<<"$row"
  if [ -n "${probe_pid[$host]:-}" ] && ! wait "${probe_pid[$host]}"; then
    reason=$(grep -v '^\s*$' "$ctl/probe-$host.err" | tail -n 1)
    echo "verify: $host ($address): UNREACHABLE: ${reason:-ssh failed}" >&2
    unreachable+=("$host=${reason:-ssh failed}")
    continue
  fi
  specs+=("$spec")
done

rm -f "$results"
rc=0
if [ ${#specs[@]} -gt 0 ]; then
  hosts=$(IFS=,; echo "${specs[*]}")
  echo "verify: testing $hosts"
  HUB_VERIFY_HOSTS="$summary" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" pytest molecule/shared/tests \
    -p no:cacheprovider -p checklist.pytest_checklist -p hubtools.pytest_reruns \
    --hosts="$hosts" --ssh-config="$ssh_config" \
    --checklist-results="$results" --junitxml="$junit" \
    -q -rfEs "${pytest_args[@]}" || rc=$?
  # 0 all passed, 1 some failed: both make a report. Anything else: pytest itself broke.
  if [ "$rc" -gt 1 ]; then
    echo "verify: pytest exited $rc (interrupted, usage or collection error): no report" >&2
    exit 2
  fi
fi
report_args=()
[ ${#specs[@]} -eq 0 ] || report_args+=(--junit "$junit")
for entry in "${unreachable[@]}"; do
  report_args+=(--unreachable "$entry")
done
report_rc=0
python3 -m checklist.report --results "$results" --inventory "$summary" \
  --out "$reports/compliance-$name" --name "$name" "${report_args[@]}" || report_rc=$?
if [ ${#unreachable[@]} -gt 0 ]; then
  echo "verify: ${#unreachable[@]} host(s) unreachable, not verified: ${unreachable[*]%%=*}" >&2
  exit 2
fi
exit "$report_rc"
