#!/usr/bin/env bash
# The benchmark harness, one command from a fresh clone: installs wrk, Prometheus Pushgateway and
# psql (to create and drop PostgreSQL databases) from Debian when missing, builds the release binary
# and the history seeder, then measures both systems side by side (bench/run.py). Results: stdout,
# target/bench/results.{json,md}. Options go to run.py, e.g. `bench/run.sh --quick` for a smoke run,
# `--postgres URL` for another PostgreSQL server, `--no-postgres` for SQLite only.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v psql >/dev/null || missing+=(postgresql-client)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --bin gitops-status-server --example seed_history
exec python3 bench/run.py "$@"
