"""The origin client: one keep-alive httpx.AsyncClient per worker, streaming replies.

Bodies are read raw (no content decoding), so stored and forwarded bytes match the
origin's Content-Encoding. Every failure to get a complete reply is an OriginError; the
caller decides between stale, 502 and 504.
"""

from __future__ import annotations

import http.cookiejar
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from proxy.metrics import ProxyMetrics
from proxy.telemetry import CounterChild

from .headers import HeaderList, lowercased

log = logging.getLogger("ringleader.httpcache.origin")

# One JSON line per second at most for origin failures, with a count of those skipped:
# an origin outage must not turn into a log flood on the hot path.
LOG_INTERVAL = 1.0


class OriginError(Exception):
    """No complete reply from the origin. ``kind`` is a bounded metric label."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"origin {kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _error(exc: httpx.HTTPError) -> OriginError:
    if isinstance(exc, httpx.TimeoutException):
        kind = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        kind = "connect"
    else:
        kind = "protocol"
    return OriginError(kind, str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class OriginSettings:
    url: str
    timeout: float  # `--origin-timeout`
    connect_timeout: float = 2.0
    max_connections: int = 256


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing, so httpx has no cookie to send on any request."""

    def __init__(self) -> None:
        super().__init__(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class OriginReply:
    """An origin response whose body has not been read yet: read it with
    ``read_up_to`` and ``rest``, and always ``close`` it."""

    __slots__ = (
        "_chunks",
        "_response",
        "_unread",
        "headers",
        "request_time",
        "response_time",
        "status",
    )

    def __init__(self, response: httpx.Response, request_time: float) -> None:
        self._response = response
        self._chunks = response.aiter_raw()
        self._unread = b""
        self.status = response.status_code
        # Names arrive in the origin's casing (nginx sends Cache-Control); every layer
        # above compares lowercase names.
        self.headers: HeaderList = lowercased(response.headers.raw)
        self.request_time = request_time
        self.response_time = time.time()

    async def read_up_to(self, limit: int) -> tuple[bytes, bool]:
        """Up to ``limit`` bytes of body: ``(body, True)`` when that is all of it,
        else ``(prefix, False)`` with the prefix already read, the rest in ``rest()``."""
        declared = self._response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return b"", False
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in self._chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    return b"".join(parts), False
        except httpx.HTTPError as exc:
            raise _error(exc) from None
        return b"".join(parts), True

    def unread(self, prefix: bytes) -> None:
        """Give back what read_up_to returned: rest() yields it first."""
        self._unread = prefix

    async def rest(self) -> AsyncIterator[bytes]:
        if self._unread:
            prefix, self._unread = self._unread, b""
            yield prefix
        try:
            async for chunk in self._chunks:
                yield chunk
        except httpx.HTTPError as exc:
            raise _error(exc) from None

    async def close(self) -> None:
        await self._response.aclose()


class OriginClient:
    def __init__(self, settings: OriginSettings, metrics: ProxyMetrics) -> None:
        # httpx logs every request at INFO: a log line per miss is too much for the hot path.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._base = httpx.URL(settings.url)
        self.scheme: bytes = self._base.scheme.encode()
        self.authority: bytes = self._base.netloc
        # `--origin http://host/app`: a client's /x is the origin's /app/x.
        self.prefix: bytes = self._base.raw_path.split(b"?")[0].rstrip(b"/")
        self._client = httpx.AsyncClient(
            # No jar: a Set-Cookie given to one user must never ride on another's request.
            cookies=_NoCookies(),
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            follow_redirects=False,
            trust_env=False,
        )
        self._duration = metrics.origin_duration.labels()
        self._codes: dict[str, CounterChild] = {}
        self._family = metrics.origin_requests
        self._last_log = 0.0
        self._suppressed = 0

    async def open(
        self,
        method: str,
        target: bytes,
        headers: HeaderList,
        content: AsyncIterator[bytes] | None = None,
    ) -> OriginReply:
        """Send the request and return once the status and headers have arrived."""
        # A bare Request, not build_request(): that would add the client's default
        # Accept, Accept-Encoding, User-Agent and cookies, which the client never sent.
        request = httpx.Request(
            method,
            self._base.copy_with(raw_path=target),
            headers=headers,
            content=content,
        )
        started = time.time()
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = _error(exc)
            self._count(error.kind)
            self.log_failure(method, target, error)
            raise error from None
        self._duration.observe(time.time() - started)
        self._count(str(response.status_code))
        return OriginReply(response, started)

    def _count(self, code: str) -> None:
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = self._family.labels(code)
        counter.inc()

    def log_failure(self, method: str, target: bytes, error: OriginError) -> None:
        now = time.monotonic()
        if now - self._last_log < LOG_INTERVAL:
            self._suppressed += 1
            return
        log.warning(
            "origin request failed",
            extra={
                "ctx": {
                    "origin": str(self._base),
                    "method": method,
                    "target": target[:200].decode("latin-1"),
                    "kind": error.kind,
                    "error": error.detail,
                    "suppressed_since_last": self._suppressed,
                }
            },
        )
        self._last_log = now
        self._suppressed = 0

    async def close(self) -> None:
        await self._client.aclose()
