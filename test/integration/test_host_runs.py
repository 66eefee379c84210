"""Host state, approvals, the gate, the tool broker and run tracing across several real WebSocket
connections to car-daemon (PROTOCOL.md §4–§7; acceptance 5, 11–16, 19, 20, 22, 24–27, 31–35, 38–40,
47, 48 (identity), 50)."""

import json
import socket
import tempfile
import threading
import time

from harness import Daemon, request
from peer import Peer, start_run, turns
from rawws import RawWs


def test_agent_binding_is_exclusive_while_connected():
    with Daemon("--token", "t", "--listen", "127.0.0.1:0") as d:
        a = Peer(d, token="t", agent_id="a1")
        b = Peer(d, token="t")
        r = b.call("session.auth", {"token": "t", "agent_id": "a1"})
        assert r["error"]["message"] == "agent 'a1' is already attached on another connection"
        a.ws.close()
        deadline = time.time() + 5
        while True:
            r = b.call("session.auth", {"token": "t", "agent_id": "a1"})
            if "result" in r or time.time() > deadline:
                break
            time.sleep(0.05)
        assert r["result"]["agent_id"] == "a1"


def test_tool_broker_round_trip_timeout_and_disconnects():
    with Daemon("--no-auth", "--no-approvals", "--listen", "127.0.0.1:0") as d:
        a, b = Peer(d), Peer(d)
        assert b.call("tools.register", {"tools": ["echo"]})["result"]["registered"] == ["echo"]
        a.send(request("tools.invoke", {"tool": "echo", "parameters": {"x": 1}}, 100))
        ex = b.notification_or_request = b.wait(lambda m: m.get("method") == "tools.execute")
        assert ex["id"] == "cb-1" and ex["params"]["request_id"] == "cb-1"
        assert ex["params"]["parameters"] == {"x": 1} and ex["params"]["attempt"] == 1
        b.send({"jsonrpc": "2.0", "id": "cb-77", "result": "ignored"})  # unknown id: ignored
        b.send({"jsonrpc": "2.0", "id": "cb-1", "result": {"echoed": 1}})
        assert a.wait(lambda m: m.get("id") == 100)["result"] == {"echoed": 1}
        # Timeout (case 13): the daemon waits timeout_ms plus the 5 s grace before -32004 to the
        # invoker and tools.cancel(timeout) to the host, so a host that stops itself at
        # timeout_ms is heard first.
        started = time.time()
        a.send(request("tools.invoke", {"tool": "echo", "timeout_ms": 200}, 101))
        ex = b.wait(lambda m: m.get("method") == "tools.execute")
        assert ex["id"] == "cb-2" and ex["params"]["timeout_ms"] == 200
        a.send(request("tools.invoke", {"tool": "echo", "timeout_ms": 200}, 103))
        ex = b.wait(lambda m: m.get("method") == "tools.execute")
        assert ex["id"] == "cb-3"
        time.sleep(0.5)  # past timeout_ms, inside the grace
        stopped = {"code": -32050, "message": "stopped at timeout_ms"}
        b.send({"jsonrpc": "2.0", "id": "cb-3", "error": stopped})
        assert a.wait(lambda m: m.get("id") == 103)["error"] == stopped
        r = a.wait(lambda m: m.get("id") == 101)
        assert r["error"] == {"code": -32004, "message": "tool call timed out"}
        assert time.time() - started >= 5.1, "answered -32004 before the grace ran out"
        cancel = b.notification("tools.cancel")
        assert cancel["params"]["reason"] == "timeout" and cancel["params"]["request_id"] == "cb-2"
        # Invoker disconnects while the host works: tools.cancel(caller_disconnected).
        c = Peer(d)
        c.send(request("tools.invoke", {"tool": "echo"}, 1))
        b.wait(lambda m: m.get("method") == "tools.execute")
        c.ws.close()
        assert b.notification("tools.cancel")["params"]["reason"] == "caller_disconnected"
        # Host disconnects while A waits: -32603 tool host disconnected.
        a.send(request("tools.invoke", {"tool": "echo"}, 102))
        b.wait(lambda m: m.get("method") == "tools.execute")
        b.ws.close()
        r = a.wait(lambda m: m.get("id") == 102)
        assert r["error"]["code"] == -32603 and r["error"]["message"] == "tool host disconnected"


