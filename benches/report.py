#!/usr/bin/env python3
"""Run the criterion benches several times and print the README's tables.

Usage: python3 benches/report.py [--runs N] [--bench NAME ...] [--filter REGEX]
                                 [--flood-secs S[,S...]] [--flood-producers P[,P...]]
                                 [--flood-high-water V[,V...]] [--flood-variants K[,K...]]
                                 [--features mimalloc]

Each run is a full `cargo bench -p rcu-offload-benches` (peers measured side
by side in the same run). For every entry we take criterion's median
(estimates.json, `median.point_estimate`) from each run, then report the
median of those per-run medians, and each peer's ratio to rcu-offload
computed within each run (median of the per-run ratios), which is robust to
the machine being shared and noisy.

Entries with a criterion throughput in elements (the callback benches time a
batch of callbacks per iteration) are reported per element, i.e. per
callback, and as a rate (M callbacks/s). Groups are named by their criterion
group id (read from benchmark.json); a note under each heading says what its
figure is: the 65,536-callback `callbacks/end_to_end`, `callbacks/enqueue`
(and `_nobypass`) groups are bursts (their ids predate the sustained groups
and are kept so that earlier results stay comparable), the
`callbacks/sustained*` groups the steady state. After the per-group tables,
a summary table puts every group on one row.

`--features` is passed to `cargo bench --features`: `--features mimalloc`
makes mimalloc the callbacks bench's allocator, for Rust and (through
libmimalloc-sys's `override`) for the C shim and liburcu as well. The report
starts with the allocator the callbacks bench found in use (it checks where a
Rust box and a C malloc come from, and prints it on a line of its own; the
benches' stdout is kept in `target/rcu-report/runN.log`).

`--filter` is passed to criterion (`cargo bench ... -- REGEX`); the
callbacks bench's flood, which is not a criterion group, runs when the filter
is a substring of `callbacks/flood` or contains `flood` (so `--filter flood`
runs the flood alone, and `--filter 'callbacks/enqueue'` skips it).

More tables when their benches ran:

* burst vs sustained: each `callbacks/sustained/K/P=n` group next to the
  burst `callbacks/end_to_end/K/P=n` (and `sustained_enqueue/P=1` next to
  `enqueue/P=1`), with the slow-down of the steady state (median of per-run
  ratios).
* bypass on/off: each `callbacks/*_nobypass/...` group (rcu-offload with
  `nobypass_limit(usize::MAX)`) next to the same group with default settings,
  and the speed-up the bypass gives (median of per-run ratios).
* cell: the writer's pace in the `cell/load/readers=N` groups, read from
  the `cell: writer: ` lines the cell bench prints (replacements per second
  during the timed lookups, and per lookup of one reader; median over runs):
  the peers' writers do not run at the same pace.
* callbacks/flood: read from the JSON lines the flood children write
  (`RCU_FLOOD_JSON`, one file per run): sustained rate, the callbacks' own
  limit, their ratio (per run, then the median), the `inline` reference (the
  P producer threads allocating and running the body themselves, no RCU) and
  rcu-offload's ratio to it, and peak RSS per variant, producer count P and
  run length; then rcu-offload's rate and peak RSS against its high-water
  mark (every rcu-offload variant, including the `--flood-high-water`
  sweep). `--flood-secs` sets the run lengths (`RCU_FLOOD_SECS`),
  `--flood-producers` the producer counts (`RCU_FLOOD_PRODUCERS`, default
  1,2), `--flood-high-water` the sweep (`RCU_FLOOD_HIGH_WATER`) and
  `--flood-variants` which variants run (`RCU_FLOOD_VARIANTS`; `sweep`
  stands for every sweep point). JSON lines from before the producer
  setting count as P=2.
"""
import argparse
import json
import math
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
# The end_to_end and enqueue groups (and their _nobypass twins) keep their
# criterion ids; they are bursts of 65,536 callbacks, which fit under
# rcu-offload's default high water mark (100,000 pending), so no producer
# ever blocks in them. The sustained groups measure the steady state.
NOTES = [
    ("callbacks/end_to_end/", "burst: time per callback: a batch of 65,536 queued by P "
     "producers, until every callback has run (batch time / batch size); the batch fits "
     "under rcu-offload's default high water mark, so no producer blocks"),
    ("callbacks/end_to_end_nobypass/", "burst: as callbacks/end_to_end, rcu-offload with "
     "the bypass off (nobypass_limit(usize::MAX))"),
    ("callbacks/enqueue/", "burst: time per call() as its caller sees it, P callers at "
     "once, 65,536 callbacks per batch; waiting for the callbacks is not timed"),
    ("callbacks/enqueue_nobypass/", "burst: as callbacks/enqueue, rcu-offload with the "
     "bypass off (nobypass_limit(usize::MAX))"),
    ("callbacks/sustained/", "sustained: time per callback and callbacks per second, "
     "millions of callbacks queued by P producers from a start gate until every callback "
     "has run (iteration time / callbacks), after at least one untimed iteration of the "
     "same size"),
    ("callbacks/sustained_enqueue/", "sustained: time per call() as its caller sees it, "
     "one producer queueing millions of counter callbacks (rcu-offload's call() blocks "
     "while the backlog is above its high water mark: that is included); waiting for the "
     "callbacks is not timed"),
    ("callbacks/latency", "median time from call() to the callback running, one call "
     "every 200 µs (median over samples of each sample's median)"),
    ("cell/load/idle", "time per lookup (enter a read-side section, load the pointer, read "
     "the 32-byte value, leave), one reader thread, no writer"),
    ("cell/load/readers=1", "time per lookup, one reader thread, while a writer thread "
     "replaces the value as fast as it can (its rate: see the writer table)"),
    ("cell/load/readers=2", "time per lookup of one thread: wall time from a start gate "
     "until both reader threads have done N lookups each, divided by N, while a writer "
     "replaces the value (3 busy threads on the 2-core machine)"),
    ("cell/store", "time per replacement (publish a new 32-byte value, retire the old "
     "one), one writer thread, no readers, sustained: after criterion's warm-up, nothing "
     "drained between samples (rcu-offload's writer blocks above the domain's high water "
     "mark, 100,000 pending callbacks by default)"),
]


