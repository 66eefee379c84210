"""The run store at scale (PROTOCOL.md §7.7, issue 13 item 5): lookups of runs that are not in
memory no longer walk every agent directory, runs.list pages [ext] from an index, retention prunes
on the pool and never an open run, the index is rebuilt from the JSONL files when deleted or
corrupt, and a run reads with one status whatever reads it."""

import json
import os
import statistics
import time

from harness import Daemon
from peer import Peer, turns

os.environ.pop("CAR_AGENT_ID", None)
OK = {"status": "ok"}
AGENT_DIRS = 20000


def listen(*flags):
    return ("--no-auth", "--listen", "127.0.0.1:0", *flags)


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (a count of work, not a latency)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pipeline(peer, calls):
    """Sends every (method, params) at once and returns the replies in order."""
    first = peer.next_id
    for method, params in calls:
        peer.send({"jsonrpc": "2.0", "id": peer.next_id, "method": method, "params": params})
        peer.next_id += 1
    ids = range(first, peer.next_id)
    got = {}
    while len(got) < len(ids):
        m = peer.wait(lambda m: "id" in m and "method" not in m and m["id"] in ids and m["id"] not in got,
                      timeout=120)
        got[m["id"]] = m
    return [got[i] for i in ids]


def ended_run(peer, agent, n_turns=1, **extra):
    run_id = peer.call("runs.start", {"intent": "x", "agent_id": agent, **extra})["result"]["run_id"]
    if n_turns:
        assert peer.call("runs.record_turns", {"run_id": run_id, "turns": turns(n_turns)})["result"]["ok"]
    assert peer.call("runs.complete", {"run_id": run_id, "outcome": OK})["result"]["ok"]
    return run_id


def test_lookups_of_unknown_runs_do_not_walk_20000_agent_directories():
    with Daemon(*listen()) as d:
        state = d.state_dir
        a, b = Peer(d), Peer(d)
        # The store of a daemon that other clients have filled with agents (any authenticated
        # client makes one per runs.start); made directly on disk, which is the same to the store.
        for i in range(AGENT_DIRS):
            os.makedirs(os.path.join(state, "runs", f"agent-{i}"), exist_ok=True)
        run_id = b.call("runs.start", {"intent": "x", "agent_id": "busy"})["result"]["run_id"]
        # Warm-up: anything the store does once for its new directories is not counted below.
        assert b.call("runs.get_trace", {"run_id": "warm-up"})["result"]["not_found"] is True
        before = cpu_seconds(d.proc.pid)
        started = time.monotonic()
        lookups = [("runs.get_trace", {"run_id": f"missing-{i}"}) for i in range(300)]
        lookups += [("runs.start", {"intent": "x", "agent_id": "keyed", "idempotency_key": f"k-{i}"})
                    for i in range(100)]
        # Client A pipelines misses (in windows of 200: a connection may have 256 requests in
        # flight); client B keeps recording turns meanwhile.
        first = a.next_id
        replies, latencies = {}, []
        for window in (lookups[:200], lookups[200:]):
            for method, params in window:
                a.send({"jsonrpc": "2.0", "id": a.next_id, "method": method, "params": params})
                a.next_id += 1
            for _ in range(25):
                i = len(latencies)
                t = time.monotonic()
                r = b.call("runs.record_turns", {"run_id": run_id, "turns": turns(1, start=i)})["result"]
                latencies.append((time.monotonic() - t) * 1000)
                assert r == {"run_id": run_id, "base_index": i, "count": 1, "ok": True}, r
            while len(replies) < a.next_id - first:
                m = a.wait(lambda m: "id" in m and "method" not in m, timeout=120)
                replies[m["id"]] = m
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(d.proc.pid) - before
        for i in range(300):
            reply = replies[first + i]
            assert reply.get("result") == {"run_id": f"missing-{i}", "not_found": True}, reply
        for i in range(100):
            reply = replies[first + 300 + i]
            assert reply.get("result", {}).get("run_id") == f"k-{i}", reply
        print(f"  {AGENT_DIRS} agent dirs: 400 lookups used {cpu:.3f} s CPU, {elapsed:.3f} s wall; "
              f"other client's record_turns median {statistics.median(latencies):.2f} ms")
        # The old store stat()ed every agent directory per miss: seconds of CPU for these 400.
        assert cpu < 1.5, f"lookups cost {cpu:.2f} s of CPU: they walk the agent directories"


