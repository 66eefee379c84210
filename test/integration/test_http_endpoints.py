"""Health and metrics over plain HTTP on the WebSocket listeners (docs/OPERATIONS.md "Health and
metrics"): /healthz and /metrics answered on loopback TCP and Unix sockets by default, 404/405 for
anything else, a foreign Host refused (DNS rebinding), --http-endpoints off|all, non-loopback
listeners left alone unless asked, and the WebSocket upgrade unchanged on the same port."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from harness import DAEMON, Daemon
from peer import Peer, start_run, turns
from rawws import RawWs

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
METRIC_NAMES = (
    "car_connections_open", "car_connections_accepted_total", "car_requests_in_flight",
    "car_frames_out_total", "car_bytes_out_total", "car_sink_refusals_total",
    "car_run_trace_dropped_total", "car_run_trace_gaps_total", "car_run_trace_subscribers",
    "car_runs_started_total", "car_runs_ended_total", "car_runs_open", "car_store_append_seconds",
    "car_host_events_total")


def http(address, method="GET", target="/healthz", host=None, timeout=5.0):
    """One HTTP/1.1 request on a fresh connection: (status, {header: value}, body bytes). The
    daemon closes after the response, so the body is everything up to EOF."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        host = host or "localhost"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host = host or f"{address[0]}:{address[1]}"
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode())
        data = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def parse_prometheus(text):
    """A strict little reader of text format 0.0.4 as the daemon writes it: every sample belongs to
    a family announced by HELP and TYPE first; histogram buckets are cumulative and end in +Inf,
    which equals _count. Returns ({(name, labels): value}, {family: type})."""
    samples, types, helps = {}, {}, set()
    family = None
    assert text.endswith("\n"), "the exposition ends with a line feed"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"HELP twice for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name in helps and name not in types, line
            types[name] = kind
            family = name
            continue
        assert not line.startswith("#") and line, f"unexpected line {line!r}"
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if types[family] == "histogram":
            assert name in (family + "_bucket", family + "_sum", family + "_count"), line
        else:
            assert name == family and not labels, line
        number = float(value)
        assert not math.isnan(number), line
        samples[(name, labels)] = number
    for name, kind in types.items():
        if kind != "histogram":
            continue
        buckets = [(k[1], v) for k, v in samples.items() if k[0] == name + "_bucket"]
        assert buckets and buckets[-1][0] == '{le="+Inf"}', buckets
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{name} buckets not cumulative: {counts}"
        assert counts[-1] == samples[(name + "_count", "")], name
    return samples, types


def scrape(address):
    status, headers, body = http(address, target="/metrics")
    assert status == 200, (status, body)
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    samples, types = parse_prometheus(body.decode("utf-8"))
    return {name: value for (name, labels), value in samples.items() if not labels}, types


def tcp_address(d, index=0):
    return RawWs.url_address(d.ws_url(index))


