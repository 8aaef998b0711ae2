#!/usr/bin/env bash
# Re-prove the loom suite's power: every deliberately broken variant of a
# protocol (a "mutant", selected at run time through RCU_LOOM_MUTANT and
# compiled only into loom builds) must make the model that guards it fail,
# and fail for the expected reason. Exits non-zero if any mutant survives.
#
# Usage: loom-tests/mutants.sh   (from anywhere; builds with --cfg loom)
set -uo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-../target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"

# mutant | model (binary::test) | text the failure must contain
MUTANTS=(
  "no_reader_fence|read_side::publish_retire|after it was freed"
  "no_wake|read_side::publish_retire|deadlock"
  "register_skipped|read_side::reader_registers_and_exits_during_gp|after it was freed"
  "single_wait|read_side::publish_retire_two_rounds|after it was freed"
  "scan_ignores_nested|read_side::nested_readers|after it was freed"
  "no_batching|grace_period::concurrent_synchronize_share_gp|share a grace period"
  "poll_early|grace_period::poll_never_early|after it was freed"
  "engine_no_notify|grace_period::start_poll_completes|maximum number of branches"
  "shutdown_no_notify|grace_period::domain_drop_joins_engine|deadlock"
  "gp_sleep_after_scan|callbacks::enqueue_races_gp_worker_sleep|deadlock"
  "enqueue_no_wake|callbacks::enqueue_races_gp_worker_sleep|deadlock"
  "await_unlocked|callbacks::advance_races_gp_completion|deadlock"
  "gp_done_no_notify|callbacks::advance_races_gp_completion|deadlock"
  "advance_early|callbacks::rcu_cell_replace_and_read|dropped under a reader"
  "cb_sleep_after_drain|callbacks::cb_worker_drains_while_enqueuing|deadlock"
  "cb_len_early|callbacks::barrier_races_enqueue_and_invocation|Causality violation"
  "shutdown_no_drain|callbacks::shutdown_runs_pending_callbacks|callbacks lost at shutdown"
  "engine_skips_done_request|callbacks::gp_completed_by_synchronize|deadlock"
  "timer_keeps_level|wakeups::seed_timer_cancel_keeps_level|deadlock"
  "timer_keeps_level|wakeups::seed_timer_cancel_keeps_level_inline_gp|deadlock"
  "direct_wake_keeps_level|wakeups::kernel_twin_direct_wake_keeps_level|deadlock"
  "gp_clear_after_scan|wakeups::deferred_wake_races_direct_wake_gp_wakeup_and_timer|deadlock"
  "lazy_downgrades|wakeups::lazy_never_downgrades_pending_wake|deadlock"
  "bypass_no_defer|bypass::bypass_flush_races_enqueue|deadlock"
  "gp_trylock_fail_no_defer|bypass::bypass_flush_races_enqueue|deadlock"
  "barrier_skips_bypass|bypass::barrier_entrain_races_bypass_flush|barrier() returned before"
  "lazy_no_promote|bypass::lazy_promotion|instead of promoting"
  "throttle_no_fence|bypass::throttle_blocks_until_low_water|deadlock"
  "enqueue_leaves_wake_to_timer|wakeups::rate_limited_wake_runs_within_its_tick|deadlock"
  "enqueue_flush_no_wake|bypass::lazy_promotion|deadlock"
  "barrier_flush_no_wake|bypass::barrier_entrain_races_bypass_flush|deadlock"
  "barrier_len_unlocked|callbacks::barrier_races_enqueue_and_invocation|Causality violation"
  "scan_leaves_no_timer|bypass::scan_rearms_for_every_shard|deadlock"
  "scan_rearms_last_shard|bypass::scan_rearms_for_every_shard|deadlock"
  "raise_keeps_later_deadline|wakeups::wake_deferral_moves_a_lazy_timer_earlier|deadlock"
  "bypass_keeps_lazy_deadline|bypass::bypass_takes_over_a_lazy_deadline|deadlock"
  "timer_not_notified|wakeups::seed_timer_cancel_keeps_level|deadlock"
  "expedite_skips_lazy|bypass::throttled_producer_flushes_lazy_bypasses|deadlock"
  "force_no_flush_all|bypass::pressure_in_reader_flushes_lazy_bypasses|deadlock"
  "wake_drops_flush_all|bypass::pressure_in_reader_flushes_lazy_bypasses|deadlock"
  "deferred_deadline_late|wakeups::deferred_wake_races_direct_wake_gp_wakeup_and_timer|after the deadline"
  "deferred_deadline_late|wakeups::rate_limited_wake_runs_within_its_tick|after the deadline"
  "deferred_deadline_late|wakeups::seed_timer_cancel_keeps_level|after the deadline"
  "feed_no_recheck|feeds::feed_publish_races_scan_close|deadlock"
  "feed_close_no_fence|feeds::feed_publish_races_scan_close|deadlock"
  "feed_reopen_no_promise|feeds::feed_reopen_promises_a_scan|deadlock"
  "barrier_skips_feeds|feeds::barrier_takes_staged_callbacks|Causality violation"
  "waiter_no_recheck|async_waits::waker_registers_while_gp_completes|deadlock"
  "waiter_no_fence|async_waits::waker_registers_while_gp_completes|deadlock"
  "waiter_no_fence|async_waits::waker_replaced_between_polls|deadlock"
  "waiter_keeps_old_waker|async_waits::waker_replaced_between_polls|deadlock"
  "barrier_async_no_wake|async_waits::barrier_async_wakes_after_callbacks|deadlock"
  "cas_unlocked|cell::compare_exchange_races_update_and_reader|dropped under an update"
  "stall_report_under_wake_lock|stall::stall_report_races_reader_exit|maximum number of branches"
)

