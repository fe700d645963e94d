#!/usr/bin/env bash
# The benchmark harness, one command from a fresh clone: installs wrk and Prometheus Pushgateway
# from Debian when missing, builds the release binary and the history seeder, then measures both
# systems side by side (bench/run.py). Results: stdout, target/bench/results.{json,md}.
# Options go to run.py, e.g. `bench/run.sh --quick` for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --bin gitops-status-server --example seed_history
exec python3 bench/run.py "$@"