def test_tools_upstream_register_list_unregister_and_client_id():
    """Case 47: upstream's tools.register array form, tools.list, tools.unregister, and one tool
    name held by two connections (tools.invoke then needs client_id)."""
    with Daemon("--no-auth", "--no-approvals", "--listen", "127.0.0.1:0") as d:
        a, b, c = Peer(d), Peer(d), Peer(d)
        r = b.call("tools.register", [{"name": "echo", "description": "d",
                                       "parameters": {"type": "object"}}, "ping"])
        assert r["result"] == 2
        listed = b.call("tools.list")["result"]
        assert listed == {"count": 2, "tools": [
            {"name": "echo", "description": "d", "parameters": {"type": "object"},
             "idempotent": False},
            {"name": "ping", "description": "", "parameters": {}, "idempotent": False}]}
        assert a.call("tools.list")["result"] == {"tools": [], "count": 0}  # B's, not A's
        assert b.call("tools.unregister", {"name": "ping"})["result"] == {
            "unregistered": "ping", "removed": 1}
        assert b.call("tools.unregister", {"name": "ping"})["result"] == {
            "unregistered": "ping", "removed": 0}
        assert b.call("tools.unregister", {})["error"]["code"] == -32602
        bad = b.call("tools.register", ["fine", {"name": ""}])
        assert bad["error"] == {"code": -32602,
                                "message": "invalid params: params[1].name must be a non-empty string"}
        assert [t["name"] for t in b.call("tools.list")["result"]["tools"]] == ["echo"]
        # A second connection may register echo too.
        assert c.call("tools.register", {"tools": [{"name": "echo"}]})["result"] == {
            "registered": ["echo"]}
        r = a.call("tools.invoke", {"tool": "echo"})
        assert r["error"] == {"code": -32602, "message":
                              "tool 'echo' is registered by several sessions; pass client_id"}
        # A tool host's client_id is the session_id of what it registered (here an agent).
        c_id = c.call("host.register_agent", {"name": "c", "kind": "tool-host"})["result"][
            "session_id"]
        a.send(request("tools.invoke", {"tool": "echo", "client_id": c_id,
                                        "parameters": {"x": 1}}, 50))
        ex = c.wait(lambda m: m.get("method") == "tools.execute")
        assert ex["params"]["parameters"] == {"x": 1}
        c.send({"jsonrpc": "2.0", "id": ex["id"], "result": "from c"})
        assert a.wait(lambda m: m.get("id") == 50)["result"] == "from c"
        # Once C is gone, B is the only holder and no client_id is needed.
        c.ws.close()
        # Poll with C's client_id until C's teardown has removed its tools (before that the
        # answer is "tool host disconnected"); every answer is immediate.
        deadline = time.time() + 5
        while True:
            r = a.call("tools.invoke", {"tool": "echo", "client_id": c_id})["error"]
            if r["message"] == f"tool 'echo' is not registered by session '{c_id}'":
                break
            assert r == {"code": -32603, "message": "tool host disconnected"}, r
            assert time.time() < deadline, "C's tools outlived its connection"
            time.sleep(0.05)
        a.send(request("tools.invoke", {"tool": "echo"}, 60))
        ex = b.wait(lambda m: m.get("method") == "tools.execute")
        b.send({"jsonrpc": "2.0", "id": ex["id"], "result": "from b"})
        assert a.wait(lambda m: m.get("id") == 60)["result"] == "from b"


def test_host_events_reach_subscribers_in_sequence():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        h, a, other = Peer(d), Peer(d), Peer(d)
        snap = h.call("host.subscribe")["result"]
        assert snap["subscribed"] is True
        agent = a.call("host.register_agent", {"name": "bot", "kind": "cli"})["result"]
        ev = h.notification("host.event")["params"]
        assert ev["sequence"] == snap["event_sequence"] + 1 and ev["kind"] == "agent.registered"
        a.call("host.set_status", {"agent_id": agent["id"], "status": "running"})
        a.call("host.notify", {"message": "hello"})
        kinds = [h.notification("host.event")["params"] for _ in range(2)]
        assert [k["kind"] for k in kinds] == ["agent.status_changed", "host.notification"]
        assert [k["sequence"] for k in kinds] == [ev["sequence"] + 1, ev["sequence"] + 2]
        r = other.call("host.set_status", {"agent_id": agent["id"], "status": "idle"})
        assert r["error"]["message"] == f"agent '{agent['id']}' is owned by another session"
        assert any(x["id"] == agent["id"] for x in other.call("host.agents")["result"])


