"""car-daemon's tokens and environment (PROTOCOL.md §9, revision 2; acceptance case 49): tokens
minted at each launch into the token directory, the directory's lock, removal at a graceful
shutdown, the CAR_* variables and the new flags. Every daemon here mints into a temporary
directory (the harness gives each one its own XDG_RUNTIME_DIR), never into the real home."""

import os
import re
import signal
import stat
import tempfile

from harness import Daemon, request, run_to_exit
from peer import Peer

BASE64URL_43 = re.compile(r"^[A-Za-z0-9_-]{43}$")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_49_minted_tokens_host_role_removed_at_sigterm_lock_and_fresh_restart():
    token_dir = os.path.join(tempfile.mkdtemp(prefix="car-it-tok-"), "nested", "tokens")
    with Daemon("--token-dir", token_dir, "--listen", "127.0.0.1:0") as d:
        auth_file, host_file = d.token_file(), d.host_token_file()
        assert auth_file == os.path.join(token_dir, "auth-token")
        assert host_file == os.path.join(token_dir, "host-token")
        token, host = d.token(), d.host_token()
        assert BASE64URL_43.match(token) and BASE64URL_43.match(host) and token != host
        assert mode(auth_file) == 0o600 and mode(host_file) == 0o600
        assert mode(token_dir) == 0o700 and mode(os.path.dirname(token_dir)) == 0o700
        assert Peer(d).call("session.auth", {"token": token})["result"]["ok"] is True
        assert Peer(d).call("session.auth", {"host_token": host})["result"]["role"] == "host"
        assert Peer(d).call("session.auth", {"token": host})["error"]["code"] == -32603
        # A second daemon on the same token directory is refused while the first runs.
        code, err = run_to_exit("--token-dir", token_dir, "--listen", "127.0.0.1:0")
        assert code == 1, err
        assert f"is in use by another daemon (pid {d.proc.pid}" in err, err
        assert "--token-dir" in err
        # ...and the refusal touched nothing of the first daemon's.
        assert d.token() == token and d.host_token() == host
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait() == 0
    assert not os.path.exists(auth_file) and not os.path.exists(host_file)
    assert not os.path.exists(os.path.join(token_dir, "daemon.lock"))
    # A restart mints different tokens (and the directory is free again).
    with Daemon("--token-dir", token_dir, "--listen", "127.0.0.1:0") as d:
        assert d.token() != token and d.host_token() != host
        assert Peer(d).call("session.auth", {"token": token})["error"]["code"] == -32603


def test_the_default_token_dir_is_xdg_runtime_dir_then_home_config():
    runtime = tempfile.mkdtemp(prefix="car-it-run-")
    with Daemon("--listen", "127.0.0.1:0", runtime_dir=runtime) as d:
        assert d.token_file() == os.path.join(runtime, "ai.parslee.car", "auth-token")
        assert d.host_token_file() == os.path.join(runtime, "ai.parslee.car", "host-token")
        assert mode(os.path.join(runtime, "ai.parslee.car")) == 0o700
        assert Peer(d).call("session.auth", {"token": d.token()})["result"]["ok"] is True
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait() == 0
        assert os.listdir(os.path.join(runtime, "ai.parslee.car")) == []
    # No XDG_RUNTIME_DIR (a fresh machine, a root shell): ~/.config/ai.parslee.car, created 0700.
    home = tempfile.mkdtemp(prefix="car-it-home-")
    with Daemon("--listen", "127.0.0.1:0", env={"XDG_RUNTIME_DIR": None, "HOME": home}) as d:
        assert d.token_file() == os.path.join(home, ".config", "ai.parslee.car", "auth-token")
        assert mode(os.path.join(home, ".config")) == 0o700
        assert mode(os.path.join(home, ".config", "ai.parslee.car")) == 0o700
        assert Peer(d).call("session.auth", {"host_token": d.host_token()})["result"]["role"] == "host"
    # A relative XDG_RUNTIME_DIR is ignored, as the XDG base-directory spec says.
    home = tempfile.mkdtemp(prefix="car-it-home-")
    with Daemon("--listen", "127.0.0.1:0", env={"XDG_RUNTIME_DIR": "relative/run", "HOME": home}) as d:
        assert d.token_file() == os.path.join(home, ".config", "ai.parslee.car", "auth-token")


