"""The memcached text protocol as the memcached front speaks it: a streaming request parser
and a framer for the backends' replies. Pure: no I/O, no clock.

What a backend receives always earns exactly one reply, so the upstream's FIFO of requests
never drifts: `noreply` and the meta `q` flag are stripped before forwarding, and the front
drops the replies the client asked not to see (memcached's own noreply semantics).

Resynchronisation follows memcached: a bad command line is answered and skipped; a bad
storage command whose data block can still be located is answered and its data skipped;
when the data block cannot be located (unreadable length, no CRLF after it) the stream is
lost and the connection is closed after the error reply.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from enum import IntEnum

from proxy.keys import MAX_KEY_BYTES, RESERVED_PREFIXES, key_problem

# memcached reads an exptime above 30 days as an absolute unix time.
RELATIVE_EXPTIME_LIMIT = 60 * 60 * 24 * 30
_UINT32 = 1 << 32
_UINT64 = 1 << 64
# Longest meta opaque token memcached accepts is 32 bytes; flags are single characters with
# a short token, so a meta line never needs more than this many flags.
MAX_META_FLAGS = 32


class Kind(IntEnum):
    RETRIEVAL = 0  # get gets gat gats: many keys, fanned out by backend, VALUE blocks merged
    STORAGE = 1  # set add replace append prepend cas: one key and a data block
    KEYED = 2  # delete incr decr touch: one key, one reply line
    META = 3  # mg ms md ma: one key, flags passed through, one meta reply
    LOCAL = 4  # version verbosity quit mn: answered by the proxy itself


@dataclass(slots=True)
class Request:
    """One parsed command.

    `payload` is what the owning backend receives (for RETRIEVAL, the prefix the key list
    follows: `get ` or `gat <exptime> `). `exptime` is the memcached exptime the command
    sets (None when it sets none); `with_exptime` rebuilds the payload with another one.
    """

    command: bytes
    kind: Kind
    keys: list[bytes] = field(default_factory=list)
    payload: bytes = b""
    exptime: int | None = None
    # Answer nothing, whatever the outcome (classic `noreply`).
    noreply: bool = False
    # Meta `q`: reply codes the client asked not to see (errors are always shown).
    quiet: tuple[bytes, ...] = ()
    # Where the exptime token is among the payload line's tokens (== their count: to be
    # appended), and its format.
    exptime_at: int = -1
    exptime_format: bytes = b"%d"

    def with_exptime(self, exptime: int) -> bytes:
        """The payload with `exptime` instead of the client's. Rare (failover only), so the
        line is split again here rather than kept by every request."""
        line, _, rest = self.payload.partition(b"\n")
        tokens = line.split()
        token = self.exptime_format % exptime
        if self.exptime_at == len(tokens):
            tokens.append(token)
        else:
            tokens[self.exptime_at] = token
        return b" ".join(tokens) + b"\r\n" + rest


@dataclass(frozen=True, slots=True)
class Invalid:
    """Bad input: `reply` is sent (unless empty); `close` ends the connection after it."""

    reply: bytes
    close: bool = False


Parsed = Request | Invalid

_STORAGE = frozenset({b"set", b"add", b"replace", b"append", b"prepend", b"cas"})
_RETRIEVAL = frozenset({b"get", b"gets", b"gat", b"gats"})
# Meta `q` hides these codes (memcached 1.6: mg its miss; ms, md and ma their success,
# ma's value included).
_QUIET = {
    b"mg": (b"EN",),
    b"ms": (b"HD",),
    b"md": (b"HD",),
    b"ma": (b"HD", b"VA"),
}
_VERSION = Request(b"version", Kind.LOCAL)
_QUIT = Request(b"quit", Kind.LOCAL)
_NOOP = Request(b"mn", Kind.LOCAL)


def client_error(reason: str, close: bool = False) -> Invalid:
    return Invalid(b"CLIENT_ERROR " + reason.encode("ascii", "replace") + b"\r\n", close)


_BAD_CHUNK = client_error("bad data chunk", close=True)
_BAD_FORMAT = client_error("bad command line format")
_LINE_TOO_LONG = client_error("line too long", close=True)


class RequestParser:
    """Turns the bytes a client sends into `Request`s and `Invalid`s, in order.

    `feed` may be given any split of the stream: what it returns over a stream depends only
    on the stream's bytes, not on where it was cut.
    """

    __slots__ = ("_buf", "_max_keys", "_max_line", "_max_value", "_skip")

    def __init__(self, max_request_bytes: int, max_value_bytes: int, max_keys: int) -> None:
        # The start of a command still arriving. Bytes, not a bytearray: a read that holds
        # whole commands is then sliced without copying (a set's payload is often the read).
        self._buf = b""
        # A command line, and a command line with its data block, are at most this long.
        self._max_line = max_request_bytes
        self._max_value = max_value_bytes
        self._max_keys = max_keys
        # Bytes of an oversize data block still to discard as they arrive.
        self._skip = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into a whole command."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Parsed]:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buf = self._buf + data if self._buf else data
        out: list[Parsed] = []
        pos = 0
        size = len(buf)
        while pos < size:
            eol = buf.find(b"\n", pos, pos + self._max_line + 2)
            if eol < 0:
                if size - pos <= self._max_line + 1:
                    break  # the rest of the line is still to come
                item: Parsed = _LINE_TOO_LONG
                pos = size
            else:
                end = eol - 1 if eol > pos and buf[eol - 1] == 13 else eol
                tokens = buf[pos:end].split(b" ")
                if b"" in tokens:
                    tokens = [t for t in tokens if t]
                verb = tokens[0] if tokens else b""
                if verb in _STORAGE or verb == b"ms":
                    parsed = self._with_data(buf, pos, eol, tokens)
                    if parsed is None:
                        break  # the data block is still to come
                    item, pos = parsed
                else:
                    item = self._line_command(verb, tokens)
                    pos = eol + 1
            out.append(item)
            if isinstance(item, Invalid) and item.close:
                pos = size
                break
        self._buf = buf[pos:]
        return out

    # -- commands with a data block ----------------------------------------------------------

    def _with_data(
        self, buf: bytes, pos: int, eol: int, tokens: list[bytes]
    ) -> tuple[Parsed, int] | None:
        """Parses a storage command or `ms` at `pos`: the result and where the next command
        starts, or None if its data block has not fully arrived."""
        verb = tokens[0]
        length_at = 2 if verb == b"ms" else 4
        if len(tokens) <= length_at or not tokens[length_at].isdigit():
            return _BAD_CHUNK, len(buf)
        length = int(tokens[length_at])
        start = eol + 1
        end = start + length
        too_large = None
        if length > self._max_value:
            too_large = f"value is {length} bytes; the limit is {self._max_value}"
        elif end + 2 - pos > self._max_line:
            too_large = f"request is {end + 2 - pos} bytes; the limit is {self._max_line}"
        if too_large is not None:
            # The block is skipped, not buffered; the stream stays in step.
            self._skip = max(0, end + 2 - len(buf))
            noreply = verb != b"ms" and tokens[-1] == b"noreply"
            return _silenced(client_error(too_large), noreply), min(len(buf), end + 2)
        if len(buf) < end + 2:
            return None
        if buf[end : end + 2] != b"\r\n":
            return _BAD_CHUNK, len(buf)
        data = buf[start:end]
        if verb == b"ms":
            return self._meta(tokens, data), end + 2
        return self._storage(tokens, data, buf[pos : end + 2]), end + 2

    def _storage(self, tokens: list[bytes], data: bytes, raw: bytes) -> Parsed:
        # <verb> <key> <flags> <exptime> <bytes> [<cas unique>] [noreply]
        verb = tokens[0]
        fixed = 6 if verb == b"cas" else 5
        noreply = len(tokens) == fixed + 1 and tokens[fixed] == b"noreply"
        if len(tokens) != fixed and not noreply:
            return _silenced(_BAD_FORMAT, noreply)
        key = tokens[1]
        problem = key_problem(key)
        if problem is not None:
            return _silenced(client_error(problem), noreply)
        if not _is_uint(tokens[2], _UINT32):
            return _silenced(client_error("flags must be a 32-bit unsigned number"), noreply)
        exptime = _int(tokens[3])
        if exptime is None:
            return _silenced(client_error("exptime must be a whole number"), noreply)
        if verb == b"cas" and not _is_uint(tokens[5], _UINT64):
            return _silenced(client_error("cas unique must be a 64-bit unsigned number"), noreply)
        if noreply:
            del tokens[fixed]
            raw = b" ".join(tokens) + b"\r\n" + data + b"\r\n"
        return Request(verb, Kind.STORAGE, [key], raw, exptime, noreply, (), 3)

    # -- one-line commands -------------------------------------------------------------------

    def _line_command(self, verb: bytes, tokens: list[bytes]) -> Parsed:
        if verb in _RETRIEVAL:
            return self._retrieval(verb, tokens)
        if verb in (b"delete", b"incr", b"decr", b"touch"):
            return self._keyed(verb, tokens)
        if verb in _QUIET:
            return self._meta(tokens, None)
        if verb == b"mn":
            return _NOOP if len(tokens) == 1 else _BAD_FORMAT
        if verb == b"version":
            return _VERSION if len(tokens) == 1 else _BAD_FORMAT
        if verb == b"verbosity":
            return _verbosity(tokens)
        if verb == b"quit":
            return _QUIT
        if not verb:
            return client_error("empty command line")
        name = verb[:32].decode("ascii", "replace")
        return client_error(f"unknown command {name!r}")

    def _retrieval(self, verb: bytes, tokens: list[bytes]) -> Parsed:
        first = 1
        exptime = None
        prefix = verb + b" "
        if verb in (b"gat", b"gats"):
            exptime = _int(tokens[1]) if len(tokens) > 1 else None
            if exptime is None:
                return client_error("exptime must be a whole number")
            first = 2
            prefix = b"%s %d " % (verb, exptime)
        keys = tokens[first:]
        if not keys:
            return client_error("no key given")
        if len(keys) > self._max_keys:
            return client_error(f"{len(keys)} keys; the limit is {self._max_keys}")
        for key in keys:
            problem = key_problem(key)
            if problem is not None:
                return client_error(problem)
        return Request(verb, Kind.RETRIEVAL, keys, prefix, exptime)

    def _keyed(self, verb: bytes, tokens: list[bytes]) -> Parsed:
        # delete <key> [0] [noreply] | incr|decr <key> <delta> [noreply]
        # | touch <key> <exptime> [noreply]
        noreply = tokens[-1] == b"noreply"
        if noreply:
            tokens = tokens[:-1]
        if verb == b"delete" and len(tokens) == 3 and tokens[2] == b"0":
            tokens = tokens[:2]  # the legacy hold time; memcached accepts only 0
        arity = 2 if verb == b"delete" else 3
        if len(tokens) != arity:
            return _silenced(_BAD_FORMAT, noreply)
        key = tokens[1]
        problem = key_problem(key)
        if problem is not None:
            return _silenced(client_error(problem), noreply)
        exptime = None
        if verb == b"touch":
            exptime = _int(tokens[2])
            if exptime is None:
                return _silenced(client_error("exptime must be a whole number"), noreply)
        elif arity == 3 and not _is_uint(tokens[2], _UINT64):
            return _silenced(client_error("invalid numeric delta argument"), noreply)
        payload = b" ".join(tokens) + b"\r\n"
        return Request(verb, Kind.KEYED, [key], payload, exptime, noreply, (), 2)

    def _meta(self, tokens: list[bytes], data: bytes | None) -> Parsed:
        # mg|md|ma <key> <flag>* ; ms <key> <datalen> <flag>* (data block follows)
        verb = tokens[0]
        if len(tokens) < 2:
            return _BAD_FORMAT
        flags_at = 3 if data is not None else 2
        if len(tokens) - flags_at > MAX_META_FLAGS:
            return client_error("too many flags")
        key = tokens[1]
        route_key = key
        quiet: tuple[bytes, ...] = ()
        exptime = None
        exptime_at = -1
        exptime_format = b"T%d"
        kept = tokens[:flags_at]
        for flag in tokens[flags_at:]:
            letter = flag[:1]
            if letter == b"q":
                quiet = _QUIET[verb]
                continue
            if letter == b"b":
                decoded = _base64(key)
                if decoded is None:
                    return client_error("key is not valid base64")
                route_key = decoded
            elif letter == b"T" or (letter == b"N" and exptime is None):
                exptime = _int(flag[1:])
                if exptime is None:
                    return client_error("ttl must be a whole number")
                exptime_at = len(kept)
                exptime_format = letter + b"%d"
            kept.append(flag)
        problem = _meta_key_problem(key, route_key)
        if problem is not None:
            return client_error(problem)
        if verb == b"ms" and exptime is None:
            # No T on ms means no expiry: a TTL cap must be able to add one.
            exptime, exptime_at = 0, len(kept)
        line = b" ".join(kept) + b"\r\n"
        payload = line if data is None else line + data + b"\r\n"
        return Request(verb, Kind.META, [route_key], payload, exptime, False, quiet, exptime_at,
                       exptime_format)  # fmt: skip


def _meta_key_problem(key: bytes, route_key: bytes) -> str | None:
    if route_key is key:
        return key_problem(key)
    # A base64 key may decode to any bytes; only its length and namespace matter.
    if not route_key or len(route_key) > MAX_KEY_BYTES:
        return f"decoded key is {len(route_key)} bytes; the limit is {MAX_KEY_BYTES}"
    if route_key.startswith(RESERVED_PREFIXES):
        return "keys with this prefix are reserved for the HTTP cache"
    return key_problem(key)


def _verbosity(tokens: list[bytes]) -> Parsed:
    noreply = tokens[-1] == b"noreply"
    args = tokens[1:-1] if noreply else tokens[1:]
    if len(args) > 1 or (args and not args[0].isdigit()):
        return _silenced(_BAD_FORMAT, noreply)
    return Request(b"verbosity", Kind.LOCAL, noreply=noreply)


def _silenced(invalid: Invalid, noreply: bool) -> Invalid:
    """memcached sends no error for a bad command that said noreply: its client reads none."""
    return Invalid(b"") if noreply else invalid


def _int(token: bytes) -> int | None:
    body = token[1:] if token[:1] == b"-" else token
    if not body.isdigit() or len(body) > 18:
        return None
    return int(token)


def _is_uint(token: bytes, bound: int) -> bool:
    return token.isdigit() and len(token) <= 20 and int(token) < bound


def _base64(token: bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(token, strict_mode=True)
    except binascii.Error:
        return None


# -- backend replies ------------------------------------------------------------------------


class ReplyFramer:
    """Cuts a backend's byte stream into whole replies: `gets(expect)` returns the next one
    (bytes) or False, `expect` being the `Kind` of the request it answers.

    A reply's first line says its shape: `VALUE` opens a retrieval, closed by `END` (or an
    error line); `VA <size>` carries one data block (meta); anything else is one line. The
    request's kind says which shapes may come, so a backend out of step with the requests
    is caught (ValueError) instead of its replies going to the wrong clients. Data blocks
    are skipped by their length, never searched, so values may hold any bytes.
    """

    __slots__ = ("_buf", "_pos", "_scan")

    def __init__(self) -> None:
        # Bytes, not a bytearray: a read holding exactly one reply is passed on uncopied.
        self._buf = b""
        self._pos = 0
        # Within an unfinished retrieval: where the next unread VALUE or END line starts.
        self._scan = 0

    def feed(self, data: bytes) -> None:
        pos = self._pos
        if pos < len(self._buf):
            self._buf = self._buf[pos:] + data
            self._scan -= pos
        else:
            self._buf = data
            self._scan = 0
        self._pos = 0

    def gets(self, expect: Kind | None = None) -> bytes | bool:
        buf = self._buf
        pos = self._pos
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return False
        if buf.startswith(b"VALUE ", pos):
            if expect is not None and expect is not Kind.RETRIEVAL:
                raise ValueError(f"a VALUE reply to a {expect.name.lower()} request")
            end = self._retrieval_end(buf, max(pos, self._scan))
            if end < 0:
                return False
        elif buf.startswith(b"VA ", pos):
            if expect is not None and expect is not Kind.META:
                raise ValueError(f"a VA reply to a {expect.name.lower()} request")
            end = eol + 2 + _block_size(buf, pos, eol, 1) + 2
            if len(buf) < end:
                return False
        else:
            end = eol + 2
        self._pos = self._scan = end
        return buf[pos:end]

    def _retrieval_end(self, buf: bytes, cursor: int) -> int:
        while True:
            eol = buf.find(b"\r\n", cursor)
            if eol < 0:
                self._scan = cursor
                return -1
            if not buf.startswith(b"VALUE ", cursor):
                return eol + 2  # END, or an error line that ends the reply
            end = eol + 2 + _block_size(buf, cursor, eol, 3) + 2
            if buf.startswith(b"END\r\n", end):
                return end + 5  # the usual case: one value
            if len(buf) < end:
                self._scan = cursor
                return -1
            cursor = end


def _block_size(buf: bytes, start: int, eol: int, index: int) -> int:
    fields = buf[start:eol].split(b" ")
    if len(fields) <= index or not fields[index].isdigit():
        raise ValueError(f"bad value line {buf[start:eol][:80]!r}")
    return int(fields[index])


def value_blocks(reply: bytes) -> dict[bytes, bytes]:
    """The `VALUE` blocks of a retrieval reply by key (each with its trailing CRLF), for
    merging the replies of several backends in request order. An error reply has none."""
    blocks: dict[bytes, bytes] = {}
    pos = 0
    while reply.startswith(b"VALUE ", pos):
        eol = reply.index(b"\r\n", pos)
        fields = reply[pos:eol].split()
        end = eol + 2 + int(fields[3]) + 2
        blocks[fields[1]] = reply[pos:end]
        pos = end
    return blocks
