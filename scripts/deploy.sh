#!/usr/bin/env bash
# Deploy the hub: playbooks/site.yml against the hub hosts of an inventory (the fleet path), or,
# for the built-in inventories/local, the local container first created (scripts/local-target.sh).
#   scripts/deploy.sh INVENTORY [ansible-playbook options: the vault, --limit, --tags, --check --diff]
# The vault as ansible-playbook takes it: --vault-password-file FILE, --vault-id LABEL@SOURCE,
# --ask-vault-pass, or ANSIBLE_VAULT_PASSWORD_FILE / ANSIBLE_VAULT_IDENTITY_LIST in the environment.
# Exit: ansible-playbook's own: 0 converged; 2 a host failed; 4 a host unreachable (or the
# inventory, its vault or a playbook could not be read: e.g. no vault password given); 1 another
# error; 5 bad options or no inventory; 99 interrupted.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
inventory=${1:-}
if [ -z "$inventory" ] || [ ! -e "$inventory" ]; then
  echo "usage: scripts/deploy.sh INVENTORY [ansible-playbook options]${inventory:+ ($inventory does not exist)}" >&2
  exit 5
fi
shift
# The built-in target's inventory (the directory or its hosts file): its container first.
case "$(realpath "$inventory")" in
  "$here/inventories/local" | "$here/inventories/local/hosts.yml") exec scripts/local-target.sh up "$@" ;;
esac
exec ansible-playbook -i "$inventory" playbooks/site.yml "$@"
