"""A data-plane worker process: serves the shared listening socket (proxy/httpserver.py).

It reports its metrics to the supervisor over a pipe and exits when the supervisor asks
(SIGTERM, draining in-flight requests) or disappears (the pipe closes).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from proxy.router import RingState, Router
from ringleader import jsonlog

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


def worker_main(spec: WorkerSpec, sock: socket.socket, pipe: Connection) -> None:
    jsonlog.configure(f"proxy-worker-{spec.index}")
    uvloop.run(_serve(spec, sock, pipe))


async def _serve(spec: WorkerSpec, sock: socket.socket, pipe: Connection) -> None:
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

    def stop() -> None:
        server.should_exit = True

    def on_message() -> None:
        try:
            kind, payload = pipe.recv()
        except (EOFError, OSError):
            # The supervisor is gone: nobody would restart or watch over this worker.
            loop.remove_reader(pipe.fileno())
            stop()
            return
        if kind == "ring" and router.install(payload):
            metrics.ring_epoch.labels().set(payload.epoch)
            metrics.ring_backends.labels().set(len(payload.backends))
            log.info("ring installed", extra={"ctx": {"epoch": payload.epoch,
                     "backends": [b.name for b in payload.backends]}})  # fmt: skip

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_reader(pipe.fileno(), on_message)

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            pipe.send(("metrics", metrics.set.snapshot()))

    reporter = asyncio.ensure_future(report())
    try:
        await server.serve(sock)
    finally:
        reporter.cancel()
        loop.remove_reader(pipe.fileno())
        if http is not None:
            await http.close()
        await router.close()
        with contextlib.suppress(OSError):
            pipe.send(("metrics", metrics.set.snapshot()))


def _http_cache(
    config: ProxyConfig, router: Router, metrics: ProxyMetrics
) -> HTTPCacheHandler | None:
    """The HTTP cache for paths outside the KV prefix, when an origin is configured."""
    if config.origin is None:
        return None
    origin = OriginClient(config.origin_settings(config.origin), metrics)
    store = EntryStore(router, metrics, config.max_variants)
    return HTTPCacheHandler(store, origin, config.cache, metrics)
