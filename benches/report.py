#!/usr/bin/env python3
"""Run the criterion benches several times and print the README's tables.

Usage: python3 benches/report.py [--runs N] [--bench NAME ...]

Each run is a full `cargo bench -p rcu-offload-benches` (peers measured side
by side in the same run). For every entry we take criterion's median
(estimates.json, `median.point_estimate`) from each run, then report the
median of those per-run medians, and each peer's ratio to rcu-offload
computed within each run (median of the per-run ratios), which is robust to
the machine being shared and noisy.

Entries with a criterion throughput in elements (the callback benches time a
batch of callbacks per iteration) are reported per element, i.e. per
callback. Groups are named by their criterion group id (read from
benchmark.json); a note under each heading says what its figure is. After
the per-group tables, a summary table puts every group on one row.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
OURS = "rcu-offload"


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.2f} ns"


# What each group's figure means, by group-id prefix (first match wins).
NOTES = [
    ("callbacks/end_to_end/", "time per callback: a batch queued by P producers, "
     "until every callback has run (batch time / batch size)"),
    ("callbacks/enqueue/", "time per call() as its caller sees it, P callers at once; "
     "waiting for the callbacks is not timed"),
    ("callbacks/latency", "median time from call() to the callback running, one call "
     "every 200 µs (median over samples of each sample's median)"),
]


def note(group):
    for prefix, text in NOTES:
        if group.startswith(prefix):
            return text
    return "time per iteration"


def collect():
    """{group id: {entry: median per iteration, or per element}} of one run."""
    out = {}
    base = TARGET / "criterion"
    for meta_path in base.rglob("new/benchmark.json"):
        meta = json.loads(meta_path.read_text())
        est = json.loads((meta_path.parent / "estimates.json").read_text())
        value = est["median"]["point_estimate"]
        elements = (meta.get("throughput") or {}).get("Elements")
        if elements:
            value /= elements
        entry = "/".join(x for x in (meta.get("function_id"), meta.get("value_str")) if x)
        out.setdefault(meta["group_id"], {})[entry] = value
    return out


def ratios(runs, g, e):
    return [r[g][e] / r[g][OURS] for r in runs
            if e in r.get(g, {}) and OURS in r.get(g, {}) and r[g][OURS] > 0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bench", action="append", default=[])
    args = ap.parse_args()
    # Start from an empty criterion directory so that groups not measured in
    # this invocation are not reported from stale earlier runs.
    shutil.rmtree(TARGET / "criterion", ignore_errors=True)
    runs = []
    for i in range(args.runs):
        cmd = ["cargo", "bench", "-p", "rcu-offload-benches"]
        for b in args.bench:
            cmd += ["--bench", b]
        print(f"run {i + 1}/{args.runs}: {' '.join(cmd)}", file=sys.stderr)
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        runs.append(collect())
    groups = sorted({g for r in runs for g in r})
    order = lambda e: (e != OURS, e)  # noqa: E731
    for g in groups:
        entries = sorted({e for r in runs for e in r.get(g, {})}, key=order)
        print(f"\n{g} (median of {len(runs)} runs' medians)\n")
        print(f"{note(g)}\n")
        print(f"| entry | median | ratio to {OURS} (median of per-run ratios) | per-run medians |")
        print("|---|---|---|---|")
        for e in entries:
            vals = [r[g][e] for r in runs if e in r.get(g, {})]
            rs = ratios(runs, g, e)
            ratio = f"{statistics.median(rs):.2f}x" if rs else "—"
            print(f"| {e} | {fmt(statistics.median(vals))} | {ratio} | {', '.join(fmt(v) for v in vals)} |")

    # Summary: one row per group, one column per entry: "median (ratio)".
    entries = sorted({e for r in runs for g in r for e in r[g]}, key=order)
    print(f"\nsummary (median of {len(runs)} runs' medians; ratio to {OURS} in parentheses)\n")
    print("| group | " + " | ".join(entries) + " |")
    print("|---|" + "---|" * len(entries))
    for g in groups:
        cells = []
        for e in entries:
            vals = [r[g][e] for r in runs if e in r.get(g, {})]
            if not vals:
                cells.append("—")
                continue
            rs = ratios(runs, g, e)
            cell = fmt(statistics.median(vals))
            if rs and e != OURS:
                cell += f" ({statistics.median(rs):.2f}x)"
            cells.append(cell)
        print(f"| {g} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
