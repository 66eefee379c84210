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


BASELINES = ["floor-ws-tcp", "car-ws-tcp", "beast-ws-tcp"]


def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def alt_rows(rows, scenario, name):
    """The alternating rounds' rows of one server (run-all's floor / car / beast block), in order."""
    return [r for r in rows if r.get("scenario") == scenario and r.get("label") == f"alt-{name}-ws-tcp"]


def alt_median_ratio(rows, scenario, key, num, den):
    """Median over the alternating rounds of num's `key` ÷ den's `key`, paired round by round."""
    return median(ratio(a.get(key), b.get(key))
                  for a, b in zip(alt_rows(rows, scenario, num), alt_rows(rows, scenario, den)))


def cpu_per_request(r):
    """Server CPU time per request in µs (from /proc: robust to a load generator that is the
    bottleneck, less so to other processes sharing the server's core)."""
    if not r or r.get("server_cpu_pct") is None or not r.get("rps"):
        return None
    return r["server_cpu_pct"] / 100.0 / r["rps"] * 1e6


def baselines_section(rows, p):
    """Tables for the no-limits floor and the Boost.Beast server beside car-daemon (issue 14)."""
    if not any(r.get("label", "").startswith(("floor-", "alt-floor-")) for r in rows):
        return
    p("### Against the no-limits floor and Boost.Beast (issue 14)\n")
    p("floor = `car-bench floor-server` (epoll, RapidJSON, no bounds/auth/persistence); "
      "beast = `beast-server` (Boost.Beast, the same JSON code); car = car-daemon. All over TCP.\n")
    p("| rtt, 1 connection, µs | method | p50 | p99 | p50 ÷ floor | p99 ÷ floor |")
    p("|---|---|---:|---:|---:|---:|")
    for suffix, method in (("", "server.handshake"), ("-agents", "host.agents")):
        floor = find(rows, "rtt", "floor-ws-tcp" + suffix)
        for label in BASELINES:
            r = find(rows, "rtt", label + suffix)
            if r:
                p(f"| {label} | {method} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | "
                  f"{fmt(ratio(r['p50_us'], floor and floor['p50_us']), 2)} | "
                  f"{fmt(ratio(r['p99_us'], floor and floor['p99_us']), 2)} |")
    p("")
    conns = sorted({r["connections"] for r in rows if r.get("scenario") == "throughput"
                    and r.get("label") == "floor-ws-tcp-agents"})
    if conns:
        p("| throughput, host.agents, C × 16, requests/s | " + " | ".join(f"C={c}" for c in conns) + " |")
        p("|---|" + "---:|" * len(conns))
        for label in BASELINES:
            cells = [fmt(g(find(rows, "throughput", label + "-agents", connections=c), "rps"))
                     for c in conns]
            p(f"| {label} | " + " | ".join(cells) + " |")
        for label in ("car-ws-tcp", "beast-ws-tcp"):
            cells = [fmt(ratio(g(find(rows, "throughput", label + "-agents", connections=c), "rps"),
                               g(find(rows, "throughput", "floor-ws-tcp-agents", connections=c), "rps")), 2)
                     for c in conns]
            p(f"| {label} ÷ floor | " + " | ".join(cells) + " |")
        p("")
    subs = sorted({r["subscribers"] for r in rows if r.get("scenario") == "fanout"
                   and r.get("label") == "floor-ws-tcp"})
    if subs:
        p("| fan-out events/s, S subscribers | " + " | ".join(f"S={s}" for s in subs) + " |")
        p("|---|" + "---:|" * len(subs))
        for label in BASELINES:
            cells = [fmt(g(find(rows, "fanout", label, subscribers=s), "events_per_s")) for s in subs]
            p(f"| {label} | " + " | ".join(cells) + " |")
        for label in ("car-ws-tcp", "beast-ws-tcp"):
            cells = [fmt(ratio(g(find(rows, "fanout", label, subscribers=s), "events_per_s"),
                               g(find(rows, "fanout", "floor-ws-tcp", subscribers=s), "events_per_s")), 2)
                     for s in subs]
            p(f"| {label} ÷ floor | " + " | ".join(cells) + " |")
        p("")
    rounds = len(alt_rows(rows, "throughput", "floor"))
    if rounds:
        tp = alt_rows(rows, "throughput", "floor")[0]
        fo = (alt_rows(rows, "fanout", "floor") or [{}])[0]
        p(f"Alternating rounds (floor, car, beast; {rounds} rounds): throughput "
          f"{tp.get('connections')} × {tp.get('depth')} host.agents; fan-out to "
          f"{fo.get('subscribers')} subscribers, batches of {fo.get('batch')}; rtt host.agents.\n")
        p("| round | server | requests/s | server CPU µs/request | events/s | rtt p50 µs | rtt p99 µs |")
        p("|---:|---|---:|---:|---:|---:|---:|")
        for i in range(rounds):
            for name in ("floor", "car", "beast"):
                def nth(scenario):
                    lst = alt_rows(rows, scenario, name)
                    return lst[i] if i < len(lst) else None
                t, f, r = nth("throughput"), nth("fanout"), nth("rtt")
                if t or f or r:
                    p(f"| {i + 1} | {name} | {fmt(g(t, 'rps'))} | {fmt(cpu_per_request(t), 3)} | "
                      f"{fmt(g(f, 'events_per_s'))} | "
                      f"{fmt(g(r, 'p50_us'))} | {fmt(g(r, 'p99_us'))} |")
        p("")
        p("| median of per-round ratios | throughput | server CPU per request | fan-out events/s | "
          "rtt p50 | rtt p99 |")
        p("|---|---:|---:|---:|---:|---:|")
        for num, den in (("car", "floor"), ("beast", "floor"), ("car", "beast")):
            cpu = median(ratio(cpu_per_request(a), cpu_per_request(b))
                         for a, b in zip(alt_rows(rows, "throughput", num), alt_rows(rows, "throughput", den)))
            p(f"| {num} ÷ {den} | {fmt(alt_median_ratio(rows, 'throughput', 'rps', num, den), 2)} | "
              f"{fmt(cpu, 2)} | "
              f"{fmt(alt_median_ratio(rows, 'fanout', 'events_per_s', num, den), 2)} | "
              f"{fmt(alt_median_ratio(rows, 'rtt', 'p50_us', num, den), 2)} | "
              f"{fmt(alt_median_ratio(rows, 'rtt', 'p99_us', num, den), 2)} |")
        p("")


