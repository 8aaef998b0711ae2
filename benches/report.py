#!/usr/bin/env python3
"""Run the criterion benches several times and print the README's tables.

Usage: python3 benches/report.py [--runs N] [--bench NAME ...]

Each run is a full `cargo bench -p rcu-offload-benches` (peers measured side
by side in the same run). For every entry we take criterion's median
(estimates.json, `median.point_estimate`) from each run, then report the
median of those per-run medians, and each peer's ratio to rcu-offload
computed within each run (median of the per-run ratios), which is robust to
the machine being shared and noisy.
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


def collect():
    out = {}
    base = TARGET / "criterion"
    for est in base.glob("*/*/new/estimates.json"):
        group, entry = est.parts[-4], est.parts[-3]
        out.setdefault(group, {})[entry] = json.loads(est.read_text())["median"]["point_estimate"]
    return out


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
    for g in groups:
        entries = sorted({e for r in runs for e in r.get(g, {})}, key=lambda e: (e != OURS, e))
        print(f"\n{g} (median of {len(runs)} runs' medians)\n")
        print(f"| entry | median | ratio to {OURS} (median of per-run ratios) | per-run medians |")
        print("|---|---|---|---|")
        for e in entries:
            vals = [r[g][e] for r in runs if e in r.get(g, {})]
            ratios = [r[g][e] / r[g][OURS] for r in runs if e in r.get(g, {}) and OURS in r.get(g, {})]
            ratio = f"{statistics.median(ratios):.2f}x" if ratios else "—"
            print(f"| {e} | {fmt(statistics.median(vals))} | {ratio} | {', '.join(fmt(v) for v in vals)} |")


if __name__ == "__main__":
    main()
