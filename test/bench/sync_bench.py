#!/usr/bin/python3
"""What --sync batch costs against --sync none, measured in one run on this machine (not a test).

    /usr/bin/python3 test/bench/sync_bench.py [--build DIR] [--pairs N] [--turns K] [--smoke]

For each pair it starts car-daemon with --sync none, then with --sync batch (alternating, so both
see the same machine noise), each on a fresh state directory in $TMPDIR, and drives it with
`car-bench fanout` (one producer recording single-turn calls, one subscriber): sequentially (one
call in flight: every call pays its own sync) and pipelined (16 in flight: calls queued while a
sync runs share the next one). It prints one JSON line per run and then the medians and the
batch/none ratios of producer turns/s and p50 latency. The state directory's file system decides
the cost of fdatasync: say which one it was when you quote the numbers."""

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


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def start_daemon(daemon, sync, state):
    proc = subprocess.Popen([daemon, "--no-auth", "--listen", "127.0.0.1:0", "--state-dir", state,
                             "--sync", sync, "--log-level", "error"],
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
    sys.exit(f"sync_bench: car-daemon --sync {sync} did not start")


def one_run(bench, daemon, sync, depth, turns, label):
    state = tempfile.mkdtemp(prefix="car-sync-bench-")
    proc, address = start_daemon(daemon, sync, state)
    try:
        out = subprocess.run([bench, "fanout", "--label", label, "--target", f"ws-tcp:{address}",
                              "--subscribers", "1", "--batch", "1", "--turns", str(turns),
                              "--depth", str(depth), "--server-pid", str(proc.pid)],
                             capture_output=True, timeout=300, check=True)
        row = json.loads(out.stdout.decode().strip().splitlines()[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(state, ignore_errors=True)
    row["sync"] = sync
    row["turns_per_s"] = row["turns"] / row["seconds"] if row["seconds"] > 0 else 0
    print(json.dumps(row), flush=True)
    return row


def main():
    build = arg("--build", os.path.join(ROOT, "build"))
    smoke = "--smoke" in sys.argv
    pairs = int(arg("--pairs", "1" if smoke else "3"))
    turns = int(arg("--turns", "50" if smoke else "1000"))
    daemon = os.path.join(build, "examples", "car-daemon", "car-daemon")
    bench = os.path.join(build, "test", "bench", "car-bench")
    fs = subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()], capture_output=True).stdout
    print(f"# state directories under {tempfile.gettempdir()} ({fs.decode().strip()})", flush=True)
    rows = {}
    for _ in range(pairs):
        for depth in (1, 16):
            for sync in ("none", "batch"):
                row = one_run(bench, daemon, sync, depth, turns, f"sync-{sync}-depth{depth}")
                rows.setdefault((depth, sync), []).append(row)
    summary = {}
    for depth in (1, 16):
        none = rows[(depth, "none")]
        batch = rows[(depth, "batch")]
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        summary[f"depth{depth}"] = {
            "none_turns_per_s": round(med(none, "turns_per_s")),
            "batch_turns_per_s": round(med(batch, "turns_per_s")),
            "throughput_ratio_batch_to_none": round(med(batch, "turns_per_s") / med(none, "turns_per_s"), 3),
            "none_p50_us": med(none, "producer_p50_us"),
            "batch_p50_us": med(batch, "producer_p50_us"),
        }
    print(json.dumps({"summary": summary, "pairs": pairs, "turns": turns}), flush=True)
    for row in (r for rs in rows.values() for r in rs):
        if row["missing"] or row["refused_calls"]:
            sys.exit("sync_bench: a run lost or refused turns")


if __name__ == "__main__":
    main()
