#!/usr/bin/env bash
# A throwaway SSH-reached test host for developing a role or a test, with an inventory of its own
# (the local target's group_vars), so that several developers can work side by side without
# sharing the local target or the Molecule instances.
#   scripts/dev-target.sh up NAME [debian:12|debian:11|debian:13]   prints the inventory's path
#   scripts/dev-target.sh down NAME
# Then: ansible-playbook -i "$(scripts/dev-target.sh up dev-x)" playbooks/site.yml
#       scripts/verify.sh .cache/dev/dev-x/hosts.yml
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
network=hub-dev

up() {
  local name=${1:?usage: dev-target.sh up NAME [IMAGE]} image="localhost/hub-provision/${2:-debian:12}"
  podman image exists "$image" || { echo "dev-target: no image $image (make images)" >&2; exit 1; }
  podman network exists "$network" || podman network create "$network" >/dev/null
  if ! podman container exists "$name"; then
    # Privileged for systemd, ufw and fail2ban inside; on a podman network of its own, never the host's.
    podman run -d --name "$name" --hostname "$name" --privileged --systemd=always \
      --network "$network" "$image" /sbin/init >/dev/null
  fi
  podman start "$name" >/dev/null
  podman exec "$name" systemctl is-system-running --wait >/dev/null 2>&1 || true
  local pubkey address dir
  pubkey=$(cat "$(scripts/ssh-key.sh).pub")
  podman exec "$name" sh -c "install -d -m 700 /root/.ssh && touch /root/.ssh/authorized_keys &&
    chmod 600 /root/.ssh/authorized_keys && (grep -qxF '$pubkey' /root/.ssh/authorized_keys ||
    echo '$pubkey' >> /root/.ssh/authorized_keys)"
  address=$(podman inspect --format "{{ (index .NetworkSettings.Networks \"$network\").IPAddress }}" "$name")
  dir=.cache/dev/$name
  mkdir -p "$dir"
  ln -sfn "$here/inventories/local/group_vars" "$dir/group_vars"
  cat >"$dir/hosts.yml" <<EOF
---
all:
  children:
    hub:
      hosts:
        $name:
          ansible_host: $address
EOF
  echo "$dir/hosts.yml"
}

down() {
  local name=${1:?usage: dev-target.sh down NAME}
  podman rm -f "$name" >/dev/null 2>&1 || true
  rm -rf ".cache/dev/$name"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) echo "usage: $0 up NAME [IMAGE] | down NAME" >&2; exit 2 ;;
esac
