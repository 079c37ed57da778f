"""Cache-Control parsing (RFC 9111 §5.2) and delta-seconds (§1.2.2)."""

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from .headers import OWS, Headers

DELTA_MAX = 2147483648
"""§1.2.2: a delta-seconds value too large to represent is read as 2^31."""

_BACKSLASH = 0x5C

# Origins repeat a handful of Cache-Control values, and every hit parses its
# entry's; results are immutable, so short values are memoised. The length bound
# keeps the memo's memory bounded (1024 * 256 bytes).
_MEMO_MAX_LENGTH = 256
_MEMO_SIZE = 1024


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives this cache acts on, from a request or a response.

    Unknown directives are ignored (§5.2.3). A delta-seconds directive that is
    malformed, lacks its argument, or appears again with a different argument is
    read as 0: for max-age and s-maxage that makes the response stale, as §4.2.1
    encourages, and for the stale windows it grants nothing. Identical duplicates
    agree and are read once. ``max_stale`` without an argument ("any staleness")
    is DELTA_MAX. The qualified forms of no-cache and private (a field-name
    list) are read as their unqualified forms, the stricter reading §5.2.2.4 and
    §5.2.2.7 allow.
    """

    max_age: int | None = None
    s_maxage: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    no_cache: bool = False
    no_store: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    only_if_cached: bool = False


EMPTY = CacheControl()


def parse_delta_seconds(value: bytes) -> int | None:
    """delta-seconds (§1.2.2) clamped to DELTA_MAX, or None if ``value`` is not 1*DIGIT."""
    # bytes.isdigit() accepts ASCII digits only, unlike str.isdigit().
    if not value.isdigit():
        return None
    significant = value.lstrip(b"0")
    # More than ten digits always exceeds 2^31; skipping int() keeps huge values O(n).
    if len(significant) > 10:
        return DELTA_MAX
    return min(int(significant or b"0"), DELTA_MAX)


def parse_cache_control(headers: Headers) -> CacheControl:
    """The Cache-Control directives of all ``cache-control`` lines in ``headers``."""
    lines = [value for field, value in headers if field == b"cache-control"]
    if not lines:
        return EMPTY
    # RFC 9110 §5.3: several lines form one comma-separated list.
    value = lines[0] if len(lines) == 1 else b",".join(lines)
    return _parse_memo(value) if len(value) <= _MEMO_MAX_LENGTH else _parse(value)


def _parse(value: bytes) -> CacheControl:
    args: dict[bytes, bytes | None] = {}
    for member in _members(value):
        name, eq, arg = member.partition(b"=")
        name = name.strip(OWS).lower()
        if not name:
            continue
        parsed = _argument(arg.strip(OWS)) if eq else None
        # A conflicting duplicate becomes b"", which no directive accepts.
        args[name] = parsed if args.get(name, parsed) == parsed else b""
    return CacheControl(
        max_age=_seconds(args, b"max-age"),
        s_maxage=_seconds(args, b"s-maxage"),
        max_stale=_seconds(args, b"max-stale", bare=DELTA_MAX),
        min_fresh=_seconds(args, b"min-fresh"),
        stale_while_revalidate=_seconds(args, b"stale-while-revalidate"),
        stale_if_error=_seconds(args, b"stale-if-error"),
        no_cache=b"no-cache" in args,
        no_store=b"no-store" in args,
        private=b"private" in args,
        public=b"public" in args,
        must_revalidate=b"must-revalidate" in args,
        proxy_revalidate=b"proxy-revalidate" in args,
        must_understand=b"must-understand" in args,
        only_if_cached=b"only-if-cached" in args,
    )


_parse_memo = functools.lru_cache(maxsize=_MEMO_SIZE)(_parse)


def _seconds(args: dict[bytes, bytes | None], name: bytes, bare: int = 0) -> int | None:
    """A delta-seconds directive's value; ``bare`` if it has no argument."""
    if name not in args:
        return None
    arg = args[name]
    if arg is None:
        return bare
    delta = parse_delta_seconds(arg)
    return 0 if delta is None else delta


def _argument(arg: bytes) -> bytes:
    """The argument in token or quoted-string form, both of which recipients accept
    (§5.2); b"" for a malformed quoted string."""
    if arg[:1] != b'"':
        return arg
    if _skip_quoted(arg, 1) != len(arg):
        return b""
    inner = arg[1:-1]
    if b"\\" not in inner:
        return inner
    out = bytearray()
    escaped = False
    for byte in inner:
        if escaped or byte != _BACKSLASH:
            out.append(byte)
            escaped = False
        else:
            escaped = True
    return bytes(out)


def _skip_quoted(value: bytes, start: int) -> int:
    """Index just past the quoted-string whose content starts at ``start``, or -1
    if it is unterminated. Each byte is examined a bounded number of times, so the
    scan is linear."""
    while True:
        quote = value.find(b'"', start)
        if quote == -1:
            return -1
        backslash = quote
        while backslash > start and value[backslash - 1] == _BACKSLASH:
            backslash -= 1
        if (quote - backslash) % 2 == 0:
            return quote + 1
        start = quote + 1


def _members(value: bytes) -> Iterator[bytes]:
    """Comma-separated members of ``value``; commas inside quoted strings
    (e.g. no-cache="a,b") do not separate."""
    if b'"' not in value:
        yield from value.split(b",")
        return
    start = 0
    comma = value.find(b",")
    quote = value.find(b'"')
    while True:
        if quote != -1 and (comma == -1 or quote < comma):
            position = _skip_quoted(value, quote + 1)
            if position == -1:
                break
            quote = value.find(b'"', position)
            if comma != -1 and comma < position:
                comma = value.find(b",", position)
            continue
        if comma == -1:
            break
        yield value[start:comma]
        start = position = comma + 1
        comma = value.find(b",", position)
    yield value[start:]
