"""Consistent-hash rings: pure code that maps a key to a backend."""

from proxy.ring.base import Ring
from proxy.ring.ketama import KetamaRing

__all__ = ["KetamaRing", "Ring"]
