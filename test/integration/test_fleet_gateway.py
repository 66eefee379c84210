"""car-daemon --fleet, the read-only fleet gateway (docs/FLEET.md "Gateway"), against a real
nats-server with JetStream and real exporting daemons (car-daemon --nats --host-id): runs.list
shows every host's runs with their host_id, runs.get_trace equals the host's own runs.get_trace,
a live runs.subscribe on the gateway receives the turns recorded on a host afterwards, in order
and once each, a reader that stops reading gets the local gap notices (drop_with_gap, 256 events)
while others are unharmed, fleet.hosts lists the hosts, a run id two hosts share needs host_id, every write
is refused with the documented error, auth is the daemon's; and with a three-node cluster
(replicas 3) losing a node mid-run the gateway keeps serving and the subscriber gets every turn.

Every wait is bounded; nothing asserts how long anything took (latency is measured by
test/bench/fleet_latency_bench.py). A build without the `nats` feature, or a machine without
nats-server, cannot pass these tests: under CI=true that is a failure; elsewhere each test is
skipped (unittest.SkipTest, counted by runner.py) with the reason."""

import json
import time

import nats_broker
from harness import DAEMON, Daemon
from nats_broker import NatsCluster, NatsServer, wait_stream_count
from peer import Peer, start_run, turns
from rawws import RawWs

AGENT = "fleet-bot"
READ_ONLY = "read-only fleet gateway: {} is not served here; call the host's daemon"


def ready_or_skip(test):
    nats_broker.fleet_ready_or_skip(test, DAEMON)


def host_daemon(urls, host_id, *extra):
    return Daemon("--no-auth", "--listen", "127.0.0.1:0", "--nats", urls, "--host-id", host_id,
                  *extra)


def gateway(urls, *extra):
    auth = () if any(a.startswith("--token") for a in extra) else ("--no-auth",)
    return Daemon(*auth, "--listen", "127.0.0.1:0", "--fleet", urls, *extra)


def result(reply):
    assert "result" in reply, reply
    return reply["result"]


def wait_for(fn, what, timeout=20.0):
    """fn() until it returns something truthy (bounded); that value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last})")


def listed(peer, **params):
    return result(peer.call("runs.list", {"agent_id": AGENT, **params}))["runs"]


def wait_listed(peer, run_id, turn_count=None, status=None, timeout=20.0):
    """The gateway's runs.list entry of run_id once the index holds it (with that many turns and
    that status, when given)."""
    def find():
        for r in listed(peer):
            if r["run_id"] == run_id and (turn_count is None or r["turn_count"] == turn_count) \
                    and (status is None or r["status"] == status):
                return r
        return None
    return wait_for(find, f"run {run_id} in the gateway's runs.list", timeout)


def record(peer, run_id, batch):
    reply = result(peer.call("runs.record_turns", {"run_id": run_id, "turns": batch}))
    assert reply["ok"], reply
    return reply


def whole_trace(peer, run_id, **extra):
    records, cursor = [], 0
    for _ in range(100):
        page = result(peer.call("runs.get_trace", {"run_id": run_id, "cursor": cursor, **extra}))
        assert not page.get("not_found"), page
        records += page["records"]
        if page.get("next_cursor") is None:
            return page, records
        cursor = page["next_cursor"]
    raise AssertionError("runs.get_trace never ended")


def events_until_ended(peer, run_id, timeout=30.0):
    """Every runs.trace.event (and gap notice) of run_id until its `ended` event."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            m = peer.wait(lambda m: m.get("method") in ("runs.trace.event", "runs.trace.gap")
                          and m["params"]["run_id"] == run_id,
                          timeout=max(0.1, deadline - time.time()))
        except TimeoutError:  # the socket's own 10 s: an exporter may still be failing over
            continue
        got.append(m)
        if m["method"] == "runs.trace.event" and m["params"]["record"]["record"] == "ended":
            return got
    raise AssertionError(f"no ended event for {run_id} within {timeout} s: {len(got)} events")


