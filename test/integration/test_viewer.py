"""The run viewer car-daemon serves at `GET /` (docs/VIEWER.md), driven in Debian's headless
chromium over the DevTools protocol (cdp_client.py): the page authenticates from its URL fragment,
shows turns recorded by another client live and in order, backfills after a gap, pages a run too
big for one runs.get_trace reply, resolves a gated call by a real click on its Approve button,
opens a deep link, and comes back by itself after the daemon restarts. Screenshots go to
<build>/test-logs/viewer-*.png.

Under CI=true a missing chromium fails these tests; elsewhere they say so and do nothing."""

import base64
import hashlib
import json
import os
import re
import time
import urllib.request

from cdp_client import CHROMIUM, Browser
from harness import DAEMON, Daemon
from peer import Peer
from rawws import RawWs

BUILD_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(DAEMON))))
SHOTS = os.path.join(BUILD_DIR, "test-logs")
AGENT = "agent-viewer"


def have_chromium():
    if os.access(CHROMIUM, os.X_OK):
        return True
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{CHROMIUM} is missing; .ci/setup installs chromium for this test")
    print(f"NOT RUN: {CHROMIUM} is missing (install chromium; under CI=true this fails)",
          flush=True)
    return False


def viewer_url(d, timeout=10.0):
    """The URL of the `viewer: URL` line the daemon prints after its listeners."""
    deadline = time.time() + timeout
    for line in d.stderr_lines:
        if line.startswith("viewer: "):
            return line[len("viewer: "):].strip()
    while True:
        line = d._read_stderr_line(deadline)
        assert line is not None, "no viewer: line; stderr:\n" + "".join(d.stderr_lines)
        if line.startswith("viewer: "):
            return line[len("viewer: "):].strip()


def http_base(d):
    return "http://" + d.ws_url()[len("ws://"):]


def page_turns(b):
    """The turns on the page, top to bottom: [{index, tool, verdict, live, prompt, output}]."""
    return b.evaluate("""[...document.querySelectorAll('#turns .turn')].map((t) => ({
        index: Number(t.dataset.index), tool: t.dataset.tool || null, verdict: t.dataset.verdict,
        live: t.dataset.live === '1',
        prompt: (t.querySelector('pre.prompt') || {}).textContent || null,
        output: (t.querySelector('pre.output') || {}).textContent || null}))""")


def wait_turns(b, n, what):
    b.wait_for(f"document.querySelectorAll('#turns .turn').length >= {n}", what=what)
    return page_turns(b)


def wait_connected(b, connects=1, timeout=20.0):
    b.wait_for("document.getElementById('status').dataset.state === 'connected' && "
               f"Number(document.getElementById('status').dataset.connects) >= {connects}",
               timeout=timeout, what=f"connected (connection {connects})")


def turn(i, tool=None, verdict=None):
    t = {"prompt": f"prompt {i}", "output": f"output {i}"}
    if tool:
        t["tool"] = tool
    if verdict:
        t["verifier_verdict"] = verdict
    return t


def record(peer, run_id, turns):
    r = peer.call("runs.record_turns", {"run_id": run_id, "turns": turns})
    assert r["result"]["ok"], r
    return r["result"]


def no_page_errors(b):
    errors = [e for e in b.console_errors() if "favicon" not in e]
    assert not errors, errors


def test_page_headers_and_own_origin():
    """`/` is the page with a strict CSP; a WebSocket from the page's own origin is let in even
    when --allow-origin lists only others, and a foreign origin still is not."""
    with Daemon("--listen", "127.0.0.1:0", "--allow-origin", "http://elsewhere.example") as d:
        with urllib.request.urlopen(http_base(d) + "/", timeout=10) as r:
            body = r.read().decode("utf-8")
            assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
            csp = r.headers["Content-Security-Policy"]
        assert 'data-state="idle"' in body and "<script>" in body
        directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
        assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"
        assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", directives["script-src"]), csp
        assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", directives["style-src"]), csp
        assert "unsafe" not in csp and directives["frame-ancestors"] == "'none'"
        # The hashes are those of the page actually served (viewer/embed.py computes them).
        for tag in ("script", "style"):
            inline = re.findall(rf"<{tag}>(.*?)</{tag}>", body, re.S)
            assert len(inline) == 1, f"{len(inline)} inline <{tag}> blocks"
            digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
            assert directives[f"{tag}-src"] == f"'sha256-{digest}'", tag
        host = d.ws_url()[len("ws://"):]

        def upgrade(origin):
            ws = RawWs(RawWs.url_address(d.ws_url()), do_handshake=False)
            status = ws.handshake("/", [f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
                                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                        "Sec-WebSocket-Version: 13", f"Origin: {origin}"])
            ws.sock.close()
            return status

        assert upgrade(f"http://{host}") == 101
        assert upgrade("http://elsewhere.example") == 101
        assert upgrade("http://other.example") == 403
        assert upgrade(f"http://127.0.0.1:{int(host.rsplit(':', 1)[1]) + 1}") == 403


