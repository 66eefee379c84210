"""car-daemon's logs (docs/OPERATIONS.md "Logs"): RFC 3339 time stamps, --log-format json, the
per-request debug line, no token ever in the logs, --log-file and SIGHUP (reopen for logrotate,
every connection kept)."""

import json
import os
import re
import signal
import tempfile
import time

from harness import Daemon, run_to_exit
from peer import Peer

RFC3339_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LEVELS = ("trace", "debug", "info", "warn", "error")
# The plain lines scripts read (PROTOCOL.md §9): never log records, in either format.
ANNOUNCEMENT = re.compile(r"^(listening \S+|(auth|host) token file: .+|viewer: http://\S+)$")
TEXT_LINE = re.compile(r"^" + RFC3339_MS + r" \[car (" + "|".join(LEVELS) + r")\] ")


def stderr_after_exit(d):
    """SIGTERM, the exit status, and every line the daemon wrote to stderr."""
    d.proc.send_signal(signal.SIGTERM)
    code = d.wait(timeout=15)
    rest = d.proc.stderr.read().decode("utf-8", "replace")
    text = "".join(d.stderr_lines) + rest
    return code, text.splitlines()


def read_stderr_until(d, predicate, timeout=10.0):
    """Reads stderr lines (kept in d.stderr_lines) until one satisfies `predicate`."""
    deadline = time.time() + timeout
    while True:
        line = d._read_stderr_line(deadline)
        assert line is not None, "no such line on stderr: " + "".join(d.stderr_lines)
        if predicate(line):
            return line


