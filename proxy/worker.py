"""A data-plane worker process: serves the shared listening socket with uvicorn.

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

import uvicorn
import uvloop

from control import jsonlog
from proxy.app import DataPlane
from proxy.config import ProxyConfig
from proxy.embedded import EmbeddedServer
from proxy.kv import KVHandler
from proxy.metrics import ProxyMetrics
from proxy.router import RingState, Router

REPORT_INTERVAL = 1.0
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
    router = Router(spec.config.client, spec.ring)
    metrics.ring_epoch.labels().set(spec.ring.epoch)
    app = DataPlane(KVHandler(router, metrics, spec.config.max_value_bytes), metrics)
    server = EmbeddedServer(
        uvicorn.Config(
            app,
            lifespan="off",
            http="httptools",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=DRAIN_SECONDS,
        )
    )
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # Readable means a message or EOF; the supervisor sends nothing yet, so it is EOF.
    loop.add_reader(pipe.fileno(), stop)

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            pipe.send(("metrics", metrics.set.snapshot()))

    reporter = asyncio.ensure_future(report())
    try:
        await server.serve(sockets=[sock])
    finally:
        reporter.cancel()
        loop.remove_reader(pipe.fileno())
        await router.close()
        with contextlib.suppress(OSError):
            pipe.send(("metrics", metrics.set.snapshot()))