def note(group):
    for prefix, text in NOTES:
        if group.startswith(prefix):
            return text
    return "time per iteration"


# Groups whose figure is per element (callback), with the element count of
# an iteration, as criterion recorded it (benchmark.json's throughput).
ELEMENTS = {}


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
            ELEMENTS[meta["group_id"]] = elements
        entry = "/".join(x for x in (meta.get("function_id"), meta.get("value_str")) if x)
        out.setdefault(meta["group_id"], {})[entry] = value
    return out


def ratios(runs, g, e):
    return [r[g][e] / r[g][OURS] for r in runs
            if e in r.get(g, {}) and OURS in r.get(g, {}) and r[g][OURS] > 0]


def med(xs):
    return statistics.median(xs) if xs else math.nan


def mrate(ns):
    """Per-element nanoseconds as millions per second."""
    return f"{1e3 / ns:.2f} M/s" if ns > 0 else "—"


def burst_vs_sustained(runs):
    """Each sustained group next to the burst group of the same kind and P."""
    pairs = []
    for g in sorted({g for r in runs for g in r}):
        if g.startswith("callbacks/sustained/"):
            burst = g.replace("callbacks/sustained/", "callbacks/end_to_end/")
        elif g.startswith("callbacks/sustained_enqueue/"):
            burst = g.replace("callbacks/sustained_enqueue/", "callbacks/enqueue/")
        else:
            continue
        if any(burst in r for r in runs):
            pairs.append((burst, g))
    if not pairs:
        return
    print(f"\nburst vs sustained (median of {len(runs)} runs' medians): per callback "
          "(M callbacks/s); slow-down = sustained / burst time, median of per-run ratios "
          "(above 1: the steady state is slower than a burst)\n")
    print("| burst group | entry | burst | sustained | slow-down |")
    print("|---|---|---|---|---|")
    order = lambda e: (e != OURS, e)  # noqa: E731
    for burst, sus in pairs:
        entries = sorted({e for r in runs for e in r.get(sus, {})}, key=order)
        for e in entries:
            b = [r[burst][e] for r in runs if e in r.get(burst, {})]
            s = [r[sus][e] for r in runs if e in r.get(sus, {})]
            sd = [r[sus][e] / r[burst][e] for r in runs
                  if e in r.get(sus, {}) and e in r.get(burst, {}) and r[burst][e] > 0]
            if not b or not s:
                continue
            print(f"| {burst} | {e} | {fmt(med(b))} ({mrate(med(b))}) | "
                  f"{fmt(med(s))} ({mrate(med(s))}) | "
                  f"{f'{med(sd):.2f}x' if sd else '—'} |")


