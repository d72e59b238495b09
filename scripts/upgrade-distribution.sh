#!/usr/bin/env bash
# An in-place distribution upgrade of a converged host (issue 17, docs/upgrades-and-reimaging.md):
# Debian 12 converged, an agent created; then, as an operator would, the apt sources rewritten to
# trixie, `apt-get upgrade --without-new-pkgs` then `full-upgrade` (non-interactive; conffiles:
# see CONFFILES below), `autoremove`, a reboot (podman restart). site.yml is re-run at once,
# within the fact cache's lifetime. It must converge on Debian 13 with the agent and every secret
# kept and the app on the new Python; the run after it must change nothing, a --check --diff run
# too, and the verification suite must pass.
#   scripts/upgrade-distribution.sh    UPGRADE_HOST=name (default hub-dist-upgrade-test),
#                                      VERIFY=0 skips the verification suite, KEEP=1 keeps the host
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH" CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
host=${UPGRADE_HOST:-hub-dist-upgrade-test}
from_image=debian:12
from_suite=bookworm
to_suite=trixie
work=$(mktemp -d /tmp/upgrade-distribution.XXXXXX)
# shellcheck source=scripts/lib/host-test.sh
. scripts/lib/host-test.sh
# Fingerprints, never the values: the secrets in the environment file and the admin password.
secrets_digest() {
  on_host sh -c "grep -E '^(JWT_SECRET|DATABASE_ENCRYPTION_KEY|API_ENCRYPTION_KEY)=' $config_dir/environment | sort | sha256sum;
    sha256sum < $admin_password_file"
}
agent_exists() { agent_named dist-upgrade-canary; }

say "$host on $from_image: first converge, one agent"
inv=$(scripts/dev-target.sh up "$host" "$from_image")
converge "$work/1-converge.log" || { tail -40 "$work/1-converge.log"; exit 1; }
on_host curl -fsS -o /dev/null -H "Authorization: Bearer $(api_token)" -H 'Content-Type: application/json' \
  -d '{"name":"dist-upgrade-canary","type":"worker","capabilities":[]}' "http://127.0.0.1:$http_port/api/agents"
check "the agent exists before the upgrade" agent_exists
secrets_before=$(secrets_digest)
python_before=$(host_python)
release_before=$(on_host readlink "$install_dir/current")
echo "Python $python_before, current -> $release_before"

say "apt: $from_suite -> $to_suite"
# CONFFILES: --force-confdef takes the new release's version of every conffile nobody edited
# and --force-confold keeps every edited one (ucf-managed files the same, UCF_FORCE_CONFFOLD).
# The roles write their own files (drop-ins, jail.d/, sites-available/, cron.d, apt.conf.d) or
# edit packaged ones that the re-run writes again; keeping them means the host never runs
# between the upgrade and the re-run with a packaged default the roles had replaced (e.g. the
# nginx default site or a weaker sshd setting). The new release's versions land beside them as
# *.dpkg-dist / *.ucf-dist for the operator to review; the list is printed below.
t0=$SECONDS
on_host sh -euc "
  sed -i 's/\\b$from_suite\\b/$to_suite/g' /etc/apt/sources.list
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -e \"\$f\" ] && sed -i 's/\\b$from_suite\\b/$to_suite/g' \"\$f\"
  done
  export DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none UCF_FORCE_CONFFOLD=1
  opts='-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold'
  apt-get -q update
  apt-get \$opts upgrade --without-new-pkgs
  apt-get \$opts full-upgrade
  apt-get \$opts autoremove --purge
" >"$work/2-apt.log" 2>&1 || { tail -40 "$work/2-apt.log"; exit 1; }
echo "apt upgrade: $((SECONDS - t0)) s; $(grep -cE '^(Unpacking|Setting up) ' "$work/2-apt.log") unpack/setup steps"
echo "new package versions of edited conffiles, kept aside:"
on_host sh -c 'find /etc -name "*.dpkg-dist" -o -name "*.ucf-dist" -o -name "*.dpkg-new" | sort' | sed 's/^/  /'
check "the host runs $to_suite" on_host grep -q "VERSION_CODENAME=$to_suite" /etc/os-release

say "reboot"
t0=$SECONDS
podman restart "$host" >/dev/null
inv=$(scripts/dev-target.sh up "$host")
echo "booted in $((SECONDS - t0)) s: Python $(host_python) (was $python_before);" \
  "before the re-run the service is $(on_host systemctl is-active "$service_name" || true)," \
  "the current release $(on_host "$install_dir/current/venv/bin/python" -c 'import multiagent_hive' 2>/dev/null &&
    echo still imports the app || echo no longer imports the app \(its venv was made for Python "$python_before"\))"

say "re-run site.yml"
if ! converge "$work/3-converge.log"; then
  failures=$((failures + 1))
  echo "FAIL - the converge after the upgrade failed:"
  grep -E -A12 '^fatal' "$work/3-converge.log" | head -40
fi
check "the run used the upgraded host's facts ($(host_identity))" test "$(cached_identity)" = "$(host_identity)"
check "the full fact gather ran" test "$(full_gather "$work/3-converge.log")" = ok
check "the app runs on the host's Python ($(host_python))" test "$(release_python 2>/dev/null)" = "$(host_python)"
check "a new release is current ($(on_host readlink "$install_dir/current"))" \
  test "$(on_host readlink "$install_dir/current")" != "$release_before"
check "the app answers its health check" healthy
check "the agent is kept" agent_exists
check "every secret and the admin password are kept" test "$(secrets_digest)" = "$secrets_before"

say "idempotence and check mode"
converge "$work/4-rerun.log" || true
check "the re-run changes nothing" unchanged "$work/4-rerun.log"
check "the re-run trusts the cache (no full gather)" test "$(full_gather "$work/4-rerun.log")" = skipping
converge "$work/5-check.log" --check --diff || true
check "--check --diff reports nothing" unchanged "$work/5-check.log"

if [ "${VERIFY:-1}" = 1 ]; then
  say "verification suite"
  t0=$SECONDS
  rc=0
  scripts/verify.sh "$inv" >"$work/6-verify.log" 2>&1 || rc=$?
  grep -E '([0-9]+ (passed|failed)|^(PASS|FAIL)|^FAILED)' "$work/6-verify.log" | tail -n 12
  echo "verify: $((SECONDS - t0)) s"
  check "the verification suite passes" test "$rc" -eq 0
fi

say "done: $failures failure(s), $((SECONDS - started)) s"
[ "$failures" -eq 0 ]
