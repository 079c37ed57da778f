"""Header names are compared lowercase everywhere, whatever casing arrived on the wire
(nginx, Apache, Node and http.server send `Cache-Control`). A property test: the policy
gives the same verdicts for any casing of the origin's field names, once lowercased at
the I/O seam (headers.lowercased, as origin.OriginReply does)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.httpcache.headers import lowercased, strip_hop_by_hop
from proxy.httpcache.policy import CachePolicy
from proxy.httpcache.storable import storability, stored_headers

FIELDS = [
    (b"cache-control", b"max-age=60"),
    (b"content-length", b"4"),
    (b"transfer-encoding", b"chunked"),
    (b"connection", b"keep-alive, x-hop"),
    (b"x-hop", b"1"),
    (b"set-cookie", b"id=1"),
    (b"vary", b"Accept-Encoding"),
    (b"etag", b'"v1"'),
    (b"date", b"Sat, 05 Dec 2026 10:00:00 GMT"),
]


@st.composite
def recased(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    chosen = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=len(FIELDS), unique=True))
    out = []
    for name, value in chosen:
        flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        out.append(
            (
                bytes(
                    c ^ 0x20 if f and chr(c).isalpha() else c
                    for c, f in zip(name, flips, strict=True)
                ),
                value,
            )
        )
    return out


@settings(max_examples=300)
@given(recased())
def test_any_casing_gives_the_lowercase_verdicts(headers: list[tuple[bytes, bytes]]) -> None:
    lower = [(name.lower(), value) for name, value in headers]
    seen = lowercased(headers)
    assert seen == lower
    policy = CachePolicy(heuristic_cap=86400.0, cache_with_cookies=False)
    assert storability(b"GET", [], 200, seen, policy) is storability(b"GET", [], 200, lower, policy)
    assert strip_hop_by_hop(seen) == strip_hop_by_hop(lower)
    hop = {b"transfer-encoding", b"connection"}
    if any(name == b"connection" for name, _ in lower):
        hop.add(b"x-hop")
    assert not hop & {name for name, _ in strip_hop_by_hop(seen)}
    assert stored_headers(seen, 0.0) == stored_headers(lower, 0.0)
