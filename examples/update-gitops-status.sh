#!/bin/sh
# Kept for pipelines that still call the seed's script: `gitops-status-server report` does the work
# (runs the drift check, parses its markers, POSTs one snapshot per host) and prints the same four
# steps. Arguments are passed on to ansible-playbook, e.g. `-i inventory.ini -e managed_root=/etc`.
#
# Environment, as in the seed: GITOPS_STATUS_SERVER_URL, REPO_NAME, SERVER_NAME. Optional:
# DRIFT_CHECK_PLAYBOOK (default ansible/playbooks/drift-check.yml), GITOPS_STATUS_TOKEN, and every
# other GITOPS_STATUS_* setting listed by `gitops-status-server report --help`.
set -eu

: "${GITOPS_STATUS_SERVER_URL:?set GITOPS_STATUS_SERVER_URL to the server, e.g. http://gitops-status-server:80}"
: "${REPO_NAME:?set REPO_NAME to the repository name, e.g. rsyslog}"

exec gitops-status-server report -- \
  ansible-playbook "${DRIFT_CHECK_PLAYBOOK:-ansible/playbooks/drift-check.yml}" "$@"
