"""systemd integration of car-daemon without a running systemd (docs/SYSTEMD.md): the test plays
the service manager. It binds the listening sockets itself (TCP on 127.0.0.1 port 0 and a Unix
socket), hands them to the daemon as fds 3 and 4 with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, and
binds the AF_UNIX datagram socket NOTIFY_SOCKET names, where READY=1, STOPPING=1 and WATCHDOG=1
arrive. Every wait is bounded; nothing asserts how long anything took.

A car-daemon built without the `systemd` feature cannot pass these tests: under CI=true that is a
failure; elsewhere each test says it skipped (in its output) and checks instead that such a build
warns when a service manager expects systemd support."""

import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

from harness import DAEMON, Daemon, daemon_env, request
from rawws import RawWs
from tls_certs import make_certificate

TOKEN = "systemd-test-token"

# Run in the child between fork and the daemon's exec: the passed sockets move to fds 3, 4, ...
# (where LISTEN_FDS starts), and LISTEN_PID/WATCHDOG_PID become this process's pid, which exec
# keeps. "+1" in LISTEN_PID_OFFSET makes LISTEN_PID name another process.
WRAPPER = r"""
import os, sys
fds = [int(x) for x in sys.argv[1].split(",") if x]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i, inheritable=True)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
pid = os.getpid()
os.environ["LISTEN_PID"] = str(pid + int(os.environ.pop("LISTEN_PID_OFFSET", "0")))
if "WATCHDOG_USEC" in os.environ:
    os.environ["WATCHDOG_PID"] = str(pid)
os.execv(sys.argv[2], sys.argv[2:])
"""


def daemon_features():
    out = os.popen(f"'{DAEMON}' --version").read()
    for line in out.splitlines():
        if line.startswith("features:"):
            return line.split()[1:]
    raise AssertionError(f"car-daemon --version lists no features line: {out!r}")


def systemd_built_or_skip(test):
    """True when car-daemon has the systemd feature. Without it: an AssertionError under CI=true
    (a CI build must have it), else a visible SKIP line and False."""
    if "systemd" in daemon_features():
        return True
    if os.environ.get("CI") == "true":
        raise AssertionError("car-daemon was built without the systemd feature "
                             "(install libsystemd-dev, meson -Dsystemd=enabled); CI requires it")
    print(f"SKIP {test}: car-daemon was built without the systemd feature", flush=True)
    return False


def high_fd(sock):
    """A duplicate of `sock`'s fd numbered 20 or more, so moving fds onto 3 and 4 in the child
    never overwrites one still to be moved."""
    return fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, 20)


