"""Shared pieces of the Python integration tests: finding and starting car-daemon, reading its
`listening ...` lines, and small JSON-RPC helpers. Uses only the standard library and Debian's
python3-websockets; always run with /usr/bin/python3."""

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMON = os.environ.get("CAR_DAEMON", os.path.join(ROOT, "build", "examples", "car-daemon", "car-daemon"))

# The variables car-daemon reads (PROTOCOL.md §9). A test names the ones it wants; whatever the
# calling shell has set must not leak into the daemons.
CAR_VARIABLES = ("CAR_AUTH_TOKEN", "CAR_NO_AUTH", "CAR_NO_APPROVALS", "CAR_TOOL_TIMEOUT", "CAR_AGENT_ID")


def proc_status_kib(pid, field):
    """A size line of /proc/PID/status in KiB, e.g. field "VmRSS" (resident now) or "VmHWM" (the
    resident peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def measured_memory_env():
    """The environment for a daemon whose memory a test measures: under ASan (CI's sanitizer
    run) freed blocks wait in its quarantine, 256 MiB by default, and count as resident, so the
    quarantine is turned off; without ASan the variable is ignored."""
    options = [os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=0",
               "thread_local_quarantine_size_kb=0"]
    return {"ASAN_OPTIONS": ":".join(x for x in options if x)}


def daemon_env(env=None, runtime_dir=None):
    """The environment for one daemon: this process's, without CAR_* variables, with
    XDG_RUNTIME_DIR pointing at a fresh private directory (so a daemon that mints tokens never
    writes into the real runtime or home directory, and two daemons never share a token
    directory by accident), then `env` on top; a value of None unsets that variable."""
    full = {k: v for k, v in os.environ.items() if k not in CAR_VARIABLES}
    full["XDG_RUNTIME_DIR"] = runtime_dir or tempfile.mkdtemp(prefix="car-it-run-")
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def run_to_exit(*args, env=None, runtime_dir=None, state_dir=None, timeout=10):
    """Runs car-daemon expecting it to exit by itself (a refused start); returns (code, stderr)."""
    state = state_dir or tempfile.mkdtemp(prefix="car-it-")
    full_env = daemon_env(env, runtime_dir)
    try:
        r = subprocess.run([DAEMON, "--state-dir", state, *args], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, env=full_env)
    finally:
        if runtime_dir is None and "XDG_RUNTIME_DIR" not in (env or {}):
            shutil.rmtree(full_env["XDG_RUNTIME_DIR"], ignore_errors=True)
    return r.returncode, r.stderr.decode("utf-8", "replace")


class Daemon:
    """A running car-daemon. Use as a context manager; it is killed on exit if still running."""

    def __init__(self, *args, stdio=False, state_dir=None, env=None, runtime_dir=None,
                 wait_listening=None):
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="car-it-")
        self.args = [DAEMON, "--state-dir", self.state_dir, *args]
        if stdio:
            self.args.append("--stdio")
        full_env = daemon_env(env, runtime_dir)
        self.runtime_dir = full_env.get("XDG_RUNTIME_DIR")
        # A runtime directory the harness made is removed with the daemon; one the test passed
        # (to share it between daemons, or to look into it afterwards) is the test's.
        self._owns_runtime_dir = runtime_dir is None and "XDG_RUNTIME_DIR" not in (env or {})
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env)
        self.stderr_lines = []
        self.listening = []
        expected = wait_listening if wait_listening is not None else self._count_listeners(args, stdio)
        self._wait_for_listening(expected)

    @staticmethod
    def _count_listeners(args, stdio):
        n = sum(1 for a in args if a in ("--listen", "--unix"))
        n += sum(1 for a in args if a.startswith("--listen=") or a.startswith("--unix="))
        if stdio:
            n += 1
        return n if n else 1

    def _wait_for_listening(self, expected, timeout=10.0):
        deadline = time.time() + timeout
        while len(self.listening) < expected:
            line = self._read_stderr_line(deadline)
            if line is None:
                raise RuntimeError("daemon did not start: " + "".join(self.stderr_lines))
            m = re.match(r"^listening (.*)$", line.strip())
            if m:
                self.listening.append(m.group(1))

    def _read_stderr_line(self, deadline):
        buf = b""
        fd = self.proc.stderr.fileno()
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            ch = os.read(fd, 1)
            if not ch:
                return None
            buf += ch
            if ch == b"\n":
                line = buf.decode("utf-8", "replace")
                self.stderr_lines.append(line)
                return line

    def ws_url(self, index=0):
        for entry in self.listening:
            if entry.startswith("ws://"):
                if index == 0:
                    return entry
                index -= 1
        raise RuntimeError("no ws listener")

    def unix_path(self):
        for entry in self.listening:
            if entry.startswith("unix:"):
                return entry[len("unix:"):]
        raise RuntimeError("no unix listener")

    def printed_path(self, label):
        """The PATH of the `<label> file: PATH` line the daemon printed, or None."""
        prefix = label + " file: "
        for line in self.stderr_lines:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    def token_file(self):
        return self.printed_path("auth token")

    def host_token_file(self):
        return self.printed_path("host token")

    def token(self):
        """The minted daemon token, read from the file the daemon named."""
        with open(self.token_file()) as f:
            return f.read().strip()

    def host_token(self):
        with open(self.host_token_file()) as f:
            return f.read().strip()

    def wait(self, timeout=10):
        return self.proc.wait(timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:
                pass
        if self._owns_runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


class StdioClient:
    """NDJSON over a daemon's stdin/stdout."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.buffer = b""

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.daemon.proc.stdin.write(data)
        self.daemon.proc.stdin.flush()

    def send(self, message):
        self.send_raw(json.dumps(message) + "\n")

    def read_line(self, timeout=5.0):
        deadline = time.time() + timeout
        fd = self.daemon.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError("no reply from daemon")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError("no reply from daemon")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("daemon closed stdout")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def read(self, timeout=5.0):
        return json.loads(self.read_line(timeout))

    def no_output_within(self, seconds):
        fd = self.daemon.proc.stdout.fileno()
        if self.buffer:
            return False
        ready, _, _ = select.select([fd], [], [], seconds)
        return not ready

    def call(self, method, params=None, id=1):
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.read()

    def close_input(self):
        self.daemon.proc.stdin.close()

    def read_rest(self, timeout=5.0):
        """Everything until EOF on stdout, as parsed lines."""
        out = []
        deadline = time.time() + timeout
        fd = self.daemon.proc.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                out.append(json.loads(line))
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError("stdout not closed")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError("stdout not closed")
            chunk = os.read(fd, 65536)
            if not chunk:
                return out
            self.buffer += chunk


def request(method, params=None, id=1):
    msg = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg
