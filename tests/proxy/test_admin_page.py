"""The proxy admin port's page at `/` (proxy/admin_page.py).

In headless Chromium against a real `ringleader proxy` with two real memcached: the page
shows the ring epoch, both backends and the proxy's own heartbeat verdicts, follows a
backend's death within 2 s of the proxy's verdict, has no console error, fits a phone's
width, and its screenshots are not blank. The link to the control plane's fleet page is
checked on the rendered page, with and without control URLs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from proxy.admin import admin_app
from proxy.admin_page import render_page
from tests.support.browser import Chromium, assert_not_blank
from tests.support.servers import LOOPBACK, ProcessGroup, Proxy, ServerProcess, wait_until

SHOWS_WITHIN = 2.0
VERDICTS = """Object.fromEntries([...document.querySelectorAll('tr[data-backend]')]
  .map(r => [r.dataset.backend, r.dataset.state]))"""


@pytest.fixture
def browser(procs: ProcessGroup, tmp_path: Path) -> Iterator[Chromium]:
    with Chromium(procs, tmp_path) as chromium:
        yield chromium


def static_proxy(procs: ProcessGroup) -> tuple[Proxy, dict[str, ServerProcess]]:
    caches = {f"cache-{i}": procs.memcached() for i in range(2)}
    urls = [f"memcached://{LOOPBACK}:{c.port}?name={name}" for name, c in caches.items()]
    proxy = procs.proxy(urls, "--health-interval", "0.2", "--health-timeout", "0.2")
    return proxy, caches


def test_page_shows_epoch_backends_and_verdicts_and_follows_a_death(
    procs: ProcessGroup, browser: Chromium, tmp_path: Path
) -> None:
    proxy, caches = static_proxy(procs)
    browser.viewport(1024, 700)
    browser.open(proxy.admin_url + "/")
    browser.wait_for(f"JSON.stringify({VERDICTS}) === '{{\"cache-0\":\"up\",\"cache-1\":\"up\"}}'",
                     10, "both backends up")  # fmt: skip
    assert browser.evaluate("document.getElementById('epoch').textContent") == "0"
    assert browser.evaluate("document.getElementById('source').textContent") == "--backend flags"
    assert browser.evaluate("document.getElementById('control-ui').textContent") == (
        "static ring: no control plane"
    )
    assert_not_blank(browser.screenshot(tmp_path / "proxy-healthy.png"))

    caches["cache-0"].kill()

    def proxy_sees_down() -> bool:
        backends = httpx.get(proxy.admin_url + "/status", timeout=2).json()["backends"]
        return any(b["name"] == "cache-0" and b["state"] == "down" for b in backends)

    wait_until(proxy_sees_down, 10, "the proxy's verdict down")
    verdict_at = time.monotonic()
    browser.wait_for(f"{VERDICTS}['cache-0'] === 'down'", SHOWS_WITHIN, "the page to show it")
    print(f"verdict -> page: {time.monotonic() - verdict_at:.2f} s")
    row = browser.evaluate("document.querySelector('tr[data-backend=\"cache-0\"]').textContent")
    assert "down" in row
    assert_not_blank(browser.screenshot(tmp_path / "proxy-down.png"))

    browser.viewport(390, 844, mobile=True)
    browser.open(proxy.admin_url + "/")
    browser.wait_for("Number(document.body.dataset.polls) >= 1", 10, "a poll")
    width, inner = browser.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert width <= inner, f"the page is {width} px wide in a {inner} px viewport"
    assert_not_blank(browser.screenshot(tmp_path / "proxy-phone.png", full_page=True))
    assert browser.take_console_errors() == []


def test_page_links_the_first_control_url_to_its_fleet_page() -> None:
    page = render_page(["http://ctl-1:7000/", "http://ctl-2:7000"])
    assert '<a id="control-ui" href="http://ctl-1:7000/ui/">' in page
    odd = render_page(['http://x"><script>1</script>'])
    assert "<script>1" not in odd


def test_admin_port_serves_the_page_at_root() -> None:
    app = admin_app(CollectorRegistry(), lambda: None, lambda: None, dict, ["http://c:1"])

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as c:
            return await c.get("/")

    r = asyncio.run(get())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'href="http://c:1/ui/"' in r.text