def test_live_turns_gap_backfill_paging_and_approval():
    if not have_chromium():
        return
    with Daemon("--listen", "127.0.0.1:0", "--approval-method", "tools.invoke") as d, Browser() as b:
        url = viewer_url(d)
        token = d.host_token()
        assert url == f"{http_base(d)}/#token={token}", url
        b.navigate(url)
        wait_connected(b)
        # The token left the address bar (and the history entry) as soon as the page read it.
        assert token not in b.evaluate("location.href"), b.evaluate("location.href")
        assert b.evaluate("document.getElementById('role').textContent") == "host role"

        agent = Peer(d, token=d.token(), agent_id=AGENT)
        agent.call("host.register_agent", {"id": AGENT, "name": "viewer test agent", "kind": "test"})
        run_id = agent.call("runs.start", {"intent": "render a live trace"})["result"]["run_id"]
        record(agent, run_id, [turn(0, "shell.run"), turn(1, "fs.read", "passed")])
        # Pick the agent, then its run, the way a person would.
        b.wait_for(f"!!document.querySelector('#agents li[data-agent=\"{AGENT}\"]')", what="agent")
        b.click(f'#agents li[data-agent="{AGENT}"]')
        b.wait_for(f"!!document.querySelector('#runs li[data-run=\"{run_id}\"]')", what="run row")
        b.click(f'#runs li[data-run="{run_id}"]')
        stored = wait_turns(b, 2, "the stored turns")
        assert [t["index"] for t in stored] == [0, 1] and not any(t["live"] for t in stored)
        assert stored[0]["tool"] == "shell.run" and stored[1]["verdict"] == "passed"
        b.wait_for("document.getElementById('run').dataset.status === 'in_progress'")
        # Live: three batches recorded while the page watches arrive in order, marked live.
        for batch in ([turn(2, "net.fetch")], [turn(3), turn(4, "fs.write", "failed")],
                      [turn(5, "shell.run")]):
            record(agent, run_id, batch)
        shown = wait_turns(b, 6, "the live turns")
        assert [t["index"] for t in shown] == list(range(6)), shown
        assert [t["prompt"] for t in shown] == [f"prompt {i}" for i in range(6)]
        assert [t["output"] for t in shown] == [f"output {i}" for i in range(6)]
        assert [t["live"] for t in shown] == [False, False, True, True, True, True]
        assert shown[4]["tool"] == "fs.write" and shown[4]["verdict"] == "failed"

        # A gap: the daemon dropped turn 3 for this subscriber (as if its queue had been full)
        # and says so; the page re-subscribes and the snapshot puts turn 3 back in its place.
        b.evaluate("(() => { view.turns.get(3).remove(); view.turns.delete(3); })()")
        assert [t["index"] for t in page_turns(b)] == [0, 1, 2, 4, 5]
        b.evaluate("onNotification('runs.trace.gap', {run_id: %s, from_cursor: 3, to_cursor: 4,"
                   " dropped: 1})" % json.dumps(run_id))
        b.wait_for("document.querySelectorAll('#turns .turn').length === 6", what="backfill")
        assert [t["index"] for t in page_turns(b)] == list(range(6))
        assert b.evaluate("document.getElementById('run').dataset.gaps") == "1"
        assert b.evaluate("!!document.querySelector('#run-notices .notice.gap')")
        record(agent, run_id, [turn(6)])
        assert [t["index"] for t in wait_turns(b, 7, "a turn after the backfill")] == list(range(7))

        agent.call("runs.complete", {"run_id": run_id,
                                     "outcome": {"status": "success", "summary": "all rendered"}})
        b.wait_for("document.getElementById('run').dataset.status === 'completed'")
        assert "all rendered" in b.evaluate("document.getElementById('run-end').textContent")
        b.screenshot(os.path.join(SHOTS, "viewer-run.png"))

        # A gated call waits for approval; the page's Approve button, clicked, lets it run.
        tool_host = Peer(d, token=d.token())
        assert tool_host.call("tools.register", {"tools": ["echo"]})["result"]["registered"] == ["echo"]
        caller = Peer(d, token=d.token())
        caller.send({"jsonrpc": "2.0", "id": 7, "method": "tools.invoke",
                     "params": {"tool": "echo", "parameters": {"say": "approved by a click"}}})
        approval_id = b.wait_for("(document.querySelector('#approvals li[data-status=pending]') ||"
                                 " {dataset: {}}).dataset.id", what="the pending approval")
        rows = tool_host.call("host.approvals")["result"]["approvals"]
        row = next(r for r in rows if r["id"] == approval_id)
        assert row["status"] == "pending" and row["action"] == "ws.method:tools.invoke"
        assert "approved by a click" in b.evaluate(
            "document.querySelector('#approvals li[data-id=%s]').textContent" % json.dumps(approval_id))
        b.screenshot(os.path.join(SHOTS, "viewer-approval.png"))
        b.click(f'#approvals li[data-id="{approval_id}"] button[data-action="approve"]')
        execute = tool_host.wait(lambda m: m.get("method") == "tools.execute")
        assert execute["params"]["parameters"] == {"say": "approved by a click"}
        tool_host.send({"jsonrpc": "2.0", "id": execute["id"], "result": {"echoed": True}})
        assert caller.wait(lambda m: m.get("id") == 7)["result"] == {"echoed": True}
        b.wait_for("(document.querySelector('#approvals li[data-id=%s]') || {dataset: {}})"
                   ".dataset.status === 'approved'" % json.dumps(approval_id), what="approved row")
        kinds = b.evaluate("[...document.querySelectorAll('#events li')].map((e) => e.dataset.kind)")
        assert "approval.requested" in kinds and "approval.resolved" in kinds, kinds

        # A run bigger than one runs.get_trace reply (4 MiB) and than the subscribe snapshot
        # (2 MiB): the page pages through the store and shows every turn once, in order.
        big = agent.call("runs.start", {"intent": "a big run"})["result"]["run_id"]
        chunk = {f"part{k}": chr(ord("a") + k) * 16000 for k in range(15)}  # ~240 KB a turn
        for start in (0, 10):
            record(agent, big, [{"prompt": f"big {i}", "output": chunk} for i in range(start, start + 10)])
        b.navigate("about:blank")
        b.navigate(f"{http_base(d)}/#token={token}&run={big}")
        wait_connected(b)
        big_turns = wait_turns(b, 20, "every turn of the big run")
        assert [t["index"] for t in big_turns] == list(range(20))
        assert [t["prompt"] for t in big_turns] == [f"big {i}" for i in range(20)]
        assert int(b.evaluate("document.getElementById('run').dataset.pages")) >= 2
        no_page_errors(b)


