#!/usr/bin/env bash
# Install what the project needs on a Debian or Ubuntu machine (root): podman with runc,
# debootstrap for the local images, and a venv with the pinned controller toolchain plus
# the hub app (editable, with its test extras). Re-running it changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# debian-archive-keyring: debootstrap checks Debian's archive with it (only recommended on Ubuntu).
# checkpolicy, semodule-utils: tests/platforms compiles hub_mac's SELinux module (checkmodule, semodule_package).
packages=(podman runc debootstrap debian-archive-keyring uidmap slirp4netns fuse-overlayfs make python3-venv
          apache2-utils openssl openssh-client curl ca-certificates ssh-audit checkpolicy semodule-utils)
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

# ansible 12 (ansible-core 2.19) needs Python 3.11 or later on the controller. sudo's secure_path
# hides a Python set up outside /usr/bin (e.g. actions/setup-python): name it in PYTHON then.
min_minor=11
python_ok() {  # the interpreter runs and is 3.<min_minor> or later
  "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, $min_minor) else 1)" 2>/dev/null
}
python=""
for candidate in ${PYTHON:+"$PYTHON"} python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
    python=$(command -v "$candidate"); break
  fi
done
if [ -z "$python" ]; then
  echo "bootstrap: need Python 3.$min_minor or later for ansible 12 (found $(python3 -V 2>&1 | head -n1)):" \
       "install python3.11 and python3.11-venv (Ubuntu 22.04), or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ -n "${PYTHON:-}" ] && [ "$python" != "$(command -v "$PYTHON" 2>/dev/null)" ]; then
  echo "bootstrap: PYTHON=$PYTHON is not Python 3.$min_minor or later; using $python" >&2
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt app/pyproject.toml app/constraints.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
# A venv made by an older Python (before this check existed) cannot run ansible: rebuild it.
if [ -x .venv/bin/python ] && ! python_ok .venv/bin/python; then
  echo "bootstrap: .venv runs $(.venv/bin/python -V 2>&1), older than 3.$min_minor: rebuilding it"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating the controller venv (.venv) with $python ($("$python" -V 2>&1))"
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # The app (with the targets' exact pins) first, then the controller's tools: constraints.txt
  # pins click for the targets' uvicorn, older than check-jsonschema needs on the controller.
  if [ -f app/pyproject.toml ]; then
    .venv/bin/pip install -q -c app/constraints.txt -e './app[test]'
  fi
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" >"$stamp"
fi
echo "bootstrap: ok ($(.venv/bin/ansible --version 2>/dev/null | sed -n 1p))"
