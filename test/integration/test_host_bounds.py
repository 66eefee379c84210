"""Bounds of the host state against a real car-daemon (issue 13 item 4 and its approval and
session risks; PROTOCOL.md §4, §5, §8): one host event is at most 64 KiB and the ring and a
host.subscribe snapshot are bounded by bytes, pending approvals are bounded per session and in
total, gate rows nobody waits for are bounded, and agents of departed sessions make room."""

import json
import threading
import time

from harness import Daemon, measured_memory_env, proc_status_kib, request
from rawws import zero_mask_frame
from peer import Peer

KIB = 1024
MIB = 1024 * KIB


def send_fast(peer, msg):
    """Sends one text frame with an all-zero mask key (no per-byte masking in Python)."""
    peer.ws.sock.sendall(zero_mask_frame(0x1, json.dumps(msg)))


def notify(peer, rid, payload_bytes):
    send_fast(peer, request("host.notify", {"message": "m", "payload": {"x": "y" * payload_bytes}},
                            rid))


def test_host_events_are_bounded_and_subscribes_stay_small():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", env=measured_memory_env()) as d:
        p = Peer(d)
        # 30 × 8 MiB events were all kept (240 MB in the ring); each is now refused whole.
        for i in range(30):
            notify(p, 1000 + i, 8 * MIB)
            r = p.wait(lambda m, rid=1000 + i: m.get("id") == rid)
            assert r.get("error", {}).get("code") == -32602, f"8 MiB event accepted: {str(r)[:200]}"
            assert "host event too large" in r["error"]["message"]
        # Events just under the bound are kept, but the ring is bounded by bytes too.
        for chunk in range(0, 500, 25):  # in chunks: the replies echo each event back
            for i in range(chunk, chunk + 25):
                notify(p, 5000 + i, 60 * KIB)
            for i in range(chunk, chunk + 25):
                r = p.wait(lambda m, rid=5000 + i: m.get("id") == rid)
                assert "result" in r, str(r)[:200]
        last = r["result"]["sequence"]
        # Three concurrent subscribes: each snapshot carries the newest events that fit 2 MiB.
        subs = [Peer(d) for _ in range(3)]
        for s in subs:
            s.send(request("host.subscribe", {}, 1))
        replies = [None] * 3

        def read(i):
            raw = subs[i].ws.recv_text()
            replies[i] = (len(raw), json.loads(raw))

        threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        for size, reply in replies:
            snap = reply["result"]
            assert snap["event_sequence"] == last
            seqs = [e["sequence"] for e in snap["events"]]
            assert seqs and seqs[-1] == last and seqs == list(range(seqs[0], last + 1))
            assert size <= 2 * MIB + 64 * KIB, f"snapshot of {size} bytes"
        events = p.call("host.events", {"limit": 500})["result"]["events"]
        assert sum(len(json.dumps(e)) for e in events) <= 4 * MIB + 64 * KIB
        hwm = proc_status_kib(d.proc.pid, "VmHWM")
        print(f"daemon VmHWM {hwm // 1024} MiB, snapshot {replies[0][0]} bytes, "
              f"host.events {len(events)} events")
        # Before the bound the same sequence peaked at about 1.5 GB.
        assert hwm < 200 * 1024, f"daemon peak memory {hwm} KiB"


def test_pending_approvals_are_bounded_per_session_and_in_total():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        peers = [Peer(d) for _ in range(17)]
        for n, p in enumerate(peers[:16]):
            for i in range(257):
                p.send(request("host.request_approval", {"title": f"t{n}.{i}"}, 10 + i))
            replies = [p.wait(lambda m, rid=10 + i: m.get("id") == rid) for i in range(257)]
            assert all("result" in r for r in replies[:256]), n
            err = replies[256].get("error")
            assert err == {"code": -32000,
                           "message": "too many pending approvals: a session may have at most 256"}, err
        # 16 × 256 = 4096 pending: the total bound refuses the next session's first.
        r = peers[16].call("host.request_approval", {"title": "one more"})
        assert r.get("error") == {"code": -32000,
                                  "message": "too many pending approvals: at most 4096 in total"}, r
        # Resolving one makes room again.
        rid = peers[0].call("host.approvals")["result"]["approvals"][0]["id"]
        assert peers[0].call("host.resolve_approval",
                             {"approval_id": rid, "approved": True})["result"]["status"] == "approved"
        assert "result" in peers[16].call("host.request_approval", {"title": "now it fits"})
        # A departed session's rows are reaped (§5.2), and its bound goes with them.
        peers[1].ws.close()
        for _ in range(200):
            r = peers[16].call("host.request_approval", {"title": "after reap"})
            if "result" in r:
                break
            time.sleep(0.02)
        assert "result" in r, r