def test_second_daemon_on_the_default_dir_is_refused_unless_given_its_token_or_its_own_dir():
    runtime = tempfile.mkdtemp(prefix="car-it-run-")
    with Daemon("--listen", "127.0.0.1:0", runtime_dir=runtime) as first:
        code, err = run_to_exit("--listen", "127.0.0.1:0", runtime_dir=runtime)
        assert code == 1 and f"(pid {first.proc.pid}," in err, err
        # A daemon given its token still mints the host token, so the lock applies to it too...
        code, err = run_to_exit("--token", "mine", "--listen", "127.0.0.1:0", runtime_dir=runtime)
        assert code == 1 and "in use by another daemon" in err and "--no-host-token" in err, err
        # ...and one given both tokens (or its token and --no-host-token) mints nothing, no lock.
        with Daemon("--token", "mine", "--host-token", "hers", "--listen", "127.0.0.1:0",
                    runtime_dir=runtime) as second:
            assert second.token_file() is None and second.host_token_file() is None
            assert Peer(second).call("session.auth", {"token": "mine"})["result"]["ok"] is True
        with Daemon("--token", "mine", "--no-host-token", "--listen", "127.0.0.1:0",
                    runtime_dir=runtime) as second:
            assert second.token_file() is None and second.host_token_file() is None
        with Daemon("--no-auth", "--listen", "127.0.0.1:0", runtime_dir=runtime) as third:
            assert third.token_file() is None and third.host_token_file() is None
        other = tempfile.mkdtemp(prefix="car-it-tok-")
        with Daemon("--token-dir", other, "--listen", "127.0.0.1:0", runtime_dir=runtime) as fourth:
            assert fourth.token_file() == os.path.join(other, "auth-token")
            assert fourth.token() != first.token()
        # A host token flag alone still mints the daemon token, so the lock still applies.
        code, err = run_to_exit("--host-token", "h", "--listen", "127.0.0.1:0", runtime_dir=runtime)
        assert code == 1 and "in use by another daemon" in err, err
        assert os.path.exists(first.token_file()) and os.path.exists(first.host_token_file())


def test_host_token_flags_replace_the_minted_host_token():
    with Daemon("--host-token", "  h1 ", "--listen", "127.0.0.1:0") as d:
        assert d.token_file() is not None and d.host_token_file() is None
        assert not os.path.exists(os.path.join(os.path.dirname(d.token_file()), "host-token"))
        assert Peer(d).call("session.auth", {"host_token": "h1"})["result"]["role"] == "host"
    host_file = os.path.join(tempfile.mkdtemp(prefix="car-it-"), "h")
    with open(host_file, "w") as f:
        f.write("h2\n")
    with Daemon("--host-token-file", host_file, "--listen", "127.0.0.1:0") as d:
        assert d.host_token_file() is None
        assert Peer(d).call("session.auth", {"host_token": "h2"})["result"]["role"] == "host"
    with Daemon("--no-host-token", "--listen", "127.0.0.1:0") as d:
        assert d.host_token_file() is None
        token_dir = os.path.dirname(d.token_file())
        assert sorted(os.listdir(token_dir)) == ["auth-token", "daemon.lock"]
        # No host token at all: every host_token is a mismatch.
        assert Peer(d).call("session.auth", {"host_token": "anything"})["error"]["code"] == -32603
        assert Peer(d).call("session.auth", {"token": d.token()})["result"]["ok"] is True
    code, err = run_to_exit("--no-host-token", "--host-token", "h")
    assert code == 2 and "--no-host-token" in err, err


def test_token_dir_that_cannot_be_used_is_a_runtime_failure():
    plain = os.path.join(tempfile.mkdtemp(prefix="car-it-"), "file")
    with open(plain, "w") as f:
        f.write("x")
    code, err = run_to_exit("--token-dir", plain, "--listen", "127.0.0.1:0")
    assert code == 1 and "is not a directory" in err, err
    code, err = run_to_exit("--token-dir", os.path.join(plain, "sub"), "--listen", "127.0.0.1:0")
    assert code == 1 and "cannot create token directory" in err, err
    # An empty value is a bad command line, not "the default directory".
    code, err = run_to_exit("--token-dir", "", "--listen", "127.0.0.1:0")
    assert code == 2 and "--token-dir" in err, err


