"""TLS on the WebSocket listeners (`--tls-cert`, `--tls-key`; docs/OPERATIONS.md "TLS (wss://)"):
against a certificate each test makes, python `websockets` authenticates and calls over wss://,
a 1 MiB message goes both ways (records cut across reads, the sink's batches encrypted), /healthz
answers over https://, plaintext clients on the TLS port are dropped without disturbing anyone
else, Unix sockets stay plaintext, and unusable certificate files end the start-up. The Node `ws`
client is tls_clients.test.js."""

import asyncio
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.request

import websockets

from harness import Daemon, request, run_to_exit
from rawws import RawWs
from tls_certs import make_certificate

TOKEN = "tls-test-token"


class Certs:
    """A certificate and key in a temporary directory, removed afterwards."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="car-it-tls-")
        self.cert, self.key = make_certificate(self.dir)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)

    def client_context(self):
        """A client context that trusts exactly this certificate (and checks the host name)."""
        return ssl.create_default_context(cafile=self.cert)


def tls_daemon(certs, *args):
    return Daemon("--listen", "127.0.0.1:0", "--tls-cert", certs.cert, "--tls-key", certs.key,
                  "--token", TOKEN, "--no-host-token", *args)


def port_of(url):
    return int(url.rsplit(":", 1)[1])


async def call(ws, method, params, id):
    await ws.send(json.dumps(request(method, params, id=id)))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply.get("id") == id:
            return reply


async def authenticated_call(url, context, method, params, server_hostname=None):
    # Tests talk to 127.0.0.1 only (a fresh machine need not resolve "localhost"); the name the
    # certificate carries is checked by asking TLS to verify it on that address.
    extra = {"server_hostname": server_hostname} if server_hostname else {}
    async with websockets.connect(url, ssl=context, max_size=None, open_timeout=10, **extra) as ws:
        auth = await call(ws, "session.auth", {"token": TOKEN}, 1)
        assert auth.get("result", {}).get("ok") is True, auth
        return await call(ws, method, params, 2)


def test_the_listening_line_says_wss_and_python_websockets_authenticates_and_calls():
    with Certs() as certs, tls_daemon(certs) as d:
        url = d.listening[0]
        assert url.startswith("wss://127.0.0.1:"), d.listening
        # Through the name the certificate carries, and through the address (also in it).
        for name in ("localhost", None):
            reply = asyncio.run(authenticated_call(f"wss://127.0.0.1:{port_of(url)}/",
                                                   certs.client_context(), "host.agents", {},
                                                   server_hostname=name))
            assert "result" in reply, reply


async def record_and_read_back(url, context, turns):
    """Records `turns` in a new run and reads its trace back, on one authenticated connection."""
    async with websockets.connect(url, ssl=context, max_size=None, open_timeout=10) as ws:
        auth = await call(ws, "session.auth", {"token": TOKEN}, 1)
        assert auth.get("result", {}).get("ok") is True, auth
        started = await call(ws, "runs.start", {"intent": "tls", "agent_id": "agent-tls"}, 2)
        run_id = started["result"]["run_id"]
        recorded = await call(ws, "runs.record_turns", {"run_id": run_id, "turns": turns}, 3)
        assert recorded.get("result", {}).get("ok") is True, str(recorded)[:300]
        trace = await call(ws, "runs.get_trace", {"run_id": run_id}, 4)
        return trace["result"]["records"]


def test_a_1mib_message_round_trips_over_tls():
    # Over 1 MiB each way: a request of 70 turns of 16 000 bytes (under the per-string cut),
    # and the trace that returns them. Both cross many TLS records and socket reads.
    outputs = ["".join(chr(ord("a") + (i + j) % 26) for j in range(16000)) for i in range(70)]
    turns = [{"prompt": f"p{i}", "output": out} for i, out in enumerate(outputs)]
    assert len(json.dumps(turns)) > 1 << 20
    with Certs() as certs, tls_daemon(certs) as d:
        records = asyncio.run(record_and_read_back(d.listening[0],
                                                   certs.client_context(), turns))
        got = [r["output"] for r in records if r["record"] == "turn"]
        assert got == outputs, f"{len(got)} turns back"


def test_a_client_that_does_not_trust_the_certificate_fails_and_the_daemon_serves_on():
    with Certs() as certs, tls_daemon(certs) as d:
        url = d.listening[0]
        untrusting = ssl.create_default_context()  # the system's CAs, which never signed ours
        try:
            asyncio.run(authenticated_call(url, untrusting, "host.agents", {}))
            raise AssertionError("an unverifiable certificate was accepted")
        except ssl.SSLCertVerificationError:
            pass
        reply = asyncio.run(authenticated_call(url, certs.client_context(), "host.agents", {}))
        assert "result" in reply, reply


def read_until_closed(sock, timeout=5.0):
    """Everything the server sends until it closes the connection (EOF or reset)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def test_plaintext_websocket_and_garbage_to_the_tls_port_are_dropped_and_others_are_served():
    with Certs() as certs, tls_daemon(certs, "--log-level", "debug") as d:
        port = port_of(d.listening[0])
        # A ws:// client: its upgrade request is not a TLS hello. No HTTP answer comes back (at
        # most a TLS alert), and the connection is closed.
        plain = RawWs(("127.0.0.1", port), do_handshake=False)
        plain.sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           b"Sec-WebSocket-Version: 13\r\n\r\n")
        data, closed = read_until_closed(plain.sock)
        plain.sock.close()
        assert closed, "the daemon kept a plaintext client's connection open"
        assert b"HTTP/1.1" not in data, data
        # Bytes that are no protocol at all.
        garbage = socket.create_connection(("127.0.0.1", port), timeout=5)
        garbage.sendall(os.urandom(4096))
        _, closed = read_until_closed(garbage)
        garbage.close()
        assert closed, "the daemon kept a garbage client's connection open"
        # A TLS client that goes quiet mid-handshake holds only its own connection.
        stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
        stalled.sendall(b"\x16\x03\x01\x00\x10")  # a record header, then nothing
        reply = asyncio.run(authenticated_call(d.listening[0],
                                               certs.client_context(), "host.agents", {}))
        assert "result" in reply, reply
        stalled.close()
        assert d.proc.poll() is None, "the daemon died"
        d.proc.terminate()
        d.proc.wait(timeout=15)
        log = "".join(d.stderr_lines) + d.proc.stderr.read().decode("utf-8", "replace")
        assert "TLS failed" in log, log
        # A client's TLS failure is the client's: debug, never a warning or an error.
        assert "[car warn]" not in log and "[car error]" not in log, log


