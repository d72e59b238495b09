#!/usr/bin/env bash
# Upgrade and rollback test of hub_app's releases (docs/upgrades.md), on one throwaway Debian 12
# host of its own (scripts/dev-target.sh). Test builds are copies of app/ in a temporary directory
# with a bumped version (and, for the failure cases, a deliberate fault):
#   1.0.0  app/ as it is                         -> converge, create an agent
#   1.0.1  serve() exits 1                        -> rolled back, 1.0.0 serves, play fails with the message
#   1.0.2  migration N+1 fine, N+2 broken         -> rolled back to the pre-upgrade database (schema N)
#   1.1.0  a compatible migration N+1             -> upgraded, agent kept, backup present;
#                                                    re-run and --check: changed=0; old releases pruned
#   1.0.0  again (schema N+1 > N)                 -> refused before anything is touched
# Every deploy has load-balancer hooks that record on the host when they ran.
#   scripts/upgrade-test.sh            UPGRADE_TEST_HOST=name to pick the host's name, KEEP=1 to keep it
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="$here/.venv/bin:$PATH" CONTAINERS_CONF="${CONTAINERS_CONF:-$here/images/containers.conf}"
export ANSIBLE_CONFIG="$here/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
host=${UPGRADE_TEST_HOST:-hub-upgrade-test}
image=${UPGRADE_TEST_IMAGE:-debian:12}
work=$(mktemp -d /tmp/upgrade-test.XXXXXX)
# Per-variant wheelhouse caches survive between runs (only the controller's build cache).
cache="$here/.cache/upgrade-test"
# shellcheck source=scripts/lib/host-test.sh
. scripts/lib/host-test.sh
# With the layout's configuration files, as the roles run it (hub_common's hub_config_args).
hive() { on_host runuser -u "$service_user" -- "$install_dir/multiagent-hive" --config "$config_dir/config.toml" --env-file "$config_dir/environment" "$@"; }

# One copy of app/ per test build: version bumped, fault applied by a small Python edit.
variant() {
  local version=$2 fault=$3 dir="$work/$1"
  mkdir -p "$dir"
  tar -C app --exclude=.venv --exclude=__pycache__ --exclude=build --exclude='*.egg-info' -cf - . | tar -C "$dir" -xf -
  python3 - "$dir" "$version" "$fault" <<'EOF'
import re, sys
from pathlib import Path
root, version, fault = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def edit(rel, pattern, repl):
    path = root / rel
    text, n = re.subn(pattern, repl, path.read_text(), count=1, flags=re.M)
    assert n == 1, (rel, pattern)
    path.write_text(text)
edit("pyproject.toml", r'^version = "[^"]+"', f'version = "{version}"')
edit("src/multiagent_hive/__init__.py", r'^__version__ = "[^"]+"', f'__version__ = "{version}"')
# The next schema versions after app/'s own.
top = max(int(n) for n in re.findall(r"^    \(\s*(\d+),", (root / "src/multiagent_hive/db.py").read_text(), flags=re.M))
good = f'    ({top + 1}, "agent labels", ["ALTER TABLE agents ADD COLUMN labels TEXT"]),\n'
broken = f'    ({top + 2}, "broken on purpose", ["ALTER TABLE no_such_table ADD COLUMN x TEXT"]),\n'
if fault in ("migration", "broken-migration"):
    extra = good + (broken if fault == "broken-migration" else "")
    edit("src/multiagent_hive/db.py", r'^\]\nSCHEMA_VERSION = ', extra + "]\nSCHEMA_VERSION = ")
if fault == "no-start":
    edit("src/multiagent_hive/server.py", r'^(def serve\(settings: Settings\) -> int:\n)',
         r'\1    LOG.error("test build %s refuses to start", "' + version + '")\n    return 1\n')
EOF
  echo "$dir"
}