def test_gate_approve_deny_and_timeout_keep_the_connection_serving():
    with Daemon("--no-auth", "--approval-method", "tools.invoke", "--approval-timeout", "1",
                "--listen", "127.0.0.1:0") as d:
        h, a, b = Peer(d), Peer(d), Peer(d)
        h.call("host.subscribe")
        a.send(request("tools.invoke", {"tool": "nope"}, 1))
        a.send(request("tools.invoke", {"tool": "nope"}, 2))
        reqs = [h.wait(lambda m: m.get("method") == "host.event" and
                       m["params"]["kind"] == "approval.requested")["params"] for _ in range(2)]
        assert all(r["payload"]["action"] == "ws.method:tools.invoke" for r in reqs)
        # The connection keeps answering other requests while two wait at the gate.
        assert "result" in a.call("host.agents")
        b.call("host.resolve_approval", {"approval_id": reqs[1]["payload"]["id"], "approved": False})
        b.call("host.resolve_approval", {"approval_id": reqs[0]["payload"]["id"], "resolution": "approve"})
        r1 = a.wait(lambda m: m.get("id") == 1)
        r2 = a.wait(lambda m: m.get("id") == 2)
        assert r1["error"]["code"] == -32602  # approved: the handler ran (unknown tool)
        assert r2["error"] == {"code": -32003, "message": "approval denied"}
        a.send(request("tools.invoke", {"tool": "nope"}, 3))
        r3 = a.wait(lambda m: m.get("id") == 3, timeout=5)
        assert r3["error"] == {"code": -32003, "message": "approval timed out"}
    with Daemon("--no-auth", "--no-approvals", "--listen", "127.0.0.1:0") as d:
        a = Peer(d)
        assert a.call("tools.invoke", {"tool": "nope"})["error"]["code"] == -32602


def test_run_subscribe_snapshot_then_live_events():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        w, s1, s2 = Peer(d), Peer(d), Peer(d)
        run = start_run(w)
        assert w.call("runs.record_turns", {"run_id": run, "turns": turns(7)})["result"]["count"] == 7
        snap = s1.call("runs.subscribe", {"run_id": run})["result"]
        assert snap["cursor"] == 7 and len(snap["turns_so_far"]) == 7
        s2.call("runs.subscribe", {"run_id": run})
        w.call("runs.record_turns", {"run_id": run, "turns": turns(1, 7)})
        for s in (s1, s2):
            ev = s.notification("runs.trace.event")["params"]
            assert ev["cursor"] == 8 and ev["record"]["index"] == 7
        assert s1.call("runs.unsubscribe", {"run_id": run})["result"]["removed"] is True
        assert s1.call("runs.unsubscribe", {"run_id": run})["result"]["removed"] is False
        w.call("runs.record_turns", {"run_id": run, "turns": turns(1, 8)})
        assert s2.notification("runs.trace.event")["params"]["cursor"] == 9
        s2.ws.close()  # closing a subscriber leaves the run alone
        assert w.call("runs.complete", {"run_id": run, "outcome": {"status": "ok"}})["result"]["ok"]