# Mutants of protocols that loom cannot model faithfully, killed by a
# shuttle test (../shuttle-tests/tests): same columns.
SHUTTLE_MUTANTS=(
  "fork_prepare_blocking|fork_prepare::fork_prepare_races_shutdown|deadlock"
)

cargo build --release --tests --quiet || exit 2
survivors=0

# run_model BIN TEST: the loom model, with the environment's mutant.
run_model() {
  cargo nextest run --release --no-fail-fast -E "binary(=$1) & test(=$2)" 2>&1
}

# run_shuttle BIN TEST: the shuttle test, with the environment's mutant.
run_shuttle() {
  (cd ../shuttle-tests && RUSTFLAGS="--cfg shuttle" \
    CARGO_TARGET_DIR="${SHUTTLE_TARGET_DIR:-../target/shuttle}" \
    cargo test -p rcu-offload-shuttle-tests --release --test "$1" -- --exact "$2" 2>&1)
}

# check RUNNER ROW: the row's mutant must make its model fail with the
# row's text.
check() {
  local runner=$1 mutant model expect out rc start ms secs
  IFS='|' read -r mutant model expect <<<"$2"
  start=$(date +%s%N)
  out=$(RCU_LOOM_MUTANT=$mutant "$runner" "${model%%::*}" "${model#*::}")
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  secs="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
  if [ $rc -ne 0 ] && grep -qF -- "$expect" <<<"$out"; then
    echo "killed   $mutant by $model (${secs}s): \"$expect\""
  else
    echo "SURVIVED $mutant: $model exit $rc, expected failure containing \"$expect\""
    tail -n 30 <<<"$out"
    survivors=$((survivors + 1))
  fi
}

for entry in "${MUTANTS[@]}"; do check run_model "$entry"; done
for entry in "${SHUTTLE_MUTANTS[@]}"; do check run_shuttle "$entry"; done
total=$(( ${#MUTANTS[@]} + ${#SHUTTLE_MUTANTS[@]} ))
echo "mutants: $(( total - survivors )) killed, $survivors survived"
[ $survivors -eq 0 ]
