"""Async clients for the cache servers: one module per wire protocol."""

from proxy.backends.base import CacheClient, ClientSettings
from proxy.backends.errors import BackendError, BackendTimeout, BackendUnavailable
from proxy.backends.factory import make_client

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheClient",
    "ClientSettings",
    "make_client",
]
