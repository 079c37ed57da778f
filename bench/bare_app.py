"""The ceiling for our stack: a bare starlette app on uvicorn returning a fixed value,
with the same uvicorn settings as a proxy worker (uvloop, httptools, no access log)."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

VALUE = b"v" * 100


async def value(_: Request) -> Response:
    return Response(VALUE, media_type="application/octet-stream")


app = Starlette(routes=[Route("/v1/kv/{key:path}", value)])

if __name__ == "__main__":
    host, port = sys.argv[1].rsplit(":", 1)
    uvicorn.run(
        app, host=host, port=int(port), loop="uvloop", http="httptools", lifespan="off",
        access_log=False, log_level="warning", server_header=False,
    )  # fmt: skip
