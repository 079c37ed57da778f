"""Debian's headless Chromium, driven over the DevTools protocol, for the browser tests.

`Chromium` starts `/usr/bin/chromium --headless` on a free loopback debugging port, opens
a websocket to its one page and offers what the tests need: navigate, evaluate JavaScript,
poll a JavaScript condition with a deadline, set the viewport, take PNG screenshots, and
collect every console error (console.error/assert calls, uncaught exceptions, and browser
log entries at level error: failed loads, CSP violations).

`PngImage` decodes the PNG screenshots (zlib and the five PNG row filters) so a test can
check that one is not blank.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support.fleet import descendants
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]
CALL_TIMEOUT = 30.0


class BrowserError(RuntimeError):
    """A DevTools call that failed, or JavaScript that threw."""


@dataclass(frozen=True, slots=True)
class ConsoleError:
    source: str  # "console", "exception", or a log entry's source ("network", "security", ...)
    text: str


class Chromium:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, procs: ProcessGroup, workdir: Path) -> None:
        self._procs = procs
        self._workdir = workdir
        self._ids = itertools.count(1)
        self._errors: list[ConsoleError] = []
        self._events: list[dict[str, Any]] = []
        self._process: ServerProcess | None = None
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Chromium:
        port = free_port()
        profile = self._workdir / f"chromium-profile-{port}"
        profile.mkdir(parents=True)
        argv = [CHROMIUM, *FLAGS, f"--remote-debugging-address={LOOPBACK}",
                f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                "about:blank"]  # fmt: skip
        self._process = self._procs.spawn("chromium", argv, port)
        endpoint = f"http://{LOOPBACK}:{port}"
        pages: list[dict[str, Any]] = []

        def page_listed() -> bool:
            if not self._process or not self._process.alive():
                tail = self._process.log_tail() if self._process else ""
                raise RuntimeError(f"chromium exited early:\n{tail}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                listed = httpx.get(f"{endpoint}/json/list", timeout=1).json()
                pages[:] = [t for t in listed if t.get("type") == "page"]
            return bool(pages)

        wait_until(page_listed, 30, "chromium's DevTools page target")
        url = pages[0]["webSocketDebuggerUrl"]
        self._ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self.call("Browser.close", timeout=5)
            with contextlib.suppress(Exception):
                self._stack.close()
            self._ws = None
        if process is None or process.popen is None:
            return
        try:
            process.popen.wait(10)
        except Exception:
            # Its helpers (zygote, renderer) are ours too: end each by PID.
            for pid in sorted(descendants(process.pid) - {process.pid}):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()

    # -- the protocol ------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = CALL_TIMEOUT) -> dict[str, Any]:  # fmt: skip
        assert self._ws is not None, "chromium is not running"
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"{method}: no answer within {timeout:g}s")
            message = json.loads(self._ws.recv(timeout=remaining))
            if message.get("id") != call_id:
                self._note(message)
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def _pump(self) -> None:
        """Takes the events that arrived since the last call."""
        assert self._ws is not None
        while True:
            try:
                self._note(json.loads(self._ws.recv(timeout=0)))
            except TimeoutError:
                return

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method is None:
            return
        self._events.append(message)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self._errors.append(ConsoleError("console", f"console.{params['type']}: {text}"))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", "")
            text = f"{details.get('text', '')} {thrown}".strip()
            self._errors.append(ConsoleError("exception", text))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            text = f"{entry['text']} {entry.get('url', '')}".strip()
            self._errors.append(ConsoleError(entry["source"], text))

    def take_console_errors(self) -> list[ConsoleError]:
        """Every console error since the last call."""
        self._pump()
        taken, self._errors = self._errors, []
        return taken

    # -- the page ----------------------------------------------------------------------------

    def open(self, url: str, timeout: float = 20.0) -> None:
        self._events.clear()
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout, f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", details.get("text"))
            raise BrowserError(f"{expression[:80]!r} threw: {thrown}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Polls `expression` until it is truthy; returns its value."""
        seen: list[Any] = []

        def holds() -> bool:
            seen[:] = [self.evaluate(expression)]
            return bool(seen[0])

        wait_until(holds, timeout, what)
        return seen[0]

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def screenshot(self, path: Path, *, full_page: bool = False) -> bytes:
        """A PNG of the page as shown (or all of it), written to `path`."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
            params.update(captureBeyondViewport=True, clip=clip)
        png = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png


# -- PNG ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PngImage:
    """A decoded 8-bit RGB or RGBA PNG: `rows` of raw pixel bytes."""

    width: int
    height: int
    channels: int
    rows: tuple[bytes, ...]

    @classmethod
    def decode(cls, png: bytes) -> PngImage:
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("not a PNG")
        chunks = dict[bytes, list[bytes]]()
        offset = 8
        while offset < len(png):
            (length,) = struct.unpack(">I", png[offset : offset + 4])
            kind = png[offset + 4 : offset + 8]
            chunks.setdefault(kind, []).append(png[offset + 8 : offset + 8 + length])
            offset += 12 + length
        width, height, depth, colour, _, _, interlace = struct.unpack(
            ">IIBBBBB", chunks[b"IHDR"][0]
        )
        if depth != 8 or colour not in (2, 6) or interlace:
            raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
        channels = 3 if colour == 2 else 4
        raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
        stride = width * channels
        if len(raw) != height * (stride + 1):
            raise ValueError(f"PNG data is {len(raw)} bytes, not {height * (stride + 1)}")
        rows: list[bytes] = []
        previous = bytes(stride)
        for y in range(height):
            start = y * (stride + 1)
            previous = _unfilter(
                raw[start], raw[start + 1 : start + 1 + stride], previous, channels
            )
            rows.append(previous)
        return cls(width, height, channels, tuple(rows))

    def pixels(self) -> Iterator[bytes]:
        c = self.channels
        for row in self.rows:
            for x in range(0, len(row), c):
                yield row[x : x + 3]

    def colours(self) -> Counter[bytes]:
        return Counter(self.pixels())


def _unfilter(kind: int, line: bytes, up: bytes, bpp: int) -> bytes:
    """PNG's row filters (PNG spec, section 9) undone."""
    if kind == 0:
        return line
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(line, up, strict=True))
    out = bytearray(line)
    n = len(out)
    if kind == 1:
        for i in range(bpp, n):
            out[i] = (out[i] + out[i - bpp]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + ((left + up[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = out[i - bpp] if i >= bpp else 0
            b = up[i]
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out[i] = (out[i] + pred) & 0xFF
    else:
        raise ValueError(f"unknown PNG filter {kind}")
    return bytes(out)


def assert_not_blank(png: bytes, min_colours: int = 8, max_dominant: float = 0.97) -> PngImage:
    """The image has at least `min_colours` colours and no colour covers more than
    `max_dominant` of it: something was drawn."""
    image = PngImage.decode(png)
    colours = image.colours()
    total = image.width * image.height
    dominant = colours.most_common(1)[0][1] / total
    assert len(colours) >= min_colours, f"only {len(colours)} colours: a blank page?"
    assert dominant <= max_dominant, f"one colour covers {dominant:.1%} of the image"
    return image
