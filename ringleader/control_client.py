"""A client of the control plane's JSON API, for operators and proxies.

It takes every control URL it was given, remembers which one answered last, and moves on
to the next on connection errors and on 503 (a node without a leader). Writes may go to any
node: followers forward them to the leader.

By default every client starts at the first URL. A fleet whose clients each hold a
long-lived request (the proxies' ring watches) passes `spread_by`, a key stable for each
client such as its identity, and each starts at a node picked by its hash, so the fleet's
requests spread over every node instead of all landing on one (see BENCHMARKS.md,
"Control plane at scale").
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ringleader.token import bearer

RETRYABLE_STATUS = frozenset({502, 503, 504})


class ControlError(RuntimeError):
    """The control plane refused a request or could not be reached; the message says which."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    url: str


def split_urls(values: Sequence[str]) -> list[str]:
    urls = [u.strip().rstrip("/") for v in values for u in v.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ControlError(f"--control: expected http:// or https:// URLs, got {url!r}")
    if not urls:
        raise ControlError("--control: no URL given")
    return urls


def node_for(key: str, nodes: int) -> int:
    """The index of the node that `key` starts at: the same in every process and release
    (unlike hash(), which is salted per process)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % nodes


class ControlClient:
    def __init__(
        self,
        urls: Sequence[str],
        token: str | None = None,
        timeout: float = 5.0,
        deadline: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        spread_by: str | None = None,
    ) -> None:
        """``transport`` replaces the network, as httpx.MockTransport does in tests;
        ``spread_by`` picks the node asked first (see the module's docstring)."""
        self.urls = list(urls)
        self._preferred = 0 if spread_by is None else node_for(spread_by, len(self.urls))
        self._deadline = deadline
        self._http = httpx.AsyncClient(timeout=timeout, headers=bearer(token), transport=transport)

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
        read_timeout: float | None = None, headers: dict[str, str] | None = None,
    ) -> Reply:  # fmt: skip
        """The first definitive answer from any node; raises ControlError for 4xx/5xx."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadline
        failures: list[str] = []
        # The last failure's status when a node answered (a 503: alive, without a leader
        # for now); None when none could be reached.
        answered: int | None = None
        attempt = 0
        while True:
            index = self._preferred
            base = self.urls[index]
            try:
                response = await self._http.request(
                    method, base + path, json=json, params=params, headers=headers,
                    timeout=read_timeout if read_timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )  # fmt: skip
            except httpx.HTTPError as exc:
                failures.append(f"{base}: {type(exc).__name__} {exc}".strip())
                answered = None
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    self._preferred = index
                    return self._reply(base, response)
                failures.append(f"{base}: {response.status_code} {_message(response)}")
                answered = response.status_code
            # The next attempt, in this call or the next one, starts at the next node.
            self._preferred = (index + 1) % len(self.urls)
            attempt += 1
            if loop.time() >= give_up:
                raise ControlError(
                    "control plane unavailable: " + "; ".join(failures[-len(self.urls) :]),
                    answered,
                )
            if attempt % len(self.urls) == 0:
                await asyncio.sleep(min(0.5, 0.05 * attempt))

    def _reply(self, base: str, response: httpx.Response) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            code = body.get("error") if isinstance(body, dict) else None
            raise ControlError(
                f"{response.status_code} from {base}: {_message(response)}",
                response.status_code,
                code,
            )
        return Reply(response.status_code, body, base)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:200]
