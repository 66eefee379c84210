"""Run lifecycle over real WebSocket connections to car-daemon (PROTOCOL.md §7.2, §7.3; acceptance 28, 29,
30, 39): agent-id resolution, idempotent starts, completing, and every refusal of
runs.record_turns, including string truncation and the 256 KiB per-turn limit."""

import os
import re
import tempfile

from harness import Daemon
from peer import Peer, start_run, turns

# The daemon inherits this process's environment; a stray CAR_AGENT_ID would give every daemon a
# default agent and hide the "cannot resolve" and order cases. Tests that want it set it explicitly.
os.environ.pop("CAR_AGENT_ID", None)

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MARK = "\u2026[truncated]"  # appended to a cut string, not counted in its 16384 bytes
OVERSIZE = "\u2026[truncated: turn exceeded 256 KiB]"  # replaces prompt, parameters, output
USAGE = "runs.record_turns requires { run_id, turns: [RunTurn] }: "  # every params failure
OK = {"status": "ok"}


def listen(*flags):
    return ("--listen", "127.0.0.1:0", *flags)


def error_of(reply):
    """(code, message) of an error reply; fails loudly when the call succeeded instead."""
    assert "error" in reply and "result" not in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


def start(peer, **params):
    """The agent_id runs.start resolves for these params."""
    return peer.call("runs.start", {"intent": "x", **params})["result"]["agent_id"]


def keyed_start(peer, agent_id, key, intent="x"):
    return peer.call("runs.start", {"intent": intent, "agent_id": agent_id, "idempotency_key": key})


def complete(peer, run_id, outcome=OK):
    return peer.call("runs.complete", {"run_id": run_id, "outcome": outcome})


def record(peer, run_id, batch):
    """The result of runs.record_turns (its refusals are success replies)."""
    return peer.call("runs.record_turns", {"run_id": run_id, "turns": batch})["result"]


def accepted(run_id, base, count):
    return {"run_id": run_id, "base_index": base, "count": count, "ok": True}


def refusal(run_id, why):
    return {"run_id": run_id, "base_index": 0, "count": 0, "ok": False, "dropped": why}


def trace_turns(peer, run_id):
    records = peer.call("runs.get_trace", {"run_id": run_id})["result"]["records"]
    return [r for r in records if r["record"] == "turn"]


def test_28_start_needs_a_resolvable_agent_and_slugs_agent_name():
    with Daemon("--no-auth", *listen()) as d:
        p = Peer(d)
        # No agent_id, no binding, no default agent, no agent_name: nothing to resolve.
        assert error_of(p.call("runs.start", {"intent": "x"})) == (-32602, "cannot resolve agent id")
        r = p.call("runs.start", {"intent": "x", "agent_name": "My Bot"})["result"]
        assert set(r) == {"run_id", "agent_id"} and r["agent_id"] == "name:my-bot"
        assert UUID_V4.match(r["run_id"]), r  # no idempotency_key: a fresh UUIDv4
        # Slug rule: ASCII letters/digits lower-cased, each other run (non-ASCII too) one '-',
        # '-' trimmed at both ends.
        for name, slug in (("  --My__Bot 2!! ", "my-bot-2"), ("Caf\u00e9 Bot", "caf-bot"), ("ABC", "abc")):
            assert start(p, agent_name=name) == "name:" + slug, name
        # A name that slugs to nothing is unresolvable.
        for name in ("!!!", "", "\u00e9\u00e9"):
            reply = p.call("runs.start", {"intent": "x", "agent_name": name})
            assert error_of(reply) == (-32602, "cannot resolve agent id"), name


