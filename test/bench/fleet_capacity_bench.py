#!/usr/bin/python3
"""The broker figures behind docs/FLEET.md's capacity plan, measured in one run on this machine (not
a test).

    /usr/bin/python3 test/bench/fleet_capacity_bench.py [--build DIR] [--rounds N] [--smoke]

Starts a real single-node `nats-server -js` and a real three-node JetStream cluster on loopback
ports (test/integration/nats_broker.py) and drives each with `jetstream_ingest_bench`: record-shaped
messages (a Nats-Msg-Id each, spread over many run subjects) published with a window of
unacknowledged messages, then one at a time. Rounds alternate single node (replicas 1) and cluster
(replicas 3), so both see the same machine noise; it prints one JSON line per run, then the medians
and the R3/R1 ratio. Last, what a subject costs the broker: the single node's resident memory with
a stream holding `--subjects` distinct run subjects against one holding 100 (same message count),
sampled from /proc while the stream is kept."""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
import nats_broker  # noqa: E402  (the tests' broker helper: real nats-server processes)


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ingest(tool, urls, replicas, count, size, subjects, keep=False):
    cmd = [tool, urls, "--replicas", str(replicas), "--count", str(count), "--size", str(size),
           "--subjects", str(subjects), "--latency-count", str(max(50, count // 100))]
    if keep:
        cmd += ["--keep", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def delete_stream(url):
    with nats_broker.NatsClient(url) as client:
        client.js("STREAM.DELETE.CARBENCH")


def main():
    build = arg("--build", os.path.join(ROOT, "build"))
    smoke = "--smoke" in sys.argv
    rounds = int(arg("--rounds", "1" if smoke else "3"))
    count = 2000 if smoke else 100000
    subjects_many = 1000 if smoke else 100000
    size = int(arg("--size", "400"))
    tool = os.path.join(build, "test", "bench", "jetstream_ingest_bench")
    if not os.path.exists(tool):
        sys.exit(f"fleet_capacity_bench: {tool} is missing (build with the nats feature)")
    if not nats_broker.nats_server_available():
        sys.exit("fleet_capacity_bench: nats-server is not installed (bash .ci/setup --fleet)")

    results = {1: [], 3: []}
    with nats_broker.NatsServer() as single, nats_broker.NatsCluster(3) as cluster:
        for _ in range(rounds):
            for replicas, urls in ((1, single.url), (3, cluster.urls)):
                run = ingest(tool, urls, replicas, count, size, 1000)
                print(json.dumps(run), flush=True)
                results[replicas].append(run)

        # Memory per subject: same message count, few against many subjects, stream kept.
        memory = {}
        for subjects in (100, subjects_many):
            before = rss_kib(single.proc.pid)
            ingest(tool, single.url, 1, subjects_many, 200, subjects, keep=True)
            time.sleep(1)
            memory[subjects] = rss_kib(single.proc.pid) - before
            delete_stream(single.url)
            time.sleep(1)

    def median(replicas, key):
        return statistics.median(r[key] for r in results[replicas])

    summary = {"rounds": rounds, "count": count, "size": size}
    for replicas in (1, 3):
        for key in ("records_per_s", "mb_per_s", "ack_p50_us", "ack_p99_us"):
            summary[f"r{replicas}_{key}"] = median(replicas, key)
    summary["r3_over_r1_throughput"] = round(summary["r3_records_per_s"] /
                                             summary["r1_records_per_s"], 2)
    summary["rss_kib_100_subjects"] = memory[100]
    summary[f"rss_kib_{subjects_many}_subjects"] = memory[subjects_many]
    summary["bytes_per_subject"] = round((memory[subjects_many] - memory[100]) * 1024 /
                                         (subjects_many - 100))
    print("summary " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
