"""Cache keys (RFC 9111 §2): method, scheme, host and target.

A key is a canonical byte string, not yet a backend key: it holds a space and may
exceed 250 bytes, so the I/O layer digests it into one that proxy.keys.key_problem
accepts.
"""

_DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}


def origin(scheme: bytes, host: bytes) -> bytes:
    """``scheme://host[:port]`` normalised per RFC 3986 §6.2.3: lowercase, and the
    scheme's default (or an empty) port dropped."""
    scheme = scheme.lower()
    host = host.lower()
    name, colon, port = host.rpartition(b":")
    # An IPv6 literal without a port ends in "]", so its last colon is not a port separator.
    if colon and not port.endswith(b"]") and (not port or port == _DEFAULT_PORTS.get(scheme)):
        host = name
    return scheme + b"://" + host


def cache_key(method: bytes, scheme: bytes, host: bytes, target: bytes) -> bytes | None:
    """The key for a request, or None if its method is not served from the cache.

    Only GET responses are stored; HEAD is answered from the GET entry, so both
    map to the GET key. ``target`` is the origin-form request target (path and
    query), compared byte for byte.
    """
    if method != b"GET" and method != b"HEAD":
        return None
    return uri_key(origin(scheme, host), target)


def uri_key(normalised_origin: bytes, target: bytes) -> bytes:
    """The key of the GET entry for ``target`` at an origin() result."""
    return b"GET " + normalised_origin + target