def test_gateway_lists_both_hosts_runs_and_serves_their_traces():
    ready_or_skip("test_gateway_lists_both_hosts_runs_and_serves_their_traces")
    with NatsServer() as broker, host_daemon(broker.url, "web-1") as h1, \
            host_daemon(broker.url, "web-2") as h2:
        p1, p2 = Peer(h1), Peer(h2)
        r1 = start_run(p1, agent_id=AGENT, intent="on web-1")
        record(p1, r1, turns(3))
        result(p1.call("runs.complete", {"run_id": r1, "outcome": {"status": "success"}}))
        time.sleep(0.01)  # a later started_at for r2
        r2 = start_run(p2, agent_id=AGENT, intent="on web-2")
        record(p2, r2, turns(2, size=50))
        # 1 started + 3 turns + 1 ended, and 1 + 2: the exporters have published everything.
        wait_stream_count(broker.url, "CAR", 8)
        with gateway(broker.url) as gw:
            g = Peer(gw)
            wait_listed(g, r1, turn_count=3, status="completed")
            wait_listed(g, r2, turn_count=2)
            runs = listed(g)
            assert [r["run_id"] for r in runs] == [r2, r1], runs  # newest first, across hosts
            by_id = {r["run_id"]: r for r in runs}
            assert by_id[r1]["host_id"] == "web-1" and by_id[r2]["host_id"] == "web-2", runs
            assert by_id[r1]["intent"] == "on web-1" and "ended_at" in by_id[r1], by_id[r1]
            assert by_id[r2]["status"] == "in_progress" and "ended_at" not in by_id[r2], by_id[r2]
            # The summaries are the hosts' own, plus host_id.
            own = {r["run_id"]: r for r in result(p1.call("runs.list", {"agent_id": AGENT}))["runs"]}
            assert {k: v for k, v in by_id[r1].items() if k != "host_id"} == own[r1], (by_id, own)
            only_web2 = listed(g, host_id="web-2")
            assert [r["run_id"] for r in only_web2] == [r2], only_web2
            page = result(g.call("runs.list", {"agent_id": AGENT, "limit": 1}))
            assert [r["run_id"] for r in page["runs"]] == [r2] and page["next_before"] == r2, page
            older = result(g.call("runs.list", {"agent_id": AGENT, "limit": 1, "before": r2}))
            assert [r["run_id"] for r in older["runs"]] == [r1], older
            assert listed(g, agent_id="nobody") == []

            # runs.get_trace: the host's records, byte for byte (as JSON values), plus host_id.
            for peer, run_id, host in ((p1, r1, "web-1"), (p2, r2, "web-2")):
                page, records = whole_trace(g, run_id)
                _, own_records = whole_trace(peer, run_id)
                assert records == own_records, (records, own_records)
                assert page["host_id"] == host and page["agent_id"] == AGENT, page
                tail = result(g.call("runs.get_trace", {"run_id": run_id, "cursor": 2}))
                assert tail["records"] == own_records[2:] and tail["cursor"] == 2, tail
            missing = result(g.call("runs.get_trace", {"run_id": "no-such-run"}))
            assert missing == {"run_id": "no-such-run", "not_found": True}, missing
            err = g.call("runs.subscribe", {"run_id": "no-such-run"})["error"]
            assert err["code"] == -32602 and "unknown run" in err["message"], err

            hosts = result(g.call("fleet.hosts"))
            names = [h["host_id"] for h in hosts["hosts"]]
            assert names == ["web-1", "web-2"], hosts
            for h in hosts["hosts"]:
                assert h["runs_seen"] == 1 and h["last_record_at"].endswith("Z"), h
            assert hosts["runs_indexed"] == 2, hosts

            # The viewer's first call answers in the local shape, with the fleet's agents.
            snap = result(g.call("host.subscribe"))
            assert [a["id"] for a in snap["agents"]] == [AGENT], snap
            assert snap["agents"][0]["status"] == "running", snap  # r2 is still open
            assert snap["approvals"] == [] and snap["event_sequence"] == 0, snap
            stats = result(g.call("runs.stats"))
            assert stats["gateway"]["runs_indexed"] == 2 and stats["gateway"]["connected"], stats


