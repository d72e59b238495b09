#!/usr/bin/env bash
# The built-in target: one systemd container on this machine, provisioned by playbooks/site.yml
# through inventories/local.
#   scripts/local-target.sh up       create the container if needed and converge it
#   scripts/local-target.sh down     remove it (its data goes with it)
# Ports are published on the machine's loopback only: HTTPS_PORT (8443) and HTTP_PORT (8088).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CONTAINERS_CONF="$here/images/containers.conf"
export PATH="$here/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$here/ansible.cfg"

name=hub-provision-local
network=hub-local
subnet=10.89.210.0/24
address=10.89.210.10 # inventories/local/hosts.yml
image=${IMAGE:-localhost/hub-provision/debian:12}
https_port=${HTTPS_PORT:-8443}
http_port=${HTTP_PORT:-8088}
# Where the roles save the admin password (hub_common's defaults, the one place it is defined).
# shellcheck source=scripts/lib/layout.sh
. scripts/lib/layout.sh
admin_password_file=$(layout hub_admin_password_file)

up() {
  scripts/build-images.sh "$(case "$image" in *:11) echo bullseye ;; *) echo bookworm ;; esac)"
  podman network exists "$network" || podman network create --subnet "$subnet" "$network" >/dev/null
  if ! podman container exists "$name"; then
    # Privileged so that systemd, ufw and fail2ban work inside; its own network, never the host's.
    podman run -d --name "$name" --hostname "$name" --privileged --systemd=always \
      --network "$network" --ip "$address" \
      -p "127.0.0.1:$https_port:443" -p "127.0.0.1:$http_port:80" "$image" /sbin/init >/dev/null
  fi
  podman start "$name" >/dev/null
  podman exec "$name" systemctl is-system-running --wait >/dev/null || true
  # Ansible comes in over SSH with the project's test-host key (pipelining; podman exec cannot).
  pubkey=$(cat "$(scripts/ssh-key.sh).pub")
  podman exec "$name" sh -c "install -d -m 700 /root/.ssh && touch /root/.ssh/authorized_keys &&
    chmod 600 /root/.ssh/authorized_keys && (grep -qxF '$pubkey' /root/.ssh/authorized_keys ||
    echo '$pubkey' >> /root/.ssh/authorized_keys)"
  ansible-playbook -i inventories/local playbooks/site.yml "$@"
  cat <<MSG

The hub is deployed in the container '$name'.
  Through nginx (TLS, self-signed):  curl -k https://127.0.0.1:$https_port/api/health
  Admin user:                        admin
  Admin password (generated once):   podman exec $name cat $admin_password_file
  Log in:  curl -k https://127.0.0.1:$https_port/api/auth/login -H 'Content-Type: application/json' \\
             -d "{\"username\":\"admin\",\"password\":\"\$(podman exec $name cat $admin_password_file)\"}"
  Shell in the target:               podman exec -it $name bash
  Re-run to correct drift:           make deploy      (a second run changes nothing)
  Remove it:                         make destroy
MSG
}

down() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman network exists "$network" && podman network rm "$network" >/dev/null || true
  echo "removed $name"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
