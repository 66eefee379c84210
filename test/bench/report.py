#!/usr/bin/env python3
"""Turns car-bench's JSON lines (one run of test/bench/run-all.sh) into the markdown tables of
docs/PERFORMANCE.md, with every ratio taken between numbers of that same run, and writes gnuplot
scripts (+ data) for the two plots.

    report.py RESULTS.jsonl --machine TEXT --plots DIR

Missing rows (a smoke run, a pending scenario) print as "—"; the script never fails on a number.
"""
import argparse
import json
import os
import sys

import curves_report


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def find(rows, scenario, label, **match):
    for r in rows:
        if r.get("scenario") == scenario and r.get("label") == label and all(
            r.get(k) == v for k, v in match.items()
        ):
            return r
    return None


def fmt(x, digits=1):
    if x is None:
        return "—"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if isinstance(x, int):
            return str(x)
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return str(x)


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def verdict(value, limit, higher_is_better):
    if value is None:
        return "not measured"
    ok = value >= limit if higher_is_better else value <= limit
    return "**met**" if ok else "**not met**"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--machine", default="")
    ap.add_argument("--plots", required=True)
    args = ap.parse_args()
    rows = load(args.results)
    out = []
    p = out.append

    p(f"Machine: {args.machine}\n")

    # ---- RTT ----
    p("### RTT (1 connection, sequential `server.handshake`, µs)\n")
    p("| target | p50 | p90 | p99 | max | p50 ÷ floor | p99 ÷ floor | floor |")
    p("|---|---:|---:|---:|---:|---:|---:|---|")
    raw_unix = find(rows, "rtt", "raw-unix")
    raw_tcp = find(rows, "rtt", "raw-tcp")
    for label in ["raw-unix", "raw-tcp", "prebuilt-ws-unix", "prebuilt-ws-tcp", "car-ws-unix",
                  "car-ws-tcp", "car-stdio", "car-stdio-cl", "node-ws-tcp"]:
        r = find(rows, "rtt", label)
        if r is None:
            continue
        floor = raw_unix if ("unix" in label or "stdio" in label) else raw_tcp
        fname = "raw-unix" if floor is raw_unix else "raw-tcp"
        p(f"| {label} | {fmt(r['p50_us'])} | {fmt(r['p90_us'])} | {fmt(r['p99_us'])} | "
          f"{fmt(r['max_us'])} | {fmt(ratio(r['p50_us'], floor and floor['p50_us']), 2)} | "
          f"{fmt(ratio(r['p99_us'], floor and floor['p99_us']), 2)} | {fname} |")
    p("")

    # ---- throughput ----
    p("### Throughput (C connections × 16 in flight, requests/s)\n")
    conns = sorted({r["connections"] for r in rows if r.get("scenario") == "throughput"
                    and r.get("label") in ("car-ws-tcp", "node-ws-tcp")})
    labels = ["prebuilt-ws-tcp", "raw-tcp", "car-ws-tcp", "car-ws-unix", "node-ws-tcp"]
    p("| target | " + " | ".join(f"C={c}" for c in conns) + " | server CPU % at max C | client CPU % at max C |")
    p("|---|" + "---:|" * len(conns) + "---:|---:|")
    for label in labels:
        cells = []
        last = None
        for c in conns:
            r = find(rows, "throughput", label, connections=c)
            cells.append(fmt(r and r["rps"]))
            last = r or last
        if last is None:
            continue
        p(f"| {label} | " + " | ".join(cells) +
          f" | {fmt(last.get('server_cpu_pct'))} | {fmt(last.get('client_cpu_pct'))} |")
    p("| car-ws-tcp ÷ node-ws-tcp | " + " | ".join(
        fmt(ratio((find(rows, "throughput", "car-ws-tcp", connections=c) or {}).get("rps"),
                  (find(rows, "throughput", "node-ws-tcp", connections=c) or {}).get("rps")), 2)
        for c in conns) + " | | |")
    p("")
    p("| stdio vs UDS (1 connection × 16 in flight) | requests/s | ÷ car-ws-unix C=1 |")
    p("|---|---:|---:|")
    uds1 = find(rows, "throughput", "car-ws-unix", connections=1)
    for label in ["car-ws-unix", "car-stdio", "car-stdio-cl"]:
        r = find(rows, "throughput", label, connections=1)
        if r:
            p(f"| {label} | {fmt(r['rps'])} | {fmt(ratio(r['rps'], uds1 and uds1['rps']), 2)} |")
    p("")

    # ---- idle ----
    p("### Idle connections (server RSS growth)\n")
    p("| target | connections | RSS before KiB | RSS after KiB | KiB per connection |")
    p("|---|---:|---:|---:|---:|")
    for label in ["car-ws-tcp", "car-ws-unix", "node-ws-tcp", "prebuilt-ws-tcp"]:
        r = find(rows, "idle", label)
        if r:
            p(f"| {label} | {r['connections']} | {r['rss_before_kib']} | {r['rss_after_kib']} | "
              f"{fmt(r['kib_per_conn'], 2)} |")
    p("")

    # ---- fanout ----
    p("### Fan-out (1 producer, record_turns batches, S subscribers)\n")
    pending = any(r.get("pending") for r in rows)
    if pending:
        p("*pending: the daemon under test does not answer runs.start yet.*\n")
    p("| target | S | W | batch | in flight | runs | events/s | producer p50 µs | producer p99 µs | "
      "e2e p50 µs | e2e p99 µs | missing | dup | gaps | events/hop | events/pass |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    fan_rows = [r for r in rows if r.get("scenario") in ("fanout", "wedged")
                and not r.get("pending") and r.get("label") != "probe"
                and not r.get("label", "").startswith("curve-")]
    for r in fan_rows:
        p(f"| {r['label']} | {r['subscribers']} | {r['wedged']} | {r['batch']} | "
          f"{r.get('depth', 1)} | {r.get('runs', 1)} | "
          f"{fmt(r['events_per_s'])} | {fmt(r['producer_p50_us'])} | {fmt(r['producer_p99_us'])} | "
          f"{fmt(r['e2e_p50_us'])} | {fmt(r['e2e_p99_us'])} | {r['missing']} | {r['duplicates']} | "
          f"{r['gaps_seen']} | {fmt(r.get('events_per_hop'))} | {fmt(r.get('events_per_pass'))} |")
    p("")

    # ---- dispatch ----
    dispatch = next((r for r in rows if r.get("bench") == "dispatch" and r.get("summary")), None)

    # ---- targets ----
    subs = sorted({r["subscribers"] for r in fan_rows if r["label"] == "car-ws-tcp"})
    smax = subs[-1] if subs else None
    car_f = find(rows, "fanout", "car-ws-tcp", subscribers=smax) if smax else None
    node_f = find(rows, "fanout", "node-ws-tcp", subscribers=smax) if smax else None
    nowedge = find(rows, "fanout", "car-ws-tcp-nowedge")
    wedged = find(rows, "wedged", "car-ws-tcp-wedged")
    # Isolation verdicts: the median over the alternating (without, with) pairs of the run.
    pairs = list(zip([r for r in rows if r.get("label") == "car-ws-tcp-nowedge"],
                     [r for r in rows if r.get("label") == "car-ws-tcp-wedged"]))

    def median_pair_ratio(key):
        vals = sorted(v for v in (ratio(w.get(key), n.get(key)) for n, w in pairs) if v is not None)
        return vals[len(vals) // 2] if vals else None
    saturated = find(rows, "fanout", "car-ws-tcp-saturated")
    loop_sat = find(rows, "fanout", "car-ws-tcp-loopdrain-saturated")
    loop_1 = find(rows, "fanout", "car-ws-tcp-loopdrain")
    uds = find(rows, "rtt", "car-ws-unix")
    cmax = conns[-2] if len(conns) >= 2 and 50 in conns else (conns[-1] if conns else None)
    if 50 in conns:
        cmax = 50
    car50 = find(rows, "throughput", "car-ws-tcp", connections=cmax) if cmax else None
    node50 = find(rows, "throughput", "node-ws-tcp", connections=cmax) if cmax else None
    idle = find(rows, "idle", "car-ws-tcp")
    cl = find(rows, "throughput", "car-stdio-cl", connections=1)

    def g(r, k):
        return None if r is None else r.get(k)

    targets = [
        ("UDS RTT p50 ≤ 2.0× raw UDS", ratio(g(uds, "p50_us"), g(raw_unix, "p50_us")), 2.0, False),
        ("UDS RTT p99 ≤ 3.0× raw UDS", ratio(g(uds, "p99_us"), g(raw_unix, "p99_us")), 3.0, False),
        (f"WS throughput, {cmax} conns × 16, ≥ 3× Node ws", ratio(g(car50, "rps"), g(node50, "rps")), 3.0, True),
        ("idle RSS per WebSocket connection ≤ 16 KiB", g(idle, "kib_per_conn"), 16.0, False),
        ("stdio Content-Length throughput ≥ 0.8× UDS", ratio(g(cl, "rps"), g(uds1, "rps")), 0.8, True),
        ("dispatch CPU ≤ 2.0× RapidJSON (median ratio)", g(dispatch, "median_ratio"), 2.0, False),
        ("dispatch CPU ≤ 2.0× tuned RapidJSON (median)", g(dispatch, "median_ratio_tuned"), 2.0, False),
        (f"fan-out events/s, {smax} subscribers, ≥ 3× Node", ratio(g(car_f, "events_per_s"), g(node_f, "events_per_s")), 3.0, True),
        (f"wedged (5): producer p99 ≤ 1.2× without (median of {len(pairs)} pairs)",
         median_pair_ratio("producer_p99_us"), 1.2, False),
        (f"wedged (5): healthy e2e p99 ≤ 1.2× without (median of {len(pairs)} pairs)",
         median_pair_ratio("e2e_p99_us"), 1.2, False),
        (f"events per pool hop ≥ 64 ({g(nowedge, 'subscribers')} subscribers, 1 call in flight)",
         g(nowedge, "events_per_hop"), 64.0, True),
        (f"events per pool hop ≥ 64 (saturated: {g(saturated, 'depth')} calls in flight)",
         g(saturated, "events_per_hop"), 64.0, True),
        ("pool drain events/s ≥ 0.8× loop drain (saturated)",
         ratio(g(saturated, "events_per_s"), g(loop_sat, "events_per_s")), 0.8, True),
        ("pool drain events/s ≥ 0.8× loop drain (1 call in flight)",
         ratio(g(nowedge, "events_per_s"), g(loop_1, "events_per_s")), 0.8, True),
    ]
    targets += curves_report.targets(rows)
    out += curves_report.sections(rows, args.plots)
    p("### Targets\n")
    p("| target | measured | verdict |")
    p("|---|---:|---|")
    for name, value, limit, higher in targets:
        p(f"| {name} | {fmt(value, 2)} | {verdict(value, limit, higher)} |")
    p("")
    print("\n".join(out))

    # ---- plots ----
    os.makedirs(args.plots, exist_ok=True)
    tp_dat = os.path.join(args.plots, "throughput.dat")
    with open(tp_dat, "w") as f:
        f.write("# C " + " ".join(labels) + "\n")
        for c in conns:
            vals = [g(find(rows, "throughput", lab, connections=c), "rps") for lab in labels]
            f.write(f"{c} " + " ".join("NaN" if v is None else f"{v:.0f}" for v in vals) + "\n")
    with open(os.path.join(args.plots, "throughput.gp"), "w") as f:
        f.write('set terminal svg size 800,480 dynamic enhanced font "sans,12"\n')
        f.write('set output "perf-throughput.svg"\n')
        f.write('set title "Throughput vs connections (16 requests in flight per connection)"\n')
        f.write('set xlabel "connections"\nset ylabel "requests/s"\nset logscale x\nset key top left\n')
        f.write("set grid\nset format y '%.0s%c'\n")
        plots = [f'"{tp_dat}" using 1:{i + 2} with linespoints title "{lab}"'
                 for i, lab in enumerate(labels)]
        f.write("plot " + ", \\\n     ".join(plots) + "\n")
    fan_dat = os.path.join(args.plots, "fanout.dat")
    with open(fan_dat, "w") as f:
        f.write("# S car_e2e_p50 car_e2e_p99 car_prod_p99 node_e2e_p50 node_e2e_p99 node_prod_p99\n")
        for s in subs:
            c = find(rows, "fanout", "car-ws-tcp", subscribers=s)
            n = find(rows, "fanout", "node-ws-tcp", subscribers=s)
            vals = [g(c, "e2e_p50_us"), g(c, "e2e_p99_us"), g(c, "producer_p99_us"),
                    g(n, "e2e_p50_us"), g(n, "e2e_p99_us"), g(n, "producer_p99_us")]
            f.write(f"{s} " + " ".join("NaN" if v is None else f"{v:.1f}" for v in vals) + "\n")
    with open(os.path.join(args.plots, "fanout.gp"), "w") as f:
        f.write('set terminal svg size 800,480 dynamic enhanced font "sans,12"\n')
        f.write('set output "perf-fanout-latency.svg"\n')
        f.write(f'set title "Fan-out latency vs subscribers (batches of {g(car_f, "batch")} turns)"\n')
        f.write('set xlabel "subscribers"\nset ylabel "µs"\nset logscale xy\nset key top left\nset grid\n')
        names = ["carcore e2e p50", "carcore e2e p99", "carcore record\\_turns p99",
                 "node e2e p50", "node e2e p99", "node record\\_turns p99"]
        plots = [f'"{fan_dat}" using 1:{i + 2} with linespoints title "{nm}"'
                 for i, nm in enumerate(names)]
        f.write("plot " + ", \\\n     ".join(plots) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