def test_deep_link_and_reconnect_after_restart():
    if not have_chromium():
        return
    tokens = ["--token", "daemon-secret", "--host-token", "host-secret"]
    with Daemon("--listen", "127.0.0.1:0", *tokens) as d1:
        port = int(d1.ws_url().rsplit(":", 1)[1])
        state = d1.state_dir
        agent = Peer(d1, token="daemon-secret", agent_id=AGENT)
        run_id = agent.call("runs.start", {"intent": "survive a restart"})["result"]["run_id"]
        record(agent, run_id, [turn(0, "shell.run"), turn(1)])
        with Browser() as b:
            # The deep link opens the run without any clicking.
            b.navigate(f"{http_base(d1)}/#token=host-secret&run={run_id}")
            wait_connected(b)
            assert "host-secret" not in b.evaluate("location.href")
            assert b.evaluate("document.getElementById('run').dataset.run") == run_id
            assert [t["index"] for t in wait_turns(b, 2, "the deep-linked run")] == [0, 1]
            record(agent, run_id, [turn(2)])
            assert [t["index"] for t in wait_turns(b, 3, "a live turn")] == [0, 1, 2]
            # Given tokens are never echoed: no viewer: line from this daemon.
            assert not any(line.startswith("viewer:") for line in d1.stderr_lines)

            d1.proc.terminate()
            assert d1.wait() == 0
            b.wait_for("document.getElementById('status').dataset.state === 'reconnecting'",
                       what="the page noticing the daemon went away")
            with Daemon("--listen", f"127.0.0.1:{port}", *tokens, state_dir=state) as d2:
                wait_connected(b, connects=2)
                # Re-subscribed: the run the shutdown ended reads `incomplete`, turns intact.
                b.wait_for("document.getElementById('run').dataset.status === 'incomplete'",
                           what="the run's status from the new daemon")
                assert [t["index"] for t in page_turns(b)] == [0, 1, 2]
                # Host events flow again on the new connection.
                peer = Peer(d2, token="daemon-secret")
                peer.call("host.notify", {"message": "hello after the restart"})
                b.wait_for("[...document.querySelectorAll('#events li')].some((e) =>"
                           " e.textContent.includes('hello after the restart'))",
                           what="a host event from the new daemon")
                b.screenshot(os.path.join(SHOTS, "viewer-reconnected.png"))
                no_page_errors(b)


