"""Invalidation after unsafe requests (RFC 9111 §4.4)."""

from urllib.parse import urljoin, urlsplit

from .headers import OWS, Headers, first
from .key import origin, uri_key

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
"""RFC 9110 §9.2.1; every other method, known or not, is treated as unsafe."""


def invalidated_keys(
    method: bytes, status: int, scheme: bytes, host: bytes, target: bytes, response_headers: Headers
) -> tuple[bytes, ...]:
    """Keys to drop after ``method`` on ``target`` got ``status``.

    Only a non-error (2xx/3xx) answer to an unsafe method invalidates: the target
    URI, and the URIs in Location and Content-Location when they share the
    target's origin (scheme, host and port), which prevents a response from
    evicting another site's entries.
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return ()
    target_origin = origin(scheme, host)
    keys = [uri_key(target_origin, target)]
    base = (target_origin + target).decode("latin-1")
    for name in (b"location", b"content-location"):
        reference = first(response_headers, name)
        key = None if reference is None else _same_origin_key(base, target_origin, reference)
        if key is not None and key not in keys:
            keys.append(key)
    return tuple(keys)


def _same_origin_key(base: str, target_origin: bytes, reference: bytes) -> bytes | None:
    try:
        uri = urlsplit(urljoin(base, reference.strip(OWS).decode("latin-1")))
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    host = uri.netloc.rpartition("@")[2]
    if origin(uri.scheme.encode("latin-1"), host.encode("latin-1")) != target_origin:
        return None
    path = uri.path.encode("latin-1") or b"/"
    return uri_key(target_origin, path + b"?" + uri.query.encode("latin-1") if uri.query else path)
