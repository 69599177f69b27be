"""Headless Chromium driven over the DevTools protocol, for tests and benchmarks of HTML pages.

Debian's ``chromium`` is started with ``--remote-debugging-pipe``: protocol messages (JSON, each
ended by a NUL byte) go in on its fd 3 and come out on its fd 4, so no port, websocket or
third-party client is needed. The flags keep it off the network (which is closed here: without
them it tries to connect out) and in a fresh profile.

    with Browser() as browser:
        page = browser.open("file:///tmp/report.html")   # waits for the load event
        page.evaluate("document.title")
        page.errors                                       # console errors and uncaught exceptions
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]


def chromium_path() -> str | None:
    """The Chromium executable on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process; ``open`` gives a new tab."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise BrowserError("chromium is not installed (apt-get install -y chromium)")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="spex-chromium-")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        # bash puts our pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them (dash
        # cannot name fds above 9).
        command = ["bash", "-c", f'exec "$@" 3<&{to_child} 4>&{from_child}', "bash", self.executable, *FLAGS,
                   f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"]
        self._log = open(os.path.join(self._profile, "chromium.log"), "wb")
        self._process = subprocess.Popen(command, pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=self._log)
        os.close(to_child)
        os.close(from_child)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self._events: dict[str, list[dict]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except BrowserError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._write)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and wait for its result; BrowserError on a protocol error."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._replies[ident] = reply = queue.Queue(maxsize=1)
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._write, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"chromium has exited ({self._process.poll()}): {self.log()[-2000:]}") from None
        try:
            answer = reply.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise BrowserError(f"no answer to {method} in {timeout or self.timeout} s") from None
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def log(self) -> str:
        """What chromium has printed so far."""
        with open(self._log.name, "rb") as handle:
            return handle.read().decode(errors="replace")

    def open(self, url: str, width: int = 1280, height: int = 900) -> Page:
        """A new tab showing ``url``, after its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        page.navigate(url)
        return page

    def events(self, session: str) -> list[dict]:
        with self._lock:
            return list(self._events.get(session, []))

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                os.close(self._read)
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        waiting = self._replies.pop(message["id"], None)
                    if waiting is not None:
                        waiting.put(message)
                else:
                    with self._lock:
                        self._events.setdefault(message.get("sessionId", ""), []).append(message)


class Page:
    """A tab: evaluate JavaScript, read console errors, take screenshots."""

    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def navigate(self, url: str) -> float:
        """Load ``url``; returns the seconds until its load event."""
        seen = len(self._matching("Page.loadEventFired"))
        begin = time.perf_counter()
        self.send("Page.navigate", {"url": url})
        self.wait_for(lambda: len(self._matching("Page.loadEventFired")) > seen, what="the load event")
        return time.perf_counter() - begin

    def evaluate(self, expression: str, timeout: float | None = None):
        """The value of a JavaScript expression (promises are awaited); BrowserError if it throws."""
        result = self.send("Runtime.evaluate",
                           {"expression": expression, "returnByValue": True, "awaitPromise": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_for(self, condition, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.browser.timeout)
        while not condition():
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what}")
            time.sleep(0.01)

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (e.g. a failed fetch) so far."""
        out = []
        for event in self.browser.events(self.session):
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(arg.get("value", arg.get("description", "")))
                                                  for arg in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return out

    @property
    def requests(self) -> list[str]:
        """The URLs the page has requested so far."""
        return [event["params"]["request"]["url"] for event in self.browser.events(self.session)
                if event.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: str, full_page: bool = False) -> None:
        """Write a PNG of the viewport (or of the whole page)."""
        params: dict = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))

    def _matching(self, method: str) -> list[dict]:
        return [event for event in self.browser.events(self.session) if event.get("method") == method]
