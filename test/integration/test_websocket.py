"""WebSocket transport against the real car-daemon: Debian's python3-websockets client over TCP and
the Unix socket, and raw-socket frames for every protocol-violation path (PROTOCOL.md §1; acceptance 7,
41–43, 45, 46, and 48's handshake behind auth and -32006; the session.auth echo of §3; the
framing/ping/close/UTF-8/limit ground of Autobahn groups 1–7 and 9)."""

import asyncio
import json
import os
import signal
import socket
import tempfile
import threading
import time

import websockets

from harness import Daemon, request
from rawws import RawWs


def rpc(ws_sync, method, params=None, id=1):
    ws_sync.send_text(json.dumps(request(method, params, id)))
    return json.loads(ws_sync.recv_text())


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


HANDSHAKE = request("server.handshake", {"protocol_version": 2}, id=1)


def test_python_websockets_client_over_tcp_and_unix():
    sock = os.path.join(tempfile.mkdtemp(), "car.sock")
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--unix", sock) as d:
        async def main():
            async with websockets.connect(d.ws_url()) as ws:
                await ws.send(json.dumps(HANDSHAKE))
                r = json.loads(await ws.recv())
                assert r["result"]["protocol_version"] == 2
            async with websockets.unix_connect(d.unix_path(), "ws://localhost/") as ws:
                await ws.send(json.dumps(request("no.such", {}, id="u")))
                r = json.loads(await ws.recv())
                assert r["id"] == "u" and r["error"]["code"] == -32601
        run(main())
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"


def test_auth_over_unix_socket_behaves_like_tcp():
    sock = os.path.join(tempfile.mkdtemp(), "car.sock")
    with Daemon("--token", "t", "--unix", sock) as d:
        ws = RawWs(d.unix_path())
        assert ws.status == 101
        r = rpc(ws, "host.agents", {})
        assert r["error"]["code"] == -32001
        assert ws.expect_close() == 1008
        ws2 = RawWs(d.unix_path())
        assert rpc(ws2, "session.auth", {"token": "t"})["result"]["ok"] is True


def test_48_handshake_is_behind_auth_and_names_a_bad_version():
    with Daemon("--token", "t", "--host-token", "h", "--listen", "127.0.0.1:0") as d:
        address = RawWs.url_address(d.ws_url())
        # Before session.auth: -32001, then close 1008 (a notification gets no reply, still closes).
        ws = RawWs(address)
        r = rpc(ws, "server.handshake", {"protocol_version": 2})
        assert r["error"] == {"code": -32001, "message": "auth required: call session.auth first"}
        assert ws.expect_close() == 1008
        ws = RawWs(address)
        ws.send_text(json.dumps({"jsonrpc": "2.0", "method": "server.handshake",
                                 "params": {"protocol_version": 2}}))
        assert ws.expect_close() == 1008
        # After it: a missing or string protocol_version is -32006 naming what came.
        ws = RawWs(address)
        assert rpc(ws, "session.auth", {"token": "t"})["result"]["ok"] is True
        for i, (params, got) in enumerate((({}, "none"), ({"protocol_version": "2"}, '"2"'),
                                           ({"protocol_version": 3}, "3")), start=2):
            r = rpc(ws, "server.handshake", params, id=i)
            assert r["error"] == {"code": -32006,
                                  "message": "protocol version mismatch: expected 2, got " + got}, r
        ok = rpc(ws, "server.handshake", {"protocol_version": 2}, id=9)["result"]
        assert ok["protocol_version"] == 2 and ok["client_protocol_version"] == 2


