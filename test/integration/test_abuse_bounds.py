"""Issue 13, sink and transport bounds against the real car-daemon over real sockets: every request
within the limits is answered however large its reply (WebSocket and stdio), pongs are bounded,
wrong session.auth attempts are bounded per connection, an unauthenticated peer may send at most
64 KiB per message, the default connection cap follows the descriptor limit, and an ignored binary
frame is logged once per connection (README "Bounds and abuse policies", PROTOCOL.md §1, §3, §8).
Every loop is bounded by a count or a deadline; nothing here asserts on timing."""

import json
import os
import resource
import select
import signal
import socket
import struct
import time

from harness import Daemon, StdioClient, measured_memory_env, proc_status_kib, request
from rawws import RawWs, zero_mask_frame

TEN_MB = 10 * 1000 * 1000


def text(message):
    return zero_mask_frame(0x1, json.dumps(message))


def read_replies(ws, count, timeout=60.0):
    """The next `count` text messages, parsed; fails on a close frame or the deadline."""
    ws.sock.settimeout(timeout)
    out = []
    deadline = time.time() + timeout
    while len(out) < count:
        assert time.time() < deadline, f"only {len(out)} of {count} replies"
        _, op, payload = ws.recv_frame()
        assert op != 0x8, f"closed with {RawWs.close_code_of(payload)} after {len(out)} replies"
        if op == 0x1:
            out.append(json.loads(payload))
    return out


def stderr_after_exit(d):
    """Everything the daemon wrote to stderr, after a SIGTERM and its exit."""
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(timeout=15)
    return "".join(d.stderr_lines) + d.proc.stderr.read().decode("utf-8", "replace")


def test_a_10mb_host_notify_pipelined_with_small_requests_is_answered_over_websocket():
    # Item 2: the 10 MB reply (host.notify returns the event) and the small ones, in any order,
    # all fit no 8 MiB bound together; before, the sink refused one and closed 1008.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()), timeout=60)
        ws.sock.sendall(text(request("host.agents", {}, id=1))
                        + text(request("host.notify", {"kind": "big", "message": "m" * TEN_MB}, id=2))
                        + text(request("host.agents", {}, id=3)))
        replies = read_replies(ws, 3)
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert "result" in replies[0] and "result" in replies[2]
        # The event comes back whole (unless a bound on host events refuses it: then an error).
        big = replies[1]
        assert len(big["result"]["message"]) == TEN_MB if "result" in big else big["error"]


def test_a_10mb_host_notify_pipelined_with_a_small_request_is_answered_over_stdio():
    # Item 2 on stdio: before, nothing at all was written and the process exited 0.
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        c.send_raw(json.dumps(request("host.notify", {"kind": "big", "message": "m" * TEN_MB}, id=1))
                   + "\n" + json.dumps(request("host.agents", {}, id=2)) + "\n")
        first = json.loads(c.read_line(timeout=60))
        second = json.loads(c.read_line(timeout=60))
        assert (first["id"], second["id"]) == (1, 2)
        assert "result" in second
        assert len(first["result"]["message"]) == TEN_MB if "result" in first else first["error"]
        c.close_input()
        assert d.wait(15) == 0


def test_a_100000_member_batch_followed_by_a_request_is_answered():
    # Item 2: the batch reply (about 9 MB of -32601 errors) plus the next reply.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()), timeout=60)
        batch = [request("no.such", None, id=i) for i in range(100000)]
        ws.sock.sendall(text(batch) + text(request("host.agents", {}, id="after")))
        replies = read_replies(ws, 2)
        assert isinstance(replies[0], list) and len(replies[0]) == 100000
        assert sorted(m["id"] for m in replies[0]) == list(range(100000))
        assert replies[1]["id"] == "after" and "result" in replies[1]


def test_stdio_exits_non_zero_when_its_output_fails():
    # A failed sink on stdio loses replies: the daemon says so and must not exit 0.
    with Daemon("--no-auth", stdio=True) as d:
        d.proc.stdout.close()  # the reader is gone: the next write gets EPIPE
        d.proc.stdin.write((json.dumps(request("host.agents", {}, id=1)) + "\n").encode())
        d.proc.stdin.flush()
        assert d.wait(15) != 0
        assert "stdio: output failed" in stderr_after_exit(d)