def stderr_after_exit(d):
    """Everything the daemon wrote on stderr, read to the end after a graceful shutdown."""
    d.proc.terminate()
    assert d.wait() == 0
    return "".join(d.stderr_lines) + d.proc.stderr.read().decode("utf-8", "replace")


def test_viewer_line_only_for_minted_tokens_on_a_listener_serving_http():
    # Minted daemon token, no host token: the line carries the daemon token.
    with Daemon("--listen", "127.0.0.1:0", "--no-host-token") as d:
        assert viewer_url(d) == f"{http_base(d)}/#token={d.token()}"
    # The first loopback listener that serves the page is the one named.
    with Daemon("--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0") as d:
        assert viewer_url(d) == f"{http_base(d)}/#token={d.host_token()}"
        assert http_base(d) == "http://" + d.listening[0][len("ws://"):]
    # A token given on the command line is never echoed; with plain HTTP off there is no page.
    for args in (["--token", "given-secret", "--no-host-token"],
                 ["--token", "given-secret", "--host-token", "given-host-secret"],
                 ["--http-endpoints", "off"]):
        with Daemon("--listen", "127.0.0.1:0", *args) as d:
            text = stderr_after_exit(d)
            assert "listening ws://" in text and "viewer:" not in text, (args, text)
            assert "given-secret" not in text and "given-host-secret" not in text


def test_the_viewer_works_unchanged_against_the_fleet_gateway():
    """docs/FLEET.md "Gateway": the same page, served by car-daemon --fleet, lists the fleet's
    agents and runs and streams a run recorded on a host (through JetStream) live."""
    if not have_chromium():
        return
    import test_fleet_gateway as fleet
    fleet.ready_or_skip("test_the_viewer_works_unchanged_against_the_fleet_gateway")
    from nats_broker import NatsServer
    with NatsServer() as broker, fleet.host_daemon(broker.url, "web-1") as h1, \
            Daemon("--listen", "127.0.0.1:0", "--fleet", broker.url, "--token", "daemon-secret",
                   "--host-token", "host-secret") as gw:
        agent = Peer(h1)
        run_id = agent.call("runs.start", {"intent": "watched through the fleet",
                                           "agent_id": AGENT})["result"]["run_id"]
        record(agent, run_id, [turn(0, "shell.run"), turn(1)])
        g = Peer(gw, host_token="host-secret")
        fleet.wait_for(lambda: g.call("runs.list", {"agent_id": AGENT})["result"]["runs"],
                       "the run in the gateway's index")
        with Browser() as b:
            b.navigate(f"{http_base(gw)}/#token=host-secret")
            wait_connected(b)
            b.wait_for(f"!!document.querySelector('#agents li[data-agent=\"{AGENT}\"]')",
                       what="the fleet's agent")
            b.click(f'#agents li[data-agent="{AGENT}"]')
            b.wait_for(f"!!document.querySelector('#runs li[data-run=\"{run_id}\"]')",
                       what="the host's run in the gateway's list")
            b.click(f'#runs li[data-run="{run_id}"]')
            assert [t["index"] for t in wait_turns(b, 2, "the stored turns")] == [0, 1]
            record(agent, run_id, [turn(2), turn(3, verdict="passed")])
            shown = wait_turns(b, 4, "turns recorded on the host, live through the gateway")
            assert [t["index"] for t in shown] == [0, 1, 2, 3], shown
            assert shown[3]["prompt"] == "prompt 3" and shown[3]["live"], shown
            agent.call("runs.complete", {"run_id": run_id, "outcome": {"status": "success"}})
            b.wait_for("document.getElementById('run').dataset.status === 'completed'",
                       what="the ending, live")
            b.screenshot(os.path.join(SHOTS, "viewer-fleet-gateway.png"))
            no_page_errors(b)
