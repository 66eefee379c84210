#!/usr/bin/python3
"""End-to-end latency from runs.record_turns on a host to a subscriber of the fleet gateway, and
the same to a subscriber of the host itself as the baseline (measured on this machine; not a
test). Also what one gateway sustains: S subscribers on one run while the host records as fast
as it acknowledges.

    /usr/bin/python3 test/bench/fleet_latency_bench.py [--build DIR] [--rounds N] [--turns K]
        [--subscribers 1,8,32] [--burst T (at most 1984)] [--smoke]

Setup: one nats-server -js (single node, file store in $TMPDIR), one car-daemon --nats --host-id
(the exporter), one car-daemon --fleet (the gateway), all on 127.0.0.1. Latency rounds alternate
between the two subscribers (gateway, host, gateway, ...) so both see the same machine noise. In a
round the producer records K single-turn calls one after another; for each it takes the time
before sending the call and the time its subscriber's reader thread receives the event with that
cursor. Both paths pay the same Python client overhead, so the difference is what the export and
the gateway add: the exporter's queue and publish (ack wait), JetStream's store and the gateway's
ordered consumer, fan-out and write. Printed: one JSON line per round, then the medians over the
rounds of each side's p50 and p99 (milliseconds).

Sustain: for each S, S subscribers on the gateway subscribe to one run, then the producer records
--burst turns in calls of 16, 8 calls in flight. Printed: producer turns/s, events delivered per
second summed over the subscribers, and the gap notices and the events they report dropped (a
subscriber that reads slower than the burst arrives loses events past its 256-event queue, by
design). The subscribers are Python threads sharing one interpreter: at high S they, not the
gateway, are the bottleneck, which shows as drops."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

from nats_broker import NatsServer  # noqa: E402
from rawws import RawWs  # noqa: E402


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def start(daemon, *args):
    proc = subprocess.Popen([daemon, "--no-auth", "--listen", "127.0.0.1:0", "--log-level", os.environ.get("BENCH_LOG_LEVEL", "error"),
                             *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if line.startswith("listening ws://"):
            host, port = line.split("ws://", 1)[1].strip().rsplit(":", 1)
            # Keep draining stderr (into $BENCH_LOG_DIR when set) so the daemon never blocks on it.
            log_dir = os.environ.get("BENCH_LOG_DIR")
            sink = open(os.path.join(log_dir, f"daemon-{proc.pid}.log"), "wb") if log_dir else None

            def drain():
                for chunk in iter(lambda: proc.stderr.read1(65536), b""):
                    if sink:
                        sink.write(chunk)
                        sink.flush()
            threading.Thread(target=drain, daemon=True).start()
            return proc, (host, int(port))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit(f"fleet_latency_bench: car-daemon {' '.join(args)} did not start")


class Client:
    """One WebSocket JSON-RPC client. A reader thread files replies by id and timestamps every
    runs.trace.event by cursor (time.perf_counter at arrival)."""

    def __init__(self, address):
        self.ws = RawWs(address, timeout=30)
        self.ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_id = 0
        self.replies = {}
        self.arrivals = {}  # (run id, cursor) -> perf_counter
        self.events = 0
        self.gaps = 0
        self.dropped = 0  # events the gap notices say were dropped for this subscriber
        self.cond = threading.Condition()
        self.closed = False
        self.end = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                try:
                    text = self.ws.recv_text()
                except TimeoutError:  # idle for the socket's timeout: keep reading
                    continue
                now = time.perf_counter()
                m = json.loads(text)
                with self.cond:
                    if m.get("method") == "runs.trace.event":
                        self.arrivals[(m["params"]["run_id"], m["params"]["cursor"])] = now
                        self.events += 1
                    elif m.get("method") == "runs.trace.gap":
                        self.gaps += 1
                        self.dropped += m["params"]["dropped"]
                    elif "id" in m:
                        self.replies[m["id"]] = m
                    self.cond.notify_all()
        except Exception as e:  # noqa: BLE001 - the connection ended
            self.end = repr(e)
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def send(self, method, params):
        with self.cond:
            self.next_id += 1
            rid = self.next_id
        self.ws.send_text(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                      "params": params}))
        return rid

    def reply(self, rid, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while rid not in self.replies:
                if self.closed or time.monotonic() > deadline:
                    raise RuntimeError(f"no reply to request {rid}"
                                       + (f" (connection closed: {self.end})" if self.closed else ""))
                self.cond.wait(0.5)
            m = self.replies.pop(rid)
        if "result" not in m:
            raise RuntimeError(f"error reply: {m}")
        return m["result"]

    def call(self, method, params=None):
        return self.reply(self.send(method, params or {}))

    def wait_cursor(self, run_id, cursor, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while (run_id, cursor) not in self.arrivals:
                if self.closed or time.monotonic() > deadline:
                    raise RuntimeError(f"event {cursor} of {run_id} never arrived")
                self.cond.wait(0.5)
            return self.arrivals.pop((run_id, cursor))

    def wait_events(self, n, timeout=60.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.events + self.dropped < n and not self.closed and \
                    time.monotonic() < deadline:
                self.cond.wait(0.5)
            return self.events

    def close(self):
        self.ws.close()


class WireTap:
    """A core-NATS subscriber on every run subject: when the broker routes each exported record
    (as it stores it in the stream), by (run id, offset). Splits the gateway's latency into the
    export leg (host -> broker) and the gateway leg (broker -> gateway subscriber)."""

    def __init__(self, url, prefix="car"):
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.arrivals = {}
        self.cond = threading.Condition()
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n'
                          + f"SUB {prefix}.runs.> 1\r\nPING\r\n".encode())
        while self._line() != b"PONG":
            pass
        threading.Thread(target=self._read, daemon=True).start()

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read(self):
        try:
            while True:
                line = self._line()
                now = time.perf_counter()
                if line == b"PING":
                    self.sock.sendall(b"PONG\r\n")
                    continue
                parts = line.split()
                if not parts or parts[0] != b"HMSG":
                    continue
                header_size, total = int(parts[-2]), int(parts[-1])
                data = self._bytes(total)
                headers = dict(h.split(": ", 1) for h in
                               data[:header_size].decode().split("\r\n")[1:] if ": " in h)
                key = (headers.get("Car-Run"), int(headers.get("Car-Offset", "-1")))
                with self.cond:
                    self.arrivals[key] = now
                    self.cond.notify_all()
        except (EOFError, OSError):
            pass

    def wait(self, run_id, offset, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while (run_id, offset) not in self.arrivals:
                if time.monotonic() > deadline:
                    return None
                self.cond.wait(0.5)
            return self.arrivals.pop((run_id, offset))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_indexed(gw, run_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = gw.call("runs.list", {"agent_id": "bench"})["runs"]
        if any(r["run_id"] == run_id for r in runs):
            return
        time.sleep(0.01)
    raise RuntimeError(f"run {run_id} never indexed by the gateway")


def latency_round(producer, subscriber, gw, side, turns, tap=None):
    run_id = producer.call("runs.start", {"intent": "latency", "agent_id": "bench"})["run_id"]
    if side == "gateway":
        wait_indexed(gw, run_id)
    subscriber.call("runs.subscribe", {"run_id": run_id})
    samples, export_leg = [], []
    for i in range(turns):
        sent = time.perf_counter()
        producer.call("runs.record_turns", {"run_id": run_id, "turns": [{"prompt": f"p{i}"}]})
        arrived = subscriber.wait_cursor(run_id, i + 1)
        samples.append((arrived - sent) * 1000.0)
        if tap is not None:
            routed = tap.wait(run_id, i + 1)  # turn i is record i + 1
            if routed is not None:
                export_leg.append((routed - sent) * 1000.0)
    subscriber.call("runs.unsubscribe", {"run_id": run_id})
    producer.call("runs.complete", {"run_id": run_id, "outcome": {"status": "success"}})
    row = {"side": side, "turns": turns, "p50_ms": round(percentile(samples, 0.5), 3),
           "p99_ms": round(percentile(samples, 0.99), 3), "max_ms": round(max(samples), 3)}
    if export_leg:
        row["export_leg_p50_ms"] = round(percentile(export_leg, 0.5), 3)
    return row


def sustain(producer, gw_address, gw, subscribers, burst):
    run_id = producer.call("runs.start", {"intent": "sustain", "agent_id": "bench"})["run_id"]
    wait_indexed(gw, run_id)
    clients = [Client(gw_address) for _ in range(subscribers)]
    for c in clients:
        c.call("runs.subscribe", {"run_id": run_id})
    per_call, depth = 16, 8
    calls = burst // per_call
    started = time.perf_counter()
    pending = []
    for k in range(calls):
        batch = [{"prompt": f"p{k * per_call + j}", "output": "o" * 200} for j in range(per_call)]
        pending.append(producer.send("runs.record_turns", {"run_id": run_id, "turns": batch}))
        if len(pending) >= depth:
            producer.reply(pending.pop(0))
    for rid in pending:
        producer.reply(rid)
    produced = time.perf_counter()
    total = calls * per_call
    for c in clients:
        c.wait_events(total)
    delivered = time.perf_counter()
    events = sum(c.events for c in clients)
    gaps = sum(c.gaps for c in clients)
    dropped = sum(c.dropped for c in clients)
    for c in clients:
        c.close()
    producer.call("runs.complete", {"run_id": run_id, "outcome": {"status": "success"}})
    return {"subscribers": subscribers, "turns": total,
            "producer_turns_per_s": round(total / (produced - started)),
            "events_per_s": round(events / (delivered - started)),
            "events": events, "expected": total * subscribers, "gaps": gaps, "dropped": dropped,
            "drain_s": round(delivered - produced, 3)}


def main():
    build = arg("--build", os.path.join(ROOT, "build"))
    daemon = os.path.join(build, "examples", "car-daemon", "car-daemon")
    smoke = "--smoke" in sys.argv
    rounds = int(arg("--rounds", "2" if smoke else "10"))
    turns = int(arg("--turns", "20" if smoke else "200"))
    fanouts = [int(s) for s in arg("--subscribers", "1,4" if smoke else "1,8,32").split(",")]
    burst = min(1984, int(arg("--burst", "256" if smoke else "1984")))  # a run takes at most 2000 turns
    state = tempfile.mkdtemp(prefix="car-fleet-bench-")
    with NatsServer() as broker:
        host, host_address = start(daemon, "--state-dir", state, "--nats", broker.url,
                                   "--host-id", "bench-host")
        gateway, gw_address = start(daemon, "--fleet", broker.url)
        try:
            producer = Client(host_address)
            local_sub = Client(host_address)
            gw_sub = Client(gw_address)
            gw = Client(gw_address)
            tap = WireTap(broker.url)
            rows = []
            for r in range(rounds * 2):
                side = "gateway" if r % 2 == 0 else "host"
                row = latency_round(producer, gw_sub if side == "gateway" else local_sub, gw, side,
                                    turns, tap if side == "gateway" else None)
                rows.append(row)
                print(json.dumps(row), flush=True)
            summary = {}
            for side in ("gateway", "host") if rows else ():
                mine = [r for r in rows if r["side"] == side]
                summary[side] = {"p50_ms": round(statistics.median(r["p50_ms"] for r in mine), 3),
                                 "p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 3)}
                legs = [r["export_leg_p50_ms"] for r in mine if "export_leg_p50_ms" in r]
                if legs:
                    summary[side]["export_leg_p50_ms"] = round(statistics.median(legs), 3)
            print(json.dumps({"latency_medians": summary, "rounds": rounds, "turns": turns}),
                  flush=True)
            for s in fanouts:
                print(json.dumps(sustain(producer, gw_address, gw, s, burst)), flush=True)
        finally:
            for p in (gateway, host):
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
