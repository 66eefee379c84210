#!/usr/bin/python3
"""What car-daemon --nats costs the producers, and how fast it exports, measured in one run on this
machine (not a test; docs/FLEET.md "Export: measured").

    /usr/bin/python3 test/bench/nats_export_bench.py [--build DIR] [--pairs N] [--turns K]
                                                     [--runs R] [--batch B] [--depth D] [--smoke]

One nats-server -js (test/integration/nats_broker.py) on a loopback port serves the whole run.
For each pair it starts car-daemon without export, then with --nats (alternating, so both see the
same machine noise), each on a fresh state directory, and drives it with `car-bench fanout` (one
producer recording R runs of K turns back to back in B-turn calls, D in flight (16; 1 for per-call latency), one run-trace
subscriber, as sync_bench.py does). It prints one JSON line per run,
then the medians and the nats/none ratios of producer turns/s and record_turns latency p50/p99.
A third daemon per round, `down`, has --nats pointing at a port nothing listens on: the exporter
does its bookkeeping (cursors, dirty runs) but publishes nothing, which separates what exporting
costs in CPU (libnats and nats-server share the machine's cores with the producer) from any
waiting on the broker (there is none: a producer never waits for the exporter).

Export throughput, two ways, in the --nats runs: *live* — records acknowledged by the broker per
second from the producer's first call until the stream holds every record of the run (bounded by
the producer's own rate when the export keeps up; `export_lag_ms` says how long after the
producer's last call the last record was acknowledged); and *catch-up* — the daemon writes K turns
while its broker is down, then the broker starts and the records it reads back from the run store
are acknowledged at `catchup_records_per_s`."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
import nats_broker  # noqa: E402  (the integration tests' broker helper)

STREAM = "CAR"


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def start_daemon(daemon, state, extra):
    proc = subprocess.Popen([daemon, "--no-auth", "--listen", "127.0.0.1:0", "--state-dir", state,
                             "--log-level", "error", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        found = re.search(r"listening ws://(127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit(f"nats_export_bench: car-daemon {' '.join(extra)} did not start")


def stream_count(url):
    info = nats_broker.stream_info(url, STREAM, timeout=5.0)
    return info["state"]["messages"] if info else 0


def wait_count(url, count, timeout=120.0):
    """Polls (every 5 ms) until the stream holds `count` messages; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stream_count(url) >= count:
                return time.monotonic()
        except (OSError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    sys.exit(f"nats_export_bench: the stream never reached {count} messages")


DEPTH = 16  # calls in flight (--depth)


def fanout(bench, address, pid, turns, batch, label, runs):
    out = subprocess.run([bench, "fanout", "--label", label, "--target", f"ws-tcp:{address}",
                          "--subscribers", "1", "--batch", str(batch), "--turns", str(turns),
                          "--runs", str(runs), "--depth", str(DEPTH), "--server-pid", str(pid)],
                         capture_output=True, timeout=600, check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def one_run(bench, daemon, broker, mode, turns, batch, runs, index):
    state = tempfile.mkdtemp(prefix="car-nats-bench-")
    if mode == "nats":
        extra = ["--nats", broker.url, "--host-id", f"bench-{index}"]
    elif mode == "down":  # the exporter installed, its broker unreachable: bookkeeping only
        extra = ["--nats", f"127.0.0.1:{nats_broker.free_port()}", "--host-id", f"down-{index}"]
    else:
        extra = []
    proc, address = start_daemon(daemon, state, extra)
    try:
        before = stream_count(broker.url) if mode == "nats" else 0
        started = time.monotonic()
        row = fanout(bench, address, proc.pid, turns, batch, f"export-{mode}", runs)
        produced = time.monotonic()
        if mode == "nats":
            records = runs * (turns + 1)  # `started` and the turns (fanout leaves runs open)
            acked = wait_count(broker.url, before + records)
            row["export_records_per_s"] = round(records / (acked - started))
            row["export_lag_ms"] = round(max(0.0, acked - produced) * 1000, 1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(state, ignore_errors=True)
    row["mode"] = mode
    row["turns_per_s"] = row["turns"] / row["seconds"] if row["seconds"] > 0 else 0
    print(json.dumps(row), flush=True)
    return row


def catch_up_run(bench, daemon, turns, batch, runs):
    """Turns written while the broker is down, then the broker starts: records/s of the catch-up."""
    port = nats_broker.free_port()
    state = tempfile.mkdtemp(prefix="car-nats-bench-")
    proc, address = start_daemon(daemon, state, ["--nats", f"127.0.0.1:{port}", "--host-id", "catchup"])
    broker = nats_broker.NatsServer(port=port)
    try:
        fanout(bench, address, proc.pid, turns, batch, "export-catchup", runs)
        records = runs * (turns + 1)
        broker.start()
        # From the first acknowledged record (the reconnect backoff is not the export's speed).
        wait_count(broker.url, 1)
        first = stream_count(broker.url)
        started = time.monotonic()
        acked = wait_count(broker.url, records)
        row = {"mode": "catchup", "records": records - first,
               "catchup_records_per_s": round((records - first) / max(acked - started, 1e-6))}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        broker.close()
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def main():
    build = arg("--build", os.path.join(ROOT, "build"))
    smoke = "--smoke" in sys.argv
    pairs = int(arg("--pairs", "1" if smoke else "5"))
    turns = int(arg("--turns", "200" if smoke else "2000"))  # per run: at most 2000 (§7.3)
    runs = int(arg("--runs", "1" if smoke else "10"))
    batch = int(arg("--batch", "10"))
    global DEPTH
    DEPTH = int(arg("--depth", "16"))
    daemon = os.path.join(build, "examples", "car-daemon", "car-daemon")
    bench = os.path.join(build, "test", "bench", "car-bench")
    if not nats_broker.nats_server_available():
        sys.exit("nats_export_bench: nats-server not found")
    rows = {"none": [], "nats": [], "down": []}
    with nats_broker.NatsServer() as broker:
        for i in range(pairs):
            for mode in ("none", "nats", "down"):
                rows[mode].append(one_run(bench, daemon, broker, mode, turns, batch, runs, i))
    catch = [catch_up_run(bench, daemon, turns, batch, runs) for _ in range(max(1, pairs // 2))]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    none, nats, down = rows["none"], rows["nats"], rows["down"]
    summary = {
        "none_turns_per_s": round(med(none, "turns_per_s")),
        "nats_turns_per_s": round(med(nats, "turns_per_s")),
        "throughput_ratio_nats_to_none": round(med(nats, "turns_per_s") / med(none, "turns_per_s"), 3),
        "none_p50_us": med(none, "producer_p50_us"), "nats_p50_us": med(nats, "producer_p50_us"),
        "p50_ratio_nats_to_none": round(med(nats, "producer_p50_us") / med(none, "producer_p50_us"), 3),
        "none_p99_us": med(none, "producer_p99_us"), "nats_p99_us": med(nats, "producer_p99_us"),
        "p99_ratio_nats_to_none": round(med(nats, "producer_p99_us") / med(none, "producer_p99_us"), 3),
        "down_turns_per_s": round(med(down, "turns_per_s")),
        "throughput_ratio_down_to_none": round(med(down, "turns_per_s") / med(none, "turns_per_s"), 3),
        "p50_ratio_down_to_none": round(med(down, "producer_p50_us") / med(none, "producer_p50_us"), 3),
        "server_cpu_s_none": med(none, "server_cpu_s"), "server_cpu_s_nats": med(nats, "server_cpu_s"),
        "server_cpu_s_down": med(down, "server_cpu_s"),
        "export_live_records_per_s": med(nats, "export_records_per_s"),
        "export_lag_ms": med(nats, "export_lag_ms"),
        "export_catchup_records_per_s": med(catch, "catchup_records_per_s"),
    }
    print(json.dumps({"summary": summary, "pairs": pairs, "turns": turns, "runs": runs, "batch": batch, "depth": DEPTH,
                      "cores": os.cpu_count()}), flush=True)
    for row in none + nats + down:
        if row["refused_calls"]:
            sys.exit("nats_export_bench: a run refused turns")


if __name__ == "__main__":
    main()