def test_paged_list_walks_every_run_once_newest_first():
    with Daemon(*listen()) as d:
        p = Peer(d)
        ids = [ended_run(p, "pager", 0) for _ in range(25)]
        full = p.call("runs.list", {"agent_id": "pager"})["result"]
        assert [r["run_id"] for r in full["runs"]] == ids[::-1] and "next_before" not in full
        seen, before = [], None
        for _ in range(10):
            params = {"agent_id": "pager", "limit": 10}
            if before:
                params["before"] = before
            page = p.call("runs.list", params)["result"]
            assert len(page["runs"]) <= 10
            seen += [r["run_id"] for r in page["runs"]]
            before = page.get("next_before")
            if not before:
                break
        assert seen == ids[::-1]
        bad = p.call("runs.list", {"agent_id": "pager", "limit": 10, "before": "no-such-run"})
        assert bad["error"]["code"] == -32602, bad
        zero = p.call("runs.list", {"agent_id": "pager", "limit": 0})
        assert zero["error"]["code"] == -32602, zero


def test_retention_keeps_the_newest_and_never_an_open_run():
    with Daemon(*listen("--retain-runs", "3")) as d:
        p = Peer(d)
        open_run = p.call("runs.start", {"intent": "x", "agent_id": "kept"})["result"]["run_id"]
        ended = [ended_run(p, "kept") for _ in range(6)]
        # Pruning runs on the pool after each ending: wait (bounded) for it to settle.
        listed = []
        for _ in range(100):
            listed = [r["run_id"] for r in p.call("runs.list", {"agent_id": "kept"})["result"]["runs"]]
            if len(listed) == 4:
                break
            time.sleep(0.05)
        assert listed == ended[:2:-1] + [open_run], listed
        assert p.call("runs.get_trace", {"run_id": ended[0]})["result"].get("not_found") is True
        assert p.call("runs.record_turns", {"run_id": open_run, "turns": turns(1)})["result"]["ok"]


def test_retention_at_start_up_of_1200_stored_runs():
    # Acceptance 51, from files written before start (no index yet: it is rebuilt first).
    with Daemon(*listen()) as d:
        p = Peer(d)
        state = d.state_dir
        for _ in range(3):
            ended_run(p, "many", 0)
    template = sorted(os.listdir(os.path.join(state, "runs", "many")))
    template = [f for f in template if f.endswith(".jsonl")][0]
    lines = open(os.path.join(state, "runs", "many", template)).read().splitlines()
    started, ended = json.loads(lines[0]), json.loads(lines[-1])
    for i in range(1200):
        rid = f"bulk-{i:04d}"
        started.update(run_id=rid, started_at=f"2099-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z")
        with open(os.path.join(state, "runs", "many", rid + ".jsonl"), "w") as f:
            f.write(json.dumps(started, separators=(",", ":")) + "\n")
            f.write(json.dumps(ended, separators=(",", ":")) + "\n")
    import shutil
    shutil.rmtree(os.path.join(state, "runs", ".index"), ignore_errors=True)
    with Daemon(*listen("--retain-runs", "1000", "--retain-days", "0"), state_dir=state) as d:
        p = Peer(d)
        runs = []
        for _ in range(100):
            runs = p.call("runs.list", {"agent_id": "many"})["result"]["runs"]
            if len(runs) == 1000:
                break
            time.sleep(0.05)
        assert len(runs) == 1000
        assert [r["run_id"] for r in runs] == [f"bulk-{i:04d}" for i in range(1199, 199, -1)]
        assert all(r["status"] == "completed" for r in runs)


