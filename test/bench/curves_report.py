"""The cost curves' part of report.py (issue 14 item 3; the runs come from test/bench/curves.sh):
a table, a gnuplot script and a one-sentence reading per curve, and the per-event CPU target row.

Each reading says whether the curve is flat — its last point within 1.2× its first (or, for the
size curve, whether time grows in proportion to bytes) — and if not, what the measured numbers
say the cost is. Missing rows print as "—"; nothing here fails on a number.
"""
import os

FLAT = 1.2  # a curve whose far end is within this factor of its near end is called flat


def _rows(rows, scenario, label):
    return [r for r in rows if r.get("scenario") == scenario and r.get("label") == label
            and not r.get("skipped")]


def _fmt(x, digits=1):
    if x is None:
        return "—"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _float(x):
    return None if x is None else float(x)


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def _flatness(name, first, last, x0, x1, unit, why_not):
    """One sentence: flat, or not flat with the measured reason."""
    r = _ratio(last, first)
    if r is None:
        return f"*{name}: not measured.*"
    head = f"*{name}: {_fmt(first, 2)} {unit} at {x0:,} → {_fmt(last, 2)} {unit} at {x1:,} ({r:.2f}×)"
    if r <= FLAT:
        return head + " — flat.*"
    return head + f" — not flat: {why_not}*"


def _plot(plots, stem, title, xlabel, ylabel, columns, points, logy=True):
    """Writes STEM.dat and STEM.gp (rendered by run-all.sh into docs/perf-STEM.svg)."""
    dat = os.path.join(plots, f"curve-{stem}.dat")
    with open(dat, "w") as f:
        f.write("# x " + " ".join(c.replace(" ", "_") for c in columns) + "\n")
        for x, vals in points:
            f.write(f"{x} " + " ".join("NaN" if v is None else f"{v:.3f}" for v in vals) + "\n")
    with open(os.path.join(plots, f"curve-{stem}.gp"), "w") as f:
        f.write('set terminal svg size 800,480 dynamic enhanced font "sans,12"\n')
        f.write(f'set output "perf-curve-{stem}.svg"\n')
        f.write(f'set title "{title}"\n')
        f.write(f'set xlabel "{xlabel}"\nset ylabel "{ylabel}"\n')
        f.write("set logscale xy\n" if logy else "set logscale x\nset yrange [0:*]\n")
        f.write("set key top left\nset grid\n")
        titles = [c.replace("_", "\\_") for c in columns]  # gnuplot enhanced text
        plots_ = [f'"{dat}" using 1:{i + 2} with linespoints title "{t}"'
                  for i, t in enumerate(titles)]
        f.write("plot " + ", \\\n     ".join(plots_) + "\n")


