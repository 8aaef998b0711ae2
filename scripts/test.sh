#!/usr/bin/env bash
# The project's test command (README, "Two commands"; CI runs exactly this).
#   1. unit, integration and doc tests of the workspace;
#   2. the loom suite under cargo-nextest, --release, explicit preemption bound;
#   3. the mutant run: every deliberately broken protocol variant must fail
#      its model (re-proves the suite's power on every change);
#   4. the shuttle suite: the whole pipeline at a size loom cannot reach,
#      under random and PCT schedules.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found: installing it (one-time)"
  cargo install cargo-nextest --locked
fi

echo "== cargo test --workspace"
cargo test --workspace

# Bounded models use this bound; models marked Exhaustive ignore it.
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
echo "== loom suite (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
# Two models at a time (one per core): `--no-capture` would run them one
# at a time; `--success-output immediate` still prints each model's
# "loom: N executions, preemption bound B, in T" line. Only a passing
# test's boilerplate is dropped: a failure's output stays whole.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo nextest run -p rcu-offload-loom-tests --release \
  --success-output immediate --failure-output immediate 2>&1 \
  | grep -vE '^\s*$|^\s*(stdout|stderr) ─|^\s*running 1 test$|^\s*test [a-z0-9_]+ \.\.\. ok$|^\s*test result: ok\.'

echo "== loom mutants"
# Absolute: mutants.sh works from loom-tests/, where a relative path would
# point at a second, separate loom build.
CARGO_TARGET_DIR="$PWD/target/loom" loom-tests/mutants.sh

echo "== shuttle suite"
RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
  cargo test -p rcu-offload-shuttle-tests --release
