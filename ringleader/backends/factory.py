"""Builds the right client for a backend spec."""

from __future__ import annotations

from ringleader.backend_url import BackendSpec, Protocol
from ringleader.backends.base import CacheClient, ClientSettings
from ringleader.backends.memcached import MemcachedClient
from ringleader.backends.redis import RedisClient


def make_client(spec: BackendSpec, settings: ClientSettings) -> CacheClient:
    if spec.protocol is Protocol.MEMCACHED:
        return MemcachedClient(spec.name, spec.host, spec.port, settings)
    password = spec.auth_password if spec.password or spec.password_file else None
    return RedisClient(spec.name, spec.host, spec.port, spec.db, settings, password)
