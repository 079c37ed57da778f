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

from control import members
from control.commands import (
    ActivateBackend,
    AddBackend,
    Command,
    CreatePool,
    DrainBackend,
    RemoveBackend,
    Rollback,
    Stamp,
    Stamped,
    command_to_bytes,
)
from control.detector import DetectorLoop
from control.members import members_view, parse_member
from control.metrics import ControlMetrics, CounterChildren
from control.node import NotLeaderError, ProposalFailed, RaftNode
from control.raft.membership import MembershipError
from control.raft.messages import Message
from control.raft.types import NodeId, Role
from control.registry import (
    FailureCode,
    Outcome,
    Pool,
    Refusal,
    Refused,
    Registry,
    validate_backend_url,
    validate_hash,
)
from control.transport import FrameError, FrameReader
from control.ui import FleetPage
from control.watches import WatchHub
from ringleader.token import authorized
from ringleader.wire import NO_FORWARD, HealthReport, WireError

FORWARDED = "x-ringleader-forwarded"
REQUEST_ID = "x-request-id"
WHO = "x-ringleader-who"
MAX_WATCH_SECONDS = 60.0
# How often a waiting watch re-checks that its node still knows a leader.
LEADER_CHECK_SECONDS = 0.5
MAX_BODY_BYTES = 1 << 20
TOO_LARGE = "request body over 1 MiB"
# Ids are remembered by every replica's registry; a bound keeps that memory bounded.
MAX_REQUEST_ID = 128
FORWARD_TIMEOUT = 10.0

# The HTTP status of each registry refusal: the one place the state machine's failure codes
# meet HTTP.
REFUSAL_STATUS: dict[FailureCode, int] = {
    FailureCode.BAD_COMMAND: 400,
    FailureCode.BAD_BACKEND: 400,
    FailureCode.BAD_POOL: 400,
    FailureCode.BAD_HASH: 400,
    FailureCode.UNKNOWN_POOL: 404,
    FailureCode.UNKNOWN_BACKEND: 404,
    FailureCode.UNKNOWN_EPOCH: 404,
    FailureCode.DUPLICATE_BACKEND: 409,
    FailureCode.DUPLICATE_POOL: 409,
}

Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def refused(code: FailureCode, message: str) -> JSONResponse:
    return error(REFUSAL_STATUS[code], code.value, message)


def unavailable(request: Request, code: str, message: str) -> JSONResponse:
    """A 503 naming the request's id: a write retried with the same id applies at most
    once, whether or not this attempt took effect."""
    request_id = _request_id(request)
    return error(503, code, f"{message}; retry with {REQUEST_ID}: {request_id}")


def _request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def response(self) -> Response:
        response = error(self.status, self.code, str(self))
        # An over-long body is left unread; the connection must not be reused after it.
        return _closing(response) if self.status == 413 else response


async def _raw_body(request: Request) -> bytes:
    """The body, read at most to MAX_BODY_BYTES (a chunked body declares no length)."""
    cached: bytes | None = getattr(request.state, "body", None)
    if cached is not None:
        return cached
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BadRequest(413, "too_large", TOO_LARGE)
        chunks.append(chunk)
    request.state.body = raw = b"".join(chunks)
    return raw


