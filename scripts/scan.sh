#!/usr/bin/env bash
# OpenSCAP scan of the hub hosts of any inventory, with the compliance report of its results:
# reports/compliance-NAME-scap.md (people), .json (machines), .xml (JUnit, CI).
#   scripts/scan.sh INVENTORY [extra ansible-playbook args]
# The content is fetched once into .cache/scap and checked against scap/content.yml; each host
# gets its platform's content and profiles. The scanner is installed on a host for the scan only
# and removed afterwards (playbooks/scan.yml). Failed rules of a gating profile fail the scan
# unless scap/deviations.yml lists them (each one explained in docs/deviations.md).
# Exit: 0 no failed rule outside the deviations; 1 such a rule failed; 2 the scan did not run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
inventory=${1:?usage: scripts/scan.sh INVENTORY [ansible-playbook args]}
shift
name=$(basename "${inventory%/}")
name=${name%.yml}
name=${name%.yaml}
# A dev target's inventory is .cache/dev/NAME/hosts.yml: name the report after its directory.
[ "$name" != hosts ] || name=$(basename "$(dirname "$inventory")")
results="$here/reports/.scap-$name"
rm -rf "$results"
mkdir -p "$results"
if ! ansible-playbook -i "$inventory" playbooks/scan.yml -e "hub_scan_results_dir=$results" "$@"; then
  echo "scan: the scan playbook failed on $inventory: no report" >&2
  exit 2
fi
exec python3 -m checklist.scap report --results "$results" --out "$here/reports/compliance-$name-scap" --name "$name"