def test_agent_id_resolution_order():
    # Explicit agent_id > session binding > default agent (--agent-id) > agent_name.
    with Daemon("--no-auth", *listen("--agent-id", "dflt")) as d:
        p = Peer(d)
        assert start(p, agent_name="My Bot") == "dflt"
        assert start(p, agent_id="explicit", agent_name="My Bot") == "explicit"
        # Auth disabled still binds (PROTOCOL.md §3); the binding beats the default agent.
        auth = p.call("session.auth", {"token": "any", "agent_id": "bound"})["result"]
        assert auth == {"ok": True, "auth_enabled": False, "agent_id": "bound"}
        assert start(p, agent_name="My Bot") == "bound"
        assert start(p, agent_id="explicit") == "explicit"
    # CAR_AGENT_ID is the other way to give the default agent.
    with Daemon("--no-auth", *listen(), env={"CAR_AGENT_ID": "from-env"}) as d:
        assert start(Peer(d), agent_name="My Bot") == "from-env"
    # Binding through a per-agent token (--agent-token ID=TOKEN) with auth enabled.
    with Daemon("--token", "t", *listen("--agent-token", "bot-7=secret7", "--agent-id", "dflt")) as d:
        # bot-7 has its own token: the daemon token no longer binds it.
        reply = Peer(d).call("session.auth", {"token": "t", "agent_id": "bot-7"})
        assert error_of(reply) == (-32603, "auth failed: token mismatch")
        a = Peer(d)
        auth = a.call("session.auth", {"token": "secret7", "agent_id": "bot-7"})["result"]
        assert auth == {"ok": True, "auth_enabled": True, "agent_id": "bot-7"}
        assert start(a) == "bot-7"
        assert start(Peer(d, token="t")) == "dflt"  # authenticated but unbound


def test_29_same_idempotency_key_gives_the_same_run():
    state = tempfile.mkdtemp(prefix="car-it-")
    long_key = "\u00e9" * 128  # 128 characters, 256 bytes
    with Daemon("--no-auth", *listen(), state_dir=state) as d:
        a, b = Peer(d), Peer(d)
        first = keyed_start(a, "agent-i", "key-1", intent="one")["result"]
        assert first == {"run_id": "key-1", "agent_id": "agent-i"}  # the key is the run id
        # Again, from the same and from another connection: the existing run, as it is.
        for peer in (a, b):
            assert keyed_start(peer, "agent-i", "key-1", intent="two")["result"] == first
        listing = a.call("runs.list", {"agent_id": "agent-i"})["result"]
        assert listing["agent_id"] == "agent-i" and len(listing["runs"]) == 1
        assert listing["runs"][0]["run_id"] == "key-1" and listing["runs"][0]["intent"] == "one"
        # The key belongs to agent-i.
        assert error_of(keyed_start(a, "agent-j", "key-1")) == (
            -32602, "idempotency key belongs to another agent")
        # 1-128 chars: 128 is fine; 129 and empty are schema failures naming the field.
        assert keyed_start(a, "agent-i", long_key)["result"]["run_id"] == long_key
        for bad in ("k" * 129, ""):
            code, msg = error_of(keyed_start(a, "agent-i", bad))
            assert code == -32602 and msg.startswith("invalid params: idempotency_key"), msg
        assert complete(a, "key-1")["result"]["ok"] is True
    # After a restart the store still knows the key (spec: "memory or store").
    with Daemon("--no-auth", *listen(), state_dir=state) as d:
        p = Peer(d)
        assert keyed_start(p, "agent-i", "key-1", intent="three")["result"] == first
        assert error_of(keyed_start(p, "agent-j", "key-1")) == (
            -32602, "idempotency key belongs to another agent")
        runs = {r["run_id"]: r for r in p.call("runs.list", {"agent_id": "agent-i"})["result"]["runs"]}
        assert sorted(runs) == sorted(["key-1", long_key])
        assert runs["key-1"]["status"] == "completed" and runs["key-1"]["intent"] == "one"


