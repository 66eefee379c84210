"""car-daemon --stdio driven over NDJSON by /usr/bin/python3 (PROTOCOL.md §1, §2; acceptance 1–4, 6–9, 44)."""

import json
import os

from harness import Daemon, StdioClient, request


def test_handshake_round_trip_and_eof_exit():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        r = c.call("server.handshake", {"protocol_version": 2}, id="h")
        assert r["id"] == "h"
        assert r["result"]["protocol_version"] == 2
        c.close_input()
        assert c.read_rest() == []
        assert d.wait() == 0


def test_parse_error_keeps_connection_usable():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        c.send_raw("{not json\n")
        r = c.read()
        assert r["id"] is None and r["error"]["code"] == -32700
        assert r["error"]["message"].startswith("parse error")
        r = c.call("server.handshake", {"protocol_version": 2}, id=5)
        assert r["id"] == 5 and "result" in r


def test_unknown_method_echoes_id_types():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        r = c.call("no.such", id="abc")
        assert r == {"jsonrpc": "2.0", "id": "abc",
                     "error": {"code": -32601, "message": "method not found: no.such"}}
        r = c.call("no.such", id=42)
        assert r["id"] == 42 and isinstance(r["id"], int)


def test_batches():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        c.send_raw("[]\n")
        r = c.read()
        assert isinstance(r, dict) and r["error"]["code"] == -32600 and r["id"] is None
        c.send([request("server.handshake", {"protocol_version": 2}, id=1),
                {"jsonrpc": "2.0", "method": "server.handshake", "params": {"protocol_version": 2}},
                {"foo": 1}])
        r = c.read()
        assert isinstance(r, list) and len(r) == 2
        by_kind = {("result" in e): e for e in r}
        assert by_kind[True]["id"] == 1
        assert by_kind[False]["error"]["code"] == -32600 and by_kind[False]["id"] is None
        # Only notifications: no reply at all.
        c.send([{"jsonrpc": "2.0", "method": "server.handshake", "params": {"protocol_version": 2}},
                {"jsonrpc": "2.0", "method": "nope"}])
        assert c.no_output_within(0.5)


def test_notifications_are_never_answered():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        c.send({"jsonrpc": "2.0", "method": "no.such"})
        c.send({"jsonrpc": "2.0", "method": "server.handshake", "params": {"protocol_version": 9}})
        assert c.no_output_within(0.5)
        assert c.call("server.handshake", {"protocol_version": 9}, id=1)["error"]["code"] == -32006


def test_invalid_requests():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        for bad in ['{"jsonrpc":"1.0","id":1,"method":"x"}', '{"jsonrpc":"2.0","id":1,"method":7}',
                    '{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}', '17']:
            c.send_raw(bad + "\n")
            r = c.read()
            assert r["error"]["code"] == -32600, bad
            assert r["error"]["message"] == "invalid request"
        r = c.call("session.auth", ["token"], id=3)
        assert r["error"]["code"] == -32602


def test_auth_required_then_stdio_exits_zero():
    with Daemon("--token", "sekrit", stdio=True) as d:
        c = StdioClient(d)
        r = c.call("host.agents", {}, id=1)
        assert r["error"] == {"code": -32001, "message": "auth required: call session.auth first"}
        assert c.read_rest() == []
        assert d.wait() == 0


def test_wrong_token_then_auth_required():
    with Daemon("--token", "sekrit", stdio=True) as d:
        c = StdioClient(d)
        r = c.call("session.auth", {"token": "wrong"}, id=1)
        assert r["error"] == {"code": -32603, "message": "auth failed: token mismatch"}
        r = c.call("whatever", {}, id=2)
        assert r["error"]["code"] == -32001
        assert d.wait() == 0


def test_auth_disabled_and_enabled_results():
    with Daemon("--no-auth", stdio=True) as d:
        r = StdioClient(d).call("session.auth", {"token": "x"})
        assert r["result"] == {"ok": True, "auth_enabled": False}
    with Daemon("--token", "t", "--host-token", "h", stdio=True) as d:
        c = StdioClient(d)
        assert c.call("session.auth", {"token": "t"})["result"] == {"ok": True, "auth_enabled": True}
        assert c.call("session.auth", {"host_token": "h"})["result"]["role"] == "host"


def test_minted_token_file_is_used():
    with Daemon(stdio=True) as d:
        assert any(l.startswith("auth token file: ") for l in d.stderr_lines)
        c = StdioClient(d)
        assert c.call("session.auth", {"token": d.token()})["result"]["ok"] is True
        assert c.call("session.auth", {"host_token": d.host_token()}, id=2)["result"]["role"] == "host"
        # stdio EOF is a graceful shutdown too: the minted files go with the daemon.
        c.close_input()
        assert d.wait() == 0
        assert not os.path.exists(d.token_file()) and not os.path.exists(d.host_token_file())


def test_eof_flushes_every_pipelined_reply():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        lines = "".join(json.dumps(request("server.handshake", {"protocol_version": 2}, id=i)) + "\n"
                        for i in range(500))
        c.send_raw(lines)
        c.close_input()
        replies = c.read_rest(timeout=20)
        assert sorted(r["id"] for r in replies) == list(range(500))
        assert d.wait() == 0


def test_long_line_is_refused_and_the_next_works():
    with Daemon("--no-auth", "--max-message", "1024", stdio=True) as d:
        c = StdioClient(d)
        c.send_raw('{"jsonrpc":"2.0","id":1,"method":"x","params":{"pad":"' + "a" * 5000 + '"}}\n')
        r = c.read()
        assert r["error"]["code"] == -32700 and r["id"] is None
        assert c.call("server.handshake", {"protocol_version": 2}, id=2)["id"] == 2


def test_crlf_and_blank_lines():
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        c.send_raw("\n\r\n" + json.dumps(request("server.handshake", {"protocol_version": 2}, id=9)) + "\r\n")
        assert c.read()["id"] == 9


def test_bad_command_line_exits_2():
    import subprocess
    from harness import DAEMON
    r = subprocess.run([DAEMON, "--listen", "nonsense"], capture_output=True, timeout=10)
    assert r.returncode == 2
    assert b"--listen" in r.stderr
    r = subprocess.run([DAEMON, "--help"], capture_output=True, timeout=10)
    assert r.returncode == 0 and b"usage: car-daemon" in r.stdout


def test_a_raw_nul_byte_is_a_parse_error_not_the_end_of_the_line():
    # Issue 13 item 1: the bytes after a NUL must not be ignored. The request before the NUL is
    # complete and would run (id 7) if the NUL ended the text; it must be -32700 with id null.
    with Daemon("--no-auth", stdio=True) as d:
        c = StdioClient(d)
        c.send_raw(json.dumps(request("server.handshake", {"protocol_version": 2}, id=7)).encode()
                   + b"\x00garbage\n")
        r = c.read()
        assert r["id"] is None and r["error"]["code"] == -32700, r
        assert "NUL byte" in r["error"]["message"], r
        r = c.call("server.handshake", {"protocol_version": 2}, id=8)
        assert r["id"] == 8 and "result" in r
