#!/usr/bin/python3
"""A client written to upstream CAR's message shapes (car-server-core 0.31 clients), the way a
stock host shell and a stock tool host behave. It knows nothing about carcore's own test harness:
it finds the daemon's tokens where CAR clients look for them, speaks JSON-RPC over a WebSocket
with the `websockets` library, and checks each answer against upstream's shapes.

    upstream_client.py ws://127.0.0.1:PORT

Exits 0 when every step behaved as upstream's clients expect; otherwise prints the step that did
not and exits 1. Every wait is bounded.
"""

import asyncio
import itertools
import json
import os
import sys

import websockets

STEP_TIMEOUT = 15.0  # seconds for any single answer


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


def token_dir():
    """Where CAR clients look: $XDG_RUNTIME_DIR/ai.parslee.car, else ~/.config/ai.parslee.car."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "ai.parslee.car")
    return os.path.join(os.path.expanduser("~"), ".config", "ai.parslee.car")


def read_token(name):
    path = os.path.join(token_dir(), name)
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class Rpc:
    """One JSON-RPC connection. Replies are matched by id; server→client requests and
    notifications are queued for whoever waits for them."""

    def __init__(self, ws, label):
        self.ws = ws
        self.label = label
        self.ids = itertools.count(1)
        self.replies = {}
        self.inbound = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url, label):
        ws = await asyncio.wait_for(websockets.connect(url, max_size=None), STEP_TIMEOUT)
        return cls(ws, label)

    async def _read(self):
        try:
            async for text in self.ws:
                msg = json.loads(text)
                if "method" in msg:
                    await self.inbound.put(msg)
                elif msg.get("id") in self.replies:
                    self.replies.pop(msg["id"]).set_result(msg)
        except websockets.ConnectionClosed:
            pass
        for fut in self.replies.values():
            if not fut.done():
                fut.set_exception(Failure(f"{self.label}: connection closed"))

    async def call(self, method, params=None):
        rid = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, STEP_TIMEOUT)

    async def result(self, method, params=None):
        reply = await self.call(method, params)
        check("result" in reply, f"{self.label}: {method} failed: {reply.get('error')}")
        return reply["result"]

    async def answer(self, request, result):
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}))

    async def next_inbound(self, method):
        """The next server→client message with this method (others seen meanwhile are kept)."""
        kept = []
        try:
            while True:
                msg = await asyncio.wait_for(self.inbound.get(), STEP_TIMEOUT)
                if msg.get("method") == method:
                    return msg
                kept.append(msg)
        finally:
            for msg in kept:
                self.inbound.put_nowait(msg)

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


async def handshake(rpc):
    result = await rpc.result("server.handshake", {"protocol_version": 2, "client_version": "upstream-0.31"})
    check(result.get("protocol_version") == 2, f"{rpc.label}: handshake answered {result}")


async def main(url):
    auth_token = read_token("auth-token")
    host_token = read_token("host-token")

    # ---- the tool host / agent: daemon token, bound to its agent id ----
    agent = await Rpc.open(url, "tool host")
    auth = await agent.result("session.auth", {"token": auth_token, "agent_id": "upstream-agent",
                                               "memory_namespace": "ns-upstream"})
    check(auth.get("ok") is True, f"agent auth: {auth}")
    check(auth.get("agent_id") == "upstream-agent", f"agent auth binds the agent: {auth}")
    check(auth.get("memory_namespace") == "ns-upstream", f"memory_namespace echoed: {auth}")
    await handshake(agent)

    registered = await agent.result("tools.register", [
        {"name": "echo", "description": "returns its parameters", "parameters": {"type": "object"}},
        "slow",
    ])
    check(registered == 2, f"tools.register (array form) answers the count, got {registered!r}")
    listed = await agent.result("tools.list")
    names = [t["name"] for t in listed.get("tools", [])]
    check(names == ["echo", "slow"] and listed.get("count") == 2, f"tools.list: {listed}")
    slow = listed["tools"][1]
    check(slow.get("description") == "" and slow.get("parameters") == {}, f"defaults: {slow}")

    # ---- the host shell: host token, handshake, subscribe ----
    host = await Rpc.open(url, "host shell")
    hauth = await host.result("session.auth", {"host_token": host_token})
    check(hauth.get("role") == "host", f"host auth: {hauth}")
    await handshake(host)
    snap = await host.result("host.subscribe", {})
    check(snap.get("subscribed") is True, f"host.subscribe: {snap}")
    identity = snap.get("identity")
    check(isinstance(identity, dict), f"host.subscribe carries identity: {snap.keys()}")
    check(isinstance(identity.get("version"), str) and isinstance(identity.get("pid"), int),
          f"identity: {identity}")
    check("manifest_path" in identity and identity.get("manifest_role") in ("owner", "observer", "none"),
          f"identity: {identity}")

    # ---- the host invokes a tool; the tool host serves tools.execute ----
    invoke = asyncio.ensure_future(host.call("tools.invoke", {"tool": "echo", "parameters": {"x": 1}}))
    execute = await agent.next_inbound("tools.execute")
    params = execute["params"]
    check(params.get("tool") == "echo" and params.get("parameters") == {"x": 1}, f"tools.execute: {params}")
    await agent.answer(execute, {"echoed": params["parameters"]})
    reply = await invoke
    check(reply.get("result") == {"echoed": {"x": 1}}, f"tools.invoke relayed: {reply}")

    # ---- a caller that goes away: the tool host is told to cancel ----
    caller = await Rpc.open(url, "short-lived caller")
    await caller.result("session.auth", {"token": auth_token})
    await caller.ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools.invoke",
                                     "params": {"tool": "slow", "parameters": {}}}))
    slow_call = await agent.next_inbound("tools.execute")
    await caller.close()
    cancel = await agent.next_inbound("tools.cancel")
    check(cancel["params"].get("request_id") == slow_call["id"], f"tools.cancel: {cancel}")
    check(cancel["params"].get("reason") == "caller_disconnected", f"tools.cancel: {cancel}")
    await agent.answer(slow_call, {"late": True})  # honoured: ignored by the daemon

    # ---- the agent records a run; the host reads it back with its host token ----
    run = await agent.result("runs.start", {"intent": "upstream client check"})
    run_id = run["run_id"]
    check(run.get("agent_id") == "upstream-agent", f"runs.start: {run}")
    turns = [{"kind": "tool_call", "tool": "echo", "parameters": {"x": 1}, "output": "ok"}]
    recorded = await agent.result("runs.record_turns", {"run_id": run_id, "turns": turns})
    check(recorded.get("ok") is True and recorded.get("count") == 1, f"record_turns: {recorded}")
    await agent.result("runs.complete", {"run_id": run_id, "outcome": {"ok": True}})
    trace = await host.result("runs.get_trace", {"run_id": run_id})
    kinds = [r.get("record") for r in trace.get("records", [])]
    check(kinds == ["started", "turn", "ended"], f"runs.get_trace as host: {kinds}")

    # Tool registration events and approvals are not needed here; the shell unregisters cleanly.
    removed = await agent.result("tools.unregister", {"name": "slow"})
    check(removed == {"unregistered": "slow", "removed": 1}, f"tools.unregister: {removed}")

    await host.close()
    await agent.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), 120))
    except (Failure, OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        print(f"upstream client: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print("upstream client: every step behaved as upstream's clients expect")