def test_30_complete_once_and_only_known_runs():
    state = tempfile.mkdtemp(prefix="car-it-")
    outcome = {"status": "ok", "summary": "done"}
    with Daemon("--no-auth", *listen(), state_dir=state) as d:
        w, stranger, bound = Peer(d), Peer(d), Peer(d)
        run = start_run(w)
        assert complete(w, run, outcome)["result"] == {"run_id": run, "ok": True}
        assert error_of(complete(w, run, outcome)) == (-32603, f"run '{run}' already ended")
        assert error_of(complete(w, "no-such-run")) == (-32602, "unknown run 'no-such-run'")
        # A non-writer cannot tell a live run from a missing one.
        second = start_run(w)
        assert error_of(complete(stranger, second)) == (-32602, f"unknown run '{second}'")
        # A connection bound to the run's agent is a writer too.
        bound.call("session.auth", {"token": "any", "agent_id": "agent-x"})
        assert complete(bound, second, {"status": "failed"})["result"] == {"run_id": second, "ok": True}
        # The ending holds the outcome as given; status is completed whatever the outcome's status.
        ended = w.call("runs.get_trace", {"run_id": run})["result"]["records"][-1]
        assert (ended["record"], ended["termination"], ended["outcome"]) == ("ended", "outcome", outcome)
        listing = w.call("runs.list", {"agent_id": "agent-x"})["result"]["runs"]
        assert {r["run_id"]: r["status"] for r in listing} == {run: "completed", second: "completed"}
        code, msg = error_of(w.call("runs.complete", {"run_id": run}))
        assert code == -32602 and msg.startswith("invalid params: outcome"), msg
    # Runs found only in the store have ended: a writer (bound) hears so, anyone else "unknown".
    with Daemon("--no-auth", *listen(), state_dir=state) as d:
        bound, stranger = Peer(d), Peer(d)
        bound.call("session.auth", {"token": "any", "agent_id": "agent-x"})
        assert error_of(complete(bound, run)) == (-32603, f"run '{run}' already ended")
        assert error_of(complete(stranger, run)) == (-32602, f"unknown run '{run}'")


def test_39_record_turns_refusals_in_spec_order():
    with Daemon("--token", "t", "--host-token", "h", *listen()) as d:
        w = Peer(d, token="t")
        run = w.call("runs.start", {"intent": "x", "agent_id": "agent-39"})["result"]["run_id"]
        assert record(w, run, turns(3)) == accepted(run, 0, 3)
        # Non-writers, including the host role (it does not grant writes), and a missing run.
        for peer in (Peer(d, token="t"), Peer(d, host_token="h")):
            assert record(peer, run, turns(1)) == refusal(run, "run_not_found")
        assert record(w, "missing", turns(1)) == refusal("missing", "run_not_found")
        # A connection bound to the run's agent may write.
        bound = Peer(d, token="t", agent_id="agent-39")
        assert record(bound, run, turns(2, 3)) == accepted(run, 3, 2)
        # Params come first: 257 turns, empty, non-object, empty run_id => -32602 in upstream's
        # words, naming the field.
        for run_id, batch, detail in ((run, turns(257), "turns must hold at most 256 turns"),
                                      ("missing", turns(257), "turns must hold at most 256 turns"),
                                      (run, [], "turns must be a non-empty array"),
                                      (run, [1], "turns[0] must be an object"),
                                      (run, {}, "turns must be an array"),
                                      ("", turns(1), "run_id must be a non-empty string")):
            code, msg = error_of(w.call("runs.record_turns", {"run_id": run_id, "turns": batch}))
            assert (code, msg) == (-32602, USAGE + detail), (run_id, msg)
        code, msg = error_of(w.call("runs.record_turns", {"turns": turns(1)}))
        assert (code, msg) == (-32602, USAGE + "run_id is required")
        # 256 per call is allowed; fill to 1990 in batches of at most 256 (5 recorded so far).
        count = 5
        while count < 1990:
            n = min(256, 1990 - count)
            assert record(w, run, turns(n, count)) == accepted(run, count, n)
            count += n
        # 11 more would make 2001: the batch is refused whole.
        assert record(w, run, turns(11, 1990)) == refusal(run, "run_turn_limit")
        # The limit is checked before the size.
        huge = {"cli_outcome": ["z" * 16000] * 20}
        assert record(w, run, turns(10) + [huge]) == refusal(run, "run_turn_limit")
        # Exactly 2000 is allowed (so nothing of the refused batches was appended); 2001 is not.
        assert record(w, run, turns(10, 1990)) == accepted(run, 1990, 10)
        assert record(w, run, turns(1, 2000)) == refusal(run, "run_turn_limit")
        snap = w.call("runs.subscribe", {"run_id": run})["result"]
        assert snap["cursor"] == 2000
        got = [(t["index"], t["prompt"]) for t in snap["turns_so_far"]]
        assert got == [(i, f"p{i}") for i in range(2000)]
        w.call("runs.unsubscribe", {"run_id": run})
        # After runs.complete: run_terminal for writers, even when the limit is also hit...
        small = w.call("runs.start", {"intent": "y", "agent_id": "agent-39"})["result"]["run_id"]
        assert record(w, small, turns(1)) == accepted(small, 0, 1)
        for r_id in (small, run):
            assert complete(w, r_id)["result"]["ok"] is True
            for peer in (w, bound):
                assert record(peer, r_id, turns(1)) == refusal(r_id, "run_terminal")
        # ...but still run_not_found for anyone else, and params are still checked first.
        assert record(Peer(d, token="t"), small, turns(1)) == refusal(small, "run_not_found")
        assert error_of(w.call("runs.record_turns", {"run_id": small, "turns": turns(257)}))[0] == -32602