def test_gate_rows_nobody_waits_for_are_bounded():
    with Daemon("--no-auth", "--approval-method", "tools.list", "--listen", "127.0.0.1:0") as d:
        host = Peer(d)
        for round_ in range(3):
            caller = Peer(d)
            for i in range(200):
                caller.send(request("tools.list", {}, 100 + i))
            # Requests start in arrival order: once this is answered, all 200 wait at the gate.
            assert "result" in caller.call("host.agents")
            caller.ws.close()
        # Each closed caller leaves its rows pending (PROTOCOL.md §5.1); beyond 256 such rows the
        # oldest are denied by the system. Teardown is asynchronous: poll, bounded.
        for _ in range(100):
            rows = host.call("host.approvals")["result"]["approvals"]
            pending = [a for a in rows if a["status"] == "pending"]
            if len(pending) <= 256:
                break
            time.sleep(0.05)
        denied = [a for a in rows if a["status"] == "denied"]
        print(f"{len(pending)} pending, {len(denied)} denied of {len(rows)} rows; "
              f"host.approvals {len(json.dumps(rows))} bytes")
        assert len(pending) == 256, len(pending)
        assert len(denied) == 600 - 256
        assert all(a["resolved_by"] == "system" and a["notes"] == "requester no longer waiting"
                   for a in denied)


def test_agents_of_departed_sessions_make_room_at_the_cap():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        owner, watcher = Peer(d), Peer(d)
        for i in range(1024):
            owner.send(request("host.register_agent", {"id": f"a{i:04}", "name": "n", "kind": "k"},
                               10 + i))
        replies = [owner.wait(lambda m, rid=10 + i: m.get("id") == rid) for i in range(1024)]
        assert all("result" in r for r in replies)
        # Every owner is live: nothing may be dropped, so the registration is refused.
        r = owner.call("host.register_agent", {"id": "extra", "name": "n", "kind": "k"})
        assert r.get("error") == {"code": -32000, "message": "too many host agents: at most 1024"}, r
        # Re-registering one's own agent is not a new one.
        assert "result" in owner.call("host.register_agent", {"id": "a0005", "name": "n2", "kind": "k"})
        owner.ws.close()
        assert "result" in watcher.call("host.subscribe")
        for _ in range(200):
            r = watcher.call("host.register_agent", {"id": "extra", "name": "n", "kind": "k"})
            if "result" in r:
                break
            time.sleep(0.02)
        assert "result" in r, r
        gone = watcher.wait(lambda m: m.get("method") == "host.event"
                            and m["params"]["kind"] == "agent.unregistered")
        assert gone["params"]["agent_id"] == "a0000"  # registered longest ago
        agents = watcher.call("host.agents")["result"]
        assert len(agents) == 1024
        assert "a0000" not in {a["id"] for a in agents} and "extra" in {a["id"] for a in agents}


def test_large_rows_are_bounded_by_bytes_so_a_snapshot_stays_small():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        p = Peer(d)
        big = "c" * (60 * KIB)
        refused = None
        for i in range(256):
            send_fast(p, request("host.request_approval", {"title": "t", "context": big}, 10 + i))
            r = p.wait(lambda m, rid=10 + i: m.get("id") == rid)
            if "error" in r:
                refused = (i, r["error"])
                break
        assert refused is not None, "256 rows of 60 KiB all kept"
        assert refused[1] == {"code": -32000,
                              "message": "too many pending approvals: at most 4194304 bytes"}
        meta = {"m": "x" * (60 * KIB)}
        for i in range(64):
            send_fast(p, request("host.register_agent",
                                 {"id": f"a{i}", "name": "n", "kind": "k", "metadata": meta}, 1000 + i))
            r = p.wait(lambda m, rid=1000 + i: m.get("id") == rid)
            if "error" in r:
                break
        assert r.get("error") == {"code": -32000, "message": "too many host agents: at most 2097152 bytes"}, r
        s = Peer(d)
        s.send(request("host.subscribe", {}, 1))
        size = len(s.ws.recv_text())
        print(f"{refused[0]} approvals of 60 KiB kept, {i} agents of 60 KiB; host.subscribe {size} bytes")
        assert size < 10 * MIB
