"""The control node's HTTP surface: the JSON API under `/v1/`, peer RPC under `/raft/`,
and `/metrics`, `/healthz`, `/readyz`.

Reads are linearizable (ReadIndex on the leader) unless `?stale=1`; a follower forwards
them, and every write, to the leader, so callers need not know which node leads. The ring
watch is served from the node's own applied state: it is how proxies keep a ring while
the cluster has no quorum, and epochs only go up, so a lagging node can delay an update
but never undo one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.detector import DetectorLoop
from control.metrics import ControlMetrics
from control.node import ProposalFailed, RaftNode
from control.raft.messages import Message
from control.raft.types import NodeId, Role
from control.registry import CommandError, validate_backend_url
from control.transport import FrameError, FrameReader
from ringleader.token import authorized
from ringleader.wire import HealthReport, WireError

FORWARDED = "x-ringleader-forwarded"
REQUEST_ID = "x-request-id"
WHO = "x-ringleader-who"
MAX_WATCH_SECONDS = 60.0
# How often a waiting watch re-checks that its node still knows a leader.
LEADER_CHECK_SECONDS = 0.5
MAX_BODY_BYTES = 1 << 20
FORWARD_TIMEOUT = 10.0

Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _closing(response: Response) -> Response:
    """`response` on a connection that then closes. A peer still streaming its body reads
    no answer before the body ends; the closed connection is how it learns the stream is
    over (its next write fails). Our sender learns the reason from its one-shot POST."""
    response.headers["connection"] = "close"
    return response


class ControlAPI:
    def __init__(
        self,
        node: RaftNode,
        peers: dict[NodeId, str],
        token: str,
        metrics: ControlMetrics,
        detector: DetectorLoop,
    ) -> None:
        self._node = node
        self._detector = detector
        self._peers = peers
        self._token = token
        self._metrics = metrics
        self._forwarder = httpx.AsyncClient(timeout=FORWARD_TIMEOUT)
        self._ending_streams = asyncio.Event()

    async def close(self) -> None:
        await self._forwarder.aclose()

    def app(self) -> Starlette:
        routes = [
            ("/raft/messages", self.peer_messages, ["POST"]),
            ("/v1/status", self.status, ["GET"]),
            ("/v1/pools", self.list_pools, ["GET"]),
            ("/v1/pools", self.create_pool, ["POST"]),
            ("/v1/pools/{pool}/backends", self.list_backends, ["GET"]),
            ("/v1/pools/{pool}/backends", self.add_backend, ["POST"]),
            ("/v1/pools/{pool}/backends/{name}", self.remove_backend, ["DELETE"]),
            ("/v1/pools/{pool}/backends/{name}/drain", self.drain_backend, ["POST"]),
            ("/v1/pools/{pool}/backends/{name}/activate", self.activate_backend, ["POST"]),
            ("/v1/pools/{pool}/ring", self.ring, ["GET"]),
            ("/v1/pools/{pool}/rollback", self.rollback, ["POST"]),
            ("/v1/pools/{pool}/reports", self.health_report, ["POST"]),
            ("/v1/events", self.events, ["GET"]),
            ("/metrics", self.metrics, ["GET"]),
            ("/healthz", self.healthz, ["GET"]),
            ("/readyz", self.readyz, ["GET"]),
        ]
        return Starlette(
            routes=[
                Route(path, self._counted(path, handler), methods=methods)
                for path, handler, methods in routes
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Unknown routes and methods answer in JSON like every other error."""
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        response = error(
            exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
        )
        response.headers.update(exc.headers or {})
        self._metrics.api_requests.labels("unmatched", str(exc.status_code)).inc()
        return response

    def _counted(self, template: str, handler: Handler) -> Handler:
        requests = self._metrics.api_requests

        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request)
            except ClientDisconnect:
                # Nobody is left to answer; 499 only labels the metric, as nginx does.
                response = Response(status_code=499)
            requests.labels(template, str(response.status_code)).inc()
            return response

        return endpoint

    # -- peer RPC ----------------------------------------------------------------------------

    async def peer_messages(self, request: Request) -> Response:
        """A peer's message stream (see control.transport), stepped frame by frame."""
        if not authorized(self._token, request.headers.get("authorization")):
            self._metrics.peer_rpc_rejected.labels("token").inc()
            return _closing(error(401, "unauthorized", "peer RPC needs the cluster token"))
        stream = asyncio.ensure_future(self._step_stream(request))
        ending = asyncio.ensure_future(self._ending_streams.wait())
        await asyncio.wait({stream, ending}, return_when=asyncio.FIRST_COMPLETED)
        ending.cancel()
        if not stream.done():
            stream.cancel()
            return _closing(Response(status_code=204))  # this node is shutting down
        try:
            stream.result()
        except FrameError as exc:
            self._metrics.peer_rpc_rejected.labels("malformed").inc()
            return _closing(error(400, "bad_message", str(exc)))
        return Response(status_code=204)

    async def _step_stream(self, request: Request) -> None:
        frames = FrameReader()
        async for data in request.stream():
            self._step_frames(frames.feed(data))
        self._step_frames(frames.end())

    def _step_frames(self, batches: Iterator[list[Message]]) -> None:
        for batch in batches:
            self._node.step(batch)

    def end_peer_streams(self) -> None:
        """Answers every open peer stream, so a graceful shutdown need not wait for them."""
        self._ending_streams.set()

    # -- probes and metrics ------------------------------------------------------------------

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        reason = self._node.catching_up()
        if reason is not None:
            return JSONResponse({"status": "not ready", "reason": reason}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics(self, _: Request) -> Response:
        return Response(generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def status(self, _: Request) -> Response:
        return JSONResponse(
            {**self._node.status(), "peers": {str(k): v for k, v in self._peers.items()}}
        )

    # -- reads -------------------------------------------------------------------------------

    async def _read(self, request: Request, view: Callable[[], Response]) -> Response:
        if request.query_params.get("stale") not in (None, "0", "false"):
            return view()
        try:
            await self._node.read_barrier()
        except ProposalFailed as exc:
            if exc.reason == "not_leader":
                return await self._forward(request, exc.leader)
            return error(503, "unavailable", f"linearizable read failed: {exc}")
        return view()

    async def list_pools(self, request: Request) -> Response:
        def view() -> Response:
            pools = self._node.registry.pools.values()
            return JSONResponse({"pools": [p.ring_document().to_json() for p in pools]})

        return await self._read(request, view)

    async def list_backends(self, request: Request) -> Response:
        pool_name = request.path_params["pool"]

        def view() -> Response:
            pool = self._node.registry.pools.get(pool_name)
            if pool is None:
                return error(404, "unknown_pool", f"no pool named {pool_name!r}")
            return JSONResponse(
                {"pool": pool.name, "epoch": pool.epoch,
                 "backends": [b.as_json() for b in pool.backends.values()]}
            )  # fmt: skip

        return await self._read(request, view)

    async def events(self, request: Request) -> Response:
        pool = request.query_params.get("pool")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return error(400, "bad_request", "limit must be a whole number")

        def view() -> Response:
            events = [e.as_json() for e in self._node.registry.events if pool in (None, e.pool)]
            return JSONResponse({"events": events[-max(1, limit) :]})

        return await self._read(request, view)

    async def ring(self, request: Request) -> Response:
        pool_name = request.path_params["pool"]

        def view() -> Response:
            pool = self._node.registry.pools.get(pool_name)
            if pool is None:
                return error(404, "unknown_pool", f"no pool named {pool_name!r}")
            return JSONResponse(pool.ring_document().to_json())

        wait_epoch = request.query_params.get("wait_epoch")
        if wait_epoch is None:
            return await self._read(request, view)
        try:
            after = int(wait_epoch)
            timeout = float(request.query_params.get("timeout", "30"))
        except ValueError:
            return error(400, "bad_request", "wait_epoch is a whole number, timeout seconds")
        if not math.isfinite(timeout) or timeout < 0:
            return error(400, "bad_request", "timeout must be a number of seconds >= 0")
        timeout = min(timeout, MAX_WATCH_SECONDS)

        def advanced() -> bool:
            pool = self._node.registry.pools.get(pool_name)
            return pool is None or pool.epoch > after

        if pool_name not in self._node.registry.pools:
            return view()
        self._metrics.watchers.inc()
        try:
            return await self._watch(advanced, asyncio.get_running_loop().time() + timeout, view)
        finally:
            self._metrics.watchers.dec()

    async def _watch(
        self, advanced: Callable[[], bool], deadline: float, view: Callable[[], Response]
    ) -> Response:
        """Waits for `advanced()`, but only while this node is caught up with a leader: a
        node cut off from the majority, or just restarted, would otherwise serve an old
        ring while the majority has moved on. Its 503 sends watchers to another node; if
        every node is cut off, proxies keep the ring they have (static stability)."""
        loop = asyncio.get_running_loop()
        while True:
            behind = self._node.catching_up()
            if behind is not None:
                return error(503, "not_caught_up", f"{behind}; ask another node")
            if advanced():
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break  # the caller sees the unchanged epoch and asks again
            try:
                async with asyncio.timeout(min(remaining, LEADER_CHECK_SECONDS)):
                    await self._node.wait_for_change(advanced)
            except TimeoutError:
                continue
        return view()

    # -- writes ------------------------------------------------------------------------------

    async def _write(self, request: Request, command: dict[str, Any]) -> Response:
        if not authorized(self._token, request.headers.get("authorization")):
            self._metrics.unauthorized.inc()
            return error(401, "unauthorized", "this call needs the cluster token")
        command.setdefault("request_id", request.headers.get(REQUEST_ID) or uuid.uuid4().hex)
        command.setdefault("who", request.headers.get(WHO) or "api")
        command["time"] = time.time()
        try:
            result = await self._node.propose(json.dumps(command).encode())
        except ProposalFailed as exc:
            if exc.reason == "not_leader":
                return await self._forward(request, exc.leader, command["request_id"])
            return error(503, "unavailable", f"{exc}; retry with the same {REQUEST_ID}")
        if "error" in result:
            return error(int(result["status"]), str(result["error"]), str(result["message"]))
        return JSONResponse(result)

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise CommandError(413, "too_large", "request body over 1 MiB")
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise CommandError(400, "bad_json", f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise CommandError(400, "bad_json", "request body must be a JSON object")
        return body

    async def _command(
        self, request: Request, op: str, build: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Response:
        try:
            body = await self._body(request)
            command = {"op": op, "pool": request.path_params.get("pool"), **build(body)}
        except CommandError as exc:
            return error(exc.status, exc.code, str(exc))
        if "why" in body:
            command["why"] = str(body["why"])
        return await self._write(request, command)

    async def create_pool(self, request: Request) -> Response:
        def build(body: dict[str, Any]) -> dict[str, Any]:
            return {"pool": body.get("pool"), "hash": body.get("hash", "fnv1a_64"),
                    "replicas": body.get("replicas", 1)}  # fmt: skip

        return await self._command(request, "create_pool", build)

    async def add_backend(self, request: Request) -> Response:
        def build(body: dict[str, Any]) -> dict[str, Any]:
            validate_backend_url(body.get("url"))
            return {"url": body["url"]}

        return await self._command(request, "add_backend", build)

    async def remove_backend(self, request: Request) -> Response:
        return await self._backend_op(request, "remove_backend")

    async def drain_backend(self, request: Request) -> Response:
        return await self._backend_op(request, "drain_backend")

    async def activate_backend(self, request: Request) -> Response:
        return await self._backend_op(request, "activate_backend")

    async def _backend_op(self, request: Request, op: str) -> Response:
        name = request.path_params["name"]
        return await self._command(request, op, lambda _: {"backend": name})

    async def rollback(self, request: Request) -> Response:
        def build(body: dict[str, Any]) -> dict[str, Any]:
            epoch = body.get("epoch")
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise CommandError(400, "bad_request", "epoch must be a whole number")
            return {"epoch": epoch}

        return await self._command(request, "rollback", build)

    async def health_report(self, request: Request) -> Response:
        """A proxy's view of its backends, for the failure detector on the leader."""
        if not authorized(self._token, request.headers.get("authorization")):
            self._metrics.unauthorized.inc()
            return error(401, "unauthorized", "health reports need the cluster token")
        if self._node.soft_state.role is not Role.LEADER:
            return await self._forward(request, self._node.soft_state.leader)
        pool = request.path_params["pool"]
        if pool not in self._node.registry.pools:
            return error(404, "unknown_pool", f"no pool named {pool!r}")
        try:
            report = HealthReport.from_json(await self._body(request))
        except CommandError as exc:
            return error(exc.status, exc.code, str(exc))
        except WireError as exc:
            return error(400, "bad_report", str(exc))
        self._detector.report(pool, report)
        return Response(status_code=204)

    # -- forwarding --------------------------------------------------------------------------

    async def _forward(
        self, request: Request, leader: NodeId | None, request_id: str | None = None
    ) -> Response:
        if request.headers.get(FORWARDED) or leader is None or leader not in self._peers:
            return error(503, "no_leader", "no leader is known; retry shortly")
        headers = {FORWARDED: "1"}
        for name in ("authorization", WHO, "content-type"):
            if name in request.headers:
                headers[name] = request.headers[name]
        if request_id is not None:
            headers[REQUEST_ID] = request_id
        url = self._peers[leader] + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        try:
            upstream = await self._forwarder.request(
                request.method, url, content=await request.body(), headers=headers
            )
        except httpx.HTTPError as exc:
            return error(503, "no_leader", f"leader {leader} unreachable: {exc!r}"[:300])
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
        )
