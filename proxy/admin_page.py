"""The proxy admin port's page at `/`: this proxy's ring epoch, its backends and its own
heartbeat verdicts, refreshed from `/status` once a second, with a link to the control
plane's fleet page when the ring comes from one.

One self-contained asset (proxy/admin_assets/status.html): an admin port serves no other
files, and nothing is loaded from elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from html import escape
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

CONTROL_LINK = "<!--control-link-->"
HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}


def render_page(control_urls: Sequence[str]) -> str:
    """The page, linking the first control URL's fleet page (`/ui/`), if there is one."""
    page = files("proxy").joinpath("admin_assets", "status.html").read_text()
    if control_urls:
        target = escape(control_urls[0].rstrip("/") + "/ui/")
        link = f'<a id="control-ui" href="{target}">control plane fleet page</a>'
    else:
        link = '<span id="control-ui">static ring: no control plane</span>'
    return page.replace(CONTROL_LINK, link)


def admin_page(control_urls: Sequence[str]) -> Callable[[Request], Awaitable[Response]]:
    """The `/` handler. The page is rendered on first use: a package installed without
    its page data loses the page, not the proxy."""
    rendered: list[str] = []

    async def index(_: Request) -> Response:
        if not rendered:
            try:
                rendered.append(render_page(control_urls))
            except FileNotFoundError:
                message = "proxy/admin_assets/status.html is missing from the installed package"
                return JSONResponse({"error": "missing_asset", "message": message}, 500)
        return HTMLResponse(rendered[0], headers=HEADERS)

    return index
