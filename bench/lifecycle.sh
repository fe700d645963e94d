#!/usr/bin/env bash
# The drift lifecycle's figures (bench/lifecycle.py): /api/episodes pages on a small and a 10M
# history, and ingest with the lifecycle against the same ingest without it. Builds this commit's
# release binary and seeder, and the baseline (865a225, the commit before the lifecycle) in a
# throw-away git worktree under target/. Installs wrk from Debian when missing. Options go to
# lifecycle.py, e.g. `bench/lifecycle.sh --big 1000000 --runs 3`, `--long` for long SYNCED runs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
cargo build --release --bin gitops-status-server --example seed_history
base=target/lifecycle-baseline
if [ ! -x "$base/target/release/gitops-status-server" ]; then
  git worktree remove --force "$base" 2>/dev/null || true
  git worktree add --detach "$base" 865a225
  cargo build --release --bin gitops-status-server --manifest-path "$base/Cargo.toml"
fi
exec python3 bench/lifecycle.py --baseline "$base/target/release/gitops-status-server" "$@"
