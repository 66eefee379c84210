"""car-daemon as an operator runs it (PROTOCOL.md §9): a stderr nobody reads, --threads, token flags
and the minted token file."""

import os
import signal
import tempfile
import time

from harness import Daemon
from peer import Peer
from rawws import RawWs


def test_a_stderr_nobody_reads_does_not_freeze_the_daemon():
    # Each binary frame logs one info line; 3000 of them are ~250 KB of log, far beyond a 64 KiB
    # stderr pipe this test never reads after `listening`. Requests must still be answered and
    # SIGTERM must still end the daemon.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        noisy = RawWs(RawWs.url_address(d.ws_url()), timeout=10)
        for _ in range(3000):
            noisy.send_frame(0x2, b"x" * 16)
        p = Peer(d)
        r = p.call("server.handshake", {"protocol_version": 2})
        assert r["result"]["protocol_version"] == 2
        noisy.send_text('{"jsonrpc":"2.0","id":7,"method":"host.agents"}')
        deadline = time.time() + 10
        while time.time() < deadline:
            m = noisy.recv_text()
            if '"id":7' in m:
                break
        else:
            raise AssertionError("no reply on the noisy connection")
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(timeout=10) == 0


def task_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_threads_sizes_the_pool():
    counts = {}
    for n in (2, 6):
        with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--threads", str(n)) as d:
            p = Peer(d)
            # runs.start writes through the pool, which starts all its threads on first use.
            assert p.call("runs.start", {"intent": "t", "agent_id": "a"})["result"]["run_id"]
            counts[n] = task_count(d.proc.pid)
    assert counts[6] - counts[2] == 4, counts


def test_token_flag_is_trimmed():
    with Daemon("--token", "  tok-1\t", "--listen", "127.0.0.1:0") as d:
        p = Peer(d)
        assert p.call("session.auth", {"token": "tok-1"})["result"]["ok"] is True
        q = Peer(d)
        assert q.call("session.auth", {"token": "  tok-1\t"})["error"]["code"] == -32603


def test_token_files_left_by_a_killed_daemon_are_replaced_at_the_next_launch():
    # Was: an empty <state-dir>/auth-token is replaced by a minted token. Revision 2 mints at every
    # launch, so what a crash leaves behind — the old tokens, or an emptied file — never counts.
    runtime = tempfile.mkdtemp(prefix="car-it-run-")
    with Daemon("--listen", "127.0.0.1:0", runtime_dir=runtime) as first:
        old_token, old_host = first.token(), first.host_token()
        first.proc.kill()  # SIGKILL: no graceful shutdown, so the files stay
        first.wait()
    path = os.path.join(runtime, "ai.parslee.car", "auth-token")
    assert os.path.exists(path) and os.path.exists(os.path.join(runtime, "ai.parslee.car", "host-token"))
    with open(path, "w") as f:
        f.write("  \n")
    os.chmod(path, 0o644)
    with Daemon("--listen", "127.0.0.1:0", runtime_dir=runtime) as d:
        assert d.token_file() == path
        token = d.token()
        assert len(token) == 43 and token != old_token and d.host_token() != old_host
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert Peer(d).call("session.auth", {"token": token})["result"]["ok"] is True
        assert Peer(d).call("session.auth", {"token": old_token})["error"]["code"] == -32603
        assert Peer(d).call("session.auth", {"host_token": old_host})["error"]["code"] == -32603
