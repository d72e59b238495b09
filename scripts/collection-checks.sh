#!/usr/bin/env bash
# What Galaxy and Automation Hub run on an uploaded collection, on the tarball this checkout
# builds (scripts/build-collection.sh): `ansible-test sanity` for every Python that ansible-core
# supports and that is installed here, then galaxy-importer. Run by `make lint`.
# Exit non-zero on any sanity error, and on any import error or warning.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# Outside the checkout (ansible-test lists a git repository's files through git, and .cache/ is
# ignored there), kept between runs (ansible-test's venvs), one per checkout.
work=${XDG_CACHE_HOME:-$HOME/.cache}/hub-provision/collection-checks/$(printf %s "$here" | sha256sum | cut -c1-12)
tarball=$(scripts/build-collection.sh "$work/dist")

# ansible-test needs the collection at ansible_collections/<namespace>/<name>/. Fresh content on
# every run; its own output (tests/output: the delegation venv) is kept to save its rebuild.
content=$work/ansible_collections/hub/provision
if [ -d "$content" ]; then
  find "$content" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
  find "$content/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
fi
mkdir -p "$content"
tar -xzf "$tarball" -C "$content"

# ansible-test keeps its per-test venvs (pinned requirements, pip-installed once from PyPI) and
# its pip bootstrap under ~/.ansible/test: a HOME of the checkout's own keeps them per checkout,
# out of the operator's home. The bootstrap is a script ansible-test downloads unless it finds
# ~/.ansible/test/cache/get_pip_<version>.py: this stand-in installs the pip that the
# interpreter bundles (ensurepip), with no network.
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
export HOME=$work/home
mkdir -p "$HOME/.ansible/test/cache"
versions=$(python3 - <<'PY'
from types import SimpleNamespace
from ansible_test._internal.constants import CONTROLLER_PYTHON_VERSIONS, SUPPORTED_PYTHON_VERSIONS
from ansible_test._internal.python_requirements import get_venv_packages
pips = {get_venv_packages(SimpleNamespace(version=v))["pip"] for v in SUPPORTED_PYTHON_VERSIONS}
print(" ".join(CONTROLLER_PYTHON_VERSIONS), "|", " ".join(SUPPORTED_PYTHON_VERSIONS), "|", " ".join(sorted(pips)))
PY
)
IFS='|' read -r controller_versions all_versions pip_versions <<<"$versions"
for pip in $pip_versions; do
  cat >"$HOME/.ansible/test/cache/get_pip_${pip//./_}.py" <<'PY'
"""Stand-in for get-pip.py (scripts/collection-checks.sh): the interpreter's own pip, offline."""
import ensurepip

ensurepip.bootstrap(upgrade=True)
PY
done

# An interpreter of version $1 that really is that version: on PATH, else pyenv's (whose shims
# answer only for the versions pyenv has selected).
find_python() {
  local v=$1 candidate
  for candidate in "$(command -v "python$v" || true)" \
                   "$(find "$pyenv_root/versions" -maxdepth 3 -path "*/versions/$v.*/bin/python$v" 2>/dev/null | sort -V | tail -n1)"; do
    if [ -n "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

# ansible-test also looks each version up on PATH by name: name the interpreters found there.
mkdir -p "$work/bin"
export PATH=$work/bin:$PATH
for v in $all_versions; do
  python=$(PATH=${PATH#"$work/bin:"} find_python "$v") && ln -sfn "$python" "$work/bin/python$v"
done

cd "$content"
ran=()
for v in $controller_versions; do
  python=$(find_python "$v") || { echo "collection-checks: Python $v not installed, skipped"; continue; }
  if [ ${#ran[@]} -eq 0 ]; then
    tests=()    # every test, once
  else
    tests=(--test compile --test import --test pylint)   # those whose outcome depends on the Python
  fi
  echo "collection-checks: ansible-test sanity on Python $v ($python)${tests[*]:+: ${tests[*]}}"
  ansible-test sanity --venv --python "$v" --python-interpreter "$python" --color no "${tests[@]}"
  ran+=("$v")
done
[ ${#ran[@]} -gt 0 ] || { echo "collection-checks: none of Python $controller_versions is installed" >&2; exit 1; }
# Target-only Pythons (ansible-core runs modules there, never the controller): ansible-test checks
# only modules and module_utils under them, which the collection does not have.
if compgen -G "plugins/modules/*" >/dev/null || compgen -G "plugins/module_utils/*" >/dev/null; then
  for v in $all_versions; do
    case " $controller_versions " in *" $v "*) continue ;; esac
    python=$(find_python "$v") || continue
    ansible-test sanity --venv --python "$v" --python-interpreter "$python" --color no --test compile --test import
    ran+=("$v")
  done
fi
echo "collection-checks: ansible-test sanity clean on Python ${ran[*]}"

# galaxy-importer as Galaxy runs it (ansible-lint, ansible-doc, the changelog and metadata
# checks); its ansible-test step needs a container image, and is the runs above.
cd "$work"
log=$work/galaxy-importer.log
python3 -m galaxy_importer.main "$tarball" >"$log" 2>&1 || { cat "$log"; echo "collection-checks: galaxy-importer failed" >&2; exit 1; }
# The one warning allowed: the importer names the ignore file, each of whose entries has its
# reason there (tests/sanity/ignore-2.19.txt).
entries=$(grep -c . "$content/tests/sanity/ignore-2.19.txt")
if grep -E '^(WARNING|ERROR)' "$log" | grep -v -x -F "WARNING: Ignore files skip ansible-test sanity tests, found ignore-2.19.txt with $entries statement(s)"; then
  echo "collection-checks: galaxy-importer reported the above ($log)" >&2
  exit 1
fi
echo "collection-checks: galaxy-importer: $(grep -c . "$log") lines, no warning or error ($log)"
