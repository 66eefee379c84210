"""Issue 12's acceptance test: a client written to upstream CAR's shapes (upstream_client.py)
against car-daemon started with no token flags, so that it finds the minted tokens where stock
CAR clients look for them ($XDG_RUNTIME_DIR/ai.parslee.car)."""

import os
import subprocess
import sys
import tempfile

from harness import Daemon

HERE = os.path.dirname(os.path.abspath(__file__))


def run_client(url, env):
    return subprocess.run([sys.executable, os.path.join(HERE, "upstream_client.py"), url],
                          env=env, capture_output=True, text=True, timeout=150)


def test_upstream_shaped_client_against_a_daemon_with_no_token_flags():
    home = tempfile.mkdtemp(prefix="car-upstream-home-")
    runtime = tempfile.mkdtemp(prefix="car-upstream-run-")
    os.chmod(runtime, 0o700)
    env = dict(os.environ, HOME=home, XDG_RUNTIME_DIR=runtime)
    for var in ("CAR_AUTH_TOKEN", "CAR_NO_AUTH", "CAR_NO_APPROVALS", "CAR_TOOL_TIMEOUT"):
        env.pop(var, None)
    with Daemon("--listen", "127.0.0.1:0", env=env) as d:
        done = run_client(d.ws_url(), env)
        assert done.returncode == 0, done.stdout + done.stderr + "".join(d.stderr_lines)
        assert "every step behaved" in done.stdout


def test_upstream_client_fails_when_it_cannot_find_the_token():
    # The client must be able to fail: with the daemon's tokens elsewhere it stops at once.
    home = tempfile.mkdtemp(prefix="car-upstream-home-")
    elsewhere = tempfile.mkdtemp(prefix="car-upstream-run-")
    empty = tempfile.mkdtemp(prefix="car-upstream-empty-")
    env = dict(os.environ, HOME=home, XDG_RUNTIME_DIR=elsewhere)
    with Daemon("--listen", "127.0.0.1:0", env=env) as d:
        done = run_client(d.ws_url(), dict(env, XDG_RUNTIME_DIR=empty))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "FAILED" in done.stderr
