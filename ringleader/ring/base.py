"""The interface every distribution offers to the router."""

from __future__ import annotations

from typing import Protocol

from ringleader.backend_url import BackendSpec


class Ring(Protocol):
    """An immutable mapping from keys to backends.

    Implementations never change after construction: a new membership builds a new ring,
    which the router swaps in atomically.
    """

    @property
    def backends(self) -> tuple[BackendSpec, ...]: ...

    def lookup(self, key: bytes) -> BackendSpec:
        """The backend that owns `key`."""
        ...

    def replicas(self, key: bytes, n: int) -> list[BackendSpec]:
        """Up to `n` distinct backends for `key`, owner first, in ring order."""
        ...
