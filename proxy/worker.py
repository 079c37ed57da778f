"""A data-plane worker process: serves the shared listening sockets of the fronts, HTTP
(proxy/httpserver.py) and the native memcached and redis fronts (proxy/native/).

It reports its metrics to the supervisor over a pipe and exits when the supervisor asks
(SIGTERM, draining in-flight requests) or disappears (the pipe closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvloop

from proxy.app import DataPlane
from proxy.config import ProxyConfig
from proxy.httpcache.handler import HTTPCacheHandler
from proxy.httpcache.origin import OriginClient
from proxy.httpcache.storage import EntryStore
from proxy.httpserver import Server
from proxy.kv import KVHandler
from proxy.metrics import ProxyMetrics
from proxy.native.front import Flusher, FrontLimits
from proxy.native.memcached import MemcachedFront
from proxy.native.redis import RedisFront
from proxy.router import RingState, Router
from ringleader import jsonlog
from ringleader.address import bind

# Metrics reach the supervisor this often; backend errors in them trigger probes, so this
# bounds how late live traffic counts as evidence.
REPORT_INTERVAL = 0.25
DRAIN_SECONDS = 10

log = logging.getLogger("ringleader.worker")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    config: ProxyConfig
    ring: RingState


@dataclass(frozen=True, slots=True)
class FrontSockets:
    """The listening socket of each front that is on, bound once by the supervisor; every
    worker accepts on all of them."""

    http: socket.socket | None
    memcached: socket.socket | None
    redis: socket.socket | None

    @classmethod
    def bind(cls, config: ProxyConfig) -> FrontSockets:
        bound: list[socket.socket] = []
        try:
            for flag, address in config.fronts:
                bound.append(bind(address, flag))
        except OSError:
            for sock in bound:
                sock.close()
            raise
        by_flag = dict(zip((flag for flag, _ in config.fronts), bound, strict=True))
        get = by_flag.get
        return cls(get("--listen"), get("--memcached-listen"), get("--redis-listen"))

    def close(self) -> None:
        for sock in (self.http, self.memcached, self.redis):
            if sock is not None:
                sock.close()


NativeFront = MemcachedFront | RedisFront


def worker_main(spec: WorkerSpec, sockets: FrontSockets, pipe: Connection) -> None:
    jsonlog.configure(f"proxy-worker-{spec.index}")
    uvloop.run(_serve(spec, sockets, pipe))


def _native_fronts(
    config: ProxyConfig, router: Router, metrics: ProxyMetrics, sockets: FrontSockets
) -> list[tuple[NativeFront, socket.socket]]:
    flusher = Flusher()
    limits = FrontLimits(
        max_request_bytes=config.native_max_request_bytes,
        max_keys=config.native_max_keys,
        max_pipeline=config.native_max_pipeline,
        max_connections=config.native_max_connections,
    )
    fronts: list[tuple[NativeFront, socket.socket]] = []
    if sockets.memcached is not None:
        memcached = MemcachedFront(
            router, metrics, limits, config.client, config.max_value_bytes, flusher
        )
        fronts.append((memcached, sockets.memcached))
    if sockets.redis is not None:
        redis = RedisFront(router, metrics, flusher, limits, config.client, config.redis_password)
        fronts.append((redis, sockets.redis))
    return fronts


async def _serve(spec: WorkerSpec, sockets: FrontSockets, pipe: Connection) -> None:
    metrics = ProxyMetrics()
    router = Router(
        spec.config.client,
        spec.ring,
        spec.config.failover_ttl,
        metrics.failover_writes,
        spec.config.hash_tag,
    )
    metrics.ring_epoch.labels().set(spec.ring.epoch)
    metrics.ring_backends.labels().set(len(spec.ring.backends))
    http = _http_cache(spec.config, router, metrics)
    kv = KVHandler(router, metrics, spec.config.max_value_bytes)
    app = DataPlane(kv, metrics, http)
    config = spec.config
    # The client address is the socket peer: X-Forwarded-For from clients is appended to,
    # never trusted (it would let a client forge its address).
    server = Server(
        app,
        max_header_bytes=config.max_header_bytes,
        header_timeout=config.header_timeout,
        keepalive_timeout=config.idle_timeout,
        body_timeout=config.body_timeout,
        send_timeout=config.send_timeout,
        max_connections=config.max_connections,
        drain_timeout=DRAIN_SECONDS,
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        server.should_exit = True
        stopping.set()

    def on_message() -> None:
        try:
            kind, payload = pipe.recv()
        except (EOFError, OSError):
            # The supervisor is gone: nobody would restart or watch over this worker.
            loop.remove_reader(pipe.fileno())
            stop()
            return
        if kind == "ring" and router.install(payload):
            for front, _ in native:
                front.upstreams.refresh()
            metrics.ring_epoch.labels().set(payload.epoch)
            metrics.ring_backends.labels().set(len(payload.backends))
            log.info("ring installed", extra={"ctx": {"epoch": payload.epoch,
                     "backends": [b.name for b in payload.backends]}})  # fmt: skip

    native = _native_fronts(config, router, metrics, sockets)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_reader(pipe.fileno(), on_message)

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            pipe.send(("metrics", metrics.set.snapshot()))

    reporter: asyncio.Future[None] | None = None
    try:
        for front, sock in native:
            await front.serve(sock)
        # The first report, REPORT_INTERVAL from now, finds every front accepting (the HTTP
        # server's listener is up within a loop turn of serve()): the supervisor counts a
        # worker as serving, for /readyz, from its first message.
        reporter = asyncio.ensure_future(report())
        # What start-up built lives as long as the worker: keeping it out of the cyclic
        # collector's generations spares every collection from scanning it again (the
        # collector took a fifth of a busy worker's time before).
        gc.freeze()
        # The fronts drain side by side, each within DRAIN_SECONDS.
        serving = [_drain_when(stopping, native)]
        if sockets.http is not None:
            serving.append(server.serve(sockets.http))
        await asyncio.gather(*serving)
    finally:
        for front, _ in native:
            front.close()
        if reporter is not None:
            reporter.cancel()
        loop.remove_reader(pipe.fileno())
        if http is not None:
            await http.close()
        await router.close()
        with contextlib.suppress(OSError):
            pipe.send(("metrics", metrics.set.snapshot()))


async def _drain_when(
    stopping: asyncio.Event, fronts: list[tuple[NativeFront, socket.socket]]
) -> None:
    """Once stopping, lets native clients get the replies to what they have sent, for up
    to DRAIN_SECONDS; the connections still busy then are closed."""
    await stopping.wait()
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            await asyncio.gather(*(front.drain() for front, _ in fronts))
    except TimeoutError:
        log.warning("native fronts: connections still busy after %ds, closed", DRAIN_SECONDS)


def _http_cache(
    config: ProxyConfig, router: Router, metrics: ProxyMetrics
) -> HTTPCacheHandler | None:
    """The HTTP cache for paths outside the KV prefix, when an origin is configured."""
    if config.origin is None:
        return None
    origin = OriginClient(config.origin_settings(config.origin), metrics)
    store = EntryStore(router, metrics, config.max_variants)
    return HTTPCacheHandler(store, origin, config.cache, metrics)
