#!/usr/bin/env bash
# Bounded cargo-fuzz run of every target, for CI or by hand:
#   fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Inputs found
# while fuzzing go to a scratch copy of the corpus; the committed seeds in fuzz/corpus stay as
# they are. A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in snapshot_decode query_parse cursor_decode report_markers; do
  mkdir -p "$scratch/$target"
  cp corpus/"$target"/* "$scratch/$target/"
  echo "== $target: ${seconds}s"
  status=0
  cargo +nightly fuzz run "$target" "$scratch/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$scratch/$target.log" 2>&1 ||
    status=$?
  grep -E '^stat::number_of_executed_units|^stat::peak_rss|panicked|ERROR' "$scratch/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$scratch/$target.log"
    exit "$status"
  fi
done
