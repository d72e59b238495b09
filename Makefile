# hub-provision: one command to deploy to the built-in local target, one to run all the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/images/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
INVENTORY ?= inventories/local
# The vault for every target that reads INVENTORY (deploy, verify, drift), as ansible-playbook
# takes it: VAULT='--vault-password-file FILE', '--vault-id LABEL@SOURCE' or '--ask-vault-pass'
# (ANSIBLE_VAULT_PASSWORD_FILE or ANSIBLE_VAULT_IDENTITY_LIST in the environment work too).
VAULT ?=
# More ansible-playbook options for deploy and drift, e.g. ANSIBLE_ARGS='--limit HOST'.
ANSIBLE_ARGS ?=
SCENARIO ?= default

.PHONY: help bootstrap images deploy destroy test lint unit platform-check molecule verify drift operator-path bench upgrade-test distribution-tests collection fleet-test scan

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap: ## install podman, runc, debootstrap and the controller venv (.venv)
	@scripts/bootstrap.sh

# The images a run needs: Debian 12 + 13 (default scenario, local target, upgrade and
# distribution tests), Debian 11 for its own scenario.
IMAGE_SUITES = $(if $(filter debian11,$(SCENARIO)),bullseye,bookworm trixie)
images: bootstrap ## build the local systemd images the run needs (kept when current)
	@scripts/build-images.sh $(IMAGE_SUITES)

deploy: bootstrap ## deploy the hub to INVENTORY's hosts (default: the built-in local container); re-run: corrects drift
	@scripts/deploy.sh $(INVENTORY) $(VAULT) $(ANSIBLE_ARGS)

destroy: ## remove the local container
	@scripts/local-target.sh down

test: lint unit platform-check molecule operator-path upgrade-test ## everything CI runs: lint, unit, the platform check, Molecule (with the OpenSCAP scan), the operator path over SSH, app upgrades and rollbacks

# Scripts without an extension, by their shebang. The roles' shell templates are Jinja: lint runs
# the tests/platforms tests that shellcheck them as rendered per platform (and the roles' files/).
PY_SCRIPTS = $(shell find scripts roles/*/files -maxdepth 1 -type f ! -name '*.py' -exec awk 'FNR == 1 && /^\#!.*python/ {print FILENAME}' {} + | sort)
SH_SCRIPTS = $(shell find scripts .ci/run -maxdepth 1 -type f -exec awk 'FNR == 1 && /^\#!.*[\/ ](ba)?sh$$/ {print FILENAME}' {} + | sort)
# A test that fails and then passes on a retry is a failure (hubtools/pytest_reruns.py): no retry
# hides a race. python -m puts the repository root on sys.path for the plugin.
PYTEST = python -m pytest -q -p no:cacheprovider -p hubtools.pytest_reruns
ROLE_SHELLCHECK = tests/platforms/test_platforms.py::test_shell_templates_pass_shellcheck_as_rendered \
	tests/platforms/test_platforms.py::test_role_shell_files_pass_shellcheck

lint: bootstrap ## yamllint, ansible-lint (production profile), the workflow (schema, zizmor), ruff, mypy --strict, shellcheck (scripts, the roles' shell templates), ansible-test sanity and galaxy-importer on the collection
	yamllint .
	ansible-lint
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	zizmor --offline --min-severity medium .github/workflows
	ruff check app checklist hubtools bench scripts tests roles plugins molecule/shared/tests $(PY_SCRIPTS)
	cd app && mypy src
	mypy
	shellcheck -x $(SH_SCRIPTS)
	$(PYTEST) $(ROLE_SHELLCHECK)
	scripts/collection-checks.sh

collection: bootstrap ## the collection tarball Galaxy receives, from what git tracks (dist/)
	@scripts/build-collection.sh

unit: bootstrap ## the hub app's tests, the checklist catalog's, hubtools' (the Ansible log parser) and tests/
	$(PYTEST) app/tests checklist/tests hubtools/tests tests --ignore=tests/platform_tools

# Root: Debian's binaries of the target versions run chrooted (tests/platform_tools/tools.py).
platform-check: bootstrap ## every platform's rendered configs checked by the target versions' own sshd, nginx, fail2ban, systemd-analyze, apparmor_parser, and RHEL's crypto policy
	$(PYTEST) -rs tests/platform_tools

# Only the scenarios on the local images build them (registry pulls its images).
molecule: $(if $(filter registry,$(SCENARIO)),bootstrap,images) ## the Molecule scenario SCENARIO (default: the local Debian images) end to end
	scripts/molecule-sequence.sh $(SCENARIO)

verify: bootstrap ## verification suite + compliance report against INVENTORY
	scripts/verify.sh $(INVENTORY) $(VAULT)

scan: bootstrap ## OpenSCAP (ANSSI-BP-028) on INVENTORY: scanner installed for the scan only, report reports/compliance-NAME-scap.*
	scripts/scan.sh $(INVENTORY) $(VAULT) $(ANSIBLE_ARGS)

drift: bootstrap ## what differs from the playbook on INVENTORY (check mode, summary per host)
	scripts/drift.sh $(INVENTORY) $(VAULT) $(ANSIBLE_ARGS)

# make exits 2 whatever a recipe exits with: scripts/deploy.sh, scripts/verify.sh and
# scripts/drift.sh give their own status (docs/operators.md, "Exit statuses"), shown by make as "Error N".
operator-path: bootstrap ## over SSH on the local target: deploy, verify twice, every drift at once, repair, verify
	scripts/operator-path.sh

upgrade-test: images ## releases: upgrade with data kept, rollback of a release that cannot start or migrate, downgrade refused (one Debian 12 host)
	scripts/upgrade-test.sh

fleet-test: images ## the fleet path on two hosts of its own (hub-fleet-1/-2) with an encrypted vault: deploy, verify, drift, layout changes in check mode, emergency playbooks refused fleet-wide then run with --limit
	scripts/fleet-test.sh

distribution-tests: images ## a host rebuilt as Debian 13 under its old name, and a Debian 12 host upgraded to 13 in place, re-converge
	scripts/rebuilt-host.sh
	scripts/upgrade-distribution.sh

bench: bootstrap ## the app load benchmark (figures, not a test); bench/README.md lists the others
	python bench/app_load.py
