"""Async clients for the cache servers: one module per wire protocol."""

from ringleader.backends.base import CacheClient, ClientSettings
from ringleader.backends.errors import BackendError, BackendTimeout, BackendUnavailable
from ringleader.backends.factory import make_client

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheClient",
    "ClientSettings",
    "make_client",
]
