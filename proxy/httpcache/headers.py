"""Access to ASGI raw header lists (lowercase names, repeated names allowed)."""

from collections.abc import Iterable, Iterator, Sequence

Headers = Sequence[tuple[bytes, bytes]]
"""Header fields as ASGI gives them: ``(lowercase name, value)`` pairs, in order."""

HeaderList = list[tuple[bytes, bytes]]

OWS = b" \t"

# RFC 9110 §7.6.1: hop-by-hop fields a proxy removes, plus the legacy ones it must
# not forward (Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade) and the
# proxy-scoped authentication fields (§11.7).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"trailer",
    }
)


def lowercased(headers: Iterable[tuple[bytes, bytes]]) -> HeaderList:
    """``headers`` with lowercase names: the form every layer above the wire compares."""
    return [(name.lower(), value) for name, value in headers]


def first(headers: Headers, name: bytes) -> bytes | None:
    """The value of the first field line called ``name``, or None."""
    for field, value in headers:
        if field == name:
            return value
    return None


def tokens(headers: Headers, name: bytes) -> Iterator[bytes]:
    """Lowercased members of a comma-separated token list field (RFC 9110 §5.6.1).

    All field lines called ``name`` form one list; empty members are skipped.
    Only for fields whose members are tokens (Connection, Vary), which cannot
    contain quoted commas.
    """
    for field, value in headers:
        if field == name:
            for member in value.split(b","):
                member = member.strip(OWS)
                if member:
                    yield member.lower()


def hop_by_hop_names(headers: Headers) -> frozenset[bytes]:
    """HOP_BY_HOP plus the fields this message's Connection nominates (§7.6.1)."""
    listed = frozenset(tokens(headers, b"connection"))
    return HOP_BY_HOP | listed if listed else HOP_BY_HOP


def without(headers: Headers, names: frozenset[bytes]) -> HeaderList:
    """``headers`` minus every line whose name is in ``names``."""
    return [(field, value) for field, value in headers if field not in names]


def strip_hop_by_hop(headers: Headers) -> HeaderList:
    """``headers`` without hop-by-hop fields and the fields Connection nominates."""
    return without(headers, hop_by_hop_names(headers))


# RFC 9110 §5.6.2 token characters, and the bytes a field value may hold (§5.5: visible
# characters, obs-text, space and tab).
_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FIELD_VALUE = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"


def invalid_field(headers: Headers) -> bytes | None:
    """The name of the first field line that is not valid HTTP, or None. Such a message
    is neither relayed nor stored: a control byte in a value splits responses."""
    for name, value in headers:
        if not name or name.translate(None, _TCHAR) or value.translate(None, _FIELD_VALUE):
            return name
    return None
