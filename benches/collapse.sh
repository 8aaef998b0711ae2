#!/usr/bin/env bash
# The "no collapse" check: does the sustained callback rate hold up when
# another process keeps a core busy?
#
# Runs the criterion group callbacks/sustained/free64/P=1 (4,194,304
# callbacks per iteration, one producer; see benches/callbacks.rs) for
# rcu-offload and liburcu's call_rcu with its default worker, RUNS times
# with the machine quiet and RUNS times with a busy-looping process
# (`sh -c 'while :; do :; done'`, started before the run and killed after
# it), quiet and busy runs interleaved so that drift on a shared machine
# hits both alike. Prints, per run and peer, the rate (criterion's median,
# in M callbacks/s) and the slowest sample's rate; then per condition and
# peer the median rate over runs, the slowest run and slowest/median (time
# ratio: 1.00 = no spread), the slowest sample over all runs against the
# median sample, and busy/quiet (median time ratio). A collapse shows as a
# slowest/median far above 1, or a busy/quiet far above 2 (the busy loop
# takes at most one of the 2 cores).
#
# Usage: benches/collapse.sh [cargo bench options, e.g. --features mimalloc]
# Environment: COLLAPSE_RUNS (default 5) runs per condition;
# COLLAPSE_PIN_BUSY=1 pins the busy loop to the last CPU (taskset);
# RCU_SUSTAINED_CALLBACKS scales the group down for a smoke run;
# CARGO_TARGET_DIR as for cargo. Takes about 20 s per run on the 2-core
# development machine (about 4 minutes for 5 + 5 runs, plus the build).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUNS=${COLLAPSE_RUNS:-5}
GROUP='callbacks/sustained/free64/P=1'
FILTER='^callbacks/sustained/free64/P=1/(rcu-offload|liburcu call_rcu default)$'
OUT="$TARGET/rcu-collapse"
BUSY_PID=

stop_busy() {
	if [ -n "$BUSY_PID" ]; then
		kill "$BUSY_PID" 2>/dev/null || true
		wait "$BUSY_PID" 2>/dev/null || true
		BUSY_PID=
	fi
}
trap stop_busy EXIT INT TERM

rm -rf "$OUT"
mkdir -p "$OUT"
cd "$ROOT"
echo "building the callbacks bench ($*)" >&2
cargo bench -p rcu-offload-benches --bench callbacks "$@" --no-run >&2

for i in $(seq 1 "$RUNS"); do
	for cond in quiet busy; do
		if [ "$cond" = busy ]; then
			if [ "${COLLAPSE_PIN_BUSY:-0}" = 1 ] && command -v taskset >/dev/null; then
				taskset -c "$(($(nproc) - 1))" sh -c 'while :; do :; done' &
			else
				sh -c 'while :; do :; done' &
			fi
			BUSY_PID=$!
		fi
		# Only this run's results count: criterion keeps one "new" per entry.
		rm -rf "$TARGET/criterion/callbacks_sustained_free64_P=1"
		echo "run $i/$RUNS, $cond: $GROUP" >&2
		cargo bench -p rcu-offload-benches --bench callbacks "$@" -- "$FILTER" \
			>"$OUT/run$i-$cond.log" 2>&1
		stop_busy
		python3 - "$TARGET/criterion" "$GROUP" "$i" "$cond" >>"$OUT/results.jsonl" <<'EOF'
import json, sys
from pathlib import Path

base, group, run, cond = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
for meta_path in Path(base).rglob("new/benchmark.json"):
    meta = json.loads(meta_path.read_text())
    if meta["group_id"] != group:
        continue
    elements = meta["throughput"]["Elements"]
    est = json.loads((meta_path.parent / "estimates.json").read_text())
    sample = json.loads((meta_path.parent / "sample.json").read_text())
    per_cb = [t / n / elements for t, n in zip(sample["times"], sample["iters"])]
    print(json.dumps({"run": run, "cond": cond, "entry": meta["function_id"],
                      "median_ns": est["median"]["point_estimate"] / elements,
                      "samples_ns": per_cb, "elements": elements}))
EOF
	done
done

python3 - "$OUT/results.jsonl" <<'EOF'
import json, statistics, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
if not rows:
    sys.exit("no results: did the group run? (see the run logs next to results.jsonl)")
rate = lambda ns: f"{1e3 / ns:.2f} M/s"  # noqa: E731
entries = sorted({r["entry"] for r in rows}, key=lambda e: (e != "rcu-offload", e))
print(f"\ncallbacks/sustained/free64/P=1, {rows[0]['elements']:,} callbacks per iteration; "
      "rate = criterion's median; slowest sample = the sample with the most time per callback\n")
print("| run | condition | " + " | ".join(f"{e} rate (slowest sample)" for e in entries) + " |")
print("|---|---|" + "---|" * len(entries))
for run in sorted({r["run"] for r in rows}):
    for cond in ("quiet", "busy"):
        cells = []
        for e in entries:
            r = next((r for r in rows if (r["run"], r["cond"], r["entry"]) == (run, cond, e)), None)
            cells.append(f"{rate(r['median_ns'])} ({rate(max(r['samples_ns']))})" if r else "—")
        print(f"| {run} | {cond} | " + " | ".join(cells) + " |")

print("\nslowest/median: time ratio (1.00 = every run as fast as the median one); "
      "busy/quiet: median time busy / median time quiet\n")
print("| entry | condition | runs | median rate | slowest run | slowest/median (runs) "
      "| slowest/median (samples) | busy/quiet |")
print("|---|---|---|---|---|---|---|---|")
for e in entries:
    med = {}
    for cond in ("quiet", "busy"):
        rs = [r for r in rows if r["entry"] == e and r["cond"] == cond]
        if not rs:
            continue
        runs = [r["median_ns"] for r in rs]
        samples = [s for r in rs for s in r["samples_ns"]]
        med[cond] = statistics.median(runs)
        bq = (f"{med['busy'] / med['quiet']:.2f}x"
              if cond == "busy" and "quiet" in med else "—")
        print(f"| {e} | {cond} | {len(runs)} | {rate(med[cond])} | {rate(max(runs))} | "
              f"{max(runs) / med[cond]:.2f} | "
              f"{max(samples) / statistics.median(samples):.2f} | {bq} |")
EOF
echo "logs and results.jsonl in $OUT" >&2
