"""Consistent-hash rings: pure code that maps a key to a backend."""

from ringleader.ring.base import Ring
from ringleader.ring.ketama import KetamaRing

__all__ = ["KetamaRing", "Ring"]
