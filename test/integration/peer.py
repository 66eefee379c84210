"""A JSON-RPC peer over one raw WebSocket connection to car-daemon, and the small run helpers the
integration tests share."""

import json
import time

from harness import request
from rawws import RawWs


class Peer:
    """A raw WebSocket JSON-RPC peer that keeps notifications and replies apart."""

    def __init__(self, d, token=None, host_token=None, agent_id=None):
        self.ws = RawWs(RawWs.url_address(d.ws_url()), timeout=10)
        self.next_id = 1
        self.pending = []  # messages read while waiting for something else
        if token or host_token:
            params = {"token": token} if token else {"host_token": host_token}
            if agent_id:
                params["agent_id"] = agent_id
            assert "result" in self.call("session.auth", params), "auth failed"

    def send(self, msg):
        self.ws.send_text(json.dumps(msg))

    def read(self):
        if self.pending:
            return self.pending.pop(0)
        return json.loads(self.ws.recv_text())

    def call(self, method, params=None):
        rid = self.next_id
        self.next_id += 1
        self.send(request(method, params if params is not None else {}, rid))
        return self.wait(lambda m: m.get("id") == rid and "method" not in m)

    def wait(self, predicate, timeout=10):
        kept = []
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                m = json.loads(self.ws.recv_text()) if not self.pending else self.pending.pop(0)
                if predicate(m):
                    return m
                kept.append(m)
            raise TimeoutError("nothing matched")
        finally:
            self.pending = kept + self.pending

    def notification(self, method, timeout=10):
        return self.wait(lambda m: m.get("method") == method and "id" not in m, timeout)


def start_run(peer, **extra):
    params = {"intent": "test", "agent_id": "agent-x"}
    params.update(extra)
    return peer.call("runs.start", params)["result"]["run_id"]


def turns(n, start=0, size=0):
    return [{"prompt": f"p{start + i}", "output": "o" * size} for i in range(n)]
