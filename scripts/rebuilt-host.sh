#!/usr/bin/env bash
# A host rebuilt under the same inventory name (issue 17, docs/upgrades-and-reimaging.md): a
# converged Debian 12 host is destroyed and a Debian 13 host takes its name; site.yml is re-run
# at once, well within the fact cache's lifetime (ansible.cfg: one hour), and must converge on
# the new host's own facts. Then the re-run must change nothing and skip the full fact gather.
#   scripts/rebuilt-host.sh     REBUILT_HOST=name (default hub-rebuilt-test), FROM=debian:12,
#                               TO=debian:13, KEEP=1 keeps the host and the logs
# Without the fact check in site.yml (playbooks/tasks/fresh-facts.yml) the second converge
# fails: it ships the Debian 12 host's Python 3.11 wheelhouse to Python 3.13.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH" CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
host=${REBUILT_HOST:-hub-rebuilt-test}
from=${FROM:-debian:12}
to=${TO:-debian:13}
work=$(mktemp -d /tmp/rebuilt-host.XXXXXX)
started=$SECONDS
failures=0

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    scripts/dev-target.sh down "$host"
    rm -rf "$work"
  else
    echo "kept: host $host, logs in $work"
  fi
}
trap cleanup EXIT

say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started)); }
check() {
  local what=$1
  shift
  if "$@"; then echo "ok   - $what"; else echo "FAIL - $what"; failures=$((failures + 1)); fi
}
on_host() { podman exec "$host" "$@"; }
recap() { grep -A1 'PLAY RECAP' "$1" | tail -1; }
# The result line of the full fact gather in a playbook log: "ok" (it ran) or "skipping".
full_gather() { grep -A2 '^TASK \[Facts | Gather every fact' "$1" | grep -oE '^(ok|skipping|changed|fatal)' | head -1; }
# What the facts Ansible holds for the host say (the cache, as the last run left it), and what the
# host says: distribution major version, Python, machine id.
cached_identity() {
  ansible -i "$inv" "$host" -m ansible.builtin.debug 2>/dev/null \
    -a 'msg="{{ ansible_facts.distribution_major_version }} {{ ansible_facts.python_version }} {{ ansible_facts.machine_id }}"' |
    sed -n 's/^ *msg: //p'
}
host_identity() {
  # shellcheck disable=SC2016 # expanded by the host's shell
  on_host sh -c '. /etc/os-release; echo "${VERSION_ID%%.*} $(python3 -c "import platform; print(platform.python_version())") $(cat /etc/machine-id)"'
}
converge() { # converge LOG [args]: site.yml on the host, timed
  local log=$1 t0=$SECONDS rc=0
  shift
  ansible-playbook -i "$inv" playbooks/site.yml "$@" >"$log" 2>&1 || rc=$?
  echo "$(basename "$log" .log): $((SECONDS - t0)) s, $(recap "$log")"
  return "$rc"
}
healthy() { on_host curl -fsS -o /dev/null http://127.0.0.1:8080/api/health; }
release_python() { on_host /opt/ai-orchestrator/current/venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
host_python() { on_host /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

say "$host on $from: first converge"
inv=$(scripts/dev-target.sh up "$host" "$from")
converge "$work/1-converge-$from.log" || { tail -40 "$work/1-converge-$from.log"; exit 1; }
old_id=$(on_host cat /etc/machine-id)
old_python=$(host_python)

say "rebuilt as $to under the same name; the fact cache still holds the $from host's facts"
scripts/dev-target.sh down "$host"
inv=$(scripts/dev-target.sh up "$host" "$to")
check "the new host has another machine id" test "$(on_host cat /etc/machine-id)" != "$old_id"
check "and another Python ($old_python -> $(host_python))" test "$(host_python)" != "$old_python"

say "converge the rebuilt host"
if ! converge "$work/2-converge-$to.log"; then
  failures=$((failures + 1))
  echo "FAIL - the converge of the rebuilt host failed:"
  grep -E -A12 '^fatal' "$work/2-converge-$to.log" | head -40
fi
check "the run used the new host's facts ($(host_identity))" test "$(cached_identity)" = "$(host_identity)"
check "the full fact gather ran" test "$(full_gather "$work/2-converge-$to.log")" = ok
check "the app answers its health check" healthy
check "the app runs on the host's Python ($(host_python))" test "$(release_python 2>/dev/null)" = "$(host_python)"

say "re-run"
converge "$work/3-rerun.log" || failures=$((failures + 1))
check "the re-run changes nothing" grep -qE 'changed=0 .*failed=0' <(recap "$work/3-rerun.log")
check "the re-run trusts the cache (no full gather)" test "$(full_gather "$work/3-rerun.log")" = skipping

say "done: $failures failure(s), $((SECONDS - started)) s"
[ "$failures" -eq 0 ]