def issue14_targets(rows):
    """The Targets rows of issue 14 (medians of the alternating floor / car / beast rounds)."""
    n = len(alt_rows(rows, "throughput", "floor"))
    tp = (alt_rows(rows, "throughput", "floor") or [{}])[0]
    subs = (alt_rows(rows, "fanout", "floor") or [{}])[0].get("subscribers")
    conns = f"{tp.get('connections')} conns × {tp.get('depth')}"
    m = f"median of {n} alternating rounds"

    def r(scenario, key, den):
        return alt_median_ratio(rows, scenario, key, "car", den)
    return [
        (f"throughput, {conns} host.agents, ≥ 1.0× the floor ({m})", r("throughput", "rps", "floor"), 1.0, True),
        (f"fan-out events/s, {subs} subscribers, turns persisted, ≥ 1.0× the floor ({m})",
         r("fanout", "events_per_s", "floor"), 1.0, True),
        (f"rtt p50, 1 connection host.agents, ≤ 1.05× the floor ({m})", r("rtt", "p50_us", "floor"), 1.05, False),
        (f"rtt p99, 1 connection host.agents, ≤ 1.2× the floor ({m})", r("rtt", "p99_us", "floor"), 1.2, False),
        (f"ahead of Beast: throughput ≥ 1.0× ({m})", r("throughput", "rps", "beast"), 1.0, True),
        (f"ahead of Beast: fan-out events/s ≥ 1.0× ({m})", r("fanout", "events_per_s", "beast"), 1.0, True),
        (f"ahead of Beast: rtt p50 ≤ 1.0× ({m})", r("rtt", "p50_us", "beast"), 1.0, False),
        (f"ahead of Beast: rtt p99 ≤ 1.0× ({m})", r("rtt", "p99_us", "beast"), 1.0, False),
    ]


def g(r, k):
    return None if r is None else r.get(k)


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

    baselines_section(rows, p)

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
    targets += issue14_targets(rows)
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