async def _body(request: Request) -> dict[str, Any]:
    raw = await _raw_body(request)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(400, "bad_json", f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest(400, "bad_json", "request body must be a JSON object")
    return body


def _closing(response: Response) -> Response:
    """`response` on a connection that then closes. A peer still streaming its body reads
    no answer before the body ends; the closed connection is how it learns the stream is
    over (its next write fails). Our sender learns the reason from its one-shot POST."""
    response.headers["connection"] = "close"
    return response


class ControlAPI:
    def __init__(
        self,
        node: RaftNode[Outcome],
        registry: Registry,
        peers: dict[NodeId, str],
        token: str,
        metrics: ControlMetrics,
        detector: DetectorLoop,
    ) -> None:
        self._node = node
        self._registry = registry
        self._detector = detector
        self._peers = peers
        self._token = token
        self._metrics = metrics
        self._requests = CounterChildren(metrics.api_requests)
        self._forwarder = httpx.AsyncClient(timeout=FORWARD_TIMEOUT)
        self._ending_streams = asyncio.Event()
        self._watches = WatchHub(node, registry, LEADER_CHECK_SECONDS)
        # pool -> (applied index, its ring document as JSON): a ring change answers every
        # watch of the pool with the same bytes, rendered once.
        self._rendered_rings: dict[str, tuple[int, bytes]] = {}

    async def close(self) -> None:
        await self._watches.close()
        await self._forwarder.aclose()

    def app(self) -> Starlette:
        # Starlette tries routes in order: what every proxy calls every few seconds first.
        routes = [
            ("/v1/pools/{pool}/reports", self.health_report, "POST"),
            ("/v1/pools/{pool}/ring", self.ring, "GET"),
            ("/raft/messages", self.peer_messages, "POST"),
            ("/v1/status", self.status, "GET"),
            ("/v1/pools", self.list_pools, "GET"),
            ("/v1/pools", self.create_pool, "POST"),
            ("/v1/pools/{pool}/backends", self.list_backends, "GET"),
            ("/v1/pools/{pool}/backends", self.add_backend, "POST"),
            ("/v1/pools/{pool}/backends/{name}", self.remove_backend, "DELETE"),
            ("/v1/pools/{pool}/backends/{name}/drain", self.drain_backend, "POST"),
            ("/v1/pools/{pool}/backends/{name}/activate", self.activate_backend, "POST"),
            ("/v1/pools/{pool}/rollback", self.rollback, "POST"),
            ("/v1/pools/{pool}/proxies", self.reporting_proxies, "GET"),
            ("/v1/events", self.events, "GET"),
            ("/v1/members", self.list_members, "GET"),
            ("/v1/members", self.add_member, "POST"),
            ("/v1/members/{id}", self.remove_member, "DELETE"),
            ("/metrics", self.metrics, "GET"),
            ("/healthz", self.healthz, "GET"),
            ("/readyz", self.readyz, "GET"),
            *FleetPage(self._registry, self._peers, self._node.status, self._forwarder).routes(),
        ]
        # Peer RPC checks its token itself, and streams: its limit is per frame.
        admitted = [
            (path, self._admitted(handler) if method != "GET" and path != "/raft/messages"
             else handler, method)
            for path, handler, method in routes
        ]  # fmt: skip
        return Starlette(
            routes=[
                Route(path, self._counted(path, handler), methods=[method])
                for path, handler, method in admitted
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
        response.headers[REQUEST_ID] = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        self._requests.labels("unmatched", str(exc.status_code)).inc()
        return response

    def _counted(self, template: str, handler: Handler) -> Handler:
        """`handler`, counted, under the client's request id or one made for it, which the
        response names in its X-Request-Id header."""

        async def endpoint(request: Request) -> Response:
            request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
            request.state.request_id = request_id
            try:
                if len(request_id) > MAX_REQUEST_ID:
                    response = _closing(
                        error(400, "bad_request", f"{REQUEST_ID} over {MAX_REQUEST_ID} characters")
                    )
                else:
                    response = await handler(request)
            except ClientDisconnect:
                # Nobody is left to answer; 499 only labels the metric, as nginx does.
                response = Response(status_code=499)
            response.headers[REQUEST_ID] = request_id[:MAX_REQUEST_ID]
            self._requests.labels(template, str(response.status_code)).inc()
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
        except NotLeaderError as exc:
            return await self._forward(request, exc.leader)
        except ProposalFailed as exc:
            return unavailable(request, "unavailable", f"linearizable read failed: {exc}")
        return view()

    async def list_pools(self, request: Request) -> Response:
        def view() -> Response:
            pools = self._registry.pools.values()
            return JSONResponse({"pools": [p.ring_document().to_json() for p in pools]})

        return await self._read(request, view)

    async def list_backends(self, request: Request) -> Response:
        pool_name = request.path_params["pool"]

        def view() -> Response:
            pool = self._registry.pools.get(pool_name)
            if pool is None:
                return refused(FailureCode.UNKNOWN_POOL, f"no pool named {pool_name!r}")
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
            events = [e.as_json() for e in self._registry.events if pool in (None, e.pool)]
            return JSONResponse({"events": events[-max(1, limit) :]})

        return await self._read(request, view)

    def _ring_response(self, pool: Pool) -> Response:
        applied = self._registry.applied_index
        rendered = self._rendered_rings.get(pool.name)
        if rendered is None or rendered[0] != applied:
            body = JSONResponse(pool.ring_document().to_json()).body
            rendered = self._rendered_rings[pool.name] = (applied, bytes(body))
        return Response(rendered[1], media_type="application/json")

    async def ring(self, request: Request) -> Response:
        pool_name = request.path_params["pool"]

        def view() -> Response:
            pool = self._registry.pools.get(pool_name)
            if pool is None:
                return refused(FailureCode.UNKNOWN_POOL, f"no pool named {pool_name!r}")
            return self._ring_response(pool)

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
            pool = self._registry.pools.get(pool_name)
            return pool is None or pool.epoch > after

        if pool_name not in self._registry.pools:
            return view()
        self._metrics.watchers.inc()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            return await self._watch(request, advanced, deadline, view)
        finally:
            self._metrics.watchers.dec()

    async def _watch(
        self, request: Request, advanced: Callable[[], bool], deadline: float,
        view: Callable[[], Response],
    ) -> Response:  # fmt: skip
        """Waits for `advanced()`, but only while this node is caught up with a leader (the
        WatchHub wakes it when either may have changed): a node cut off from the majority,
        or just restarted, would otherwise serve an old ring while the majority has moved
        on. Its 503 sends watchers to another node; if every node is cut off, proxies keep
        the ring they have (static stability)."""
        loop = asyncio.get_running_loop()
        while True:
            behind = self._node.catching_up()
            if behind is not None:
                return unavailable(request, "not_caught_up", f"{behind}; ask another node")
            if advanced():
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break  # the caller sees the unchanged epoch and asks again
            await self._watches.wait(remaining)
        return view()

    # -- writes ------------------------------------------------------------------------------

    def _admitted(self, handler: Handler) -> Handler:
        """`handler` behind the token and the body size limit, both checked before any of the
        body is read: a refused request costs its headers only. The connection then closes,
        so its unread body is never read either."""

        async def endpoint(request: Request) -> Response:
            if not authorized(self._token, request.headers.get("authorization")):
                self._metrics.unauthorized.inc()
                return _closing(error(401, "unauthorized", "this call needs the cluster token"))
            length = request.headers.get("content-length", "0")
            if not length.isdigit():
                return _closing(error(400, "bad_request", "Content-Length is not a number"))
            if int(length) > MAX_BODY_BYTES:
                return _closing(error(413, "too_large", TOO_LARGE))
            return await handler(request)

        return endpoint

    async def _write(self, request: Request, command: Command, why: str) -> Response:
        stamp = Stamp(time.time(), request.headers.get(WHO) or "api", why, _request_id(request))
        try:
            outcome = await self._node.propose(command_to_bytes(Stamped(command, stamp)))
        except NotLeaderError as exc:
            return await self._forward(request, exc.leader)
        except ProposalFailed as exc:
            return unavailable(request, "unavailable", str(exc))
        if isinstance(outcome, Refused):
            return refused(outcome.code, outcome.message)
        return JSONResponse(outcome.to_json())

    async def _command(
        self, request: Request, build: Callable[[dict[str, Any]], Command]
    ) -> Response:
        try:
            body = await _body(request)
            command = build(body)
        except _BadRequest as exc:
            return exc.response()
        except Refusal as exc:
            return refused(exc.code, str(exc))
        return await self._write(request, command, str(body.get("why", "")))

    async def create_pool(self, request: Request) -> Response:
        def build(body: dict[str, Any]) -> Command:
            name, replicas = body.get("pool"), body.get("replicas", 1)
            if not isinstance(name, str):
                raise Refusal(FailureCode.BAD_POOL, "a pool name is letters, digits, - and _")
            if type(replicas) is not int:
                raise Refusal(FailureCode.BAD_POOL, "replicas must be a whole number from 1 to 5")
            return CreatePool(name, validate_hash(body.get("hash", "fnv1a_64")), replicas)

        return await self._command(request, build)

    async def add_backend(self, request: Request) -> Response:
        pool = request.path_params["pool"]

        def build(body: dict[str, Any]) -> Command:
            url = body.get("url")
            if validate_backend_url(url).password is not None:
                # The command, URL included, is kept in every node's log and snapshots.
                raise Refusal(
                    FailureCode.BAD_BACKEND,
                    "a password in the URL would be stored in the control plane's log: "
                    "give ?password_file=/path instead, a file every proxy can read",
                )
            return AddBackend(pool, str(url))

        return await self._command(request, build)

    async def remove_backend(self, request: Request) -> Response:
        return await self._backend_op(request, RemoveBackend)

    async def drain_backend(self, request: Request) -> Response:
        return await self._backend_op(request, DrainBackend)

    async def activate_backend(self, request: Request) -> Response:
        return await self._backend_op(request, ActivateBackend)

    async def _backend_op(
        self, request: Request, op: type[RemoveBackend | DrainBackend | ActivateBackend]
    ) -> Response:
        command = op(request.path_params["pool"], request.path_params["name"])
        return await self._command(request, lambda _: command)

    async def rollback(self, request: Request) -> Response:
        pool = request.path_params["pool"]

        def build(body: dict[str, Any]) -> Command:
            epoch = body.get("epoch")
            if type(epoch) is not int or epoch < 0:
                raise _BadRequest(400, "bad_request", "epoch must be a whole number")
            return Rollback(pool, epoch)

        return await self._command(request, build)

    async def _at_detector(
        self, request: Request, handler: Callable[[str], Awaitable[Response]]
    ) -> Response:
        """`handler(pool)` on the leader: the failure detector's state lives only there."""
        soft = self._node.soft_state
        if soft.role is not Role.LEADER:
            if NO_FORWARD in request.headers:
                return unavailable(request, "not_leader", "this node is not the leader")
            return await self._forward(request, soft.leader)
        pool = request.path_params["pool"]
        if pool not in self._registry.pools:
            return refused(FailureCode.UNKNOWN_POOL, f"no pool named {pool!r}")
        return await handler(pool)

    async def health_report(self, request: Request) -> Response:
        """A proxy's view of its backends, for the failure detector on the leader."""

        async def take(pool: str) -> Response:
            try:
                report = HealthReport.from_json(await _body(request))
            except _BadRequest as exc:
                return exc.response()
            except WireError as exc:
                return error(400, "bad_report", str(exc))
            self._detector.report(pool, report)
            return Response(status_code=204)

        return await self._at_detector(request, take)

    async def reporting_proxies(self, request: Request) -> Response:
        """The proxies the failure detector has heard from: when, their epoch, their verdicts."""

        async def view(pool: str) -> Response:
            return JSONResponse(self._detector.proxies(pool).to_json())

        return await self._at_detector(request, view)

    # -- membership --------------------------------------------------------------------------

    async def list_members(self, request: Request) -> Response:
        """The configuration in use; match indexes come from the leader (reads forward)."""

        def view() -> Response:
            core = self._node.core
            matches = core.member_matches()
            if core.role is Role.LEADER:
                matches[core.id] = core.last_index
            extra = {"id": core.id, "leader": core.leader, "term": core.term,
                     "commit_index": core.commit_index,
                     "with_state": sorted(self._node.peers_with_state)}  # fmt: skip
            return JSONResponse(
                members_view(core.membership, core.membership_index, core.id, matches,
                             self._node.reachable, extra)
            )  # fmt: skip

        return await self._read(request, view)

    async def add_member(self, request: Request) -> Response:
        try:
            node_id, url = parse_member(await _body(request))
        except _BadRequest as exc:
            return exc.response()
        except MembershipError as exc:
            return error(400, "bad_member", str(exc))
        return await self._change_members(request, members.add(node_id, url))

    async def remove_member(self, request: Request) -> Response:
        text = request.path_params["id"]
        if not text.isdigit() or int(text) <= 0:
            return error(400, "bad_member", "a member ID is a positive whole number")
        node_id = int(text)
        if node_id == self._node.core.id and self._node.soft_state.role is Role.LEADER:
            # A leader never removes itself: it hands leadership over, and the new leader
            # removes it, so no leader ever runs outside its own configuration.
            leader = await self._node.hand_over_leadership()
            if leader is None:
                return unavailable(request, "unavailable", "leadership not handed over yet")
            return await self._forward(request, leader)
        return await self._change_members(request, members.remove(node_id))

    async def _change_members(self, request: Request, change: members.Change) -> Response:
        try:
            index = await self._node.change_membership(change)
        except NotLeaderError as exc:
            return await self._forward(request, exc.leader)
        except MembershipError as exc:
            return error(409, "bad_membership", str(exc))
        except ProposalFailed as exc:
            return unavailable(request, "unavailable", str(exc))
        membership = self._node.core.membership.to_json()
        return JSONResponse({"index": index, "configuration": membership})

    # -- forwarding --------------------------------------------------------------------------

    async def _forward(self, request: Request, leader: NodeId | None) -> Response:
        if request.headers.get(FORWARDED) or leader is None or leader not in self._peers:
            return unavailable(request, "no_leader", "no leader is known; retry shortly")
        headers = {FORWARDED: "1", REQUEST_ID: _request_id(request)}
        for name in ("authorization", WHO, "content-type"):
            if name in request.headers:
                headers[name] = request.headers[name]
        url = self._peers[leader] + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        try:
            content = await _raw_body(request)
        except _BadRequest as exc:
            return exc.response()
        try:
            upstream = await self._forwarder.request(
                request.method, url, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            return unavailable(request, "no_leader", f"leader {leader} unreachable: {exc!r}"[:300])
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
        )
