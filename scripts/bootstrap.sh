#!/usr/bin/env bash
# Install what the project needs on a Debian or Ubuntu machine (root): podman with runc,
# debootstrap for the local images, and a venv with the pinned controller toolchain plus
# the hub app (editable, with its test extras). Re-running it changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs make python3-venv
          apache2-utils openssl openssh-client curl ca-certificates)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "bootstrap: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt app/pyproject.toml app/constraints.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating the controller venv (.venv)"
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  if [ -f app/pyproject.toml ]; then
    .venv/bin/pip install -q -c app/constraints.txt -e './app[test]'
  fi
  echo "$want" >"$stamp"
fi
echo "bootstrap: ok ($(.venv/bin/ansible --version | head -n1))"
