#!/usr/bin/env bash
# Build the local systemd test-host images (Debian 13, 12 and 11) with debootstrap + podman import.
# No container registry is reachable here, so the images are made from Debian's archive.
# An image that already exists is kept (cache); FORCE=1 rebuilds.
#
#   scripts/build-images.sh [trixie] [bookworm] [bullseye]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie bullseye)

# Packages a systemd test host needs before Ansible can manage it.
include=systemd,systemd-sysv,python3,python3-apt,dbus,iproute2,sudo,ca-certificates,procps,openssh-server,iputils-ping

image_tag() {
  case "$1" in
    bookworm) echo "localhost/hub-provision/debian:12" ;;
    bullseye) echo "localhost/hub-provision/debian:11" ;;
    trixie) echo "localhost/hub-provision/debian:13" ;;
    *) echo "unknown suite: $1 (use trixie, bookworm or bullseye)" >&2; return 1 ;;
  esac
}

# debootstrap mounts /proc (and may mount /sys) inside the root it builds and has been seen to
# leave /proc mounted when it finishes: unmount whatever is still mounted below the root, deepest
# first, so that neither tar nor rm -rf ever reaches into the machine's own filesystems.
release_mounts() {
  local mnt
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  done
}

# The image records the recipe it was built from: a changed recipe rebuilds a cached image.
recipe=$(sha256sum <"$0" | cut -c1-16)

for suite in "${suites[@]}"; do
  tag=$(image_tag "$suite")
  if [ "${FORCE:-0}" != 1 ] && podman image exists "$tag" && \
     [ "$(podman image inspect --format '{{ index .Config.Labels "hub.recipe" }}' "$tag")" = "$recipe" ]; then
    echo "image $tag is current, not rebuilding (FORCE=1 rebuilds)"
    continue
  fi
  rootfs=$(mktemp -d "/var/tmp/hub-rootfs-$suite.XXXXXX")
  trap 'release_mounts "$rootfs"; rm -rf --one-file-system "$rootfs"' EXIT
  echo "debootstrap $suite into $rootfs"
  # An older debootstrap (Ubuntu 22.04's, on the hosted runners) has no script for a newer
  # suite; Debian's newer suites are built like sid.
  script=()
  [ -e "/usr/share/debootstrap/scripts/$suite" ] || script=(/usr/share/debootstrap/scripts/sid)
  debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" "${script[@]}" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; exit 1; }
  release_mounts "$rootfs"
  # A container has no console getty and no need for the remount/udev units that fail in it.
  chroot "$rootfs" systemctl mask getty@tty1.service systemd-udevd.service \
    systemd-remount-fs.service dev-hugepages.mount sys-fs-fuse-connections.mount >/dev/null 2>&1 || true
  # The sources a real host has: the release, its point-release updates and the security archive
  # (without the last, unattended-upgrades has nothing to install).
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$security_mirror" "$suite" >"$rootfs/etc/apt/sources.list"
  # Keep apt's cache small and the machine-id empty so each container gets its own. dbus wrote
  # one of its own during debootstrap: systemd would copy it into every container (as Debian
  # does, the dbus file is a link to /etc/machine-id).
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  : >"$rootfs/etc/machine-id"
  ln -sfn /etc/machine-id "$rootfs/var/lib/dbus/machine-id"
  echo "import $tag"
  release_mounts "$rootfs"
  tar -C "$rootfs" --one-file-system -c . | podman import \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL hub.recipe=$recipe" - "$tag" >/dev/null
  rm -rf --one-file-system "$rootfs" "$rootfs.log"
  trap - EXIT
done
