"""A real headless Chromium for the tests, driven over the DevTools protocol (CDP) with ``websockets``.

:func:`open_page` loads a page, lets its scripts run and returns what the tests check: console
errors and uncaught exceptions, and the result of a JavaScript expression evaluated in the page.
Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); without it the tests fail with
a message saying so, never skip.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str:
    """The Chromium executable (``SSTAR_CHROMIUM``, else the first of :data:`BROWSERS` on ``PATH``).

    Fails the test if there is none.
    """
    explicit = os.environ.get("SSTAR_CHROMIUM")
    found = explicit or next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if not found:
        pytest.fail(
            "headless Chromium is required for the browser tests: install Debian's `chromium` package "
            "(apt-get install -y chromium) or set SSTAR_CHROMIUM to a Chrome/Chromium binary"
        )
    return found


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    value: Any = None  # the evaluated expression's value


class _Cdp:
    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=64 * 2**20, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
    return errors


def open_page(
    path: Path, expression: str, *, width: int = 1400, height: int = 1000, settle_s: float = 0.5
) -> PageResult:
    """Load ``path`` (a local HTML file) in headless Chromium, wait for its load event and ``settle_s``,
    evaluate ``expression`` (its value must be JSON-serialisable) and collect the page's errors."""
    binary = chromium_binary()
    profile = tempfile.mkdtemp(prefix="sstar-chromium-")
    proc = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline, port = time.monotonic() + 60, None
        while port is None:
            line = proc.stderr.readline()
            if not line and (proc.poll() is not None or time.monotonic() > deadline):
                pytest.fail(f"{binary} did not start its DevTools endpoint (exit {proc.poll()})")
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(match.group(1)) if match else None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.load(response) if t.get("type") == "page")
        cdp = _Cdp(page["webSocketDebuggerUrl"])
        try:
            for domain in ("Runtime", "Log", "Page"):
                cdp.call(f"{domain}.enable")
            cdp.call("Page.navigate", url=path.resolve().as_uri())
            cdp.wait_for("Page.loadEventFired", timeout=60)
            time.sleep(settle_s)
            result = cdp.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
            if "exceptionDetails" in result:
                raise AssertionError(f"evaluating the check failed: {result['exceptionDetails']}")
            # drain what arrived meanwhile
            cdp.call("Runtime.evaluate", expression="1")
            return PageResult(errors=_errors(cdp.events), value=result.get("result", {}).get("value"))
        finally:
            cdp.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
