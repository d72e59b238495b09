# shellcheck shell=bash
# The service layout as the scripts see it: roles/hub_common/defaults/main.yml, the one place it
# is defined. Sourced from the repository's root.
#   layout NAME   prints the default of one layout variable (hub_install_dir, hub_http_port, ...)
layout() {
  python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])' \
    roles/hub_common/defaults/main.yml "$1"
}
