#!/usr/bin/env bash
# Start (or reuse) a throwaway systemd test container for developing a role.
#   scripts/dev-container.sh NAME [debian:12|debian:11]
# Prints the container name. Remove it with: podman rm -f NAME
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
name=${1:?usage: dev-container.sh NAME [debian:12|debian:11]}
image="localhost/hub-provision/${2:-debian:12}"
network=hub-dev
podman image exists "$image" || "$here/scripts/build-images.sh" >&2
podman network exists "$network" || podman network create "$network" >/dev/null
if ! podman container exists "$name"; then
  # Privileged for systemd, ufw and fail2ban inside; on a podman network of its own, never the host's.
  podman run -d --name "$name" --hostname "$name" --privileged --systemd=always \
    --network "$network" "$image" /sbin/init >/dev/null
fi
podman start "$name" >/dev/null
for _ in $(seq 1 30); do
  state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
echo "$name"