def test_a_ping_flood_from_a_peer_that_never_reads_holds_one_pong():
    # Item 3: before, every pong was its own uv_write outside the sink (+724 MB in one second).
    # 300,000 pings would have cost the old daemon about 110 MB; now one pong waits at most.
    with Daemon("--listen", "127.0.0.1:0", env=measured_memory_env()) as d:  # never authenticates
        addr = RawWs.url_address(d.ws_url())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        sock.settimeout(30)
        sock.connect(addr)
        ws = RawWs.__new__(RawWs)
        ws.sock, ws.buffer, ws.status, ws.response_headers = sock, b"", None, {}
        assert ws.handshake() == 101
        time.sleep(0.3)
        before = proc_status_kib(d.proc.pid, "VmRSS")
        chunk = zero_mask_frame(0x9, b"0123456789abcdef") * 1000
        for _ in range(300):
            sock.sendall(chunk)
        time.sleep(0.5)  # let the daemon read what is in flight
        grown_mib = (proc_status_kib(d.proc.pid, "VmRSS") - before) / 1024
        assert grown_mib < 16, f"daemon RSS grew by {grown_mib:.1f} MiB"
        assert d.proc.poll() is None
        print(f"  ping flood: 300000 pings, RSS +{grown_mib:.1f} MiB")
        sock.close()


def test_five_wrong_auth_attempts_close_the_connection_with_1008():
    with Daemon("--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        for i in range(1, 6):
            ws.send_text(json.dumps(request("session.auth", {"token": f"wrong-{i}"}, id=i)))
            r = json.loads(ws.recv_text())
            assert r["id"] == i and r["error"]["code"] == -32603, r
            assert "token mismatch" in r["error"]["message"]
        # The fifth reply came first; then the close, and nothing more is answered.
        try:
            ws.send_text(json.dumps(request("session.auth", {"token": d.token()}, id=6)))
        except OSError:
            pass  # the daemon may have closed the socket already
        assert ws.expect_close() == 1008
        # A new connection may still authenticate: the limit is per connection.
        ws2 = RawWs(RawWs.url_address(d.ws_url()))
        ws2.send_text(json.dumps(request("session.auth", {"token": d.token()}, id=1)))
        assert json.loads(ws2.recv_text())["result"]["ok"] is True


def test_an_unauthenticated_peer_may_send_at_most_64_kib():
    with Daemon("--listen", "127.0.0.1:0") as d:
        addr = RawWs.url_address(d.ws_url())
        # Refused from the header alone: the 15 MiB it announces are never buffered.
        ws = RawWs(addr)
        ws.sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 15 << 20) + b"\0\0\0\0"
                        + b"x" * 1000)
        assert ws.expect_close() == 1009
        # At the bound itself a message is still read (and answered: auth required).
        ws = RawWs(addr)
        pad = "p" * (64 * 1024 - 80)
        ws.sock.sendall(text(request("host.agents", {"pad": pad}, id=1)))
        r = json.loads(ws.recv_text())
        assert r["error"]["code"] == -32001, r
        # Once authenticated the full --max-message applies.
        ws = RawWs(addr)
        ws.send_text(json.dumps(request("session.auth", {"token": d.token()}, id=1)))
        assert json.loads(ws.recv_text())["result"]["ok"] is True
        ws.sock.sendall(text(request("no.such", {"pad": "p" * (1 << 20)}, id=2)))
        r = json.loads(ws.recv_text())
        assert r["id"] == 2 and r["error"]["code"] == -32601, r


def test_without_auth_the_full_message_size_applies_from_the_first_message():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        ws.sock.sendall(text(request("no.such", {"pad": "p" * (1 << 20)}, id=1)))
        r = json.loads(ws.recv_text())
        assert r["id"] == 1 and r["error"]["code"] == -32601, r