def wait_for_file_line(path, needle, timeout=10.0):
    """The content of `path` once it holds a line containing `needle` (bounded poll)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                content = f.read()
            if needle in content:
                return content
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def json_records(lines):
    """Every line as a JSON record, announcements left out; fails on any other line."""
    records = []
    for line in lines:
        if ANNOUNCEMENT.match(line):
            continue
        record = json.loads(line)  # raises (fails the test) on anything but JSON
        assert isinstance(record, dict), line
        assert re.fullmatch(RFC3339_MS, record["time"]), line
        assert record["level"] in LEVELS, line
        assert isinstance(record["message"], str), line
        records.append(record)
    return records


def request_lines(records, method):
    return [r for r in records if r.get("method") == method]


def test_json_format_every_stderr_line_is_a_record_or_an_announcement():
    with Daemon("--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "trace") as d:
        p = Peer(d, token=d.token())
        assert "result" in p.call("host.agents")
        assert p.call("no.such.method")["error"]["code"] == -32601
        code, lines = stderr_after_exit(d)
    assert code == 0
    announcements = [l for l in lines if ANNOUNCEMENT.match(l)]
    # listening, auth and host token files, and the viewer's link (the daemon minted the tokens)
    assert len(announcements) == 4, announcements
    records = json_records(lines)
    assert any(r["message"] == "shutting down (SIGTERM)" and r["level"] == "info" for r in records)
    assert request_lines(records, "host.agents")


def test_the_request_line_has_method_id_duration_connection_and_error_code():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--log-format", "json",
                "--log-level", "debug") as d:
        p = Peer(d)
        ok = p.call("host.agents")
        failed = p.call("host.unregister_agent", {"agent_id": 5})  # not a string
        assert failed["error"]["code"] == -32602
        p.send({"jsonrpc": "2.0", "method": "host.agents", "params": {}})  # a notification
        assert "result" in p.call("server.handshake", {"protocol_version": 2})
        code, lines = stderr_after_exit(d)
    assert code == 0
    records = json_records(lines)
    [bad] = request_lines(records, "host.unregister_agent")
    assert bad["level"] == "debug" and bad["message"] == "request"
    assert bad["id"] == failed["id"]
    assert bad["error_code"] == -32602
    assert isinstance(bad["duration_us"], int) and bad["duration_us"] >= 0
    assert isinstance(bad["connection"], str) and bad["connection"]
    agents = request_lines(records, "host.agents")
    answered = [r for r in agents if "id" in r]
    assert [r["id"] for r in answered] == [ok["id"]]
    assert "error_code" not in answered[0]
    assert answered[0]["connection"] == bad["connection"]
    notes = [r for r in agents if "id" not in r]
    assert len(notes) == 1 and notes[0]["message"] == "notification"
    # Params never reach the log: the line has these members and no other.
    assert set(bad) == {"time", "level", "message", "connection", "method", "id", "duration_us",
                        "error_code"}


def test_no_token_ever_appears_in_the_logs_at_trace():
    token = "tok-known-5f3a9c1e-do-not-log"
    host_token = "host-known-8b2d7e44-do-not-log"
    wrong = "wrong-guess-71c0aa93-do-not-log"
    for log_format in ("text", "json"):
        with Daemon("--token", token, "--host-token", host_token, "--listen", "127.0.0.1:0",
                    "--log-level", "trace", "--log-format", log_format) as d:
            Peer(d, token=token, agent_id="agent-1")
            Peer(d, host_token=host_token)
            intruder = Peer(d)
            assert "error" in intruder.call("session.auth", {"token": wrong})
            code, lines = stderr_after_exit(d)
        assert code == 0
        everything = "\n".join(lines)
        # The auth calls were logged (so the search below looked at their lines) ...
        assert everything.count("session.auth") >= 3, everything
        # ... and no token, right or wrong, is anywhere in stderr.
        for secret in (token, host_token, wrong):
            assert secret not in everything, (log_format, secret)


def test_text_format_lines_start_with_an_rfc3339_time():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--log-level", "debug") as d:
        p = Peer(d)
        assert p.call("no.such.method")["error"]["code"] == -32601
        code, lines = stderr_after_exit(d)
    assert code == 0
    records = [l for l in lines if not ANNOUNCEMENT.match(l)]
    assert records
    for line in records:
        assert TEXT_LINE.match(line), line
    assert any(" request " in l and "method=no.such.method" in l and "error_code=-32601" in l
               and re.search(r" duration_us=\d+", l) for l in records), records
    assert any(l.endswith("[car warn] authentication is disabled (--no-auth)") for l in records)


def test_sighup_keeps_the_daemon_and_an_open_websocket_connection():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        p = Peer(d)
        assert "result" in p.call("host.agents")
        d.proc.send_signal(signal.SIGHUP)
        read_stderr_until(d, lambda l: "SIGHUP: logs flushed (no --log-file to reopen)" in l)
        d.proc.send_signal(signal.SIGHUP)
        read_stderr_until(d, lambda l: "SIGHUP:" in l)
        assert d.proc.poll() is None
        # The same connection still works: no 1001 close, no reconnect.
        assert "result" in p.call("host.agents")
        code, lines = stderr_after_exit(d)
    assert code == 0
    assert not any("shutting down (SIGHUP" in l for l in lines)


def test_log_file_is_appended_and_sighup_reopens_it_after_a_rename():
    folder = tempfile.mkdtemp(prefix="car-it-log-")
    path = os.path.join(folder, "car.log")
    rotated = path + ".1"
    with open(path, "w") as f:
        f.write("kept from before\n")
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--log-file", path,
                "--log-format", "json", "--log-level", "debug") as d:
        p = Peer(d)
        assert "result" in p.call("host.agents")
        wait_for_file_line(path, '"method":"host.agents"')
        os.rename(path, rotated)  # what logrotate does before it signals
        d.proc.send_signal(signal.SIGHUP)
        fresh = wait_for_file_line(path, "SIGHUP: reopened the log file")
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert "kept from before" not in fresh
        assert "result" in p.call("server.handshake", {"protocol_version": 2})
        wait_for_file_line(path, '"method":"server.handshake"')
        code, stderr_lines = stderr_after_exit(d)
    assert code == 0
    with open(rotated, encoding="utf-8") as f:
        old = f.read().splitlines()
    with open(path, encoding="utf-8") as f:
        new = f.read().splitlines()
    assert old[0] == "kept from before"  # appended, not truncated
    old_records = json_records(old[1:])
    new_records = json_records(new)
    assert request_lines(old_records, "host.agents")
    assert not request_lines(old_records, "server.handshake")
    assert request_lines(new_records, "server.handshake")
    assert new_records[0]["message"].startswith("SIGHUP: reopened the log file")
    assert any(r["message"] == "shutting down (SIGTERM)" for r in new_records)
    # With --log-file stderr keeps only the announcements (no error was logged).
    assert stderr_lines and all(ANNOUNCEMENT.match(l) for l in stderr_lines), stderr_lines


def test_a_log_file_that_cannot_be_opened_is_a_runtime_failure():
    missing = os.path.join(tempfile.mkdtemp(prefix="car-it-log-"), "no-such-dir", "car.log")
    code, err = run_to_exit("--no-auth", "--listen", "127.0.0.1:0", "--log-file", missing)
    assert code == 1, err
    assert missing in err and "--log-file" in err