def test_minted_files_are_removed_when_start_up_fails():
    # Cannot bind: exit 1, and the tokens of a daemon that never served are not left behind.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as busy:
        port = busy.ws_url().rsplit(":", 1)[1]
        token_dir = tempfile.mkdtemp(prefix="car-it-tok-")
        code, err = run_to_exit("--token-dir", token_dir, "--listen", f"127.0.0.1:{port}")
        assert code == 1, err
        assert "auth token file: " in err
        assert os.listdir(token_dir) == []


def test_auth_token_alias_and_environment_token():
    with Daemon("--auth-token", "alias-tok", "--listen", "127.0.0.1:0") as d:
        assert d.token_file() is None
        assert Peer(d).call("session.auth", {"token": "alias-tok"})["result"]["ok"] is True
    code, err = run_to_exit("--auth-token", "a", "--no-auth")
    assert code == 2 and "only one" in err, err
    # CAR_AUTH_TOKEN is --token: trimmed, only the host token minted.
    with Daemon("--listen", "127.0.0.1:0", env={"CAR_AUTH_TOKEN": " env-tok\n"}) as d:
        assert d.token_file() is None and d.host_token_file() is not None
        assert sorted(os.listdir(os.path.dirname(d.host_token_file()))) == ["daemon.lock", "host-token"]
        assert Peer(d).call("session.auth", {"token": "env-tok"})["result"]["ok"] is True
    # The flag wins over the variable.
    with Daemon("--token", "flag-tok", "--listen", "127.0.0.1:0", env={"CAR_AUTH_TOKEN": "env-tok"}) as d:
        assert Peer(d).call("session.auth", {"token": "flag-tok"})["result"]["ok"] is True
        assert Peer(d).call("session.auth", {"token": "env-tok"})["error"]["code"] == -32603
    code, err = run_to_exit("--listen", "127.0.0.1:0", env={"CAR_AUTH_TOKEN": "   "})
    assert code == 1 and "CAR_AUTH_TOKEN: the token is empty" in err, err


def test_car_no_auth_and_its_flags():
    with Daemon("--listen", "127.0.0.1:0", env={"CAR_NO_AUTH": "1"}) as d:
        assert d.token_file() is None
        assert Peer(d).call("session.auth", {"token": "x"})["result"] == {"ok": True, "auth_enabled": False}
    with Daemon("--token", "t", "--listen", "127.0.0.1:0", env={"CAR_NO_AUTH": "1"}) as d:
        assert Peer(d).call("session.auth", {"token": "t"})["result"]["auth_enabled"] is True
        assert Peer(d).call("host.agents")["error"]["code"] == -32001
    with Daemon("--listen", "127.0.0.1:0", env={"CAR_NO_AUTH": "0"}) as d:
        assert d.token_file() is not None
    code, err = run_to_exit(env={"CAR_NO_AUTH": "yes"})
    assert code == 2 and "CAR_NO_AUTH expects 1 or 0" in err, err
    code, err = run_to_exit(env={"CAR_NO_AUTH": "1", "CAR_AUTH_TOKEN": "t"})
    assert code == 2 and "contradict" in err, err


def approval_requested(peer, method):
    """Sends `method` and reports whether it waits at the gate (approval.requested) — otherwise
    returns its immediate answer."""
    peer.send(request(method, {}, 900))
    return peer.wait(lambda m: m.get("id") == 900 or
                     (m.get("method") == "host.event" and m["params"]["kind"] == "approval.requested"))


def test_car_no_approvals_and_its_flags():
    # messages.send is gated by default (§5.1); car-daemon does not implement it, so with the gate
    # off it is -32601 at once.
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        p = Peer(d)
        p.call("host.subscribe")
        assert approval_requested(p, "messages.send").get("method") == "host.event"
    with Daemon("--no-auth", "--listen", "127.0.0.1:0", env={"CAR_NO_APPROVALS": "1"}) as d:
        p = Peer(d)
        p.call("host.subscribe")
        assert approval_requested(p, "messages.send")["error"]["code"] == -32601
    # --approval-method is the flag that wins over CAR_NO_APPROVALS: the gate stays on.
    with Daemon("--no-auth", "--approval-method", "messages.send", "--listen", "127.0.0.1:0",
                env={"CAR_NO_APPROVALS": "1"}) as d:
        p = Peer(d)
        p.call("host.subscribe")
        assert approval_requested(p, "messages.send").get("method") == "host.event"
    code, err = run_to_exit(env={"CAR_NO_APPROVALS": "on"})
    assert code == 2 and "CAR_NO_APPROVALS" in err, err


