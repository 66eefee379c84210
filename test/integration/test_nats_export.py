"""car-daemon --nats against a real nats-server with JetStream on loopback ports (docs/FLEET.md
"Export"): every stored run record reaches the stream exactly once and in order, under the
subject, message id and headers of car/nats/subjects.hpp; host events too. Fault cases: the
broker down when the daemon starts, SIGKILLed mid-run and restarted on the same store, the
daemon restarted while the broker is down (its per-run cursors resume), a three-node cluster with
replicas 3 losing a node mid-run; and the daemon's memory staying bounded while the broker is
down and records pile up. Every wait is bounded; nothing asserts how long anything took (the
producer latency cost is measured by test/bench/nats_export_bench.py).

A build without the `nats` feature, or a machine without nats-server, cannot pass these tests:
under CI=true that is a failure; elsewhere each test is skipped (runner.py counts it, with why)."""

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request

import nats_broker
from harness import DAEMON, Daemon, measured_memory_env, proc_status_kib, run_to_exit
from nats_broker import NatsCluster, NatsServer, free_port, stream_info, stream_messages
from peer import Peer, start_run, turns

STREAM = "CAR"


def ready_or_skip(test):
    nats_broker.fleet_ready_or_skip(test, DAEMON)


def exporting_daemon(urls, host_id, *extra, state_dir=None, env=None):
    return Daemon("--no-auth", "--listen", "127.0.0.1:0", "--nats", urls, "--host-id", host_id,
                  *extra, state_dir=state_dir, env=env)


def exporter_stats(peer):
    stats = peer.call("runs.stats")["result"]["exporters"]
    assert len(stats) == 1 and stats[0]["name"] == "nats", stats
    return stats[0]