def test_live_subscription_receives_later_turns_in_order_once_each():
    ready_or_skip("test_live_subscription_receives_later_turns_in_order_once_each")
    with NatsServer() as broker, host_daemon(broker.url, "web-1") as h1, \
            gateway(broker.url) as gw:
        p1, g = Peer(h1), Peer(gw)
        run_id = start_run(p1, agent_id=AGENT)
        record(p1, run_id, turns(2))
        wait_listed(g, run_id, turn_count=2)
        snap = result(g.call("runs.subscribe", {"run_id": run_id}))
        assert snap["cursor"] == 2 and len(snap["turns_so_far"]) == 2, snap
        assert snap["status"] == "in_progress" and snap["host_id"] == "web-1", snap
        assert [t["prompt"] for t in snap["turns_so_far"]] == ["p0", "p1"], snap
        # Recorded on the host after the snapshot: one, then batches.
        record(p1, run_id, turns(1, start=2))
        record(p1, run_id, turns(5, start=3))
        record(p1, run_id, turns(4, start=8))
        result(p1.call("runs.complete", {"run_id": run_id, "outcome": {"status": "success"}}))
        events = events_until_ended(g, run_id)
        assert all(e["method"] == "runs.trace.event" for e in events), events
        params = [e["params"] for e in events]
        assert [p["cursor"] for p in params] == list(range(3, 13)) + [12], params
        assert [p["record"]["prompt"] for p in params[:-1]] == [f"p{i}" for i in range(2, 12)]
        assert all(p["status"] == "in_progress" for p in params[:-1]), params
        assert params[-1]["status"] == "completed" and params[-1]["host_id"] == "web-1", params
        # The live records are the host's own stored records, in order.
        _, own = whole_trace(p1, run_id)
        assert [p["record"] for p in params] == own[3:], (params, own)
        # Nothing follows the ending; unsubscribing still finds the subscription (as locally).
        assert g.pending == [] or all(m.get("method") != "runs.trace.event" for m in g.pending)
        gone = result(g.call("runs.unsubscribe", {"run_id": run_id}))
        assert gone == {"run_id": run_id, "removed": True}, gone
        again = result(g.call("runs.unsubscribe", {"run_id": run_id}))
        assert again["removed"] is False, again

        # An ended run: the final snapshot, status completed, and no consumer left behind.
        final = result(g.call("runs.subscribe", {"run_id": run_id}))
        assert final["status"] == "completed" and final["cursor"] == 12, final
        stats = result(g.call("runs.stats"))
        assert stats["gateway"]["live_subscriptions"] == 0, stats
        assert stats["gateway"]["live_events"] >= 11, stats


def test_a_run_id_on_two_hosts_needs_host_id():
    ready_or_skip("test_a_run_id_on_two_hosts_needs_host_id")
    with NatsServer() as broker, host_daemon(broker.url, "web-1") as h1, \
            host_daemon(broker.url, "web-2") as h2, gateway(broker.url) as gw:
        p1, p2, g = Peer(h1), Peer(h2), Peer(gw)
        # With an idempotency key the key is the run id: the same on both hosts.
        shared = start_run(p1, agent_id=AGENT, idempotency_key="shared-run")
        assert start_run(p2, agent_id=AGENT, idempotency_key="shared-run") == shared
        record(p1, shared, turns(1))
        record(p2, shared, turns(2))
        wait_for(lambda: len([r for r in listed(g) if r["run_id"] == shared]) == 2,
                 "both shared runs indexed")
        for method in ("runs.get_trace", "runs.subscribe"):
            err = g.call(method, {"run_id": shared})["error"]
            assert err["code"] == -32602, err
            assert "several hosts" in err["message"] and "host_id" in err["message"], err
            assert "web-1" in err["message"] and "web-2" in err["message"], err
        page = result(g.call("runs.get_trace", {"run_id": shared, "host_id": "web-2"}))
        assert page["host_id"] == "web-2" and len(page["records"]) == 3, page
        snap = result(g.call("runs.subscribe", {"run_id": shared, "host_id": "web-1"}))
        assert snap["host_id"] == "web-1" and snap["cursor"] == 1, snap


