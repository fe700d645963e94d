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
# The baseline builds in this checkout's target directory (sharing its compiled dependencies),
# then steps aside for this commit's binary.
base=target/lifecycle-baseline
if [ ! -x "$base.bin" ]; then
  git worktree remove --force "$base" 2>/dev/null || true
  git worktree add --detach "$base" 865a225
  cargo build --release --bin gitops-status-server --manifest-path "$base/Cargo.toml" \
    --target-dir target
  cp target/release/gitops-status-server "$base.bin"
  git worktree remove --force "$base"
fi
cargo build --release --bin gitops-status-server --example seed_history
exec python3 bench/lifecycle.py --baseline "$base.bin" "$@"