def https_get(url, context, timeout=10):
    with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
        return response.status, response.read()


def test_healthz_answers_over_https_on_a_loopback_tls_listener():
    with Certs() as certs, tls_daemon(certs) as d:
        port = port_of(d.listening[0])
        status, body = https_get(f"https://127.0.0.1:{port}/healthz", certs.client_context())
        assert status == 200
        assert json.loads(body)["status"] == "ok"


def test_the_viewer_line_says_https_when_the_daemon_mints_its_token():
    with Certs() as certs, Daemon("--listen", "127.0.0.1:0", "--tls-cert", certs.cert,
                                  "--tls-key", certs.key) as d:
        deadline = time.time() + 10
        while not any(l.startswith("viewer: ") for l in d.stderr_lines) and time.time() < deadline:
            if d._read_stderr_line(deadline) is None:
                break
        viewer = [l for l in d.stderr_lines if l.startswith("viewer: ")]
        assert viewer and viewer[0].startswith(f"viewer: https://127.0.0.1:{port_of(d.listening[0])}/#token="), viewer
        status, body = https_get(f"https://127.0.0.1:{port_of(d.listening[0])}/",
                                 certs.client_context())
        assert status == 200 and b"<!doctype html>" in body


def test_unix_sockets_stay_plaintext_beside_a_tls_listener():
    with Certs() as certs:
        sock_dir = tempfile.mkdtemp(prefix="car-it-tls-unix-")
        path = os.path.join(sock_dir, "car.sock")
        try:
            with tls_daemon(certs, "--unix", path) as d:
                assert d.listening[0].startswith("wss://"), d.listening
                assert d.listening[1] == "unix:" + path, d.listening
                ws = RawWs(path)
                assert ws.status == 101
                ws.send_text(json.dumps(request("session.auth", {"token": TOKEN}, id=1)))
                assert json.loads(ws.recv_text())["result"]["ok"] is True
                ws.close()
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)


def test_unusable_certificate_files_end_the_start_up():
    with Certs() as certs, Certs() as other:
        missing = os.path.join(certs.dir, "missing.crt")
        code, err = run_to_exit("--listen", "127.0.0.1:0", "--tls-cert", missing, "--tls-key",
                                certs.key, "--no-auth")
        assert code == 1, (code, err)
        assert missing in err and "No such file" in err, err
        code, err = run_to_exit("--listen", "127.0.0.1:0", "--tls-cert", certs.cert, "--tls-key",
                                other.key, "--no-auth")
        assert code == 1, (code, err)
        assert "does not match" in err, err
        # The certificate where the key should be: no key in it.
        code, err = run_to_exit("--listen", "127.0.0.1:0", "--tls-cert", certs.cert, "--tls-key",
                                certs.cert, "--no-auth")
        assert code == 1, (code, err)
        assert "no PEM private key" in err, err
        # One without the other is a bad command line.
        code, err = run_to_exit("--listen", "127.0.0.1:0", "--tls-cert", certs.cert, "--no-auth")
        assert code == 2, (code, err)
        assert "--tls-cert and --tls-key go together" in err, err
        assert "listening" not in err
