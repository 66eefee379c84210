"""What keeps car-daemon from being driven or corrupted by someone it did not mean to serve
(issue 13; PROTOCOL.md §1, §9): one daemon per state directory, only loopback browser pages when
authentication is off, and no unauthenticated listener beyond loopback unless asked for. Every
daemon listens on 127.0.0.1 and uses temporary state and token directories."""

import os
import signal
import tempfile

from harness import Daemon, run_to_exit
from rawws import RawWs


def test_a_second_daemon_on_the_same_state_directory_exits_1_naming_the_first():
    state = tempfile.mkdtemp(prefix="car-it-state-")
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", state_dir=state) as first:
        lock = os.path.join(state, "state.lock")
        assert open(lock).read().strip() == str(first.proc.pid)
        code, err = run_to_exit("--no-auth", "--listen", "127.0.0.1:0", state_dir=state)
        assert code == 1, err
        assert f"state directory {state} is in use by another daemon (pid {first.proc.pid}" in err, err
        assert "--state-dir" in err, err
        # The refused daemon took nothing from the first one: it still serves.
        ws = RawWs(RawWs.url_address(first.ws_url()))
        assert ws.status == 101
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait() == 0
    assert not os.path.exists(os.path.join(state, "state.lock"))
    # Once the first daemon is gone the directory is free again.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", state_dir=state) as again:
        assert open(os.path.join(state, "state.lock")).read().strip() == str(again.proc.pid)


def test_a_killed_daemon_leaves_no_lock_behind_that_blocks_the_next():
    state = tempfile.mkdtemp(prefix="car-it-state-")
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", state_dir=state) as first:
        first.proc.kill()
        first.proc.wait(timeout=10)
    # The file stays after SIGKILL, but the kernel dropped the flock with the process.
    assert os.path.exists(os.path.join(state, "state.lock"))
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", state_dir=state) as second:
        assert RawWs(RawWs.url_address(second.ws_url())).status == 101


def upgrade_status(address, origin):
    headers = ["Host: localhost", "Upgrade: websocket", "Connection: Upgrade",
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        headers.append(f"Origin: {origin}")
    return RawWs(address, headers=headers).status


def test_without_auth_only_loopback_origins_and_listed_ones_may_upgrade():
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        addr = RawWs.url_address(d.ws_url())
        assert upgrade_status(addr, "https://evil.example") == 403
        assert upgrade_status(addr, "null") == 403  # a sandboxed frame or a file:// page
        assert upgrade_status(addr, "http://localhost.evil.example") == 403
        assert upgrade_status(addr, "http://localhost:5173") == 101
        assert upgrade_status(addr, "http://127.0.0.1:9100") == 101
        assert upgrade_status(addr, "http://[::1]:8080") == 101
        assert upgrade_status(addr, None) == 101  # not a browser: nothing to check
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", "--allow-origin", "https://app.example") as d:
        addr = RawWs.url_address(d.ws_url())
        assert upgrade_status(addr, "https://app.example") == 101
        assert upgrade_status(addr, "http://localhost:5173") == 101
        assert upgrade_status(addr, "https://evil.example") == 403
    unix = os.path.join(tempfile.mkdtemp(prefix="car-it-sock-"), "d.sock")
    with Daemon("--no-auth", "--unix", unix) as d:
        assert upgrade_status(unix, "https://evil.example") == 403
        assert upgrade_status(unix, "http://localhost") == 101


def test_with_auth_any_origin_may_upgrade_and_the_token_is_the_gate():
    # Upstream's clients include browser-hosted shells on their own origins: with a token
    # required, a page that does not know it can open a socket but do nothing with it.
    with Daemon("--listen", "127.0.0.1:0") as d:
        addr = RawWs.url_address(d.ws_url())
        assert upgrade_status(addr, "https://evil.example") == 101


def test_no_auth_on_a_non_loopback_listener_exits_2_unless_meant():
    for args, env in ((["--no-auth", "--listen", "0.0.0.0:0"], None),
                      (["--no-auth", "--listen", "127.0.0.1:0", "--listen", "[::]:0"], None),
                      (["--listen", "0.0.0.0:0"], {"CAR_NO_AUTH": "1"})):
        code, err = run_to_exit(*args, env=env)
        assert code == 2, (args, code, err)
        assert "--allow-unauthenticated-remote" in err and "not loopback" in err, err
        assert "listening" not in err, err  # refused before anything was bound
    # Loopback and Unix listeners are fine without auth, and so is a remote one with auth (the
    # refused cases above prove the check; binding a non-loopback address here is not needed).
    unix = os.path.join(tempfile.mkdtemp(prefix="car-it-sock-"), "d.sock")
    # (No `localhost` listener here: a bare root may have no /etc/hosts to resolve it; the
    # check's acceptance of the name is a cli unit test.)
    with Daemon("--no-auth", "--listen", "[::1]:0", "--listen", "127.0.0.2:0", "--unix", unix) as d:
        assert len(d.listening) == 3
