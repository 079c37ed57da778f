"""A test origin for the HTTP cache: a real HTTP server whose answers tests control.

Run as a subprocess: ``python -m tests.support.origin PORT``. Each resource is named by
the first path segment (``/NAME/anything?query``). Tests configure a name with
``PUT /__config/NAME`` (JSON, fields below) and read what the origin saw with
``GET /__stats/NAME``. Everything the origin does is driven by that state, so a test
owns its names and never resets the server.

Config fields (all optional):
  status        response status (200)
  headers       [[name, value], ...] added to every answer for the name
  body          response body text ("body of NAME")
  size          instead of body: that many bytes of "x"
  chunked       send the body in 3 chunks without Content-Length
  delay         seconds to wait before answering
  etag          ETag; If-None-Match matching it gets a 304
  last_modified Last-Modified; If-Modified-Since equal to it gets a 304
  echo          a request header name whose value is appended to the body (for Vary)
  counter_body  append the request count to the body, to tell fetches apart
  methods       {"POST": {status, headers}, ...} overrides for other methods
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from typing import Any

import uvicorn

Scope = dict[str, Any]

_configs: dict[str, dict[str, Any]] = {}
_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
KEEP_REQUESTS = 50


async def _read(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    parts = path.strip("/").split("/", 1)
    name = parts[0]
    json_type = [(b"content-type", b"application/json")]
    if name == "__config":
        _configs[parts[1]] = json.loads(await _read(receive))
        await _send(send, 204, [], b"")
        return
    if name == "__stats":
        stats = {"counts": _counts[parts[1]], "requests": _requests[parts[1]]}
        await _send(send, 200, json_type, json.dumps(stats).encode())
        return
    method: str = scope["method"]
    request_body = await _read(receive)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    _counts[name][method] += 1
    _counts[name]["total"] += 1
    log = _requests[name]
    log.append(
        {
            "method": method,
            "target": scope["raw_path"].decode("latin-1")
            + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""),
            "headers": headers,
            "body_length": len(request_body),
        }
    )
    del log[:-KEEP_REQUESTS]
    config = dict(_configs.get(name, {}))
    config.update(config.get("methods", {}).get(method, {}))
    if config.get("delay"):
        await asyncio.sleep(float(config["delay"]))
    out = [(k.lower().encode(), v.encode()) for k, v in config.get("headers", [])]
    etag = config.get("etag")
    last_modified = config.get("last_modified")
    if etag:
        out.append((b"etag", etag.encode()))
    if last_modified:
        out.append((b"last-modified", last_modified.encode()))
    request = {k.lower(): v for k, v in headers}
    if method in ("GET", "HEAD") and (
        (etag and etag in request.get("if-none-match", ""))
        or (last_modified and request.get("if-modified-since") == last_modified)
    ):
        await _send(send, 304, out, b"")
        return
    if "size" in config:
        body = b"x" * int(config["size"])
    else:
        body = str(config.get("body", f"body of {name}")).encode()
    if config.get("echo"):
        body += b" " + request.get(config["echo"].lower(), "-").encode()
    if config.get("counter_body"):
        body += b" #%d" % _counts[name]["total"]
    status = int(config.get("status", 200))
    if not config.get("chunked"):
        await _send(send, status, out, body)
        return
    await send({"type": "http.response.start", "status": status, "headers": out})
    third = max(len(body) // 3, 1)
    for start in range(0, len(body), third):
        chunk = body[start : start + third]
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        lifespan="off",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )


if __name__ == "__main__":
    main()
