"""Minimal raw-ASGI plumbing for the data plane's hot path.

The data plane answers with raw ASGI messages rather than starlette Request/Response
objects: on a KV hit that overhead is a large share of the request (see BENCHMARKS.md).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

JSON_HEADERS = ((b"content-type", b"application/json"),)


class HTTPDate:
    """The current time as an IMF-fixdate Date field, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the {limit}-byte limit")
        self.limit = limit


class ClientDisconnected(Exception):
    pass


async def respond(send: Send, status: int, headers: Headers, body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_error(
    send: Send, status: int, error: str, message: str, headers: Headers = ()
) -> None:
    """A 4xx/5xx with a JSON body: `{"error": <machine code>, "message": <for humans>}`."""
    body = json.dumps({"error": error, "message": message}).encode()
    await respond(send, status, (*JSON_HEADERS, *headers), body)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing early (by Content-Length) or while streaming."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
