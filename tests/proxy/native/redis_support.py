"""Real `ringleader proxy --redis-listen` processes over real redis-servers, for the redis
front's tests."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import redis

from tests.support.servers import (
    LOOPBACK,
    STARTUP_DEADLINE,
    ProcessGroup,
    Proxy,
    ServerProcess,
    free_port,
    redis_url,
    wait_until,
)


@dataclass
class RedisFleet:
    """Three redis-servers named rd1..rd3 and a proxy with a redis front over them."""

    backends: dict[str, ServerProcess]
    proxy: Proxy
    port: int

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=10, **options)  # type: ignore[arg-type]

    def direct(self, name: str) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.backends[name].port, socket_timeout=5)

    def holder(self, key: bytes | str) -> list[str]:
        """Which backends hold `key`, read from each backend directly."""
        return [name for name in self.backends if self.direct(name).exists(key)]

    def metrics(self) -> str:
        return httpx.get(self.proxy.admin_url + "/metrics", timeout=5).text

    def status(self) -> dict[str, object]:
        body: dict[str, object] = httpx.get(self.proxy.admin_url + "/status", timeout=5).json()
        return body


def start_redis_proxy(
    procs: ProcessGroup, backend_urls: Sequence[str], *extra: str, http: bool = False
) -> tuple[Proxy, int]:
    """A proxy serving RESP2 (and HTTP too with `http`); returns it and its redis port."""
    port, admin = free_port(), free_port()
    args = ["proxy", "--redis-listen", f"{LOOPBACK}:{port}", "--admin", f"{LOOPBACK}:{admin}"]
    if http:
        args += ["--listen", f"{LOOPBACK}:{free_port()}"]
    for url in backend_urls:
        args += ["--backend", url]
    proc = procs.ringleader([*args, *extra], port, name="proxy")
    proxy = Proxy(proc, f"redis://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{admin}")
    proxy.wait_ready()
    # The supervisor's socket accepts before any worker serves it: wait for an answer.
    wait_until(lambda: answers_ping(port), STARTUP_DEADLINE, "the redis front")
    return proxy, port


def answers_ping(port: int) -> bool:
    """Whether a worker answers on `port` (PONG, or NOAUTH when AUTH is required)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16) in (b"+PONG\r\n", b"-NOAUTH Authenti")
    except OSError:
        return False


def redis_fleet(procs: ProcessGroup, *extra: str) -> RedisFleet:
    backends = {f"rd{i}": procs.redis() for i in (1, 2, 3)}
    urls = [redis_url(server, name=name) for name, server in backends.items()]
    proxy, port = start_redis_proxy(procs, urls, *extra)
    return RedisFleet(backends, proxy, port)