def test_48_require_handshake_gates_host_subscribe_and_identity_names_the_daemon():
    with Daemon("--token", "t", "--host-token", "h", "--require-handshake",
                "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        assert rpc(ws, "session.auth", {"host_token": "h"})["result"]["role"] == "host"
        r = rpc(ws, "host.subscribe", {}, id=2)
        assert r["error"] == {"code": -32005, "message":
                              "protocol handshake required: host.subscribe needs server.handshake"}, r
        assert rpc(ws, "server.handshake", {"protocol_version": 2}, id=3)["result"]["protocol_version"] == 2
        snap = rpc(ws, "host.subscribe", {}, id=4)["result"]
        assert snap["identity"]["pid"] == d.proc.pid
        assert snap["identity"]["manifest_path"] is None and snap["identity"]["manifest_role"] == "none"
    # Without the flag nothing requires the handshake (0.31-era clients never send it).
    with Daemon("--token", "t", "--host-token", "h", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        assert rpc(ws, "session.auth", {"host_token": "h"})["result"]["role"] == "host"
        assert rpc(ws, "host.subscribe", {}, id=2)["result"]["subscribed"] is True


def test_session_auth_echoes_memory_namespace():
    with Daemon("--token", "t", "--host-token", "h", "--listen", "127.0.0.1:0") as d:
        address = RawWs.url_address(d.ws_url())
        ws = RawWs(address)
        r = rpc(ws, "session.auth", {"token": "t", "agent_id": "ns-agent", "memory_namespace": "m1"})
        assert r["result"] == {"ok": True, "auth_enabled": True, "agent_id": "ns-agent",
                               "memory_namespace": "m1"}
        r = rpc(RawWs(address), "session.auth", {"host_token": "h", "memory_namespace": "m2"})
        assert r["result"] == {"ok": True, "auth_enabled": True, "role": "host",
                               "memory_namespace": "m2"}
        assert "memory_namespace" not in rpc(RawWs(address), "session.auth", {"token": "t"})["result"]
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        r = rpc(RawWs(RawWs.url_address(d.ws_url())), "session.auth", {"memory_namespace": "m3"})
        assert r["result"] == {"ok": True, "auth_enabled": False, "memory_namespace": "m3"}


def test_invalid_utf8_closes_1007():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        ws.send_frame(0x1, b'{"a":"\xff"}')
        assert ws.expect_close() == 1007
        # Split inside a code point across fragments is fine...
        ws = RawWs(RawWs.url_address(d.ws_url()))
        text = json.dumps(request("server.handshake", {"protocol_version": 2, "x": "é"}, id=2),
                          ensure_ascii=False).encode()
        cut = text.index("é".encode()) + 1
        ws.send_frame(0x1, text[:cut], fin=False)
        ws.send_frame(0x0, text[cut:], fin=True)
        assert json.loads(ws.recv_text())["id"] == 2
        # ...but a message that ends mid-code-point is not.
        ws.send_frame(0x1, b'"\xc3', fin=True)
        assert ws.expect_close() == 1007


def test_message_above_max_closes_1009():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--max-message", "1024") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        ws.send_frame(0x1, "x" * 2000)
        assert ws.expect_close() == 1009
        # Announced size alone is enough: no payload needs to arrive.
        ws = RawWs(RawWs.url_address(d.ws_url()))
        ws.send_frame(0x1, b"", length_override=1 << 40)
        assert ws.expect_close() == 1009


def test_protocol_errors_close_1002():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = RawWs.url_address(d.ws_url())
        cases = {
            "unmasked": lambda ws: ws.send_frame(0x1, "{}", mask=False),
            "reserved bits": lambda ws: ws.send_frame(0x1, "{}", rsv=4),
            "unknown opcode": lambda ws: ws.send_frame(0x3, "x"),
            "fragmented ping": lambda ws: ws.send_frame(0x9, "x", fin=False),
            "long ping": lambda ws: ws.send_frame(0x9, "x" * 126),
            "continuation without start": lambda ws: ws.send_frame(0x0, "x"),
            "new message inside fragmented": lambda ws: (ws.send_frame(0x1, "a", fin=False),
                                                         ws.send_frame(0x1, "b")),
            "close code 1005": lambda ws: ws.send_frame(0x8, b"\x03\xed"),
            "close code 999": lambda ws: ws.send_frame(0x8, b"\x03\xe7"),
            "one-byte close": lambda ws: ws.send_frame(0x8, b"\x03"),
            "close reason not utf-8": lambda ws: ws.send_frame(0x8, b"\x03\xe8\xff"),
        }
        for name, act in cases.items():
            ws = RawWs(addr)
            act(ws)
            assert ws.expect_close() == 1002, name
            assert ws.socket_closed(), name


def test_fragmentation_ping_pong_and_close_echo():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        text = json.dumps(HANDSHAKE)
        ws.send_frame(0x1, text[:5], fin=False)
        ws.send_frame(0x9, "mid")  # a control frame inside a fragmented message
        ws.send_frame(0x0, text[5:12], fin=False)
        ws.send_frame(0x0, text[12:], fin=True)
        fin, op, payload = ws.recv_frame()
        assert (op, payload) == (0xA, b"mid")
        assert json.loads(ws.recv_text())["result"]["protocol_version"] == 2
        ws.send_frame(0x9, b"\x00\x01binary-ok")
        assert ws.recv_frame()[1:] == (0xA, b"\x00\x01binary-ok")
        ws.send_frame(0x2, b"\x00\x01\x02")  # binary is ignored, connection lives
        assert rpc(ws, "server.handshake", {"protocol_version": 2}, id=3)["id"] == 3
        ws.send_frame(0x8, b"\x0f\xa0bye")  # 4000
        assert ws.expect_close() == 4000
        assert ws.socket_closed()
        ws = RawWs(RawWs.url_address(d.ws_url()))
        ws.send_frame(0x8, b"")
        assert ws.expect_close() == 1000


def test_upgrade_rejections():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--allow-origin", "http://ok.example") as d:
        addr = RawWs.url_address(d.ws_url())
        base = ["Host: localhost", "Upgrade: websocket", "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        ws = RawWs(addr, headers=base + ["Sec-WebSocket-Version: 12"])
        assert ws.status == 426 and ws.response_headers["sec-websocket-version"] == "13"
        assert RawWs(addr, headers=base).status == 400  # version missing
        assert RawWs(addr, headers=base[:3] + ["Sec-WebSocket-Version: 13"]).status == 400  # key missing
        bad_key = base[:3] + ["Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"]
        assert RawWs(addr, headers=bad_key).status == 400
        raw = socket.create_connection(addr)
        # An upgrade that is not GET (a request without Upgrade at all is plain HTTP instead:
        # test_http_endpoints.py, which also checks this request without Upgrade under off).
        raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
        good = base + ["Sec-WebSocket-Version: 13"]
        assert RawWs(addr, headers=good + ["Origin: http://evil.example"]).status == 403
        ok = RawWs(addr, headers=good + ["Origin: http://ok.example"])
        assert ok.status == 101
        assert ok.response_headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert "sec-websocket-extensions" not in ok.response_headers
        assert RawWs(addr, headers=good).status == 101  # no Origin: allowed
        raw = socket.create_connection(addr)
        raw.sendall(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")


def test_max_connections_gets_503():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--max-connections", "2") as d:
        addr = RawWs.url_address(d.ws_url())
        a, b = RawWs(addr), RawWs(addr)
        assert a.status == 101 and b.status == 101
        assert RawWs(addr).status == 503
        a.close()
        time.sleep(0.3)
        assert RawWs(addr).status == 101


def test_sigterm_sends_1001_to_every_client_and_exits_zero():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        clients = [RawWs(RawWs.url_address(d.ws_url())) for _ in range(3)]
        assert rpc(clients[0], "server.handshake", {"protocol_version": 2})["id"] == 1
        d.proc.send_signal(signal.SIGTERM)
        for ws in clients:
            assert ws.expect_close() == 1001
        assert d.wait() == 0


def test_sigterm_exits_even_when_a_client_never_reads():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        stuck = RawWs(RawWs.url_address(d.ws_url()))
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sock.settimeout(0.5)
        big = json.dumps(request("no.such." + "x" * 60000, {}, id=1))
        try:
            for i in range(500):  # until the daemon stops reading us (its queue is full)
                stuck.send_text(big)
        except socket.timeout:
            pass
        start = time.time()
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(timeout=10) == 0
        assert time.time() - start < 6


def test_keepalive_pings_and_closes_unresponsive_clients():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--ping-interval-ms", "200") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()))
        fin, op, payload = ws.recv_frame()
        assert op == 0x9
        # Never answer: after two unanswered pings the server closes with 1001.
        assert ws.expect_close(timeout=5) == 1001

        async def polite():
            async with websockets.connect(d.ws_url()) as client:  # answers pings itself
                await asyncio.sleep(1.2)
                await client.send(json.dumps(HANDSHAKE))
                return json.loads(await client.recv())
        assert run(polite())["id"] == 1


def test_one_abusive_connection_never_disturbs_another():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--max-message", "65536") as d:
        addr = RawWs.url_address(d.ws_url())
        good = RawWs(addr)
        stop = threading.Event()
        rounds = [0]

        def abuse():
            while not stop.is_set():
                rounds[0] += 1
                try:
                    bad = RawWs(addr)
                    bad.send_text("{garbage")
                    bad.send_frame(0x1, "y" * 70000)  # oversize: 1009
                    bad.close()
                    flood = RawWs(addr)
                    for _ in range(200):
                        flood.send_text(json.dumps(HANDSHAKE))
                    flood.close()
                    raw = socket.create_connection(addr)
                    raw.sendall(os.urandom(512))
                    raw.close()
                except OSError:
                    pass
        t = threading.Thread(target=abuse, daemon=True)
        t.start()
        try:
            i = 0
            deadline = time.time() + 30
            while (i < 200 or rounds[0] < 20) and time.time() < deadline:
                r = rpc(good, "server.handshake", {"protocol_version": 2}, id=i)
                assert r["id"] == i and r["result"]["protocol_version"] == 2
                i += 1
            assert rounds[0] >= 20
        finally:
            stop.set()
            t.join(10)
        assert d.proc.poll() is None


def test_pipelining_without_reading_is_bounded_and_loses_nothing():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        ws = RawWs(RawWs.url_address(d.ws_url()), timeout=30)
        n = 3000
        pad = "p" * 2000
        sender = threading.Thread(target=lambda: [
            ws.send_text(json.dumps(request("no.such", {"pad": pad}, id=i))) for i in range(n)])
        sender.start()
        time.sleep(1.0)  # the daemon stops reading once its outbound queue passes the watermark
        seen = set()
        while len(seen) < n:
            seen.add(json.loads(ws.recv_text())["id"])
        sender.join(30)
        assert seen == set(range(n))


def test_a_raw_nul_byte_in_a_text_message_is_a_parse_error():
    # Issue 13 item 1: one text message holding a complete request, a NUL and garbage is -32700;
    # the request before the NUL does not run.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        async def main():
            async with websockets.connect(d.ws_url()) as ws:
                await ws.send(json.dumps(request("server.handshake", {"protocol_version": 2}, id=7))
                              + "\x00garbage")
                r = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert r["id"] is None and r["error"]["code"] == -32700, r
                await ws.send(json.dumps(HANDSHAKE))
                r = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert r["id"] == 1 and "result" in r
        run(main())