def bypass_table(runs):
    """rcu-offload with default settings vs the bypass off, per group."""
    pairs = sorted({g for r in runs for g in r if "_nobypass" in g})
    rows = []
    for off in pairs:
        on = off.replace("_nobypass", "")
        on_v = [r[on][OURS] for r in runs if OURS in r.get(on, {})]
        off_v = [r[off][OURS] for r in runs if OURS in r.get(off, {})]
        sp = [r[off][OURS] / r[on][OURS] for r in runs
              if OURS in r.get(on, {}) and OURS in r.get(off, {}) and r[on][OURS] > 0]
        if on_v and off_v:
            rows.append((on, on_v, off_v, sp))
    if not rows:
        return
    print(f"\nbypass on/off: {OURS} per callback (median of {len(runs)} runs' medians); "
          "speed-up = bypass off / bypass on, median of per-run ratios (>1: the bypass helps)\n")
    print("| group | bypass on (default) | bypass off | speed-up from bypass | per-run on / off |")
    print("|---|---|---|---|---|")
    for g, on_v, off_v, sp in rows:
        per = ", ".join(f"{fmt(a)} / {fmt(b)}" for a, b in zip(on_v, off_v))
        print(f"| {g} | {fmt(med(on_v))} ({1e3 / med(on_v):.1f} M/s) | "
              f"{fmt(med(off_v))} ({1e3 / med(off_v):.1f} M/s) | "
              f"{med(sp):.2f}x | {per} |")


FLOOD_LABELS = {
    "inline": "inline: Rust body on the P producers, no RCU",
    "ours": "rcu-offload (default, high water 100k)",
    "ours-unbounded": "rcu-offload high_water(usize::MAX)",
    "ours-hw16k": "rcu-offload high_water(16_384)",
    "liburcu-percpu": "liburcu call_rcu percpu",
    "liburcu-default": "liburcu call_rcu default worker",
    "limit-rust": "limit: Rust body alone",
    "limit-c": "limit: C body alone",
}
FLOOD_ORDER = list(FLOOD_LABELS)
# The flood's producer count before it had a setting (JSON lines without
# a "producers" field).
OLD_FLOOD_PRODUCERS = 2


def flood_label(v):
    if v.startswith("ours-hw="):
        return f"rcu-offload high_water({v[len('ours-hw='):]}) (sweep)"
    return FLOOD_LABELS.get(v, v)


def flood_order(v):
    if v in FLOOD_ORDER:
        return (FLOOD_ORDER.index(v), 0)
    if v.startswith("ours-hw="):
        # The sweep, after the fixed rcu-offload variants, by mark.
        return (FLOOD_ORDER.index("ours-hw16k"), high_water_num(v[len("ours-hw="):]))
    return (99, 0)


def high_water_num(h):
    """A high-water mark as a number (MAX: infinity) for sorting."""
    try:
        return float("inf") if str(h).upper() == "MAX" else float(h)
    except ValueError:
        return math.nan


def high_water_of(r):
    """The rcu-offload variant's high-water mark (None for other variants)."""
    if r.get("high_water") is not None:
        return str(r["high_water"])
    return {"ours": "100000", "ours-unbounded": "MAX", "ours-hw16k": "16384"}.get(r["variant"])