def test_wedged_subscriber_does_not_slow_the_producer_or_others():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--drain-timeout-ms", "2000") as d:
        w, healthy = Peer(d), Peer(d)
        run = start_run(w)
        wedged = RawWs(RawWs.url_address(d.ws_url()), timeout=10)
        wedged.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        wedged.send_text(json.dumps(request("runs.subscribe", {"run_id": run}, 1)))
        healthy.call("runs.subscribe", {"run_id": run})
        got = []
        done = threading.Event()

        def drain():
            while len(got) < 1900:
                m = json.loads(healthy.ws.recv_text())
                if m.get("method") == "runs.trace.event" and m["params"]["record"]["record"] == "turn":
                    got.append(m["params"]["cursor"])
            done.set()
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        latencies = []
        for i in range(0, 1900, 10):
            start = time.time()
            r = w.call("runs.record_turns", {"run_id": run, "turns": turns(10, i, 8000)})
            latencies.append(time.time() - start)
            assert r["result"]["ok"] is True
        assert done.wait(60)
        assert got == list(range(1, 1901))  # every event, in cursor order
        latencies.sort()
        first = sorted(latencies[:20])[10]
        median = latencies[len(latencies) // 2]
        assert median <= max(3 * first, 0.05), (first, median)
        # The wedged one was dropped (gap) or cut off after the drain deadline; re-subscribing
        # returns the newest turns (a 2 MiB snapshot, [ext] turns_from) either way.
        again = Peer(d).call("runs.subscribe", {"run_id": run})["result"]
        assert again["cursor"] == 1900 and again.get("turns_from", 0) + len(again["turns_so_far"]) == 1900
        assert again["turns_so_far"][-1]["index"] == 1899


def test_grace_window_ends_abandoned_runs_incomplete_and_persists():
    state = tempfile.mkdtemp(prefix="car-it-")
    with Daemon("--no-auth", "--grace-ms", "300", "--listen", "127.0.0.1:0", state_dir=state) as d:
        w, s = Peer(d), Peer(d)
        run = start_run(w)
        w.call("runs.record_turns", {"run_id": run, "turns": turns(2)})
        s.call("runs.subscribe", {"run_id": run})
        kept = start_run(w, idempotency_key="kept-run")
        w.call("runs.complete", {"run_id": kept, "outcome": {"status": "done"}})
        w.ws.close()
        ended = s.wait(lambda m: m.get("method") == "runs.trace.event" and
                       m["params"]["record"]["record"] == "ended", timeout=5)["params"]
        assert ended["record"]["termination"] == "incomplete" and ended["status"] == "incomplete"
        trace = s.call("runs.get_trace", {"run_id": run})["result"]
        listing = s.call("runs.list", {"agent_id": "agent-x"})["result"]
    # Restart on the same state dir: the same data comes back from the store.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", state_dir=state) as d:
        p = Peer(d)
        assert p.call("runs.get_trace", {"run_id": run})["result"] == trace
        assert p.call("runs.list", {"agent_id": "agent-x"})["result"] == listing
        assert [r["status"] for r in listing["runs"]].count("completed") == 1
        assert p.call("runs.get_trace", {"run_id": "nope"})["result"] == {"run_id": "nope", "not_found": True}


def test_trace_reads_need_the_agent_binding_or_host_role():
    with Daemon("--token", "t", "--host-token", "h", "--listen", "127.0.0.1:0") as d:
        w = Peer(d, token="t", agent_id="agent-z")
        run = w.call("runs.start", {"intent": "secret"})["result"]["run_id"]
        stranger = Peer(d, token="t")
        for method, params in (("runs.subscribe", {"run_id": run}), ("runs.get_trace", {"run_id": run}),
                               ("runs.list", {"agent_id": "agent-z"})):
            r = stranger.call(method, params)
            assert r["error"]["code"] == -32603 and "not authorized" in r["error"]["message"], method
            assert "result" not in r
        host = Peer(d, host_token="h")
        assert host.call("runs.get_trace", {"run_id": run})["result"]["run_id"] == run
        r = stranger.call("runs.record_turns", {"run_id": run, "turns": turns(1)})["result"]
        assert r["ok"] is False and r["dropped"] == "run_not_found"


def test_host_ring_adoption_refusal_and_approval_proposals():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        a, b, h = Peer(d), Peer(d), Peer(d)
        h.call("host.subscribe")
        x = a.call("host.register_agent", {"id": "X", "name": "x", "kind": "cli"})["result"]
        # 17: another session cannot take X over while A is connected.
        r = b.call("host.register_agent", {"id": "X", "name": "mine", "kind": "cli"})
        assert r["error"]["message"] == "agent 'X' is owned by another session"
        # 27: requesting an approval for one's own agent flips it to waiting_for_approval.
        ap = a.call("host.request_approval", {"agent_id": "X", "title": "deploy"})["result"]
        assert ap["status"] == "pending" and ap["client_id"] == x["session_id"]
        agents = {g["id"]: g for g in b.call("host.agents")["result"]}
        assert agents["X"]["status"] == "waiting_for_approval"
        # 24: a non-owner's resolve is only a proposal; the row stays pending.
        r = b.call("host.resolve_approval", {"approval_id": ap["id"], "approved": True})["result"]
        assert r["status"] == "pending"
        proposed = h.wait(lambda m: m.get("method") == "host.event" and
                          m["params"]["kind"] == "approval.resolution_proposed")["params"]
        assert proposed["payload"]["approval_id"] == ap["id"]
        # The owner resolves; 25: resolving again returns the same row without error.
        r1 = a.call("host.resolve_approval", {"approval_id": ap["id"], "resolution": "deny"})["result"]
        r2 = a.call("host.resolve_approval", {"approval_id": ap["id"], "approved": True})["result"]
        assert r1["status"] == "denied" and r2 == r1
        agents = {g["id"]: g for g in b.call("host.agents")["result"]}
        assert agents["X"]["status"] == "idle"
        # 26: the owner disconnects => its pending approval is denied by "system" and
        # approval.resolved is broadcast; B's later resolve returns the row unchanged.
        ap2 = a.call("host.request_approval", {"agent_id": "X", "title": "later"})["result"]
        a.ws.close()
        reaped = h.wait(lambda m: m.get("method") == "host.event" and
                        m["params"]["kind"] == "approval.resolved" and
                        m["params"]["payload"]["id"] == ap2["id"], timeout=5)["params"]["payload"]
        assert reaped["status"] == "denied" and reaped["resolution"] == "deny"
        assert reaped["resolved_by"] == "system" and reaped["notes"] == "owner disconnected"
        r = b.call("host.resolve_approval", {"approval_id": ap2["id"], "approved": True})
        assert r["result"] == reaped
        # ... and the agent it had flipped is back to its previous status.
        agents = {g["id"]: g for g in b.call("host.agents")["result"]}
        assert agents["X"]["status"] == "idle"
        # Adoption: once A's session closed, registering X adopts it.
        assert b.call("host.register_agent", {"id": "X", "name": "mine", "kind": "cli"})["result"]["name"] == "mine"
        # 18: 501 notifications leave 500 consecutive events in the ring.
        for i in range(501):
            b.send(request("host.notify", {"message": f"n{i}"}, 10_000 + i))
        b.wait(lambda m: m.get("id") == 10_500, timeout=20)
        events = b.call("host.events", {"limit": 1000})["result"]["events"]
        assert len(events) == 500
        seqs = [e["sequence"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + 500))
        assert events[-1]["message"] == "n500"


def test_host_identity_null_fields_and_status_payload():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        h, a = Peer(d), Peer(d)
        # 48 (identity part): the snapshot names the serving process; car-daemon has no manifest.
        identity = h.call("host.subscribe")["result"]["identity"]
        handshake = h.call("server.handshake", {"protocol_version": 2})["result"]
        assert identity == {"version": handshake["server_version"], "pid": d.proc.pid,
                            "manifest_path": None, "manifest_role": "none"}
        # 50: the caller's message and payload reach the event verbatim; unset fields are null.
        agent = a.call("host.register_agent", {"name": "bot", "kind": "cli"})["result"]
        assert agent["current_task"] is None and agent["pid"] is None
        a.call("host.set_status", {"agent_id": agent["id"], "status": "running",
                                   "payload": {"k": 1}, "message": "m"})
        ev = h.wait(lambda m: m.get("method") == "host.event" and
                    m["params"]["kind"] == "agent.status_changed")["params"]
        assert ev["payload"] == {"k": 1} and ev["message"] == "m"
        listed = {g["id"]: g for g in a.call("host.agents")["result"]}[agent["id"]]
        assert listed["current_task"] is None and listed["pid"] is None
        note = a.call("host.notify", {"message": "n"})["result"]
        assert "agent_id" in note and note["agent_id"] is None
        device = a.call("host.register_device", {"name": "Mac", "platform": "macos"})["result"]
        assert "status" in device and device["status"] is None
