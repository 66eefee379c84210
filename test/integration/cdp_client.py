"""A small Chrome DevTools Protocol client for the browser tests: starts Debian's headless
chromium on a private profile, attaches to one page target, and offers blocking calls
(navigate, evaluate, wait_for, click, screenshot) over python3-websockets (10.x: asyncio only,
so the socket lives on a private event loop in a thread and every call waits with a bound).

Only what test_viewer.py needs; the protocol itself is documented at
https://chromedevtools.github.io/devtools-protocol/."""

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import websockets

CHROMIUM = os.environ.get("CAR_CHROMIUM", "/usr/bin/chromium")
# CDP messages carry whole screenshots (base64 PNG, a few MiB) and DOM dumps.
MAX_MESSAGE = 64 * 1024 * 1024
DEVTOOLS_LINE = re.compile(r"DevTools listening on (ws://\S+)")


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless chromium process and one CDP session on its first page. Use as a context
    manager: the process is stopped on exit (it takes its helper processes with it) and its
    profile directory removed."""

    def __init__(self, width=1400, height=900, timeout=30.0):
        self.profile = tempfile.mkdtemp(prefix="car-viewer-chromium-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        args = [CHROMIUM, "--headless=new", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # chromium refuses to start its sandbox as root
        # stderr goes to a file: chromium writes a lot there (dbus noise) and nobody must have to
        # keep a pipe drained for it not to stall.
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ids = itertools.count(1)
        self._pending = {}     # id -> asyncio future, on the loop thread
        self._events = []      # (method, params) of every CDP event, in arrival order
        self._events_lock = threading.Lock()
        self._ws = None
        self.session = None
        try:
            browser_url = self._devtools_url(timeout)
            self._run(self._connect(browser_url), timeout)
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget",
                                     {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(domain + ".enable", session=True)
        except BaseException:
            self.close()
            raise

    # ---- plumbing

    def _devtools_url(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                m = DEVTOOLS_LINE.search(f.read().decode("utf-8", "replace"))
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise CdpError("chromium did not print its DevTools address; log:\n" + self.log_tail())

    def log_tail(self, n=30):
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])

    def _run(self, coroutine, timeout):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _connect(self, url):
        self._ws = await websockets.connect(url, max_size=MAX_MESSAGE, ping_interval=None)
        self._loop.create_task(self._reader())

    async def _reader(self):
        try:
            async for text in self._ws:
                msg = json.loads(text)
                if "id" in msg:
                    future = self._pending.pop(msg["id"], None)
                    if future is not None and not future.done():
                        future.set_result(msg)
                else:
                    with self._events_lock:
                        self._events.append((msg.get("method"), msg.get("params", {})))
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("DevTools connection closed"))
            self._pending.clear()

    async def _send(self, msg):
        future = self._loop.create_future()
        self._pending[msg["id"]] = future
        await self._ws.send(json.dumps(msg))
        return await future

    def call(self, method, params=None, session=False, timeout=30.0):
        """One CDP command; returns its result or raises CdpError with its error."""
        msg = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        reply = self._run(self._send(msg), timeout)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self, method):
        with self._events_lock:
            return [p for m, p in self._events if m == method]

    # ---- what the tests use

    def navigate(self, url, timeout=30.0):
        """Opens `url` in the page and waits for its load event."""
        with self._events_lock:
            seen = len(self._events)
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._events_lock:
                fresh = self._events[seen:]
            if any(m == "Page.loadEventFired" for m, _ in fresh):
                return
            time.sleep(0.05)
        raise CdpError(f"{url} did not finish loading within {timeout} s")

    def evaluate(self, expression, timeout=30.0):
        """The value of a JavaScript expression in the page (JSON-serialisable; promises are
        awaited). A thrown exception becomes CdpError."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True,
                           timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"page threw: {text}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=15.0, what=None):
        """Polls `expression` until it is truthy; returns that value, or raises with `what`."""
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or expression} "
                             f"(last value {value!r})")

    def click(self, selector):
        """A real mouse click (press and release) at the centre of the element `selector` names,
        after scrolling it into view; fails when no such element is visible."""
        box = self.evaluate(
            "(() => { const e = document.querySelector(%s); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()"
            % json.dumps(selector))
        if not box:
            raise AssertionError(f"nothing visible to click at {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1},
                      session=True)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def console_errors(self):
        """Exceptions the page threw, console.error lines and browser log errors (a Content-
        Security-Policy violation is one), as text."""
        out = [e["entry"].get("text", "") for e in self.events("Log.entryAdded")
               if e["entry"].get("level") == "error"]
        out += [p.get("exceptionDetails", {}).get("exception", {}).get("description", "")
               for p in self.events("Runtime.exceptionThrown")]
        for p in self.events("Runtime.consoleAPICalled"):
            if p.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        return out

    def close(self):
        if self._ws is not None:
            try:
                self._run(self._ws.close(), 5)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        # The browser process ends its own renderer and helper processes when it exits.
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
