"""`ringleader proxy`: the supervisor process.

It binds each front's socket once (HTTP, memcached, redis) and hands them to N worker
processes, serves the admin port, heartbeats the backends, merges the workers' metrics and
restarts workers that die.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from proxy.admin import admin_app
from proxy.config import ProxyConfig
from proxy.health import HealthProber
from proxy.metrics import ProxyMetrics
from proxy.reporter import HealthReporter, proxy_identity
from proxy.router import RingState
from proxy.telemetry import MergedCollector, MergedMetrics, Snapshot
from proxy.watch import RingWatcher
from proxy.worker import DRAIN_SECONDS, FrontSockets, WorkerSpec, worker_main
from ringleader.address import bind
from ringleader.embedded import EmbeddedServer

log = logging.getLogger("ringleader.proxy")

RESTART_BACKOFF_MAX = 5.0


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    pipe: Connection
    started: float = field(default_factory=time.monotonic)
    # A worker's first message comes once its fronts accept (proxy/worker.py), not merely
    # once the process runs: the shared sockets queue connections before any worker serves.
    serving: bool = False


class Supervisor:
    def __init__(self, config: ProxyConfig, sockets: FrontSockets) -> None:
        self._config = config
        self._sockets = sockets
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self.metrics = ProxyMetrics()
        self.merged = MergedMetrics(self.metrics.set)
        self.ring = RingState(epoch=0, hash_name=config.hash, backends=config.backends)
        self.prober = HealthProber(
            self.metrics, config.health_interval, config.health_timeout, self._health_changed
        )
        self.reporter = (
            HealthReporter(config, self.prober.view, self.metrics.ring_epoch.name)
            if config.control
            else None
        )
        # (worker pid, backend) -> errors that worker has seen in live traffic
        self._traffic_errors: dict[tuple[int, str], float] = {}
        self._all_exited = asyncio.Event()
        self._background: set[asyncio.Future[None]] = set()
        self.watcher: RingWatcher | None = None
        if config.control:
            control_up = self.metrics.control_up.labels()
            # Proxies spread their watches over the control nodes (bench/control_scale.py).
            self.watcher = RingWatcher(
                list(config.control), config.pool, self.install_ring, control_up,
                spread_by=proxy_identity(config),
            )  # fmt: skip
        self.metrics.ring_epoch.labels().set(self.ring.epoch)
        self.metrics.ring_backends.labels().set(len(self.ring.backends))
        self.metrics.control_up.labels().set(1.0)

    def start_workers(self) -> None:
        for index in range(self._config.workers):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        parent_end, child_end = self._ctx.Pipe()
        spec = WorkerSpec(index=index, config=self._config, ring=self.ring)
        process = self._ctx.Process(
            target=worker_main,
            args=(spec, self._sockets, child_end),
            name=f"ringleader-proxy-worker-{index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        worker = _Worker(index, process, parent_end)
        self._workers[index] = worker
        loop = asyncio.get_running_loop()
        loop.add_reader(parent_end.fileno(), self._on_message, worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)
        self.metrics.workers.labels().set(len(self._workers))
        log.info("worker %d started", index, extra={"ctx": {"worker": index, "child": process.pid}})

    def _on_message(self, worker: _Worker) -> bool:
        """Handles one message; False once the worker's end of the pipe is closed."""
        try:
            kind, payload = worker.pipe.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.pipe.fileno())
            return False
        worker.serving = True
        if kind == "metrics" and worker.process.pid is not None:
            self.merged.update(worker.process.pid, payload)
            self._probe_on_traffic_errors(worker.process.pid, payload)
            if self.reporter is not None:
                self.reporter.worker_metrics(worker.process.pid, payload)
        return True

    def _probe_on_traffic_errors(self, pid: int, snapshot: Snapshot) -> None:
        """Live traffic is evidence too: new errors to a backend trigger a probe now."""
        totals: dict[str, float] = {}
        for labels, sample in snapshot.get(self.metrics.backend_errors.name, {}).items():
            totals[labels[0]] = totals.get(labels[0], 0.0) + sample[0]
        for backend, total in totals.items():
            if total > self._traffic_errors.get((pid, backend), 0.0):
                self.prober.probe_now(backend)
            self._traffic_errors[(pid, backend)] = total

    def _health_changed(self) -> None:
        if self.reporter is not None:
            self.reporter.changed()

    def _on_exit(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        # Drain the last metrics the worker sent before it went away.
        while worker.pipe.poll() and self._on_message(worker):
            pass
        loop.remove_reader(worker.pipe.fileno())
        worker.pipe.close()
        worker.process.join()
        if worker.process.pid is not None:
            self.merged.retire(worker.process.pid)
            if self.reporter is not None:
                self.reporter.worker_exited(worker.process.pid)
            pid = worker.process.pid
            self._traffic_errors = {k: v for k, v in self._traffic_errors.items() if k[0] != pid}
        del self._workers[worker.index]
        self.metrics.workers.labels().set(len(self._workers))
        if self._stopping:
            if not self._workers:
                self._all_exited.set()
            return
        code = worker.process.exitcode
        uptime = time.monotonic() - worker.started
        delay = 0.0 if uptime > RESTART_BACKOFF_MAX else RESTART_BACKOFF_MAX - uptime
        log.error(
            "worker %d exited with code %s; restarting in %.1fs",
            worker.index,
            code,
            delay,
            extra={"ctx": {"worker": worker.index, "exitcode": code}},
        )
        self.metrics.worker_restarts.labels().inc()
        loop.call_later(delay, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self._stopping and index not in self._workers:
            self._spawn(index)

    async def stop_workers(self) -> None:
        self._stopping = True
        if not self._workers:
            return
        for worker in list(self._workers.values()):
            worker.process.terminate()
        try:
            await asyncio.wait_for(self._all_exited.wait(), DRAIN_SECONDS + 2)
        except TimeoutError:
            for worker in list(self._workers.values()):
                worker.process.kill()

    def install_ring(self, state: RingState) -> None:
        """Takes a newer ring from the watch and hands it to every worker."""
        if state.epoch <= self.ring.epoch:
            return
        self.ring = state
        self.metrics.ring_epoch.labels().set(state.epoch)
        self.metrics.ring_backends.labels().set(len(state.backends))
        for worker in self._workers.values():
            worker.pipe.send(("ring", state))
        task = asyncio.ensure_future(self.prober.watch(state.owners or state.backends))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        log.info(
            "ring epoch %d", state.epoch,
            extra={"ctx": {"epoch": state.epoch, "backends": [b.name for b in state.backends]}},
        )  # fmt: skip

    def readiness(self) -> str | None:
        if self.watcher is not None and not self.watcher.received_first.is_set():
            return f"no ring from the control plane yet: {self.watcher.last_error or 'waiting'}"
        running = sum(1 for w in self._workers.values() if w.process.is_alive() and w.serving)
        if running < self._config.workers:
            return f"{running} of {self._config.workers} workers serving"
        return None

    def status(self) -> dict[str, Any]:
        return {
            "listen": None if self._config.listen is None else str(self._config.listen),
            "fronts": {flag[2:]: str(address) for flag, address in self._config.fronts},
            "source": "control" if self._config.control else "static",
            "pool": self._config.pool,
            "epoch": self.ring.epoch,
            "control_error": self.watcher.last_error if self.watcher else None,
            "distribution": "ketama",
            "hash": self.ring.hash_name,
            "workers": {"configured": self._config.workers, "running": len(self._workers)},
            "backends": [
                {
                    "name": spec.name,
                    "url": spec.url,
                    "weight": spec.weight,
                    **self.prober.view[spec.name].observation().to_json(),
                }
                for spec in self.ring.backends
                if spec.name in self.prober.view
            ],
        }


async def serve(config: ProxyConfig) -> None:
    # Handlers first: a SIGTERM during start-up must still mean a clean stop.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sockets = FrontSockets.bind(config)
    admin_sock = bind(config.admin, "--admin")
    supervisor = Supervisor(config, sockets)
    registry = CollectorRegistry()
    registry.register(MergedCollector(supervisor.metrics.set, supervisor.merged))
    admin = EmbeddedServer(
        uvicorn.Config(
            admin_app(
                registry,
                lambda: supervisor.merged.update(os.getpid(), supervisor.metrics.set.snapshot()),
                supervisor.readiness,
                supervisor.status,
                config.control,
            ),
            lifespan="off",
            access_log=False,
            log_config=None,
        )
    )
    await supervisor.prober.watch(supervisor.ring.backends)
    supervisor.start_workers()
    background = [
        asyncio.ensure_future(task.run())
        for task in (supervisor.watcher, supervisor.reporter)
        if task is not None
    ]
    admin_task = asyncio.ensure_future(admin.serve(sockets=[admin_sock]))
    log.info(
        "proxy listening",
        extra={
            "ctx": {
                **{flag.removeprefix("--"): str(address) for flag, address in config.fronts},
                "admin": str(config.admin),
                "workers": config.workers,
                "backends": [b.name for b in config.backends],
                "control": list(config.control),
                "pool": config.pool,
            }
        },
    )
    await stop.wait()
    log.info("shutting down: draining workers")
    await supervisor.stop_workers()
    admin.should_exit = True
    await admin_task
    for task in background:
        task.cancel()
    for closable in (supervisor.watcher, supervisor.reporter):
        if closable is not None:
            await closable.close()
    await supervisor.prober.close()
    sockets.close()
