#!/usr/bin/env bash
# Build the hub.provision collection tarball from what git tracks, never from what lies around
# in the checkout (caches of mypy, pytest, hypothesis, schemathesis, a `pip install ./app`'s
# build/ and egg-info, reports, venvs). The tracked files are taken as they are in the working
# tree now (uncommitted edits included, untracked files never), then ansible-galaxy drops what
# galaxy.yml's build_ignore leaves out on purpose.
#   usage: scripts/build-collection.sh [OUTPUT_DIR]     (default: dist/; prints the tarball's path)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$here/dist}")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# `git stash create` records the working tree's tracked files as a commit without touching the
# checkout, its index or the stash list; it prints nothing when nothing differs from HEAD. It
# fails on stale stat information in the index (files touched, not changed): refresh that first.
git -C "$here" update-index -q --refresh >/dev/null || true
tree=$(git -C "$here" stash create)
git -C "$here" archive --format=tar "${tree:-HEAD}" | tar -x -C "$stage"
mkdir -p "$out"
ansible-galaxy collection build --force --output-path "$out" "$stage" >/dev/null
version=$(awk '$1 == "version:" {print $2}' "$stage/galaxy.yml")
echo "$out/hub-provision-$version.tar.gz"
