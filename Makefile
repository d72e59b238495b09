# hub-provision: one command to deploy to the built-in local target, one to run all the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/images/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
INVENTORY ?= inventories/local
SCENARIO ?= default

.PHONY: help bootstrap images deploy destroy test lint unit molecule verify scan drift operator-path bench upgrade-test distribution-tests

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap: ## install podman, runc, debootstrap and the controller venv (.venv)
	@scripts/bootstrap.sh

# The images a run needs: Debian 12 + 13 (default scenario, local target, upgrade and
# distribution tests), Debian 11 for its own scenario.
IMAGE_SUITES = $(if $(filter debian11,$(SCENARIO)),bullseye,bookworm trixie)
images: bootstrap ## build the local systemd images the run needs (kept when current)
	@scripts/build-images.sh $(IMAGE_SUITES)

deploy: bootstrap ## deploy the hub to the built-in local container (re-run: corrects drift)
	@scripts/local-target.sh up

destroy: ## remove the local container
	@scripts/local-target.sh down

test: lint unit molecule operator-path upgrade-test ## everything CI runs: lint, unit, Molecule, the operator path over SSH, app upgrades and rollbacks

# Scripts without an extension, by their shebang. The roles' shell templates are Jinja: lint runs
# the tests/platforms tests that shellcheck them as rendered per platform (and the roles' files/).
PY_SCRIPTS = $(shell find scripts roles/*/files -maxdepth 1 -type f ! -name '*.py' -exec awk 'FNR == 1 && /^\#!.*python/ {print FILENAME}' {} + | sort)
SH_SCRIPTS = $(shell find scripts .ci/run -maxdepth 1 -type f -exec awk 'FNR == 1 && /^\#!.*[\/ ](ba)?sh$$/ {print FILENAME}' {} + | sort)
ROLE_SHELLCHECK = tests/platforms/test_platforms.py::test_shell_templates_pass_shellcheck_as_rendered \
	tests/platforms/test_platforms.py::test_role_shell_files_pass_shellcheck

lint: bootstrap ## yamllint, ansible-lint (production profile), the workflow (schema, zizmor), ruff, mypy --strict, shellcheck (scripts, the roles' shell templates)
	yamllint .
	ansible-lint
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	zizmor --offline --min-severity medium .github/workflows
	ruff check app checklist hubtools bench scripts tests roles plugins molecule/shared/tests $(PY_SCRIPTS)
	cd app && mypy src
	mypy
	shellcheck -x $(SH_SCRIPTS)
	pytest -q -p no:cacheprovider $(ROLE_SHELLCHECK)

unit: bootstrap ## the hub app's tests, the checklist catalog's, hubtools' (the Ansible log parser) and tests/
	pytest -q -p no:cacheprovider app/tests checklist/tests hubtools/tests tests

# Only the scenarios on the local images build them (registry pulls its images).
molecule: $(if $(filter registry,$(SCENARIO)),bootstrap,images) ## the Molecule scenario SCENARIO (default: the local Debian images) end to end
	scripts/molecule-sequence.sh $(SCENARIO)

verify: bootstrap ## verification suite + compliance report against INVENTORY
	scripts/verify.sh $(INVENTORY)

scan: bootstrap ## OpenSCAP (ANSSI-BP-028) on INVENTORY: scanner installed for the scan only, report reports/compliance-NAME-scap.*
	scripts/scan.sh $(INVENTORY)

drift: bootstrap ## what differs from the playbook on INVENTORY (check mode, summary per host)
	scripts/drift.sh $(INVENTORY)

# make exits 2 whatever a recipe exits with: scripts/verify.sh and scripts/drift.sh give their own
# status (verify 2 = a host unreachable, drift 3 = drift), shown by make as "Error N".
operator-path: bootstrap ## over SSH on the local target: deploy, verify twice, every drift at once, repair, verify
	scripts/operator-path.sh

upgrade-test: images ## releases: upgrade with data kept, rollback of a release that cannot start or migrate, downgrade refused (one Debian 12 host)
	scripts/upgrade-test.sh

distribution-tests: images ## a host rebuilt as Debian 13 under its old name, and a Debian 12 host upgraded to 13 in place, re-converge
	scripts/rebuilt-host.sh
	scripts/upgrade-distribution.sh

bench: bootstrap ## the app load benchmark (figures, not a test); bench/README.md lists the others
	python bench/app_load.py
