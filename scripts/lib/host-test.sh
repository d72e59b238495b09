# shellcheck shell=bash
# What the throwaway-host test scripts share (upgrade-test.sh, rebuilt-host.sh,
# upgrade-distribution.sh): step and check reporting, commands on the host, playbook runs and
# their recap. Sourced after the script has set `host` (the container and inventory name) and
# `work` (a temporary directory for the logs); `inv` is set once the host is up.
#   KEEP=1 keeps the host and the logs.
: "${host:?set host before sourcing host-test.sh}" "${work:?set work before sourcing host-test.sh}"
inv=${inv:-}
started=$SECONDS
# The service layout these throwaway hosts run: hub_common's defaults.
# shellcheck source=scripts/lib/layout.sh
. scripts/lib/layout.sh
install_dir=$(layout hub_install_dir)
service_user=$(layout hub_service_user)
service_name=$(layout hub_service_name)
config_dir=$(layout hub_config_dir)
backup_dir=$(layout hub_backup_dir)
http_port=$(layout hub_http_port)
admin_password_file=$(layout hub_admin_password_file)
failures=0

host_test_cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    scripts/dev-target.sh down "$host"
    rm -rf "$work"
  else
    echo "kept: host $host, logs in $work"
  fi
}
trap host_test_cleanup EXIT

say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started)); }
check() { # check WHAT COMMAND...: one ok/FAIL line; a failure is counted, the script goes on
  local what=$1
  shift
  if "$@"; then echo "ok   - $what"; else echo "FAIL - $what"; failures=$((failures + 1)); fi
}
on_host() { podman exec "$host" "$@"; }
# A playbook log's recap for the host, read by the one parser (scripts/recap.py, hubtools): its
# summary line ("HOST: changed=N failed=N unreachable=N"), and whether the run changed nothing.
recap() { scripts/recap.py "$1" --host "$host" | grep -v '^    ' || true; }
unchanged() { scripts/recap.py "$1" --host "$host" --expect-unchanged >/dev/null; }
healthy() { on_host curl -fsS -o /dev/null "http://127.0.0.1:$http_port/api/health"; }
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
host_python() { on_host /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
release_python() { on_host "$install_dir/current/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
converge() { # converge LOG [args]: site.yml on the host, timed
  local log=$1 t0=$SECONDS rc=0
  shift
  ansible-playbook -i "$inv" playbooks/site.yml "$@" >"$log" 2>&1 || rc=$?
  echo "$(basename "$log" .log): $((SECONDS - t0)) s, $(recap "$log")"
  return "$rc"
}
# The admin's token, from the saved password, through the app's own port (never printed).
api_token() {
  local pw
  pw=$(on_host cat "$admin_password_file")
  on_host curl -fsS -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$pw\"}" "http://127.0.0.1:$http_port/api/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
# agent_named NAME: the hub lists an agent of that name.
agent_named() {
  on_host curl -fsS -H "Authorization: Bearer $(api_token)" "http://127.0.0.1:$http_port/api/agents" | grep -q "\"$1\""
}
