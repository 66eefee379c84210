"""A real NATS JetStream broker for the fleet tests (docs/FLEET.md): `nats-server -js` on free
127.0.0.1 ports with a private store directory, killed (SIGKILL) and restarted on the same port
and store, or a three-node JetStream cluster on loopback routes. Plus a minimal client that speaks
the NATS text protocol over a socket (standard library only), enough to read a stream's messages
in stream order through the JetStream API ($JS.API.STREAM.MSG.GET), so a test sees exactly what
was stored: subject, headers, payload.

Every wait is bounded; everything started is killed and its directories removed by close() (the
classes are context managers). When nats-server is missing, `nats_server_or_skip` says so: under
CI=true that is a failure (CI installs it), elsewhere unittest.SkipTest (counted as skipped)."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

NATS_SERVER = os.environ.get("NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_server_available():
    return os.path.isfile(NATS_SERVER) and os.access(NATS_SERVER, os.X_OK)


def nats_server_or_skip(test):
    """Returns when nats-server can be run. Without it: an AssertionError under CI=true, else
    unittest.SkipTest (runner.py counts it as skipped, with the reason)."""
    if nats_server_available():
        return True
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{test}: nats-server not found ({NATS_SERVER}); CI requires it "
                             "(.ci/setup installs the nats-server package)")
    raise unittest.SkipTest(f"nats-server is not installed ({NATS_SERVER})")


def daemon_features(daemon):
    """The optional features `car-daemon --version` lists (e.g. ["systemd", "nats"])."""
    out = subprocess.run([daemon, "--version"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        if line.startswith("features:"):
            return line.split()[1:]
    raise AssertionError(f"car-daemon --version lists no features line: {out!r}")


def fleet_ready_or_skip(test, daemon):
    """Returns when `daemon` has the nats feature and nats-server exists. Otherwise an
    AssertionError under CI=true (CI builds and installs both), else unittest.SkipTest, which
    runner.py counts as skipped with the reason."""
    missing = None
    if "nats" not in daemon_features(daemon):
        missing = "car-daemon was built without the nats feature (meson -Dnats=enabled, libnats-dev)"
    elif not nats_server_available():
        missing = f"nats-server is not installed ({NATS_SERVER})"
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{test}: {missing}; CI requires it")
    raise unittest.SkipTest(missing)


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on right now (the kernel's choice)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class NatsServer:
    """One nats-server process with JetStream. `start()` (also on __enter__) waits until its
    /healthz says JetStream is ready; `kill()` SIGKILLs it; `start()` again reuses the same ports
    and store directory, so the broker comes back with what it had synced."""

    def __init__(self, name="n1", port=None, store_dir=None, cluster_port=None, routes=None,
                 cluster_name="car-test"):
        self.name = name
        self.port = port or free_port()
        self.http_port = free_port()
        self.folder = tempfile.mkdtemp(prefix="car-nats-")
        self.store_dir = store_dir or os.path.join(self.folder, "store")
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.proc = None
        self.log_path = os.path.join(self.folder, "server.log")
        self._log = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def _config(self):
        lines = [f'server_name: "{self.name}"', 'listen: "127.0.0.1:%d"' % self.port,
                 'http: "127.0.0.1:%d"' % self.http_port,
                 'jetstream { store_dir: "%s" }' % self.store_dir]
        if self.cluster_port:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines.append('cluster { name: "%s", listen: "127.0.0.1:%d", routes: [%s] }'
                         % (self.cluster_name, self.cluster_port, routes))
        path = os.path.join(self.folder, "server.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, wait=True, timeout=20.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        config = self._config()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", config], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)
        return self

    def healthz(self, timeout=1.0):
        """The status /healthz reports (JetStream included), or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz",
                                        timeout=timeout) as r:
                return json.loads(r.read()).get("status")
        except Exception:  # noqa: BLE001 - not up yet, refused, 503 while JetStream starts
            return None

    def wait_ready(self, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server {self.name} exited with {self.proc.returncode}:"
                                     f"\n{self.log_tail()}")
            if self.healthz() == "ok":
                return
            time.sleep(0.1)
        raise AssertionError(f"nats-server {self.name} not ready within {timeout} s:\n"
                             f"{self.log_tail()}")

    def wait_accepting(self, timeout=10.0):
        """Until a client connection gets the server's INFO line (enough for a cluster node whose
        JetStream waits for a quorum)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"nats-server {self.name} not accepting within {timeout} s")

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: no goodbye to clients, nothing flushed beyond what the store already has."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._log:
            self._log.close()
            self._log = None

    def restart(self, wait=True, timeout=20.0):
        self.kill()
        return self.start(wait=wait, timeout=timeout)

    def close(self):
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class NatsCluster:
    """Three JetStream nodes routed to each other on loopback ports. `urls` lists every node's
    client URL (a client given all of them fails over)."""

    def __init__(self, size=3):
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = []
        for i in range(size):
            routes = [p for j, p in enumerate(cluster_ports) if j != i]
            self.nodes.append(NatsServer(name=f"n{i + 1}", cluster_port=cluster_ports[i],
                                         routes=routes))

    @property
    def urls(self):
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout=30.0):
        for n in self.nodes:
            n.start(wait=False)
        # /healthz turns ok once the node's JetStream has a meta leader, which needs a quorum:
        # wait on every node after all have been started.
        for n in self.nodes:
            n.wait_ready(timeout)
        return self

    def close(self):
        for n in self.nodes:
            n.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class NatsClient:
    """A minimal synchronous NATS client: CONNECT, one inbox subscription, request/reply. Enough
    for the JetStream API; not a general client (no reconnects, one request at a time)."""

    def __init__(self, url, timeout=5.0):
        url = url.split(",")[0]
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read_line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                          b'"no_responders":true,"protocol":1}\r\nPING\r\n')
        self._expect_pong()
        self.inbox = f"_INBOX.cartest{os.getpid()}{id(self)}"
        self.sock.sendall(f"SUB {self.inbox}.* 1\r\n".encode())
        self.next_id = 0

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("nats-server closed the connection")
        self.buf += chunk

    def _read_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def _read_bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _expect_pong(self):
        while True:
            line = self._read_line()
            if line == "PONG":
                return
            if line.startswith("-ERR"):
                raise ConnectionError(line)

    def request(self, subject, payload=b"", timeout=5.0):
        """One request; the reply's (headers bytes, payload bytes)."""
        self.next_id += 1
        reply = f"{self.inbox}.{self.next_id}"
        if isinstance(payload, str):
            payload = payload.encode()
        self.sock.sendall(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n")
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self._read_line()
            if line == "PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith("-ERR"):
                raise ConnectionError(line)
            parts = line.split()
            if parts and parts[0] == "MSG":
                size = int(parts[-1])
                data = self._read_bytes(size)
                if parts[1] == reply:
                    return b"", data
            elif parts and parts[0] == "HMSG":
                header_size, total = int(parts[-2]), int(parts[-1])
                data = self._read_bytes(total)
                if parts[1] == reply:
                    headers = data[:header_size]
                    if b" 503" in headers.split(b"\r\n")[0]:
                        raise ConnectionError(f"no responders for {subject}")
                    return headers, data[header_size:]
        raise TimeoutError(f"no reply to {subject} within {timeout} s")

    def js(self, api, body=None, timeout=5.0):
        """A JetStream API call ($JS.API.<api>); the decoded JSON reply."""
        _, data = self.request(f"$JS.API.{api}", json.dumps(body) if body is not None else b"",
                               timeout)
        return json.loads(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_headers(raw):
    """b"NATS/1.0\\r\\nName: value\\r\\n\\r\\n" -> {name: value} (last one wins)."""
    headers = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
    return headers


def stream_info(url, stream, timeout=5.0):
    """The stream's info reply ({"config":..., "state":...}) or None when there is no such stream."""
    with NatsClient(url, timeout) as c:
        reply = c.js(f"STREAM.INFO.{stream}", timeout=timeout)
    if "error" in reply:
        if reply["error"].get("err_code") == 10059:  # stream not found
            return None
        raise AssertionError(f"STREAM.INFO {stream}: {reply['error']}")
    return reply


def stream_messages(url, stream, subject_filter=None, timeout=10.0):
    """Every message of the stream in stream order, each {"seq", "subject", "headers", "data"}
    (data as bytes). `subject_filter` keeps only subjects starting with it."""
    messages = []
    with NatsClient(url, timeout) as c:
        info = c.js(f"STREAM.INFO.{stream}", timeout=timeout)
        if "error" in info:
            raise AssertionError(f"STREAM.INFO {stream}: {info['error']}")
        first, last = info["state"]["first_seq"], info["state"]["last_seq"]
        seq = first
        while seq <= last:
            reply = c.js(f"STREAM.MSG.GET.{stream}", {"seq": seq}, timeout)
            seq += 1
            if "error" in reply:
                if reply["error"].get("err_code") == 10037:  # deleted/absent sequence
                    continue
                raise AssertionError(f"MSG.GET {stream} {seq - 1}: {reply['error']}")
            m = reply["message"]
            if subject_filter and not m["subject"].startswith(subject_filter):
                continue
            messages.append({
                "seq": m["seq"], "subject": m["subject"],
                "headers": parse_headers(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {},
                "data": base64.b64decode(m["data"]) if m.get("data") else b""})
    return messages


def wait_stream_count(url, stream, count, timeout=20.0):
    """Until the stream holds at least `count` messages (bounded); returns the count reached."""
    deadline = time.time() + timeout
    have = 0
    while time.time() < deadline:
        try:
            info = stream_info(url, stream, timeout=2.0)
            have = info["state"]["messages"] if info else 0
            if have >= count:
                return have
        except (OSError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"stream {stream} has {have} messages, wanted {count}, after {timeout} s")