def test_every_write_is_refused_with_one_error():
    ready_or_skip("test_every_write_is_refused_with_one_error")
    with NatsServer() as broker, gateway(broker.url) as gw:
        g = Peer(gw)
        writes = {
            "runs.start": {"intent": "x", "agent_id": AGENT},
            "runs.record_turns": {"run_id": "r", "turns": [{"prompt": "p"}]},
            "runs.complete": {"run_id": "r", "outcome": {"status": "success"}},
            "host.register_agent": {"id": "a", "name": "a", "kind": "k"},
            "host.set_status": {"agent_id": "a", "status": "running"},
            "host.notify": {"kind": "x"},
            "host.request_approval": {"action": "x"},
            "host.resolve_approval": {"approval_id": "x", "resolution": "approve"},
            "tools.register": {"tools": []},
            "tools.invoke": {"name": "t"},
        }
        for method, params in writes.items():
            err = g.call(method, params)["error"]
            assert err == {"code": -32603, "message": READ_ONLY.format(method)}, (method, err)
        # Reads the gateway does not serve are simply unknown.
        err = g.call("host.agents")["error"]
        assert err["code"] == -32601, err
        # And the gateway still answers reads afterwards.
        assert result(g.call("runs.list", {"agent_id": AGENT}))["runs"] == []


def test_auth_is_the_daemons():
    ready_or_skip("test_auth_is_the_daemons")
    with NatsServer() as broker, host_daemon(broker.url, "web-1") as h1:
        p1 = Peer(h1)
        run_id = start_run(p1, agent_id=AGENT)
        record(p1, run_id, turns(1))
        other = start_run(p1, agent_id="other-bot")
        wait_stream_count(broker.url, "CAR", 3)
        with gateway(broker.url, "--token", "daemon-secret", "--host-token", "host-secret",
                     "--agent-token", f"{AGENT}=agent-secret") as gw:
            # Before session.auth: -32001 and the connection is closed.
            anon = RawWs(RawWs.url_address(gw.ws_url()), timeout=10)
            anon.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "runs.list",
                                       "params": {"agent_id": AGENT}}))
            assert json.loads(anon.recv_text())["error"]["code"] == -32001
            assert anon.expect_close() == 1008
            bad = RawWs(RawWs.url_address(gw.ws_url()), timeout=10)
            bad.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.auth",
                                      "params": {"token": "wrong"}}))
            assert "error" in json.loads(bad.recv_text())

            host = Peer(gw, host_token="host-secret")
            wait_listed(host, run_id, turn_count=1)
            assert result(host.call("runs.list", {"agent_id": "other-bot"}))["runs"][0]["run_id"] == other
            assert [h["host_id"] for h in result(host.call("fleet.hosts"))["hosts"]] == ["web-1"]

            plain = Peer(gw, token="daemon-secret")
            err = plain.call("runs.list", {"agent_id": AGENT})["error"]
            assert err == {"code": -32603, "message": "not authorized for agent"}, err
            err = plain.call("runs.get_trace", {"run_id": run_id})["error"]
            assert err == {"code": -32603, "message": "not authorized for run"}, err
            err = plain.call("runs.subscribe", {"run_id": run_id})["error"]
            assert err == {"code": -32603, "message": "not authorized for run"}, err
            err = plain.call("fleet.hosts")["error"]
            assert err["code"] == -32603 and "not authorized" in err["message"], err

            bound = Peer(gw, token="agent-secret", agent_id=AGENT)
            assert [r["run_id"] for r in result(bound.call("runs.list", {"agent_id": AGENT}))["runs"]] == [run_id]
            assert len(result(bound.call("runs.get_trace", {"run_id": run_id}))["records"]) == 2
            err = bound.call("runs.get_trace", {"run_id": other})["error"]
            assert err["message"] == "not authorized for run", err
            err = bound.call("runs.list", {"agent_id": "other-bot"})["error"]
            assert err["message"] == "not authorized for agent", err