def test_the_default_connection_cap_follows_the_descriptor_limit():
    # No --max-connections: the cap is min(1024, fd limit - 64). With 160 descriptors that is 96;
    # before, there was no default cap and the 97th upgrade succeeded.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, hard))
    try:
        d = Daemon("--no-auth", "--listen", "127.0.0.1:0")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with d:
        addr = RawWs.url_address(d.ws_url())
        clients = []
        statuses = []
        for _ in range(100):
            ws = RawWs(addr)
            statuses.append(ws.status)
            clients.append(ws)
        assert statuses[:96] == [101] * 96, statuses
        assert statuses[96:] == [503] * 4, statuses
        # A refused client does not use up the cap: after one leaves, one more gets in.
        clients[0].close()
        deadline = time.time() + 5
        while True:
            ws = RawWs(addr)
            if ws.status == 101 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert ws.status == 101
        for ws in clients:
            ws.close()


def test_binary_frames_before_auth_are_logged_once_per_connection():
    with Daemon("--listen", "127.0.0.1:0") as d:
        addr = RawWs.url_address(d.ws_url())
        ws = RawWs(addr)
        ws.sock.sendall(zero_mask_frame(0x2, b"\1\2\3") * 200)
        ws.send_text(json.dumps(request("session.auth", {"token": d.token()}, id=1)))
        assert json.loads(ws.recv_text())["result"]["ok"] is True  # all 200 were read by now
        other = RawWs(addr)
        other.sock.sendall(zero_mask_frame(0x2, b"\1") * 10)
        other.send_text(json.dumps(request("session.auth", {"token": d.token()}, id=1)))
        assert json.loads(other.recv_text())["result"]["ok"] is True
        log = stderr_after_exit(d)
        lines = [line for line in log.splitlines() if "binary message" in line]
        assert len(lines) == 2, lines[:5]


def test_sockets_that_never_upgrade_are_bounded_beyond_the_cap():
    # With a cap of 4, at most 4 + 32 WebSocket sockets live at once; further connections are
    # accepted and closed at once (before, each held a descriptor until the 10 s upgrade timeout).
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--max-connections", "4") as d:
        addr = RawWs.url_address(d.ws_url())
        idle = []
        for _ in range(40):
            s = socket.create_connection(addr, timeout=5)
            idle.append(s)
        closed = set()
        deadline = time.time() + 5  # well within the 10 s upgrade timeout
        while len(closed) < 4 and time.time() < deadline:
            ready, _, _ = select.select([s for s in idle if s not in closed], [], [], 0.2)
            for s in ready:
                if s.recv(1) == b"":
                    closed.add(s)
        assert len(closed) == 40 - 36, len(closed)
        # The cap refused only the sockets beyond it: an upgrade on a live one still works.
        live = next(s for s in idle if s not in closed)
        live.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert live.recv(4096).startswith(b"HTTP/1.1 101")
        for s in idle:
            s.close()  # before the SIGTERM: sockets still upgrading would hold the exit for 10 s
        log = stderr_after_exit(d)
        assert len([line for line in log.splitlines() if "refusing connections" in line]) == 1


def test_sigterm_closes_sockets_that_are_still_upgrading():
    # Stopping a listener closes the sockets it accepted that never upgraded: before, each held
    # the shutdown until its 10 s upgrade timeout (a peer could delay every restart by 10 s).
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = RawWs.url_address(d.ws_url())
        idle = [socket.create_connection(addr, timeout=5) for _ in range(3)]
        ws = RawWs(addr)  # and one upgraded connection, which gets its 1001
        ws.send_text(json.dumps(request("host.agents", {}, id=1)))
        assert json.loads(ws.recv_text())["id"] == 1
        d.proc.send_signal(signal.SIGTERM)
        assert ws.expect_close() == 1001
        for s in idle:
            s.settimeout(5)
            assert s.recv(1) == b""  # closed by the daemon, not by the upgrade timeout (10 s)
        assert d.wait(5) == 0
        for s in idle:
            s.close()