def test_deleted_or_corrupt_index_is_rebuilt_with_the_same_answers():
    with Daemon(*listen()) as d:
        p = Peer(d)
        state = d.state_dir
        ids = [ended_run(p, f"agent-{i % 2}", 2) for i in range(6)]
        keyed = ended_run(p, "agent-0", 1, idempotency_key="the-key")
        before = {a: p.call("runs.list", {"agent_id": a})["result"] for a in ("agent-0", "agent-1")}
        trace = p.call("runs.get_trace", {"run_id": ids[3]})["result"]
    import shutil
    shutil.rmtree(os.path.join(state, "runs", ".index"))
    with open(os.path.join(state, "runs", "agent-1", ".summaries"), "w") as f:
        f.write("\x01 not json\n{}\n")
    with Daemon(*listen(), state_dir=state) as d:
        p = Peer(d)
        for a in ("agent-0", "agent-1"):
            assert p.call("runs.list", {"agent_id": a})["result"] == before[a]
        assert p.call("runs.get_trace", {"run_id": ids[3]})["result"] == trace
        again = p.call("runs.start", {"intent": "x", "agent_id": "agent-0", "idempotency_key": "the-key"})
        assert again["result"] == {"run_id": keyed, "agent_id": "agent-0"}


def test_torn_line_after_ended_reads_completed_everywhere():
    with Daemon(*listen()) as d:
        p = Peer(d)
        state = d.state_dir
        run_id = ended_run(p, "torn", 2)
    path = os.path.join(state, "runs", "torn", run_id + ".jsonl")
    with open(path, "a") as f:
        f.write('{"record":"turn","ind')
    with Daemon(*listen(), state_dir=state) as d:
        p = Peer(d)
        records = p.call("runs.get_trace", {"run_id": run_id})["result"]["records"]
        assert records[-1]["record"] == "ended"
        listed = p.call("runs.list", {"agent_id": "torn"})["result"]["runs"]
        assert len(listed) == 1
        assert listed[0]["status"] == "completed" and "ended_at" in listed[0], listed
        snap = p.call("runs.subscribe", {"run_id": run_id})["result"]
        assert snap["status"] == "completed" and listed[0]["turn_count"] == 2


def big_turn(i):
    # About 192 KB: strings are cut at 16 KiB each (§7.3), so the bulk is spread over twelve.
    return {"prompt": f"p{i}", "output": ["x" * 16000] * 12}


def test_subscribe_snapshot_is_bounded_and_the_rest_pages_with_get_trace():
    with Daemon(*listen()) as d:
        p = Peer(d)
        run_id = p.call("runs.start", {"intent": "x", "agent_id": "big"})["result"]["run_id"]
        for i in range(30):
            assert p.call("runs.record_turns", {"run_id": run_id, "turns": [big_turn(i)]})["result"]["ok"]

        def check(snap):
            size = len(json.dumps(snap["turns_so_far"]))
            assert size <= 2 * 1024 * 1024 + 64 * 1024, size
            start = snap["turns_from"]
            assert snap["cursor"] == 30 == start + len(snap["turns_so_far"])
            assert [t["index"] for t in snap["turns_so_far"]] == list(range(start, 30))
            # The older turns: runs.get_trace from record 1 (record 0 is `started`).
            older, cursor = [], 1
            for _ in range(40):
                page = p.call("runs.get_trace", {"run_id": run_id, "cursor": cursor})["result"]
                older += [r for r in page["records"] if r["record"] == "turn"]
                cursor = page.get("next_cursor")
                if cursor is None or len(older) >= start:
                    break
            assert [t["index"] for t in older[:start]] == list(range(start))
            return size

        live = p.call("runs.subscribe", {"run_id": run_id})["result"]
        assert live["status"] == "in_progress"
        size = check(live)
        assert p.call("runs.complete", {"run_id": run_id, "outcome": OK})["result"]["ok"]
        q = Peer(d)
        stored = q.call("runs.subscribe", {"run_id": run_id})["result"]
        assert stored["status"] == "completed"
        check(stored)
        small = ended_run(p, "big", 2)
        plain = p.call("runs.subscribe", {"run_id": small})["result"]
        assert "turns_from" not in plain and plain["cursor"] == len(plain["turns_so_far"]) == 2
        print(f"  snapshot of 30 turns of ~192 KB: {size} bytes of turns, from index {live['turns_from']}")