def daemon_version():
    out = subprocess.run([DAEMON, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.split()[1]


def test_healthz_reports_status_version_and_uptime():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        status, headers, body = http(tcp_address(d))
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close" and headers["cache-control"] == "no-store"
        assert int(headers["content-length"]) == len(body)
        health = json.loads(body)
        assert set(health) == {"status", "version", "uptime_seconds"}, health
        assert health["status"] == "ok"
        assert health["version"] == daemon_version()
        assert isinstance(health["uptime_seconds"], int) and health["uptime_seconds"] >= 0
        # The query string is not part of the path.
        assert http(tcp_address(d), target="/healthz?probe=1")[0] == 200


def test_metrics_parse_and_move_with_websocket_traffic():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = tcp_address(d)
        before, types = scrape(addr)
        for name in METRIC_NAMES:
            assert name in types, f"{name} missing from /metrics"
        assert types["car_store_append_seconds"] == "histogram"
        assert types["car_connections_accepted_total"] == "counter"
        assert types["car_connections_open"] == "gauge"
        peer = Peer(d)
        run_id = start_run(peer)
        assert peer.call("runs.record_turns", {"run_id": run_id, "turns": turns(3)})["result"]["ok"]
        assert "result" in peer.call("runs.complete", {"run_id": run_id, "outcome": {"status": "ok"}})
        assert "result" in peer.call("host.notify", {"message": "metrics test"})
        # Counters land when the write completes; poll (bounded) rather than assume an order.
        wanted = {
            "car_connections_accepted_total": before["car_connections_accepted_total"] + 1,
            "car_frames_out_total": before["car_frames_out_total"] + 4,
            "car_bytes_out_total": before["car_bytes_out_total"] + 50,
            "car_runs_started_total": before["car_runs_started_total"] + 1,
            "car_runs_ended_total": before["car_runs_ended_total"] + 1,
            "car_store_append_seconds_count": before["car_store_append_seconds_count"] + 3,
            "car_host_events_total": before["car_host_events_total"] + 1,
        }
        deadline = time.time() + 10
        while True:
            now, _ = scrape(addr)
            short = {k: (now[k], v) for k, v in wanted.items() if now[k] < v}
            if not short or time.time() > deadline:
                break
            time.sleep(0.05)
        assert not short, f"metrics that did not move: {short}"
        assert now["car_connections_open"] >= 1  # the peer is still connected
        assert now["car_runs_open"] == 0
        assert now["car_requests_in_flight"] == 0
        assert now["car_store_append_seconds_sum"] > 0


def test_unknown_paths_are_404_and_other_methods_405():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = tcp_address(d)
        # ("/" is left out: the viewer's page may be served there.)
        for target in ("/nope", "/healthz/", "/METRICS", "/metrics/x", "/healthzz"):
            assert http(addr, target=target)[0] == 404, target
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            status, headers, _ = http(addr, method=method, target="/metrics")
            assert status == 405, method
            assert headers["allow"] == "GET, HEAD"
        assert http(addr, method="POST", target="/nope")[0] == 404


def test_a_foreign_host_is_refused():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = tcp_address(d)
        for host in ("evil.example", f"evil.example:{addr[1]}", "127.0.0.1.evil.example",
                     "localhost.evil.example", "10.0.0.1",
                     # local only if a resolver keeps it so; a network DNS server could rebind it
                     "app.localhost"):
            status, _, body = http(addr, host=host, target="/metrics")
            assert status == 421, host
            assert b"car_" not in body, host
        for host in ("localhost", f"localhost:{addr[1]}", "LocalHost", f"127.0.0.1:{addr[1]}",
                     "[::1]:1"):
            assert http(addr, host=host)[0] == 200, host


def test_head_has_headers_and_no_body():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = tcp_address(d)
        full = http(addr, target="/metrics")
        status, headers, body = http(addr, method="HEAD", target="/metrics")
        assert status == 200 and body == b""
        assert int(headers["content-length"]) > 0
        assert headers["content-type"] == full[1]["content-type"]
        status, headers, body = http(addr, method="HEAD", target="/healthz")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def socket_dir():
    return tempfile.mkdtemp(prefix="car-http-")


def test_unix_socket_listener_is_served():
    folder = socket_dir()
    with Daemon("--no-auth", "--unix", os.path.join(folder, "car.sock")) as d:
        path = d.unix_path()
        status, _, body = http(path)
        assert status == 200 and json.loads(body)["status"] == "ok"
        samples, _ = scrape(path)
        assert "car_connections_open" in samples
        # No browser can reach a Unix socket, so Host is not checked there (documented).
        assert http(path, host="evil.example")[0] == 200
        assert http(path, target="/nope")[0] == 404
    shutil.rmtree(folder, ignore_errors=True)


def test_off_answers_400_as_before_and_upgrade_still_works():
    folder = socket_dir()
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--unix", os.path.join(folder, "car.sock"),
                "--http-endpoints", "off") as d:
        for addr in (tcp_address(d), d.unix_path()):
            for target in ("/healthz", "/metrics"):
                assert http(addr, target=target)[0] == 400, (addr, target)
        # Any method, any Host: as before plain HTTP existed (PROTOCOL.md §1).
        assert http(tcp_address(d), method="POST", target="/", host="x")[0] == 400
        peer = Peer(d)
        assert "result" in peer.call("server.handshake", {"protocol_version": 2})
    shutil.rmtree(folder, ignore_errors=True)


def test_websocket_upgrade_works_on_the_port_that_serves_http():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        assert http(tcp_address(d))[0] == 200
        peer = Peer(d)
        assert "result" in peer.call("server.handshake", {"protocol_version": 2})
        assert http(tcp_address(d))[0] == 200
        assert "result" in peer.call("server.handshake", {"protocol_version": 2})


def test_non_loopback_listener_is_served_only_with_all():
    # A non-loopback listener needs auth (the daemon refuses --no-auth there); the HTTP endpoints
    # do not, which is why they are off there unless --http-endpoints all says so. The test binds
    # the wildcard address but talks only to 127.0.0.1.
    with Daemon("--token", "http-endpoints-test-token", "--listen", "0.0.0.0:0") as d:
        port = tcp_address(d)[1]
        assert http(("127.0.0.1", port))[0] == 400
        assert http(("127.0.0.1", port), target="/metrics")[0] == 400
    with Daemon("--token", "http-endpoints-test-token", "--listen", "0.0.0.0:0",
                "--http-endpoints", "all") as d:
        port = tcp_address(d)[1]
        status, _, body = http(("127.0.0.1", port))
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert http(("127.0.0.1", port), host="evil.example")[0] == 421
