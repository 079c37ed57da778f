"""What a reverse proxy checks in a request and changes in the headers it forwards.

Host: the proxy fronts one origin (``--origin URL``). Upstream requests always carry the
origin's own authority as Host, and the cache key is built from that authority, never
from the client's Host or an absolute-form target. A client's Host that names another
site therefore reaches the same origin object under the same key: it can neither select
nor poison another host's entries. A missing, repeated or malformed Host is a 400
(RFC 9112 §3.2). The client's Host is not forwarded, not even as X-Forwarded-Host, which
is a classic unkeyed cache-poisoning input (UNKEYED lists the others).
"""

from __future__ import annotations

from collections.abc import Iterable

from .headers import HeaderList, Headers, hop_by_hop_names

VIA = b"1.1 ringleader"

# Framing is re-derived for the upstream request (httpx sets Content-Length or chunked
# from the body we pass), so the client's framing fields are never forwarded. Host is the
# origin's; X-Forwarded-For is appended to, never passed on as the client wrote it.
_NEVER_FORWARDED = frozenset({b"host", b"content-length", b"x-forwarded-for"})
UNKEYED = frozenset(
    {b"forwarded", b"x-forwarded-host", b"x-forwarded-server", b"x-forwarded-proto",
     b"x-forwarded-port", b"x-forwarded-scheme", b"x-host", b"x-original-url",
     b"x-rewrite-url", b"x-http-method-override"}
)  # fmt: skip
"""Request fields that frameworks read as the URL, host, scheme or method, but that are
not in the cache key: forwarded, each would let one client poison the entry every other
client gets. Only `--forward-header NAME` lets one through."""
_CLIENT_CONDITIONS = frozenset(
    {b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range",
     b"range"}
)  # fmt: skip
# RFC 3986 authority characters (reg-name, IP literal, port).
_HOST_BYTES = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:[]%!$&'()*+,;="
)


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def check_request(headers: Headers, raw_path: bytes) -> int:
    """Reject what a proxy must not forward or key on; returns the declared
    Content-Length (-1 if none). Raises BadRequest."""
    hosts = 0
    content_length = -1
    chunked = False
    for name, value in headers:
        if name == b"host":
            hosts += 1
            if not value or not _HOST_BYTES.issuperset(value):
                raise BadRequest(400, "bad_host", "Host is not a valid authority")
        elif name == b"content-length":
            if not value.isdigit() or (content_length >= 0 and int(value) != content_length):
                raise BadRequest(400, "bad_framing", "invalid or conflicting Content-Length")
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    if hosts != 1:
        raise BadRequest(400, "bad_host", "a request needs exactly one Host (RFC 9112 §3.2)")
    # RFC 9112 §6.1: both framings at once is the request smuggling shape; refuse it.
    if chunked and content_length >= 0:
        raise BadRequest(400, "bad_framing", "Content-Length with Transfer-Encoding")
    if not raw_path.startswith(b"/") or _has_dot_segment(raw_path):
        raise BadRequest(400, "bad_target", "the target must be a path without dot segments")
    return content_length


def _has_dot_segment(path: bytes) -> bool:
    # The origin client normalises dot segments, so "/a/../b" would fetch "/b" under
    # another key. Refusing them keeps one key per upstream URL.
    if b"/." not in path:
        return False
    return any(segment in (b".", b"..") for segment in path.split(b"/"))


def not_forwarded(forward_headers: Iterable[str]) -> frozenset[bytes]:
    """The request fields never sent upstream, given the names `--forward-header` allows."""
    allowed = frozenset(name.lower().encode("latin-1") for name in forward_headers)
    return _NEVER_FORWARDED | (UNKEYED - allowed)


def upstream_headers(
    headers: Headers, client_host: str | None, strip_conditions: bool, never: frozenset[bytes]
) -> HeaderList:
    """The client's headers as forwarded: without hop-by-hop fields (RFC 9110 §7.6.1)
    and the ``never`` fields (not_forwarded()), with X-Forwarded-For appended and our Via
    added (§7.6.3). ``strip_conditions`` also drops the client's preconditions and Range,
    for fetches that fill the cache (the cache answers those itself)."""
    dropped = hop_by_hop_names(headers) | never
    if strip_conditions:
        dropped |= _CLIENT_CONDITIONS
    forwarded_for: list[bytes] = []
    out: HeaderList = []
    for name, value in headers:
        if name in dropped:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            continue
        out.append((name, value))
    if client_host is not None:
        forwarded_for.append(client_host.encode())
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"via", VIA))
    return out