class Sockets:
    """What a .socket unit would bind: a TCP socket on 127.0.0.1 (a free port), a Unix stream
    socket, and the notify socket; all closed (and the folder removed) by close()."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="car-it-sd-")
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.port = self.tcp.getsockname()[1]
        self.unix_path = os.path.join(self.folder, "car.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(16)
        self.notify_path = os.path.join(self.folder, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages = []  # every datagram received so far, parsed

    def next_message(self, predicate, timeout=10.0):
        """The first datagram received from now on (or already received and not yet returned by
        this call) for which predicate(fields) holds; AssertionError after `timeout` s."""
        deadline = time.time() + timeout
        while True:
            for index, fields in enumerate(self.messages):
                if not fields.get("_seen") and predicate(fields):
                    fields["_seen"] = True
                    return fields
            remaining = deadline - time.time()
            if remaining <= 0:
                raise AssertionError(f"no such notify message; got {self.messages}")
            self.notify.settimeout(remaining)
            try:
                data = self.notify.recv(4096)
            except socket.timeout:
                continue
            fields = {}
            for line in data.decode().split("\n"):
                if "=" in line:
                    key, value = line.split("=", 1)
                    fields[key] = value
            self.messages.append(fields)

    def close(self):
        for s in (self.tcp, self.unix, self.notify):
            s.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class ActivatedDaemon(Daemon):
    """car-daemon started the way systemd starts a socket-activated Type=notify service."""

    def __init__(self, sockets, passed, *args, env=None, names="web:local", expected_listening=None,
                 listen_pid_offset=0):
        self.state_dir = tempfile.mkdtemp(prefix="car-it-")
        full_env = daemon_env({"LISTEN_FDS": str(len(passed)), "LISTEN_FDNAMES": names,
                               "NOTIFY_SOCKET": sockets.notify_path,
                               "LISTEN_PID_OFFSET": str(listen_pid_offset),
                               "WATCHDOG_USEC": None, "WATCHDOG_PID": None, **(env or {})})
        self.runtime_dir = full_env["XDG_RUNTIME_DIR"]
        self._owns_runtime_dir = True
        fds = [high_fd(s) for s in passed]
        self.args = [DAEMON, "--state-dir", self.state_dir, *args]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WRAPPER, ",".join(map(str, fds)), *self.args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=full_env, pass_fds=fds)
        finally:
            for fd in fds:
                os.close(fd)
        self.stderr_lines = []
        self.listening = []
        self._wait_for_listening(expected_listening if expected_listening is not None
                                 else len(passed))

    def rest_of_stderr(self, timeout=10.0):
        """Every stderr line until the daemon closes stderr (it exits)."""
        deadline = time.time() + timeout
        while self._read_stderr_line(deadline) is not None:
            pass
        return self.stderr_lines

    def read_stderr_until(self, needle, timeout=10.0):
        deadline = time.time() + timeout
        while not any(needle in l for l in self.stderr_lines):
            if self._read_stderr_line(deadline) is None:
                raise AssertionError(f"no {needle!r} on stderr: {''.join(self.stderr_lines)}")


def authenticated(address):
    """A RawWs on `address` that has authenticated with TOKEN and made one call."""
    ws = RawWs(address)
    assert ws.status == 101, ws.status
    ws.send_text(json.dumps(request("session.auth", {"token": TOKEN}, id=1)))
    assert json.loads(ws.recv_text())["result"]["ok"] is True
    return ws


def call(ws, method, id):
    ws.send_text(json.dumps(request(method, {}, id=id)))
    return json.loads(ws.recv_text())


def test_ready_comes_once_both_inherited_sockets_serve_authenticated_clients():
    if not systemd_built_or_skip("ready"):
        return
    s = Sockets()
    try:
        # A client that connects before the daemon runs waits in the backlog, as with systemd.
        early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        early.connect(s.unix_path)
        with ActivatedDaemon(s, [s.tcp, s.unix], "--token", TOKEN) as d:
            ready = s.next_message(lambda m: "READY" in m)
            assert ready["READY"] == "1"
            # Served as soon as READY=1 says so, on both sockets, with authentication.
            tcp = authenticated(("127.0.0.1", s.port))
            local = authenticated(s.unix_path)
            assert "result" in call(tcp, "host.agents", 2)
            assert "result" in call(local, "host.agents", 2)
            # --http-endpoints applies to inherited sockets as to --listen/--unix ones: the
            # loopback TCP socket and the Unix socket answer /healthz.
            from test_http_endpoints import http
            assert http(("127.0.0.1", s.port))[0] == 200
            assert http(s.unix_path)[0] == 200
            assert ready["STATUS"] == f"listening on ws://127.0.0.1:{s.port}, unix:{s.unix_path}"
            assert d.listening == [f"ws://127.0.0.1:{s.port}", f"unix:{s.unix_path}"]
            # The early client is served too.
            early_ws = RawWs.__new__(RawWs)
            early_ws.sock, early_ws.buffer, early_ws.status = early, b"", None
            early_ws.response_headers = {}
            early.settimeout(5.0)
            assert early_ws.handshake() == 101
            # Children (none today; a future exec) would not get the sockets: close-on-exec.
            for fd in (3, 4):
                with open(f"/proc/{d.proc.pid}/fdinfo/{fd}") as f:
                    flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
                assert flags & os.O_CLOEXEC, f"fd {fd} flags {oct(flags)}"
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
            lines = d.rest_of_stderr()
        # The inherited sockets replace the default listener: exactly two listening lines.
        assert sum(1 for l in lines if l.startswith("listening ")) == 2, lines
        # No WATCHDOG_USEC, no pings; the Unix socket file is systemd's and stays.
        assert not any("WATCHDOG" in m for m in s.messages), s.messages
        assert os.path.exists(s.unix_path)
    finally:
        s.close()


def test_sigterm_sends_stopping_then_exits_zero():
    if not systemd_built_or_skip("stopping"):
        return
    s = Sockets()
    try:
        with ActivatedDaemon(s, [s.tcp, s.unix], "--token", TOKEN) as d:
            s.next_message(lambda m: m.get("READY") == "1")
            assert not any("STOPPING" in m for m in s.messages)
            d.proc.send_signal(signal.SIGTERM)
            stopping = s.next_message(lambda m: "STOPPING" in m)
            assert stopping["STOPPING"] == "1"
            assert stopping["STATUS"] == "shutting down (SIGTERM)"
            assert d.wait() == 0
    finally:
        s.close()


def test_watchdog_pings_arrive_while_watchdog_usec_is_set():
    if not systemd_built_or_skip("watchdog"):
        return
    s = Sockets()
    try:
        # 600 ms: a ping every 300 ms; three of them within the bounded wait.
        with ActivatedDaemon(s, [s.tcp, s.unix], "--token", TOKEN,
                             env={"WATCHDOG_USEC": "600000"}) as d:
            s.next_message(lambda m: m.get("READY") == "1")
            for _ in range(3):
                assert s.next_message(lambda m: "WATCHDOG" in m)["WATCHDOG"] == "1"
            d.read_stderr_until("watchdog: WATCHDOG=1 every 300 ms")
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
    finally:
        s.close()


def test_sighup_keeps_serving_on_the_inherited_sockets():
    if not systemd_built_or_skip("sighup"):
        return
    s = Sockets()
    try:
        with ActivatedDaemon(s, [s.tcp, s.unix], "--token", TOKEN) as d:
            s.next_message(lambda m: m.get("READY") == "1")
            local = authenticated(s.unix_path)
            d.proc.send_signal(signal.SIGHUP)
            d.read_stderr_until("SIGHUP: logs flushed")
            assert d.proc.poll() is None
            # The open connection still works, and new ones are accepted on both sockets.
            assert "result" in call(local, "host.agents", 2)
            assert "result" in call(authenticated(("127.0.0.1", s.port)), "host.agents", 2)
            assert "result" in call(authenticated(s.unix_path), "host.agents", 2)
            assert not any("STOPPING" in m for m in s.messages)
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
    finally:
        s.close()


def test_listen_pid_of_another_process_means_no_inherited_sockets():
    if not systemd_built_or_skip("listen_pid"):
        return
    s = Sockets()
    try:
        with ActivatedDaemon(s, [s.tcp, s.unix], "--token", TOKEN, "--listen", "127.0.0.1:0",
                             listen_pid_offset=1, expected_listening=1) as d:
            ready = s.next_message(lambda m: m.get("READY") == "1")
            # Only --listen: the passed sockets were not meant for this process.
            assert len(d.listening) == 1 and d.listening[0] != f"ws://127.0.0.1:{s.port}"
            assert ready["STATUS"] == f"listening on {d.listening[0]}"
            assert "result" in call(authenticated(RawWs.url_address(d.listening[0])),
                                    "host.agents", 2)
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
            lines = d.rest_of_stderr()
        assert sum(1 for l in lines if l.startswith("listening ")) == 1, lines
    finally:
        s.close()


def test_inherited_sockets_extend_the_listen_flags():
    if not systemd_built_or_skip("extend"):
        return
    s = Sockets()
    try:
        with ActivatedDaemon(s, [s.tcp], "--token", TOKEN, "--listen", "127.0.0.1:0",
                             names="web", expected_listening=2) as d:
            s.next_message(lambda m: m.get("READY") == "1")
            assert f"ws://127.0.0.1:{s.port}" in d.listening
            for url in d.listening:
                assert "result" in call(authenticated(RawWs.url_address(url)), "host.agents", 2)
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
    finally:
        s.close()


def test_inherited_tcp_sockets_get_tls_and_inherited_unix_sockets_stay_plaintext():
    if not systemd_built_or_skip("tls"):
        return
    s = Sockets()
    certs = tempfile.mkdtemp(prefix="car-it-sd-tls-")
    try:
        cert, key = make_certificate(certs)
        with ActivatedDaemon(s, [s.tcp, s.unix], "--token", TOKEN, "--tls-cert", cert,
                             "--tls-key", key) as d:
            s.next_message(lambda m: m.get("READY") == "1")
            assert f"wss://127.0.0.1:{s.port}" in d.listening, d.listening
            assert f"unix:{s.unix_path}" in d.listening, d.listening
            context = ssl.create_default_context(cafile=cert)
            with urllib.request.urlopen(f"https://127.0.0.1:{s.port}/healthz", context=context,
                                        timeout=10) as response:
                assert json.loads(response.read())["status"] == "ok"
            assert "result" in call(authenticated(s.unix_path), "host.agents", 2)
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
    finally:
        s.close()
        shutil.rmtree(certs, ignore_errors=True)


def test_an_inherited_datagram_socket_is_refused_naming_it():
    if not systemd_built_or_skip("datagram"):
        return
    s = Sockets()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        try:
            ActivatedDaemon(s, [s.tcp, udp], "--token", TOKEN, names="web:odd")
            raise AssertionError("the daemon started with a datagram socket")
        except RuntimeError as e:  # harness: "daemon did not start: <stderr>"
            assert "inherited fd 4 'odd': not a listening TCP or Unix stream socket" in str(e)
        assert not any("READY" in m for m in s.messages)
    finally:
        udp.close()
        s.close()


def test_a_build_without_systemd_warns_when_a_service_manager_expects_it():
    """Only meaningful for a build without the feature (the tests above cover the other)."""
    if "systemd" in daemon_features():
        # The same build must not carry the warning's text: it is only in the unsupported variant.
        with open(DAEMON, "rb") as f:
            assert b"was built without systemd support" not in f.read()
        return
    s = Sockets()
    try:
        with ActivatedDaemon(s, [s.tcp], "--token", TOKEN, "--listen", "127.0.0.1:0",
                             names="web", expected_listening=1) as d:
            d.read_stderr_until("this car-daemon was built without systemd support")
            d.proc.send_signal(signal.SIGTERM)
            assert d.wait() == 0
    finally:
        s.close()


def test_no_ready_when_a_listener_fails_to_start():
    """READY=1 waits for every listener: one that cannot bind means exit 1 and no READY=1."""
    if not systemd_built_or_skip("no_ready"):
        return
    s = Sockets()
    try:
        bad = os.path.join(s.folder, "missing-dir", "car.sock")
        with ActivatedDaemon(s, [s.tcp], "--token", TOKEN, "--unix", bad, names="web",
                             expected_listening=1) as d:
            assert d.wait() == 1
            lines = d.rest_of_stderr()
            stopping = s.next_message(lambda m: "STOPPING" in m)
            assert stopping["STATUS"] == "shutting down (startup failed)"
        assert not any("READY" in m for m in s.messages), s.messages
        assert any(bad in l for l in lines), lines
    finally:
        s.close()


UNIT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "examples", "car-daemon", "systemd")


def unit_settings(name):
    """Every KEY=VALUE of a unit file, as a list of pairs (keys repeat)."""
    with open(os.path.join(UNIT_DIR, name)) as f:
        return [tuple(l.strip().split("=", 1)) for l in f
                if "=" in l and not l.lstrip().startswith("#")]


def test_the_units_say_what_docs_systemd_md_promises_and_meson_installs_them():
    socket_unit = unit_settings("car-daemon.socket")
    service = dict(unit_settings("car-daemon.service.in"))
    listens = [v for k, v in socket_unit if k == "ListenStream"]
    assert "127.0.0.1:9100" in listens and any(v.startswith("%t/") for v in listens), listens
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].startswith("@BINDIR@/car-daemon ")
    # No listener flag: the sockets come from the socket unit (and replace the default one).
    assert "--listen" not in service["ExecStart"] and "--unix" not in service["ExecStart"]
    if not systemd_built_or_skip("units installed"):
        return
    build_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(DAEMON))))
    out = subprocess.run(["meson", "introspect", "--installed", build_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    installed = json.loads(out.stdout).values()
    for unit in ("car-daemon.socket", "car-daemon.service"):
        assert any(p.endswith("/lib/systemd/system/" + unit) for p in installed), sorted(installed)
    built = os.path.join(build_dir, "examples", "car-daemon", "systemd", "car-daemon.service")
    with open(built) as f:
        assert "@BINDIR@" not in f.read()
    if shutil.which("systemd-analyze") is None:
        # .ci/setup --tests installs it (Debian's systemd package); CI must not pass unverified.
        assert os.environ.get("CI") != "true", "systemd-analyze is missing: the units are unverified"
        print("NOTE units: systemd-analyze not installed, the units were not verified", flush=True)
        return
    folder = tempfile.mkdtemp(prefix="car-it-units-")
    try:
        with open(built) as f:
            text = f.read()
        # verify insists that ExecStart's binary exists: point it at the one under test.
        text = "\n".join(
            ("ExecStart=" + DAEMON + " " + l.split(" ", 1)[1]) if l.startswith("ExecStart=") else l
            for l in text.splitlines())
        with open(os.path.join(folder, "car-daemon.service"), "w") as f:
            f.write(text + "\n")
        shutil.copy(os.path.join(UNIT_DIR, "car-daemon.socket"), folder)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", "car-daemon.socket",
                            "car-daemon.service"], cwd=folder, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
