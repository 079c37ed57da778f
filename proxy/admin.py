"""The admin port: `/metrics`, `/healthz`, `/readyz`, `/status`, and a page at `/`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.admin_page import admin_page


def admin_app(
    registry: CollectorRegistry,
    before_scrape: Callable[[], None],
    readiness: Callable[[], str | None],
    status: Callable[[], dict[str, Any]],
    control_urls: Sequence[str] = (),
) -> Starlette:
    """`readiness()` returns None when ready, else the reason it is not. `control_urls`
    (the proxy's --control) give the page at `/` its link to the fleet page."""

    async def metrics(_: Request) -> Response:
        before_scrape()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        reason = readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    async def status_view(_: Request) -> Response:
        return JSONResponse(status())

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status_view),
            Route("/", admin_page(control_urls)),
        ]
    )
