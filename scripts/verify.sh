#!/usr/bin/env bash
# The verification suite (molecule/shared/tests) against the hub hosts of any inventory, and the
# compliance report: reports/compliance-NAME.md (people), .json (machines), .xml (JUnit, CI).
#   scripts/verify.sh INVENTORY [extra pytest args, e.g. -k postdeploy]
# Hosts reached through podman are tested with `podman exec`; every other host through
# testinfra's ansible backend (ssh as the inventory's ansible_user, sudo when it becomes).
# Exit: 0 every automated item passed (unattested manual items are listed, they do not fail);
# 1 an item failed; 2 unusable input (inventory without hub hosts, invalid hub_attestations,
# the suite did not run).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
inventory=${1:?usage: scripts/verify.sh INVENTORY [pytest args]}
shift
name=$(basename "${inventory%/}")
name=${name%.yml}
name=${name%.yaml}
reports="$here/reports"
mkdir -p "$reports"
summary="$reports/.verify-$name-inventory.json"
results="$reports/.verify-$name-results.json"
junit="$reports/compliance-$name.xml"

# Only the host list and hub_attestations are kept from the inventory (no other variable).
if ! ansible-inventory -i "$inventory" --list | python3 -m checklist.inventory >"$summary"; then
  echo "verify: cannot read the hub hosts of $inventory" >&2
  exit 2
fi
# Fail on a malformed attestation before spending minutes on the suite.
python3 -m checklist.report --check-attestations --inventory "$summary" || exit 2

mapfile -t specs < <(python3 -c 'import json,sys; [print(h["testinfra"]) for h in json.load(open(sys.argv[1]))["hosts"]]' "$summary")
hosts=$(IFS=,; echo "${specs[*]}")
echo "verify: $name: ${#specs[@]} host(s): $hosts"

rm -f "$results"
rc=0
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" pytest molecule/shared/tests \
  -p no:cacheprovider -p checklist.pytest_checklist \
  --hosts="$hosts" --ansible-inventory="$inventory" \
  --checklist-results="$results" --junitxml="$junit" \
  -q -rfEs "$@" || rc=$?
# 0 all passed, 1 some failed: both make a report. Anything else: pytest itself broke.
if [ "$rc" -gt 1 ]; then
  echo "verify: pytest exited $rc (interrupted, usage or collection error): no report" >&2
  exit 2
fi
python3 -m checklist.report --results "$results" --inventory "$summary" \
  --out "$reports/compliance-$name" --name "$name" --junit "$junit"