deploy() { # deploy SOURCE_DIR LOG [extra ansible args]: the rolling-upgrade playbook with this build
  local src=$1 log=$2
  shift 2
  local key
  key=$(basename "$src")
  ansible-playbook -i "$inv" playbooks/upgrade.yml -e "hub_app_source_dir=$src" \
    -e "hub_app_wheelhouse_cache_dir=$cache/$key" -e hub_app_upgrade_health_timeout=20 \
    -e "hub_app_upgrade_lb_drain_tasks=$work/lb-drain.yml" -e "hub_app_upgrade_lb_restore_tasks=$work/lb-restore.yml" \
    "$@" >"$log" 2>&1
}
# A stand-in load balancer: the hooks append to a file on the host what they saw.
lb_hooks() {
  cat >"$work/lb-drain.yml" <<'EOF'
---
- name: Test balancer | take the host out
  ansible.builtin.shell: echo "drain $(readlink {{ hub_install_dir }}/current)" >> /run/upgrade-test-lb.log
  changed_when: true
EOF
  cat >"$work/lb-restore.yml" <<'EOF'
---
- name: Test balancer | put the host back once healthy
  ansible.builtin.shell: >-
    echo "restore $(readlink {{ hub_install_dir }}/current)
    $(curl -fsS http://127.0.0.1:{{ hub_http_port }}/api/health)" >> /run/upgrade-test-lb.log
  changed_when: true
EOF
}
# The last two hook calls were: drain while $1 ran, restore with $2 current and healthy.
lb_saw() {
  [ "$(on_host tail -n 2 /run/upgrade-test-lb.log | tr '\n' '|')" = "drain $1|restore $2 {\"status\":\"ok\"}|" ]
}

agent_exists() { agent_named upgrade-canary; }
version_is() { [ "$(hive --version)" = "multiagent-hive $1" ]; }
serves() { version_is "$1" && healthy; }
schema_is() { hive --schema-info | python3 -c "import json,sys; sys.exit(json.load(sys.stdin)['schema_version'] != $1)"; }
current_is() { [ "$(on_host readlink "$install_dir/current")" = "$1" ]; }
backups() { on_host sh -c "ls $backup_dir/hive_backup_*.db.gz 2>/dev/null | wc -l"; }

say "host $host ($image)"
inv=$(scripts/dev-target.sh up "$host" "$image")
mkdir -p "$cache"
lb_hooks
v100=$(variant v1.0.0 1.0.0 none)
v101=$(variant v1.0.1-no-start 1.0.1 no-start)
v102=$(variant v1.0.2-broken-migration 1.0.2 broken-migration)
v110=$(variant v1.1.0 1.1.0 migration)

say "converge 1.0.0 (base and app only)"
ansible-playbook -i "$inv" playbooks/site.yml --tags base,app -e "hub_app_source_dir=$v100" \
  -e "hub_app_wheelhouse_cache_dir=$cache/$(basename "$v100")" >"$work/00-converge.log" 2>&1 ||
  { tail -40 "$work/00-converge.log"; exit 1; }
check "1.0.0 serves" version_is 1.0.0
on_host curl -fsS -o /dev/null -H "Authorization: Bearer $(api_token)" -H 'Content-Type: application/json' \
  -d '{"name":"upgrade-canary","type":"worker","capabilities":[]}' "http://127.0.0.1:$http_port/api/agents"
check "an agent exists" agent_exists
release100=$(on_host readlink "$install_dir/current")
base=$(hive --schema-info | python3 -c 'import json,sys; print(json.load(sys.stdin)["schema_version"])')
echo "current -> $release100"
b0=$(backups)

say "1.0.1: a release that cannot start"
if deploy "$v101" "$work/01-no-start.log"; then
  echo "FAIL - the play succeeded"; failures=$((failures + 1))
fi
grep -o 'Upgrade of .*' "$work/01-no-start.log" | head -1 | cut -c1-600
check "the play failed with the rollback message" grep -qz 'FAILED at .*Rolled back: current ->' "$work/01-no-start.log"
check "current is 1.0.0 again" current_is "$release100"
check "1.0.0 serves and is healthy" serves 1.0.0
check "schema $base" schema_is "$base"
check "the agent is still there" agent_exists
check "a pre-upgrade backup was taken" test "$(backups)" -gt "$b0"
check "the balancer hooks drained, then restored once 1.0.0 was healthy again" lb_saw "$release100" "$release100"

say "1.0.2: a release whose migration fails"
b1=$(backups)
if deploy "$v102" "$work/02-broken-migration.log"; then
  echo "FAIL - the play succeeded"; failures=$((failures + 1))
fi
grep -o 'Upgrade of .*' "$work/02-broken-migration.log" | head -1 | cut -c1-600
check "the message says the database was restored" grep -q 'restored from the pre-upgrade backup' "$work/02-broken-migration.log"
check "current is 1.0.0 again" current_is "$release100"
check "schema back to $base" schema_is "$base"
check "1.0.0 serves and is healthy" serves 1.0.0
check "the agent is still there" agent_exists
check "a pre-upgrade backup was taken" test "$(backups)" -gt "$b1"

say "1.1.0: a good release with a compatible migration"
b2=$(backups)
deploy "$v110" "$work/03-upgrade.log" || { tail -40 "$work/03-upgrade.log"; failures=$((failures + 1)); }
check "1.1.0 serves" version_is 1.1.0
check "healthy" healthy
check "schema $((base + 1))" schema_is $((base + 1))
check "the agent is still there" agent_exists
check "a pre-upgrade backup was taken" test "$(backups)" -gt "$b2"
check "the balancer hooks drained 1.0.0, then restored with 1.1.0 healthy" \
  lb_saw "$release100" "$(on_host readlink "$install_dir/current")"
check "previous -> 1.0.0" sh -c "[ \"\$(podman exec $host readlink $install_dir/previous)\" = '$release100' ]"
check "at most 3 releases kept" test "$(on_host sh -c "ls -d $install_dir/releases/*/ | wc -l")" -le 3
deploy "$v110" "$work/04-rerun.log" || true
echo "re-run: $(recap "$work/04-rerun.log")"
check "re-run changes nothing" unchanged "$work/04-rerun.log"
deploy "$v110" "$work/05-check.log" --check --diff || true
echo "check:  $(recap "$work/05-check.log")"
check "--check --diff reports nothing" unchanged "$work/05-check.log"

say "1.0.0 again: a downgrade below the database's schema"
if deploy "$v100" "$work/06-downgrade.log"; then
  echo "FAIL - the play succeeded"; failures=$((failures + 1))
fi
check "refused with the reason" grep -q 'Refusing to deploy release .*newer than this release understands' "$work/06-downgrade.log"
check "1.1.0 still serves" serves 1.1.0

say "done: $failures failure(s), $((SECONDS - started)) s; logs in $work are removed (KEEP=1 keeps the host)"
if [ "$failures" -ne 0 ]; then
  for log in "$work"/*.log; do echo "--- $log"; grep -E 'fatal|FAILED|msg:' "$log" | head -20; done
  exit 1
fi