def test_three_node_cluster_one_node_killed_mid_run_gateway_keeps_serving():
    ready_or_skip("test_three_node_cluster_one_node_killed_mid_run_gateway_keeps_serving")
    with NatsCluster() as cluster, \
            host_daemon(cluster.urls, "web-1", "--nats-replicas", "3") as h1, \
            gateway(cluster.urls) as gw:
        p1, g = Peer(h1), Peer(gw)
        # A read during the fail-over waits for the new leader (the gateway retries a broker
        # read that timed out: up to 3 x 5 s), longer than a call normally may take.
        g.ws.sock.settimeout(40)
        run_id = start_run(p1, agent_id=AGENT)
        record(p1, run_id, turns(3))
        wait_listed(g, run_id, turn_count=3, timeout=30.0)
        snap = result(g.call("runs.subscribe", {"run_id": run_id}))
        assert snap["cursor"] == 3, snap
        record(p1, run_id, turns(3, start=3))
        # Mid-run, the node the gateway reads through: its consumers must fail over.
        server = result(g.call("runs.stats"))["gateway"]["server"]
        victim = next(n for n in cluster.nodes if n.url.endswith(server.rsplit(":", 1)[1]))
        victim.kill()
        for i in range(6, 30, 3):
            record(p1, run_id, turns(3, start=i))
        result(p1.call("runs.complete", {"run_id": run_id, "outcome": {"status": "success"}}))
        events = events_until_ended(g, run_id, timeout=60.0)
        turns_seen = [e["params"]["record"]["prompt"] for e in events
                      if e["method"] == "runs.trace.event" and e["params"]["record"]["record"] == "turn"]
        assert turns_seen == [f"p{i}" for i in range(3, 30)], turns_seen
        assert all(e["method"] == "runs.trace.event" for e in events), "a gap notice: events lost"
        # The gateway keeps serving: the index caught up with the ending, reads still work.
        wait_listed(g, run_id, turn_count=30, status="completed", timeout=30.0)
        _, records = whole_trace(g, run_id)
        _, own = whole_trace(p1, run_id)
        assert records == own, (len(records), len(own))
        hosts = result(g.call("fleet.hosts"))["hosts"]
        assert [h["host_id"] for h in hosts] == ["web-1"], hosts
        now = result(g.call("runs.stats"))["gateway"]
        assert now["connected"] and now["server"] != server, (server, now)


def test_a_reader_that_stops_reading_gets_gap_notices_in_the_local_shape():
    ready_or_skip("test_a_reader_that_stops_reading_gets_gap_notices_in_the_local_shape")
    with NatsServer() as broker, host_daemon(broker.url, "web-1") as h1, \
            gateway(broker.url) as gw:
        p1, g = Peer(h1), Peer(gw)
        run_id = start_run(p1, agent_id=AGENT)
        record(p1, run_id, turns(1))
        wait_listed(g, run_id, turn_count=1)
        slow = RawWs(RawWs.url_address(gw.ws_url()), timeout=10)
        slow.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "runs.subscribe",
                                   "params": {"run_id": run_id}}))
        assert json.loads(slow.recv_text())["result"]["cursor"] == 1
        # It stops reading while ~15 MB of turns arrive: far more than the socket buffers, the
        # one batch in its sink and its 256-event queue hold. (Well within the 10 s deadline.)
        for start in range(1, 1901, 100):
            record(p1, run_id, turns(100, start=start, size=8000))
        wait_stream_count(broker.url, "CAR", 1902, timeout=30)
        time.sleep(1.0)  # the gateway's consumer has pushed them all by now
        delivered, gaps = [], []
        deadline = time.time() + 30
        while time.time() < deadline and (not delivered or delivered[-1] < 1901) and \
                not (gaps and gaps[-1]["to_cursor"] >= 1901):
            m = json.loads(slow.recv_text())
            if m.get("method") == "runs.trace.event":
                delivered.append(m["params"]["cursor"])
            elif m.get("method") == "runs.trace.gap":
                gaps.append(m["params"])
        assert gaps, f"no gap notice; {len(delivered)} events delivered"
        for gap in gaps:
            assert set(gap) == {"run_id", "from_cursor", "to_cursor", "dropped"}, gap
            assert gap["run_id"] == run_id and gap["from_cursor"] < gap["to_cursor"], gap
        # Every cursor is delivered once or reported dropped, in order, never both.
        assert delivered == sorted(set(delivered)), "events out of order or doubled"
        dropped = set()
        for gap in gaps:
            hole = set(range(gap["from_cursor"] + 1, gap["to_cursor"] + 1)) - set(delivered)
            assert len(hole) == gap["dropped"], (gap, len(hole))
            dropped |= hole
        assert not dropped & set(delivered)
        assert set(delivered) | dropped == set(range(2, 1902)), "a cursor neither delivered nor dropped"
        # The gateway is unharmed: another reader sees the whole run.
        _, records = whole_trace(g, run_id)
        assert len(records) == 1902, len(records)
