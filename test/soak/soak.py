#!/usr/bin/env python3
"""Soak: mixed traffic against one car-daemon for a while (default 10 minutes), sampling the
daemon's RSS, open file descriptors and the p99 latency of plain RPCs every 10 s. Not part of CI:
run it by hand, e.g.

    /usr/bin/python3 test/soak/soak.py --minutes 10

Traffic, all at once, all on 127.0.0.1:
  - rpc:      4 connections calling host.agents / host.events in a loop (the latency measured);
  - recorder: one run recording turns without pause (a new run every 1,500 turns), with a
              churning crowd of subscribers that subscribe, read for a while and leave;
  - wedged:   subscribers that subscribe and never read again, replaced every 30 s;
  - pings:    a connection that floods pings without reading for 1 s of every 10;
  - store:    runs started and completed under ever new agent ids (the store grows).

Pass = flat: the RSS of the last third of the samples stays within 1.25x (+16 MiB) of the first
third's, the fd count returns to within 32 of its first value, and the p99 of the last third is
within 3x of the first third's. It prints one line per sample and a verdict, and exits 1 on a
failed verdict or if the daemon died.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import websockets  # noqa: E402

from harness import Daemon, proc_status_kib  # noqa: E402
from rawws import RawWs  # noqa: E402


class Call:
    """A JSON-RPC client over one websockets connection, with pipelining."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.waiting = {}
        self.notes = asyncio.Queue(maxsize=10000)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for text in self.ws:
                msg = json.loads(text)
                if "id" in msg and msg["id"] in self.waiting:
                    self.waiting.pop(msg["id"]).set_result(msg)
                elif not self.notes.full():
                    self.notes.put_nowait(msg)
        except websockets.ConnectionClosed:
            pass
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("closed"))

    async def __call__(self, method, params=None, timeout=30):
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                       "params": params or {}}))
        return await asyncio.wait_for(future, timeout)


class Soak:
    def __init__(self, daemon, seconds):
        self.daemon = daemon
        self.url = daemon.ws_url()
        self.deadline = time.monotonic() + seconds
        self.latencies = []
        self.samples = []
        self.errors = 0
        self.run_id = None

    def running(self):
        return time.monotonic() < self.deadline

    async def connect(self):
        return Call(await websockets.connect(self.url, max_size=None, ping_interval=None))

    async def rpc(self):
        call = await self.connect()
        while self.running():
            start = time.perf_counter()
            try:
                await call(random.choice(["host.agents", "host.events"]))
            except Exception:
                self.errors += 1
                call = await self.connect()
                continue
            self.latencies.append(time.perf_counter() - start)

    async def recorder(self):
        call = await self.connect()
        turns = 0
        while self.running():
            if self.run_id is None or turns >= 1500:
                if self.run_id is not None:
                    await call("runs.complete", {"run_id": self.run_id, "outcome": {"status": "ok"}})
                r = await call("runs.start", {"intent": "soak", "agent_id": "soak"})
                self.run_id, turns = r["result"]["run_id"], 0
            batch = [{"prompt": "p" * 200, "output": "o" * 200} for _ in range(16)]
            r = await call("runs.record_turns", {"run_id": self.run_id, "turns": batch})
            if r.get("result", {}).get("ok"):
                turns += 16
            else:
                self.errors += 1

    async def churning_subscriber(self):
        while self.running():
            if self.run_id is None:
                await asyncio.sleep(0.1)
                continue
            try:
                call = await self.connect()
                await call("runs.subscribe", {"run_id": self.run_id})
                end = time.monotonic() + random.uniform(0.5, 5)
                while time.monotonic() < end:
                    try:
                        await asyncio.wait_for(call.notes.get(), 1)
                    except asyncio.TimeoutError:
                        pass
                await call.ws.close()
            except Exception:
                self.errors += 1

    async def wedged(self):
        host, port = RawWs.url_address(self.url)
        held = []
        while self.running():
            if self.run_id is not None:
                for ws in held:
                    ws.sock.close()
                held = []
                for i in range(5):
                    ws = RawWs((host, port))
                    ws.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "runs.subscribe",
                                             "params": {"run_id": self.run_id}}))
                    held.append(ws)  # never read again
            await asyncio.sleep(30)
        for ws in held:
            ws.sock.close()

    async def pings(self):
        host, port = RawWs.url_address(self.url)
        # One masked ping frame (a zero mask: the payload goes as it is), sent without blocking:
        # the daemon stops reading a peer that does not read its pongs.
        ping = bytes([0x89, 0x80 | 100]) + b"\0\0\0\0" + b"x" * 100
        while self.running():
            ws = RawWs((host, port))
            ws.sock.setblocking(False)
            end = time.monotonic() + 1
            pending = b""
            while time.monotonic() < end:
                try:
                    pending = pending or ping * 64
                    pending = pending[ws.sock.send(pending):]  # a partial send goes on next time
                except (BlockingIOError, OSError):
                    await asyncio.sleep(0.001)
                    continue
                await asyncio.sleep(0)
            ws.sock.close()
            await asyncio.sleep(9)

    async def store_growth(self):
        call = await self.connect()
        n = 0
        while self.running():
            n += 1
            r = await call("runs.start", {"intent": "grow", "agent_id": f"grow-{n}"})
            await call("runs.complete", {"run_id": r["result"]["run_id"], "outcome": {"status": "ok"}})
            await asyncio.sleep(0.01)

    async def sampler(self):
        pid = self.daemon.proc.pid
        while self.running():
            await asyncio.sleep(10)
            if self.daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon died (exit {self.daemon.proc.returncode})")
            rss_kb = proc_status_kib(pid, "VmRSS")
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            window, self.latencies = self.latencies, []
            p99 = sorted(window)[int(len(window) * 0.99)] * 1e3 if window else float("nan")
            sample = {"t": len(self.samples) * 10 + 10, "rss_mb": rss_kb / 1024, "fds": fds,
                      "p99_ms": p99, "calls": len(window), "errors": self.errors}
            self.samples.append(sample)
            print(json.dumps(sample), flush=True)

    async def main(self):
        tasks = [self.rpc() for _ in range(4)] + [self.recorder(), self.wedged(), self.pings(),
                                                  self.store_growth(), self.sampler()]
        tasks += [self.churning_subscriber() for _ in range(8)]
        await asyncio.gather(*tasks)


def verdict(samples):
    if len(samples) < 3:
        return False, "too few samples"
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    rss_ok = med(last, "rss_mb") <= 1.25 * med(first, "rss_mb") + 16
    fds_ok = samples[-1]["fds"] <= samples[0]["fds"] + 32
    p99_ok = med(last, "p99_ms") <= 3 * med(first, "p99_ms")
    text = (f"rss {med(first, 'rss_mb'):.1f} -> {med(last, 'rss_mb'):.1f} MiB "
            f"({'flat' if rss_ok else 'GROWING'}), fds {samples[0]['fds']} -> {samples[-1]['fds']} "
            f"({'flat' if fds_ok else 'GROWING'}), p99 {med(first, 'p99_ms'):.2f} -> "
            f"{med(last, 'p99_ms'):.2f} ms ({'flat' if p99_ok else 'GROWING'})")
    return rss_ok and fds_ok and p99_ok, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="car-soak-")
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--drain-timeout-ms", "2000",
                state_dir=state) as daemon:
        soak = Soak(daemon, args.minutes * 60)
        asyncio.run(soak.main())
        ok, text = verdict(soak.samples)
        print(("PASS " if ok else "FAIL ") + text, flush=True)
        return 0 if ok and daemon.proc.poll() is None else 1


if __name__ == "__main__":
    sys.exit(main())