def test_turn_strings_are_truncated_and_large_turns_marked_or_refused():
    with Daemon("--no-auth", *listen()) as d:
        w = Peer(d)
        run = start_run(w)
        exact = "e" * 16384  # at the limit: kept as is
        # 1 + 2*8192 = 16385 bytes; byte 16384 would split an 'é', so the valid prefix is 16383 bytes.
        utf8_long = "x" + "\u00e9" * 8192
        turn = {"index": 99, "prompt": "a" * 16385, "tool": exact,
                "parameters": {"deep": [{"s": utf8_long}], "n": 7, "ok": True, "none": None}}
        assert record(w, run, [turn]) == accepted(run, 0, 1)
        # The client's index is ignored; strings at any depth are cut; other values untouched.
        turn0 = {"record": "turn", "index": 0, "prompt": "a" * 16384 + MARK, "tool": exact,
                 "parameters": {"deep": [{"s": "x" + "\u00e9" * 8191 + MARK}], "n": 7, "ok": True,
                                "none": None},
                 "verifier_verdict": "not_run"}
        assert trace_turns(w, run) == [turn0]
        # 15 strings of 20000 bytes exceed 256 KiB as sent but fit once cut: kept, truncated.
        fits = {"prompt": "p", "output": ["q" * 20000] * 15}
        # 20 strings of 16000 bytes (not cut) exceed 256 KiB: prompt, parameters and output are
        # replaced by the marker (PROTOCOL.md §7.3), every other member is kept.
        oversized = {"prompt": "short", "tool": "keep", "parameters": {"a": "b"},
                   "output": ["y" * 16000] * 20, "verifier_verdict": "passed"}
        assert record(w, run, [fits, oversized]) == accepted(run, 1, 2)
        turn1 = {"record": "turn", "index": 1, "prompt": "p", "output": ["q" * 16384 + MARK] * 15,
                 "verifier_verdict": "not_run"}
        turn2 = {"record": "turn", "index": 2, "prompt": OVERSIZE, "tool": "keep",
                 "parameters": OVERSIZE, "output": OVERSIZE, "verifier_verdict": "passed"}
        assert trace_turns(w, run) == [turn0, turn1, turn2]
        # Still over 256 KiB with prompt/parameters/output replaced: the whole batch is refused...
        too_large = {"prompt": "p", "cli_outcome": ["z" * 16000] * 20}
        assert record(w, run, turns(1) + [too_large]) == refusal(run, "turn_too_large")
        # ...and nothing of it was appended.
        assert record(w, run, turns(1, 3)) == accepted(run, 3, 1)
        turn3 = {"record": "turn", "index": 3, "prompt": "p3", "output": "",
                 "verifier_verdict": "not_run"}
        snap = w.call("runs.subscribe", {"run_id": run})["result"]
        assert snap["cursor"] == 4 and snap["turns_so_far"] == [turn0, turn1, turn2, turn3]