def fanout_curve(rows, plots, p):
    pts = sorted(_rows(rows, "fanout", "curve-fanout"), key=lambda r: r["subscribers"])
    p("### Cost curve: server CPU per delivered event vs subscribers\n")
    p("One producer, `runs.record_turns` batches of 16 turns, one call in flight; server CPU "
      "(utime+stime from /proc) over the turns ÷ events delivered.\n")
    p("| subscribers | events delivered | events/s | server CPU s | CPU µs/event | "
      "e2e p50 µs | e2e p99 µs | producer p99 µs | missing |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in pts:
        p(f"| {r['subscribers']:,} | {r['events_delivered']:,} | {_fmt(r['events_per_s'])} | "
          f"{_fmt(r.get('server_cpu_s'), 3)} | {_fmt(_float(r.get('server_cpu_us_per_event')), 3)} | "
          f"{_fmt(r['e2e_p50_us'])} | {_fmt(r['e2e_p99_us'])} | {_fmt(r['producer_p99_us'])} | "
          f"{r['missing']} |")
    p("")
    # Flatness from 10 subscribers on (the reference point): at 1 the per-turn work
    # (parse, persist, stamp) is paid for one event, so that point is high by construction.
    ref = next((r for r in pts if r["subscribers"] >= 10), pts[0] if pts else None)
    far = pts[-1] if pts else None
    if ref is not None and far is not None:
        one = pts[0]
        why = ("the per-event CPU grows with the number of subscribers, so delivery is not "
               "O(1) per event: e2e p99 goes from "
               f"{_fmt(ref['e2e_p99_us'])} to {_fmt(far['e2e_p99_us'])} µs; "
               "see the events/s column for where the server saturates.")
        p(_flatness("CPU per event", ref.get("server_cpu_us_per_event"),
                    far.get("server_cpu_us_per_event"), ref["subscribers"], far["subscribers"],
                    "µs", why))
        p(f"(At {one['subscribers']} subscriber(s) the per-turn work — parse, persist, stamp — "
          f"is spread over one event each: {_fmt(one.get('server_cpu_us_per_event'), 2)} µs.) "
          "e2e latency is not flat by construction: one call delivers batch × S events, so at "
          f"{far['subscribers']:,} subscribers a batch is {far['batch'] * far['subscribers']:,} "
          f"events, which at the measured {_fmt(far['events_per_s'])} events/s take "
          f"{_fmt(1e6 * far['batch'] * far['subscribers'] / far['events_per_s'])} µs to write "
          f"(measured e2e p50: {_fmt(far['e2e_p50_us'])} µs).\n")
    _plot(plots, "fanout-cpu", "Server CPU per delivered event vs subscribers", "subscribers",
          "µs (CPU per event; e2e latency)",
          ["CPU µs per event", "e2e p50 µs", "e2e p99 µs"],
          [(r["subscribers"], [r.get("server_cpu_us_per_event"), r["e2e_p50_us"],
                               r["e2e_p99_us"]]) for r in pts])


def idle_curve(rows, plots, p):
    pts = sorted(_rows(rows, "idle", "curve-idle"), key=lambda r: r["connections"])
    p("### Cost curve: memory per idle WebSocket connection (TCP)\n")
    p("| connections | RSS before KiB | RSS after KiB | KiB per connection |")
    p("|---:|---:|---:|---:|")
    for r in pts:
        p(f"| {r['connections']:,} | {r['rss_before_kib']:,} | {r['rss_after_kib']:,} | "
          f"{_fmt(r['kib_per_conn'], 2)} |")
    for r in rows:
        if r.get("label") == "curve-idle" and r.get("skipped"):
            p(f"| {r['connections']:,} | skipped: {r['skipped']} | | |")
    p("")
    if len(pts) >= 3:
        # The marginal cost (RSS growth between the two largest counts ÷ their difference) is the
        # per-connection figure; the small counts also carry the allocator's first pages.
        def marginal(a, b):
            return (b["rss_after_kib"] - a["rss_after_kib"]) / (b["connections"] - a["connections"])
        m_lo, m_hi = marginal(pts[0], pts[1]), marginal(pts[-2], pts[-1])
        p(_flatness("Marginal KiB per idle connection", m_lo, m_hi, pts[1]["connections"],
                    pts[-1]["connections"], "KiB",
                    "each connection costs more memory the more there are.") +
          f" (RSS growth ÷ connections at {pts[0]['connections']:,} is "
          f"{_fmt(pts[0]['kib_per_conn'], 2)} KiB: the first connections also pay for the "
          "allocator's first pages and buffers that are then reused.)\n")
    _plot(plots, "idle-memory", "Server RSS per idle WebSocket connection", "connections",
          "KiB per connection", ["car-daemon KiB per connection"],
          [(r["connections"], [r["kib_per_conn"]]) for r in pts], logy=False)


def store_curve(rows, plots, p):
    seeds = sorted(_rows(rows, "seed", "curve-store"), key=lambda r: r["runs"])
    ns = [r["runs"] for r in seeds]

    def at(scenario, label, n):
        return next((r for r in _rows(rows, scenario, label) if r.get("stored_runs") == n), None)

    p("### Cost curve: request cost vs stored runs (100 agents)\n")
    p("`runs.get_trace` of an existing run, `runs.list` first page (limit 100) of one agent, and "
      "`runs.record_turns` (batches of 16) on a new run; round trips in µs, one connection.\n")
    p("| stored runs | seed s | start-up ms | get p50 | get p99 | list p50 | list p99 | "
      "record p50 | record p99 |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    series = []
    for s in seeds:
        n = s["runs"]
        get, lst, rec = at("rtt", "curve-store-get", n), at("rtt", "curve-store-list", n), \
            at("fanout", "curve-store-record", n)
        vals = [get and get["p50_us"], get and get["p99_us"], lst and lst["p50_us"],
                lst and lst["p99_us"], rec and rec["producer_p50_us"],
                rec and rec["producer_p99_us"]]
        series.append((n, [s.get("startup_ms")] + [vals[0], vals[2], vals[4]]))
        p(f"| {n:,} | {_fmt(s['seed_seconds'], 2)} | {_fmt(s.get('startup_ms'), 1)} | "
          + " | ".join(_fmt(v) for v in vals) + " |")
    p("")
    if len(seeds) >= 2:
        n0, n1 = ns[0], ns[-1]
        for name, unit, idx in [("runs.get_trace p50", "µs", 1), ("record_turns p50", "µs", 3),
                                ("start-up to listening", "ms", 0)]:
            first, last = series[0][1][idx], series[-1][1][idx]
            why = f"grows {_fmt(_ratio(last, first), 2)}× for {n1 // n0:,}× the runs."
            if idx == 0:
                why += (" Start-up is timed by polling the log every millisecond, after a "
                        "process start of its own; compare the absolute growth, "
                        f"{_fmt(last - first, 1)} ms.") if first and last else ""
            p(_flatness(name, first, last, n0, n1, unit, why))
        # The first list page holds min(100, N / 100 agents) runs: it fills up at 10^4, so its
        # cost is compared from there (below that the reply itself is smaller).
        full = [x for x in series if x[0] >= 100 * 100]
        if len(full) >= 2:
            p(_flatness("runs.list p50 (full 100-run pages)", full[0][1][2], full[-1][1][2],
                        full[0][0], full[-1][0], "µs",
                        "the page costs more the more runs the agent has."))
        p(f"(runs.list below {100 * 100:,} runs returns shorter pages — N / 100 runs per agent — "
          f"so its p50 of {_fmt(series[0][1][2])} µs at {n0:,} is a smaller reply, not a faster "
          "store.)\n")
    _plot(plots, "stored-runs", "Request cost vs stored runs", "stored runs", "µs (start-up: ms)",
          ["start-up ms", "runs.get_trace p50 µs", "runs.list p50 µs", "record_turns p50 µs"],
          series)


def size_curve(rows, plots, p):
    car = {r["request_bytes"]: r for r in _rows(rows, "rtt", "curve-size-car")}
    pre = {r["request_bytes"]: r for r in _rows(rows, "rtt", "curve-size-prebuilt")}
    sizes = sorted(car)
    p("### Cost curve: round trip vs request size (up to the 16 MiB message limit)\n")
    p("`server.handshake` with one extra string param of the given size (the daemon parses and "
      "UTF-8-validates it all, then ignores it; the reply is small) against ws-prebuilt-server "
      "(transport only: reads and unmasks the frame, answers pre-encoded bytes). µs, one "
      "connection over TCP loopback.\n")
    p("| request bytes | samples | car p50 | car p99 | prebuilt p50 | prebuilt p99 | "
      "car − prebuilt p50 | car MB/s | prebuilt MB/s |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in sizes:
        c, b = car.get(s), pre.get(s)
        extra = c["p50_us"] - b["p50_us"] if b else None
        p(f"| {s:,} | {c['requests']} | {_fmt(c['p50_us'])} | {_fmt(c['p99_us'])} | "
          f"{_fmt(b and b['p50_us'])} | {_fmt(b and b['p99_us'])} | {_fmt(extra)} | "
          f"{_fmt(s / c['p50_us'])} | {_fmt(b and s / b['p50_us'])} |")
    p("")
    if len(sizes) >= 2:
        s0, s1 = sizes[0], sizes[-1]
        c0, c1 = car[s0]["p50_us"], car[s1]["p50_us"]
        # The slope between the two largest sizes is the per-byte cost (fixed costs cancel).
        sa, sb = sizes[-2], sizes[-1]
        slope = _ratio(sb - sa, car[sb]["p50_us"] - car[sa]["p50_us"])  # bytes per µs = MB/s
        pslope = None
        if sa in pre and sb in pre:
            pslope = _ratio(sb - sa, pre[sb]["p50_us"] - pre[sa]["p50_us"])
        extra = None
        if slope and pslope:
            extra = 1e3 * (1 / slope - 1 / pslope)  # ns per byte beyond the transport
        p(f"*Size curve: not flat by nature — p50 goes from {_fmt(c0)} µs at {s0:,} B to "
          f"{_fmt(c1)} µs at {s1:,} B. Between {sa:,} and {sb:,} B car-daemon handles "
          f"{_fmt(slope)} MB/s per extra byte, the transport-only server {_fmt(pslope)} MB/s: "
          f"car-daemon's cost beyond reading and unmasking the frame is {_fmt(extra, 2)} ns per "
          "byte (where it goes: `perf record -g -p` on the daemon during this block).*\n")
    _plot(plots, "message-size", "Round trip vs request size", "request bytes", "µs",
          ["car-daemon p50", "car-daemon p99", "ws-prebuilt-server p50",
           "ws-prebuilt-server p99"],
          [(s, [car[s]["p50_us"], car[s]["p99_us"], pre.get(s, {}).get("p50_us"),
                pre.get(s, {}).get("p99_us")]) for s in sizes])


def sections(rows, plots):
    """The curves' markdown lines; writes their plots into PLOTS."""
    os.makedirs(plots, exist_ok=True)
    out = []
    for curve in (fanout_curve, idle_curve, store_curve, size_curve):
        curve(rows, plots, out.append)
    return out


def targets(rows):
    """(name, value, limit, higher_is_better) rows for report.py's Targets table."""
    pts = {r["subscribers"]: r for r in _rows(rows, "fanout", "curve-fanout")}
    at10 = pts.get(10, {}).get("server_cpu_us_per_event")
    at1000 = pts.get(1000, {}).get("server_cpu_us_per_event")
    return [("per-event CPU at 1,000 subscribers ≤ 1.2× at 10", _ratio(at1000, at10), 1.2, False)]