def advertised_tool_timeout(d):
    invoker, tool_host = Peer(d), Peer(d)
    assert tool_host.call("tools.register", {"tools": ["echo"]})["result"]
    invoker.send(request("tools.invoke", {"tool": "echo"}, 100))
    ex = tool_host.wait(lambda m: m.get("method") == "tools.execute")
    tool_host.send({"jsonrpc": "2.0", "id": ex["id"], "result": {}})
    assert invoker.wait(lambda m: m.get("id") == 100)["result"] == {}
    return ex["params"]["timeout_ms"]


def test_car_tool_timeout_and_its_flag():
    # tools.execute advertises the effective deadline: the tool timeout when the call gives none.
    common = ("--no-auth", "--no-approvals", "--tool-grace-ms", "0", "--listen", "127.0.0.1:0")
    with Daemon(*common, env={"CAR_TOOL_TIMEOUT": "7"}) as d:
        assert advertised_tool_timeout(d) == 7000
    with Daemon(*common, "--tool-timeout", "3", env={"CAR_TOOL_TIMEOUT": "7"}) as d:
        assert advertised_tool_timeout(d) == 3000
    with Daemon(*common) as d:
        assert advertised_tool_timeout(d) == 300000
    code, err = run_to_exit(env={"CAR_TOOL_TIMEOUT": "0"})
    assert code == 2 and "CAR_TOOL_TIMEOUT" in err, err
    code, err = run_to_exit(env={"CAR_TOOL_TIMEOUT": "soon"})
    assert code == 2 and "'soon'" in err, err


def test_require_handshake_flag():
    with Daemon("--no-auth", "--require-handshake", "--listen", "127.0.0.1:0") as d:
        p = Peer(d)
        assert p.call("host.subscribe")["error"]["code"] == -32005
        assert p.call("server.handshake", {"protocol_version": 2})["result"]["protocol_version"] == 2
        assert p.call("host.subscribe")["result"]["subscribed"] is True
    with Daemon("--no-auth", "--listen", "127.0.0.1:0") as d:
        assert Peer(d).call("host.subscribe")["result"]["subscribed"] is True


def test_new_flags_are_accepted_and_listed_in_help():
    with Daemon("--no-auth", "--agent-tokens-only", "--tool-grace-ms", "250", "--listen", "127.0.0.1:0") as d:
        assert "result" in Peer(d).call("host.agents")
    code, err = run_to_exit("--tool-grace-ms", "-5")
    assert code == 2 and "--tool-grace-ms" in err, err
    import subprocess
    from harness import DAEMON
    out = subprocess.run([DAEMON, "--help"], capture_output=True, timeout=10).stdout.decode()
    for flag in ("--auth-token", "--token-dir", "--no-host-token", "--require-handshake",
                 "--agent-tokens-only", "--tool-grace-ms", "CAR_NO_APPROVALS", "CAR_TOOL_TIMEOUT"):
        assert flag in out, flag


def test_a_given_daemon_token_gets_a_minted_host_token_beside_it():
    # PROTOCOL.md §9: the host token is minted unless a host-token flag settles it, also when the
    # daemon token was given: a host shell reads host-token from the well-known directory.
    token_dir = tempfile.mkdtemp(prefix="car-it-tok-")
    with Daemon("--token", "given", "--token-dir", token_dir, "--listen", "127.0.0.1:0") as d:
        assert d.token_file() is None
        host_file = d.host_token_file()
        assert host_file == os.path.join(token_dir, "host-token") and mode(host_file) == 0o600
        assert sorted(os.listdir(token_dir)) == ["daemon.lock", "host-token"]
        host = d.host_token()
        assert BASE64URL_43.match(host)
        assert Peer(d).call("session.auth", {"host_token": host})["result"]["role"] == "host"
        assert Peer(d).call("session.auth", {"token": "given"})["result"]["ok"] is True
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait() == 0
    assert os.listdir(token_dir) == []
