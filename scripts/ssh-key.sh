#!/usr/bin/env bash
# The controller's key for the project's own test hosts (Molecule and the local target).
# Ansible reaches them over SSH with pipelining: the podman connection cannot pipeline and
# costs several `podman exec` calls per task. Prints the private key's path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
key="$here/.cache/ssh/id_ed25519"
if [ ! -f "$key" ]; then
  install -d -m 700 "$(dirname "$key")"
  ssh-keygen -q -t ed25519 -N '' -C hub-provision-test-hosts -f "$key"
fi
echo "$key"