def wait_stats(peer, predicate, what, timeout=30.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = exporter_stats(peer)
        if predicate(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"exporter never {what} within {timeout} s: {last}")


class Workload:
    """Runs written through one daemon; remembers what the stream must hold for each."""

    def __init__(self, peer, host_id, agent="agent-x"):
        self.peer, self.host_id, self.agent = peer, host_id, agent
        self.prompts = {}  # run id -> prompts of its turns, in order
        self.ended = set()

    def start(self, n=1):
        runs = [start_run(self.peer, agent_id=self.agent) for _ in range(n)]
        for r in runs:
            self.prompts[r] = []
        return runs

    def record(self, run, n, size=0):
        batch = turns(n, start=len(self.prompts[run]), size=size)
        reply = self.peer.call("runs.record_turns", {"run_id": run, "turns": batch})
        assert reply["result"]["ok"] is True, reply
        self.prompts[run] += [t["prompt"] for t in batch]

    def complete(self, run):
        reply = self.peer.call("runs.complete", {"run_id": run, "outcome": {"status": "ok"}})
        assert reply["result"]["ok"] is True, reply
        self.ended.add(run)

    def records(self):
        """Records the stream must end up with, for the runs that ended."""
        return sum(len(self.prompts[r]) + 2 for r in self.ended)


def check_run_messages(messages, host_id, agent, run, prompts, ended=True):
    """The messages of one run: offsets 0.. once each, in order, `started`, the turns, `ended`."""
    subject = f"car.runs.{host_id}.{agent}.{run}"
    mine = [m for m in messages if m["subject"] == subject]
    want = len(prompts) + (2 if ended else 1)
    offsets = [int(m["headers"].get("Car-Offset", -1)) for m in mine]
    assert offsets == list(range(want)), \
        f"run {run}: offsets {offsets[:10]}... ({len(offsets)}), wanted 0..{want - 1}"
    for offset, m in enumerate(mine):
        h = m["headers"]
        assert h["Nats-Msg-Id"] == f"{host_id}/{run}/{offset}", h
        assert (h["Car-Host"], h["Car-Agent"], h["Car-Run"]) == (host_id, agent, run), h
        record = json.loads(m["data"])
        if offset == 0:
            assert record["record"] == "started" and record["run_id"] == run, record
        elif ended and offset == want - 1:
            assert record["record"] == "ended", record
        else:
            assert record["record"] == "turn" and record["index"] == offset - 1, record
            assert record["prompt"] == prompts[offset - 1], record


def check_stream(url, workloads):
    """The stream holds exactly every ended run's records (no duplicate, no stray, no gap)."""
    messages = stream_messages(url, STREAM, subject_filter="car.runs.")
    for w in workloads:
        for run in w.ended:
            check_run_messages(messages, w.host_id, w.agent, run, w.prompts[run])
    total = sum(w.records() for w in workloads)
    assert len(messages) == total, f"{len(messages)} run messages in the stream, wanted {total}"
    return messages


def wait_exported(url, count, timeout=40.0):
    """Until the stream's run subjects hold `count` messages (bounded)."""
    deadline = time.time() + timeout
    have = -1
    while time.time() < deadline:
        try:
            info = stream_info(url, STREAM, timeout=2.0)
            have = info["state"]["messages"] if info else 0
            if have >= count:
                return
        except (OSError, ConnectionError, TimeoutError, AssertionError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"stream {STREAM} holds {have} messages, wanted {count}")


def http_get_metrics(daemon):
    """The daemon's /metrics samples without labels, {name: value}."""
    host, port = daemon.ws_url().removeprefix("ws://").split("/")[0].rsplit(":", 1)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples


def cursor_files(state_dir):
    folder = os.path.join(state_dir, "exports", "nats")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_two_daemons_every_record_once_in_order_with_subjects_ids_and_headers():
    ready_or_skip("two_daemons")
    with NatsServer() as broker:
        with exporting_daemon(broker.url, "host-a") as a, exporting_daemon(broker.url, "host-b") as b:
            pa, pb = Peer(a), Peer(b)
            wa, wb = Workload(pa, "host-a", "agent-1"), Workload(pb, "host-b", "agent-2")
            for w in (wa, wb):
                for run in w.start(3):
                    for _ in range(4):
                        w.record(run, 5)
                    w.complete(run)
            for p in (pa, pb):
                for i in range(3):
                    assert "result" in p.call("host.notify", {"message": f"hello {i}"})
            wait_exported(broker.url, wa.records() + wb.records() + 6)
            check_stream(broker.url, [wa, wb])
            info = stream_info(broker.url, STREAM)
            assert sorted(info["config"]["subjects"]) == ["car.host.>", "car.runs.>"], info
            assert info["config"]["duplicate_window"] == 120 * 10**9, info["config"]
            assert info["config"]["storage"] == "file" and info["config"]["num_replicas"] == 1
            for host in ("host-a", "host-b"):
                events = stream_messages(broker.url, STREAM, subject_filter=f"car.host.{host}.")
                assert [json.loads(e["data"])["params"]["message"] for e in events] == \
                    [f"hello {i}" for i in range(3)], events
                seqs = [int(e["headers"]["Car-Offset"]) for e in events]
                assert seqs == sorted(seqs) and len(set(seqs)) == 3, seqs
                for e in events:
                    boot = e["headers"]["Nats-Msg-Id"].split("/")[2]
                    assert e["headers"]["Nats-Msg-Id"] == \
                        f"{host}/events/{boot}/{e['headers']['Car-Offset']}", e["headers"]
                    assert e["subject"] == f"car.host.{host}.events"
            stats = wait_stats(pa, lambda s: s["lag"] == 0, "caught up")
            assert stats["connected"] is True and stats["last_error"] is None, stats
            metrics = http_get_metrics(a)
            assert metrics["car_export_connected"] == 1 and metrics["car_export_lag_records"] == 0
            assert stats["lost"] == 0 and stats["errors"] == 0, stats
            # Every run ended and was acknowledged: no cursor left behind.
            assert cursor_files(a.state_dir) == [] and cursor_files(b.state_dir) == []


def test_broker_down_at_start_then_up_everything_arrives_and_stats_follow():
    ready_or_skip("down_at_start")
    port = free_port()
    with exporting_daemon(f"127.0.0.1:{port}", "late") as d:
        p = Peer(d)
        w = Workload(p, "late")
        runs = w.start(2)
        for run in runs:
            for _ in range(10):
                w.record(run, 10)  # the producer is answered while nothing is exported
        w.complete(runs[0])
        stats = wait_stats(p, lambda s: s["lag"] > 0, "showed a lag")
        assert stats["connected"] is False, stats
        assert stats["last_error"], stats
        metrics = http_get_metrics(d)
        assert metrics["car_export_connected"] == 0 and metrics["car_export_lag_records"] > 0
        assert cursor_files(d.state_dir) != []
        broker = NatsServer(port=port)
        try:
            broker.start()
            w.complete(runs[1])
            wait_exported(broker.url, w.records())
            check_stream(broker.url, [w])
            stats = wait_stats(p, lambda s: s["connected"] and s["lag"] == 0, "caught up")
            assert stats["last_error"] is None, stats
            assert cursor_files(d.state_dir) == []
        finally:
            broker.close()


def test_broker_killed_mid_run_and_restarted_nothing_lost_or_duplicated():
    ready_or_skip("broker_killed")
    with NatsServer() as broker:
        with exporting_daemon(broker.url, "h-kill") as d:
            p = Peer(d)
            w = Workload(p, "h-kill")
            runs = w.start(3)
            for round_ in range(30):
                for run in runs:
                    w.record(run, 20, size=256)  # faster than the export: rounds are in flight
                if round_ == 10:
                    broker.kill()  # SIGKILL: acks in flight are lost, records keep coming
                if round_ == 20:
                    wait_stats(p, lambda s: not s["connected"], "noticed the outage")
                    broker.start()
            for run in runs:
                w.complete(run)
            wait_exported(broker.url, w.records())
            check_stream(broker.url, [w])
            wait_stats(p, lambda s: s["connected"] and s["lag"] == 0, "caught up")


def test_daemon_restarted_while_the_broker_is_down_resumes_from_its_cursors():
    ready_or_skip("daemon_restart")
    state = tempfile.mkdtemp(prefix="car-it-nats-")
    broker = NatsServer()
    try:
        broker.start()
        with exporting_daemon(broker.url, "h-restart", state_dir=state) as d:
            p = Peer(d)
            w = Workload(p, "h-restart")
            first, second = w.start(2)
            w.record(first, 10)
            wait_exported(broker.url, 11)
            broker.kill()
            wait_stats(p, lambda s: not s["connected"], "noticed the outage")
            w.record(first, 10)
            w.record(second, 10)
            third, = w.start(1)
            w.record(third, 5)
            w.complete(third)
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait(timeout=20) == 0
        # The clean shutdown ended the open runs `incomplete`; nothing of them reached the broker.
        assert len(cursor_files(state)) == 3, cursor_files(state)
        w.ended.update({first, second})
        with exporting_daemon(broker.url, "h-restart", state_dir=state) as d2:
            time.sleep(0.5)  # a moment without a broker after the restart
            broker.start()
            wait_exported(broker.url, w.records())
            check_stream(broker.url, [w])
            wait_stats(Peer(d2), lambda s: s["connected"] and s["lag"] == 0, "caught up")
            assert cursor_files(state) == []
    finally:
        broker.close()
        shutil.rmtree(state, ignore_errors=True)


def test_three_node_cluster_replicas_3_one_node_killed_mid_run_nothing_lost():
    ready_or_skip("cluster")
    with NatsCluster(3) as cluster:
        with exporting_daemon(cluster.urls, "h-cluster", "--nats-replicas", "3") as d:
            p = Peer(d)
            w = Workload(p, "h-cluster")
            runs = w.start(2)
            for run in runs:
                w.record(run, 5)
            wait_exported(cluster.nodes[0].url, 12)
            info = stream_info(cluster.nodes[0].url, STREAM)
            assert info["config"]["num_replicas"] == 3, info["config"]
            leader = info["cluster"]["leader"]
            victim = next(n for n in cluster.nodes if n.name == leader)
            survivor = next(n for n in cluster.nodes if n is not victim)
            for round_ in range(20):
                for run in runs:
                    w.record(run, 3)
                if round_ == 5:
                    victim.kill()  # the stream's leader: a new one must be elected
            for run in runs:
                w.complete(run)
            wait_exported(survivor.url, w.records(), timeout=60)
            check_stream(survivor.url, [w])
            wait_stats(p, lambda s: s["connected"] and s["lag"] == 0, "caught up")


def rss_growth_mib(daemon, runs_count=12, calls=8):
    """Writes runs_count runs x calls x 64 turns of 4 KiB (24 MiB with the defaults; a run takes at
    most 2000 turns) and returns (the Workload, how far the resident size rose, in MiB)."""
    p = Peer(daemon)
    w = Workload(p, "h-mem")
    runs = w.start(runs_count)
    for run in runs:
        w.record(run, 2, size=1024)
    before = proc_status_kib(daemon.proc.pid, "VmRSS")
    peak = before
    for _ in range(calls):
        for run in runs:
            w.record(run, 64, size=4096)  # 256 KiB of turns per call
        peak = max(peak, proc_status_kib(daemon.proc.pid, "VmRSS"))
    return w, (peak - before) / 1024


def test_memory_stays_bounded_while_the_broker_is_down():
    """24 MiB of records written while the broker is down cost the daemon about what they cost
    one without export (its open runs' traces): the exporter's backlog is the run store, not
    memory — at most the service's queue (16 MiB) could add. Once the broker is up every record
    arrives."""
    ready_or_skip("memory")
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", env=measured_memory_env()) as base:
        _, baseline = rss_growth_mib(base)
    port = free_port()
    with exporting_daemon(f"127.0.0.1:{port}", "h-mem", env=measured_memory_env()) as d:
        w, growth = rss_growth_mib(d)
        stats = exporter_stats(w.peer)
        assert stats["connected"] is False and stats["lag"] > 8 * 12 * 64, stats
        assert growth - baseline < 12, \
            f"RSS grew {growth:.1f} MiB with the broker down, {baseline:.1f} MiB without export"
        for run in w.prompts:
            w.complete(run)
        broker = NatsServer(port=port)
        try:
            broker.start()
            wait_exported(broker.url, w.records(), timeout=60)
            check_stream(broker.url, [w])
        finally:
            broker.close()


def test_nats_flags_are_validated():
    """Without the feature --nats is refused by name; with it, a bad replica count is a bad
    command line either way."""
    code, err = run_to_exit("--no-auth", "--nats", "127.0.0.1:1", "--nats-replicas", "7")
    assert code == 2 and "--nats-replicas expects an integer from 1 to 5" in err, err
    code, err = run_to_exit("--no-auth", "--host-id", "x")
    assert code == 2 and "need --nats" in err, err
    if "nats" not in nats_broker.daemon_features(DAEMON):
        code, err = run_to_exit("--no-auth", "--nats", "127.0.0.1:1")
        assert code == 2 and "built without the nats feature" in err, err
