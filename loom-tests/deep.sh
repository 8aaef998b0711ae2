#!/usr/bin/env bash
# The deep run: every loom model at preemption bound 3 or more (models that
# are exhaustive in CI stay exhaustive), one at a time, and a markdown table
# of executions and wall time per model on stdout, for loom-tests/README.md.
# CI does not run this: it takes hours. CI runs each model at the bound its
# test sets (README.md, "The models").
#
# Usage: loom-tests/deep.sh [nextest filter]   (from anywhere)
#   LOOM_DEEP_BOUND=4 loom-tests/deep.sh        deeper still
#   loom-tests/deep.sh 'binary(=wakeups)'       one file
set -uo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-../target/loom}"
export LOOM_DEEP_BOUND="${LOOM_DEEP_BOUND:-3}"
filter="${1:-all()}"

cargo build --release --tests --quiet || exit 2
mapfile -t models < <(cargo nextest list --release --message-format oneline -E "$filter" 2>/dev/null)
echo "Deep run: LOOM_DEEP_BOUND=$LOOM_DEEP_BOUND, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores"
echo
echo "| model | file | bound | executions | time | result |"
echo "|---|---|---|---|---|---|"
failed=0
for entry in "${models[@]}"; do
  bin=${entry#*::}; bin=${bin%% *}
  test=${entry##* }
  out=$(cargo nextest run --release --no-capture -E "binary(=$bin) & test(=$test)" 2>&1)
  rc=$?
  line=$(grep -E '^loom: [0-9]+ executions' <<<"$out" | tail -n 1)
  execs=$(sed -E 's/^loom: ([0-9]+) executions.*/\1/' <<<"$line")
  bound=$(sed -E 's/.*preemption bound (Some\(([0-9]+)\)|None).*/\2/' <<<"$line")
  secs=$(sed -E 's/.* in (.*)$/\1/' <<<"$line")
  [ -z "$bound" ] && bound=exhaustive
  if [ $rc -eq 0 ]; then result=pass; else result="FAIL (exit $rc)"; failed=$((failed + 1)); fi
  printf '| `%s` | %s.rs | %s | %s | %s | %s |\n' "$test" "$bin" "$bound" \
    "$(printf "%'d" "${execs:-0}" 2>/dev/null || echo "$execs")" "${secs:-?}" "$result"
done
[ $failed -eq 0 ]
