#!/usr/bin/env python3
"""Turns the raw reports of bench/nchan.sh into the markdown comparison table.

    python3 bench/nchan_table.py RAW.jsonl RUNS EVENTS_B EVENTS_D > table.md

For each figure: the median of the runs with the spread (min-max), per server, and the
ratio Herald/Nchan of the medians, checked against its target.
"""

import json
import platform
import statistics
import sys
from collections import defaultdict

raw, runs, events_b, events_d = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = [json.loads(line) for line in open(raw) if line.strip()]
by = defaultdict(list)  # (workload, server) -> [report]
failed = defaultdict(int)
loads = []
for line in lines:
    if "report" in line:
        loads.append(line.get("load", ""))
        if line["report"] is None:
            failed[(line["workload"], line["server"])] += 1
        elif "process" not in line:
            by[(line["workload"], line["server"])].append(line["report"])


def get(report, path):
    value = report
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def stats(workload, server, path, scale):
    values = [v * scale for v in (get(r, path) for r in by[(workload, server)]) if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(value):
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"


def cell(s):
    if s is None:
        return "–"
    med, lo, hi = s
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


# (label, workload, path, scale, unit, target kind, target value)
# kinds: "ge" ratio >= value, "le" ratio <= value, "abs_le" Herald median <= value
figures = [
    ("(a) RSS per idle connection", "a", "rss_per_connection_bytes", 1 / 1024, "KB", "le", 0.5),
    ("(a) connections accepted per second", "a", "connects_per_sec", 1, "/s", "ge", 1.3),
    ("(b) deliveries per second", "b", "deliveries_per_sec", 1, "/s", "ge", 3.0),
    ("(b) latency p50", "b", "latency_us.p50", 1e-3, "ms", None, None),
    ("(b) latency p99", "b", "latency_us.p99", 1e-3, "ms", "abs_le", 50.0),
    ("(b) latency max", "b", "latency_us.max", 1e-3, "ms", None, None),
    ("(c) publishes per second", "c", "publishes_per_sec", 1, "/s", "ge", 2.0),
    ("(c) latency p50", "c", "latency_us.p50", 1e-3, "ms", None, None),
    ("(c) latency p99", "c", "latency_us.p99", 1e-3, "ms", None, None),
    ("(d) latency p50", "d", "latency_us.p50", 1e-3, "ms", None, None),
    ("(d) latency p99", "d", "latency_us.p99", 1e-3, "ms", "le", 1.0),
]

out = []
out.append(f"Medians of {runs} runs per server, with the spread (min–max) in brackets. "
           "Ratio = Herald median / Nchan median.\n")
out.append("| figure | Herald | Nchan | Herald/Nchan | target | met |")
out.append("|---|---|---|---|---|---|")
for label, w, path, scale, unit, kind, target in figures:
    h, n = stats(w, "herald", path, scale), stats(w, "nchan", path, scale)
    ratio = h[0] / n[0] if h and n and n[0] else None
    if kind == "ge":
        goal, met = f"≥ {target}×", ratio is not None and ratio >= target
    elif kind == "le":
        goal, met = f"≤ {target}×", ratio is not None and ratio <= target
    elif kind == "abs_le":
        goal, met = f"≤ {target:g} {unit}", h is not None and h[0] <= target
    else:
        goal, met = "", None
    mark = "" if met is None else ("yes" if met else "**no**")
    r = f"{ratio:.2f}" if ratio is not None else "–"
    out.append(f"| {label} ({unit}) | {cell(h)} | {cell(n)} | {r} | {goal} | {mark} |")

out.append("")
if any(server == "before" for (_, server) in by):
    out.append("The same figures for the previous build of Herald (`HERALD_BEFORE`), run "
               "interleaved with the others. Ratio = this build / the previous one.\n")
    out.append("| figure | previous build | this build | this/previous |")
    out.append("|---|---|---|---|")
    for label, w, path, scale, unit, _, _ in figures:
        b, h = stats(w, "before", path, scale), stats(w, "herald", path, scale)
        ratio = h[0] / b[0] if h and b and b[0] else None
        r = f"{ratio:.2f}" if ratio is not None else "–"
        out.append(f"| {label} ({unit}) | {cell(b)} | {cell(h)} | {r} |")
    out.append("")
floor_writes = by[("floor_writes", "floor")]
if floor_writes:
    rounds = [r["round_ms_median"] for r in floor_writes]
    writes = [r["write_us_median"] for r in floor_writes]
    out.append(f"Floor of this machine, measured with no server (`herald-floor`, same cores): "
               f"a plain loop writing one 150-byte frame to each of 10,000 loopback sockets "
               f"takes {cell((statistics.median(rounds), min(rounds), max(rounds)))} ms a round "
               f"({statistics.median(writes):.1f} µs a write), the least time in which any server "
               f"on one core reaches 10,000 subscribers, so the least p99 it can show in (b).\n")
cpu = [(server, stats("a", server, "hub_cpu_us_per_connect", 1),
        stats("a", server, "loadgen_cpu_us_per_connect", 1)) for server in ("herald", "nchan")]
if all(h and g for _, h, g in cpu):
    out.append("CPU per connection while the 10,000 connections of (a) opened (µs; the server "
               "process, and the load generator's own):\n")
    out.append("| server | server CPU | load generator CPU | load generator's ceiling |")
    out.append("|---|---|---|---|")
    for server, h, g in cpu:
        out.append(f"| {server} | {cell(h)} | {cell(g)} | {1e6 / g[0]:,.0f}/s |")
    out.append("")
loss = []
for server in ("herald", "before", "nchan"):
    reports = [r for (w, s), rs in by.items() if s == server and w in "abcd" for r in rs]
    if not reports and server == "before":
        continue
    lost = sum(r["lost"] for r in reports)
    dup = sum(r["duplicates"] for r in reports)
    errors = sum(r["connect_errors"] + r["publish_errors"] for r in reports)
    fails = sum(v for (w, s), v in failed.items() if s == server)
    loss.append(f"{server}: {len(reports)} runs, {lost} lost, {dup} duplicated, "
                f"{errors} connect/publish errors, {fails} failed runs")
out.append("Deliveries: " + "; ".join(loss) + ".\n")

scale_rows = []
for name, title in (("scale1", "one node, memory broker"),
                    ("scale3", "three nodes sharing Redis")):
    procs = [l["report"] for l in lines if l["workload"] == name and l.get("process") is not None
             and l["report"] is not None]
    rss = [l for l in lines if l["workload"] == name and "rss_peak_bytes" in l]
    if not procs:
        continue
    conns = sum(r["connections"] for r in procs)
    asked = sum(r["connections_requested"] for r in procs)
    secs = max(r["connect_secs"] for r in procs)
    dels = sum(r["deliveries"] for r in procs)
    expected = sum(r["deliveries_expected"] for r in procs)
    lost = sum(r["lost"] for r in procs)
    dup = sum(r["duplicates"] for r in procs)
    p99 = max(r["latency_us"]["p99"] for r in procs) / 1000
    p50 = statistics.median(r["latency_us"]["p50"] for r in procs) / 1000
    per = ""
    if rss:
        per = f"{(rss[0]['rss_peak_bytes'] - rss[0]['rss_before_bytes']) / max(conns, 1) / 1024:.1f} KB"
    scale_rows.append(f"| {title} | {len(procs)} | {conns:,} of {asked:,} | {conns / secs:,.0f} | "
                      f"{dels:,} of {expected:,} | {lost} / {dup} | {p50:.1f} / {p99:.1f} ms | {per} |")
if scale_rows:
    out.append("Scale (Herald only; 100 channels per load-generator process, 100 events/s each):\n")
    out.append("| run | load generators | connections | connects/s | deliveries | lost / dup "
               "| latency p50 / worst p99 | hub RSS per connection |")
    out.append("|---|---|---|---|---|---|---|---|")
    out.extend(scale_rows)
    out.append("")

out.append(f"Machine: {platform.system()} {platform.release()}, load averages during the runs "
           f"(1/5/15 min) from {loads[0] if loads else '?'} to {loads[-1] if loads else '?'}. "
           f"Workload (b) published {events_b} events, (d) {events_d} events.\n")
print("\n".join(out))
