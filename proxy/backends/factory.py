"""Builds the right client for a backend spec."""

from __future__ import annotations

from proxy.backend_url import BackendSpec, Protocol
from proxy.backends.base import CacheClient, ClientSettings
from proxy.backends.memcached import MemcachedClient
from proxy.backends.redis import RedisClient


def make_client(spec: BackendSpec, settings: ClientSettings) -> CacheClient:
    if spec.protocol is Protocol.MEMCACHED:
        return MemcachedClient(spec.name, spec.host, spec.port, settings)
    return RedisClient(spec.name, spec.host, spec.port, spec.db, settings)
