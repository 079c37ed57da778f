"""Operator settings for the shared cache."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Settings where RFC 9111 leaves the choice to the cache.

    ``heuristic_cap``: the longest heuristic freshness lifetime in seconds
    (§4.2.2), so a response last modified years ago is still revalidated
    (`--heuristic-cap`).
    ``cache_with_cookies``: when False (`--cache-cookies` off, like Varnish's built-in VCL),
    requests carrying Cookie bypass the cache and responses carrying Set-Cookie
    are not stored. When True both are cached, and Set-Cookie is still never
    stored, so one client's cookie is never replayed to another.
    """

    heuristic_cap: float
    cache_with_cookies: bool