def is_ours(v):
    """rcu-offload variants: their rate / inline is reported (the inline
    reference runs the Rust body)."""
    return v == "ours" or v.startswith("ours-")


def limit_key(v):
    return "limit-c" if v.startswith("liburcu") or v == "limit-c" else "limit-rust"


def is_reference(v):
    return v.startswith("limit") or v == "inline"


def producers_of(r):
    return r.get("producers") or (None if r["variant"].startswith("limit")
                                  else OLD_FLOOD_PRODUCERS)


def flood_table(flood_runs):
    """The flood table: one row per (variant, producers, run length), medians
    over runs; then the high-water curve of the rcu-offload variants."""
    if not any(flood_runs):
        return
    rows = {}
    for run in flood_runs:
        # Each run length is a block: its limits, then per producer count
        # its inline reference and its floods.
        limits = {(r.get("block"), r["variant"]): r["rate"]
                  for r in run if r["variant"].startswith("limit")}
        per_core = {(r.get("block"), r["variant"]): r.get("rate_per_core")
                    for r in run if r["variant"].startswith("limit")}
        inline = {(r.get("block"), producers_of(r)): r["rate"]
                  for r in run if r["variant"] == "inline"}
        block_secs = {}
        for r in run:
            if not r["variant"].startswith("limit"):
                block_secs[r.get("block")] = r["secs"]
        for r in run:
            v = r["variant"]
            secs = block_secs.get(r.get("block"), r["secs"])
            row = rows.setdefault((v, producers_of(r), secs), {
                "rate": [], "ratio": [], "limit": [], "peak": [], "stop": [], "cpu": [],
                "core_ratio": [], "inline": [], "inline_ratio": [],
                "drain": [], "capped": [], "during": [], "throttled": [], "bypass": [],
                "high_water": high_water_of(r)})
            row["rate"].append(r["rate"])
            lim = limits.get((r.get("block"), limit_key(v)))
            lim_core = per_core.get((r.get("block"), limit_key(v)))
            if lim_core and r.get("rate_per_core") and not v.startswith("limit"):
                row["core_ratio"].append(r["rate_per_core"] / lim_core)
            row["cpu"].append(r.get("cpu_cores", math.nan))
            if lim:
                row["limit"].append(lim)
                if not v.startswith("limit"):
                    row["ratio"].append(r["rate"] / lim)
            inl = inline.get((r.get("block"), producers_of(r)))
            if inl and is_ours(v):
                row["inline"].append(inl)
                row["inline_ratio"].append(r["rate"] / inl)
            row["peak"].append(r["peak_rss_kib"] / 1024)
            if not is_reference(v):
                row["stop"].append(r["rss_at_stop_kib"] / 1024)
                row["drain"].append((r["total_s"] - r["produce_s"]) * 1e3)
            if r.get("cap_hit_s") is not None:
                row["capped"].append(r["cap_hit_s"])
            if "rate_during" in r:
                row["during"].append(r["rate_during"])
                row["throttled"].append(r.get("throttled", 0))
                row["bypass"].append(r.get("bypass_queued", 0) / max(r["done"], 1))
    n = len(flood_runs)
    threads = next((r["workers"] for run in flood_runs for r in run), "?")
    allocs = sorted({r.get("allocator", "glibc (not recorded)") for run in flood_runs for r in run})
    print(f"\ncallbacks/flood (median over {n} runs; each variant in a fresh child process; "
          f"allocator: {', '.join(allocs)})\n")
    print(f"P producers queue callbacks (spin 300 steps, free a 64 B node the producer malloc'd) "
          f"as fast as they can; rate = callbacks / (flood + final barrier). limit = the same "
          f"body run directly by {threads} threads (= rcu-offload's callback workers), nothing "
          f"else running (not reachable when the producers need the same cores). inline = "
          f"the P producer threads, same duration, each allocating the node and running the "
          f"body itself, no RCU: the reachable reference, producers included (Rust body; so "
          f"rate/inline for rcu-offload only; paired with the same P). rate/limit and "
          f"rate/inline: per-run ratio, "
          f"median (target >= 1/1.2 = 0.83). peak RSS = "
          f"VmHWM of the child (median; max over runs in brackets). RSS at stop: sampled when "
          f"the producers stopped. drain: the final barrier. capped: the RSS safety cap stopped "
          f"the producers at that time. CPU cores: the child's CPU time / its run time (2 = both "
          f"cores; less: its threads slept, or other processes took the CPU; for the limit, "
          f"the body threads' CPU time in the timed parts). per-core ratio: (rate / CPU cores) "
          f"/ (limit / its CPU cores), i.e. callbacks per CPU-second relative to the body "
          f"alone: less sensitive to CPU stolen by other processes, and it charges the "
          f"producers' CPU (malloc + call) to the flood. The limit rows "
          f"are measured for min(run, 3) s right before that run length's floods, and each "
          f"flood's ratio uses the limit of its own block and run; the inline row runs for the "
          f"full run length, right before the floods of its P, likewise paired per block, P "
          f"and run.\n")
    print("| variant | P | run | rate | limit | rate/limit | inline | rate/inline | CPU cores "
          "| per-core ratio | peak RSS [max] | RSS at stop | drain | capped | per-run rates |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    m = lambda xs, f: f(med(xs)) if xs else "—"  # noqa: E731
    mps = lambda x: f"{x / 1e6:.2f} M/s"  # noqa: E731

    def key_order(k):
        v, p, secs = k
        if v.startswith("limit"):
            return (-1, 0, flood_order(v), secs)
        return (secs, p or 0, flood_order(v))

    for key in sorted(rows, key=key_order):
        v, p, secs = key
        row = rows[key]
        capped = (f"{len(row['capped'])}/{len(row['rate'])} runs, at {med(row['capped']):.1f} s"
                  if row["capped"] else "—")
        print(f"| {flood_label(v)} | {p if p else '—'} | {secs:g} s | {m(row['rate'], mps)} | "
              f"{m(row['limit'], mps)} | "
              f"{m(row['ratio'], lambda x: f'{x:.2f}') if not v.startswith('limit') else '—'} | "
              f"{m(row['inline'], mps)} | "
              f"{m(row['inline_ratio'], lambda x: f'{x:.2f}')} | "
              f"{m(row['cpu'], lambda x: f'{x:.2f}')} | "
              f"{m(row['core_ratio'], lambda x: f'{x:.2f}')} | "
              f"{med(row['peak']):.1f} MiB [{max(row['peak']):.1f}] | "
              f"{m(row['stop'], lambda x: f'{x:.1f} MiB')} | "
              f"{m(row['drain'], lambda x: f'{x:.0f} ms')} | {capped} | "
              f"{', '.join(mps(x) for x in row['rate'])} |")
    extra = [(k, rows[k]) for k in rows if rows[k]["throttled"]]
    if extra:
        print("\nrcu-offload flood counters (median): throttled call()s, share of callbacks "
              "queued through the bypass, callbacks completed per second while the producers "
              "ran (before the final barrier)\n")
        print("| variant | P | run | throttled | via bypass | rate during flood |")
        print("|---|---|---|---|---|---|")
        for (v, p, secs), row in sorted(extra, key=lambda kv: key_order(kv[0])):
            print(f"| {flood_label(v)} | {p} | {secs:g} s | {med(row['throttled']):.0f} | "
                  f"{100 * med(row['bypass']):.1f}% | {med(row['during']) / 1e6:.2f} M/s |")
    high_water_table(rows, m, mps)


def high_water_table(rows, m, mps):
    """rcu-offload's rate and memory against its high-water mark: every
    rcu-offload row (default, 16k, unbounded and the RCU_FLOOD_HIGH_WATER
    sweep), by P and run length, sorted by the mark."""
    ours = [(k, r) for k, r in rows.items() if is_ours(k[0]) and r["high_water"]]
    if not ours:
        return
    print("\nrcu-offload against its high-water mark (low water = half of it; medians as "
          "above; a mark measured by two variants, e.g. the default and a sweep point, has "
          "two rows)\n")
    print("| P | run | high water | variant | rate | rate/inline | peak RSS [max] "
          "| throttled | drain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (v, p, secs), row in sorted(
            ours, key=lambda kr: (kr[0][1] or 0, kr[0][2], high_water_num(kr[1]["high_water"]),
                                  flood_order(kr[0][0]))):
        print(f"| {p} | {secs:g} s | {row['high_water']} | {flood_label(v)} | "
              f"{m(row['rate'], mps)} | {m(row['inline_ratio'], lambda x: f'{x:.2f}')} | "
              f"{med(row['peak']):.1f} MiB [{max(row['peak']):.1f}] | "
              f"{m(row['throttled'], lambda x: f'{x:.0f}')} | "
              f"{m(row['drain'], lambda x: f'{x:.0f} ms')} |")


ALLOCATOR_PREFIX = "callbacks: allocator: "
CELL_WRITER_PREFIX = "cell: writer: "


def cell_writers_of(log):
    """{(group, entry): (M replacements/s, replacements per lookup)} from the
    `cell: writer: ` lines the cell bench printed in this run."""
    out = {}
    for line in Path(log).read_text(errors="replace").splitlines():
        if not line.startswith(CELL_WRITER_PREFIX):
            continue
        fields = [f.strip() for f in line[len(CELL_WRITER_PREFIX):].split("|")]
        try:
            out[(fields[0], fields[1])] = (float(fields[2].split()[0]),
                                           float(fields[3].split()[0]))
        except (IndexError, ValueError):
            continue
    return out


def cell_writer_table(writer_runs):
    """The cell bench's writer pace during its load groups' timed windows."""
    keys = sorted({k for r in writer_runs for k in r}, key=lambda k: (k[0], k[1] != OURS, k[1]))
    if not keys:
        return
    print(f"\ncell: the writer during the timed lookups (median of {len(writer_runs)} runs; "
          "replacements per second, and per lookup of one reader)\n")
    print("| group | entry | writer rate | replacements per lookup | per-run rates |")
    print("|---|---|---|---|---|")
    for k in keys:
        rates = [r[k][0] for r in writer_runs if k in r]
        per = [r[k][1] for r in writer_runs if k in r]
        print(f"| {k[0]} | {k[1]} | {med(rates):.2f} M/s | {med(per):.3f} | "
              f"{', '.join(f'{x:.2f}' for x in rates)} |")


def allocator_of(log):
    """The allocator line the callbacks bench printed in this run, if any."""
    for line in Path(log).read_text(errors="replace").splitlines():
        if line.startswith(ALLOCATOR_PREFIX):
            return line[len(ALLOCATOR_PREFIX):].strip()
    return None


def print_allocator(allocators, features):
    """Says which allocator the runs used (as the callbacks bench checked it)."""
    seen = sorted({a for a in allocators if a})
    feat = f"cargo features: {features}" if features else "no cargo features"
    if not seen:
        print(f"allocator: not reported (only the callbacks bench checks it); {feat}")
    elif len(seen) == 1:
        print(f"allocator: {seen[0]} ({feat})")
    else:
        print(f"allocator: differs between runs: {'; '.join(seen)} ({feat})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bench", action="append", default=[])
    ap.add_argument("--filter", help="criterion filter (regex), passed after `--`")
    ap.add_argument("--flood-secs", help="flood run lengths in seconds, e.g. 3,10 "
                    "(sets RCU_FLOOD_SECS)")
    ap.add_argument("--flood-producers", help="flood producer counts, e.g. 1,2 "
                    "(sets RCU_FLOOD_PRODUCERS; default 1,2)")
    ap.add_argument("--flood-high-water", help="rcu-offload high-water marks to sweep in the "
                    "flood, e.g. 4096,16384,65536,100000,262144 (sets RCU_FLOOD_HIGH_WATER)")
    ap.add_argument("--flood-variants", help="flood variant keys to run, e.g. "
                    "inline,limit-rust,ours,sweep (sets RCU_FLOOD_VARIANTS; default all)")
    ap.add_argument("--features", help="cargo features of rcu-offload-benches, passed to "
                    "`cargo bench --features`; `mimalloc` makes mimalloc the allocator of the "
                    "callbacks bench (Rust and C)")
    args = ap.parse_args()
    # Start from an empty criterion directory so that groups not measured in
    # this invocation are not reported from stale earlier runs.
    shutil.rmtree(TARGET / "criterion", ignore_errors=True)
    flood_dir = TARGET / "rcu-flood"
    shutil.rmtree(flood_dir, ignore_errors=True)
    flood_dir.mkdir(parents=True, exist_ok=True)
    log_dir = TARGET / "rcu-report"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for opt, var in ((args.flood_secs, "RCU_FLOOD_SECS"),
                     (args.flood_producers, "RCU_FLOOD_PRODUCERS"),
                     (args.flood_high_water, "RCU_FLOOD_HIGH_WATER"),
                     (args.flood_variants, "RCU_FLOOD_VARIANTS")):
        if opt:
            env[var] = opt
    runs, flood_runs, allocators, cell_writers = [], [], [], []
    for i in range(args.runs):
        cmd = ["cargo", "bench", "-p", "rcu-offload-benches"]
        if args.features:
            cmd += ["--features", args.features]
        for b in args.bench:
            cmd += ["--bench", b]
        if args.filter:
            cmd += ["--", args.filter]
        flood_file = flood_dir / f"run{i + 1}.jsonl"
        env["RCU_FLOOD_JSON"] = str(flood_file)
        # The benches' stdout (criterion's own report, and the callbacks
        # bench's allocator line) goes to a log per run.
        log = log_dir / f"run{i + 1}.log"
        print(f"run {i + 1}/{args.runs}: {' '.join(cmd)} > {log}", file=sys.stderr)
        with open(log, "w") as out:
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=out, env=env)
        allocators.append(allocator_of(log))
        cell_writers.append(cell_writers_of(log))
        runs.append(collect())
        if flood_file.exists():
            flood_runs.append([json.loads(line) for line in flood_file.read_text().splitlines()
                               if line.strip()])
    print_allocator(allocators, args.features)
    groups = sorted({g for r in runs for g in r})
    order = lambda e: (e != OURS, e)  # noqa: E731
    for g in groups:
        entries = sorted({e for r in runs for e in r.get(g, {})}, key=order)
        print(f"\n{g} (median of {len(runs)} runs' medians)\n")
        per_element = g in ELEMENTS
        per = "per producer and iteration" if "enqueue" in g else "per iteration"
        size = f" ({ELEMENTS[g]:,} callbacks {per})" if per_element else ""
        print(f"{note(g)}{size}\n")
        rate_head = " rate |" if per_element else ""
        print(f"| entry | median |{rate_head} ratio to {OURS} (median of per-run ratios) "
              "| per-run medians |")
        print("|---|---|" + ("---|" if per_element else "") + "---|---|")
        for e in entries:
            vals = [r[g][e] for r in runs if e in r.get(g, {})]
            rs = ratios(runs, g, e)
            ratio = f"{statistics.median(rs):.2f}x" if rs else "—"
            rate = f" {mrate(statistics.median(vals))} |" if per_element else ""
            print(f"| {e} | {fmt(statistics.median(vals))} |{rate} {ratio} | "
                  f"{', '.join(fmt(v) for v in vals)} |")

    # Summary: one row per group, one column per entry: "median (ratio)".
    entries = sorted({e for r in runs for g in r for e in r[g]}, key=order)
    if groups:
        summary(runs, groups, entries)
    burst_vs_sustained(runs)
    bypass_table(runs)
    flood_table(flood_runs)
    cell_writer_table([w for w in cell_writers if w])


def summary(runs, groups, entries):
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
