"""The RESP2 front (`--redis-listen`): redis clients talk to the fleet as to one redis.

Client commands are parsed with hiredis. A single-key command goes whole to its key's
owner (proxy/native/upstream.py) and the reply comes back byte for byte. MGET, MSET, DEL,
UNLINK, EXISTS and TOUCH are split by owner, sent in parallel and merged. Commands whose
keys cannot be split (EVAL, SINTER, RPOPLPUSH, ...) run only when every key has one owner.
The connection commands and INFO, HELLO, COMMAND, AUTH are answered here; anything else
gets `-ERR unsupported command`. Replies keep request order under pipelining.

Malformed input: a command that is whole but wrong (arity, key count, size) gets an error
and the connection goes on; bytes that are not RESP (the stream cannot be resynchronised)
get `-ERR Protocol error` and the connection is closed, as redis does. A request that is
still incomplete past `--native-max-request-bytes` is such a case too.

Under failover (a key whose owner is down lands elsewhere), a write is followed by
`EXPIRE key <failover-ttl> LT`, so it expires within the cap whatever TTL it had (the
backends must be redis >= 7.0 for LT).
"""

from __future__ import annotations

import functools
import hmac
import os
import socket
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import hiredis

from proxy.metrics import ProxyMetrics
from proxy.native.front import (
    OTHER,
    CommandCounters,
    Flusher,
    Front,
    FrontConnection,
    FrontLimits,
    FrontMetrics,
    FrontService,
    Slot,
)
from proxy.native.redis_commands import COMMANDS, Command, Kind
from proxy.native.resp import NIL, OK, ReplyFramer, array, array_items, bulk, error, integer
from proxy.native.upstream import Greeting, Upstream, Upstreams
from proxy.router import Router
from ringleader.backend_url import BackendSpec
from ringleader.backends import BackendError, ClientSettings

FRONT = "redis"
REFUSAL = b"-ERR max number of clients reached\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"
PONG = b"+PONG\r\n"
# What INFO and HELLO claim, so that clients checking for features see a modern redis.
REDIS_VERSION = "7.0.0"
_ALLOWED_BEFORE_AUTH = frozenset(("auth", "hello", "quit"))
_LONGEST_NAME_SHOWN = 64

_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


class RedisFront(FrontService):
    """The redis front of one worker: its listening socket, connections and upstreams."""

    def __init__(
        self,
        router: Router,
        metrics: ProxyMetrics,
        flusher: Flusher,
        limits: FrontLimits,
        settings: ClientSettings,
        password: bytes | None,
    ) -> None:
        front_metrics = FrontMetrics(metrics, FRONT, COMMANDS)
        self.front = Front(FRONT, limits, front_metrics, REFUSAL, flusher)
        # Command name as clients send it (either case) -> the command and its counters.
        self.commands: dict[bytes, tuple[Command, CommandCounters]] = {}
        for name, command in COMMANDS.items():
            entry = (command, front_metrics.command(name))
            self.commands[name.encode()] = self.commands[name.upper().encode()] = entry
        self.upstreams = Upstreams(
            router, FRONT, settings, ReplyFramer, flusher, metrics, backend_greeting
        )
        self.password = password
        self.port = 0

    async def serve(self, sock: socket.socket) -> None:
        self.port = sock.getsockname()[1]
        await self.front.serve(sock, lambda: RedisConnection(self))

    def info(self, section: bytes | None) -> bytes:
        """INFO's text: server and clients as redis shows them, and a `# Proxy` section."""
        state = self.upstreams.table.state
        sections = {
            b"server": [
                "# Server",
                f"redis_version:{REDIS_VERSION}",
                f"ringleader_version:{version('ringleader')}",
                "redis_mode:standalone",
                f"process_id:{os.getpid()}",
                f"tcp_port:{self.port}",
            ],
            b"clients": ["# Clients", f"connected_clients:{len(self.front.connections)}"],
            b"proxy": [
                "# Proxy",
                "proxy:ringleader",
                f"front:{FRONT}",
                f"ring_epoch:{state.epoch}",
                f"ring_hash:{state.hash_name}",
                f"ring_backends:{len(state.backends)}",
                f"backends:{','.join(b.name for b in state.backends)}",
                f"front_refused:{self.upstreams.mismatch or ''}",
            ],
        }
        wanted = section.lower() if section else b"all"
        if wanted in (b"all", b"default", b"everything"):
            chosen = list(sections.values())
        else:
            chosen = [sections[wanted]] if wanted in sections else []
        return bulk("\r\n".join(line for lines in chosen for line in [*lines, ""]).encode())


def backend_greeting(spec: BackendSpec) -> list[Greeting]:
    """AUTH and SELECT for a new backend connection, as its URL asks."""
    greeting = []
    password = spec.auth_password()
    if password:
        greeting.append(Greeting(_pack((b"AUTH", password.encode())), _expect_ok("AUTH")))
    if spec.db:
        greeting.append(Greeting(_pack((b"SELECT", spec.db)), _expect_ok("SELECT")))
    return greeting


def _expect_ok(command: str) -> Callable[[Any], str | None]:
    def check(reply: Any) -> str | None:
        # The reply never contains the password, so it can be shown.
        return None if reply == OK else f"{command} refused: {bytes(reply)[:120]!r}"

    return check


def _backend_down(exc: BackendError) -> bytes:
    return error(f"ERR backend {exc.backend} unavailable: {exc.detail}")


class _Single(Slot):
    """A command answered by one backend: its reply is relayed as it is."""

    __slots__ = ("conn", "counters")

    def __init__(self, started: float, conn: RedisConnection, counters: CommandCounters) -> None:
        # Slot's fields set here rather than through super(): this runs once per command.
        self.data = None
        self.started = started
        self.conn = conn
        self.counters = counters

    def done(self, reply: bytes | BackendError) -> None:
        if isinstance(reply, bytes):
            # .value += 1 is CounterChild.inc() without the call: this runs per command.
            (self.counters.error if reply[0] == 45 else self.counters.ok).value += 1  # b"-"
            self.conn.complete(self, reply)
        else:
            self.counters.backend_error.inc()
            self.conn.complete(self, _backend_down(reply))


class _Gather(Slot):
    """A multi-key command split by owner; merged once every part has answered."""

    __slots__ = ("conn", "counters", "failure", "items", "kind", "remaining", "total")

    def __init__(
        self,
        started: float,
        conn: RedisConnection,
        counters: CommandCounters,
        kind: Kind,
        keys: int,
        parts: int,
    ) -> None:
        super().__init__(started)
        self.conn = conn
        self.counters = counters
        self.kind = kind
        self.items: list[bytes] = [NIL] * keys if kind is Kind.MGET else []
        self.total = 0
        self.remaining = parts
        self.failure: bytes | None = None

    def part(self, positions: list[int], reply: bytes | BackendError) -> None:
        if self.failure is None:
            if isinstance(reply, BackendError):
                self.counters.backend_error.inc()
                self.failure = _backend_down(reply)
            elif reply[:1] == b"-":
                self.counters.error.inc()
                self.failure = reply
            else:
                self._merge(positions, reply)
        self.remaining -= 1
        if self.remaining:
            return
        if self.failure is not None:
            self.conn.complete(self, self.failure)
            return
        self.counters.ok.inc()
        if self.kind is Kind.MGET:
            self.conn.complete(self, array(self.items))
        elif self.kind is Kind.COUNT:
            self.conn.complete(self, b":%d\r\n" % self.total)
        else:
            self.conn.complete(self, OK)

    def _merge(self, positions: list[int], reply: bytes) -> None:
        try:
            if self.kind is Kind.MGET:
                for position, item in zip(positions, array_items(reply), strict=True):
                    self.items[position] = item
            elif self.kind is Kind.COUNT:
                self.total += integer(reply)
        except ValueError:
            self.counters.error.inc()
            self.failure = error(f"ERR unexpected backend reply {reply[:60]!r}")


class RedisConnection(FrontConnection):
    def __init__(self, service: RedisFront) -> None:
        super().__init__(service.front)
        self._service = service
        self._upstreams = service.upstreams
        self._route = service.upstreams.route
        self._commands = service.commands
        self._metrics = service.front.metrics
        limits = service.front.limits
        self._max_bytes = limits.max_request_bytes
        self._max_keys = limits.max_keys
        self._reader = hiredis.Reader()
        self._inline = b""
        # Bytes read since a command was last completed (give or take one read).
        self._unparsed = 0
        self._authenticated = service.password is None

    # parsing

    def received(self, data: bytes) -> None:
        reader = self._reader
        if data:
            self._unparsed += len(data)
            if self._inline or (data[0] != 42 and not reader.has_data()):  # not b"*"
                if not self._feed_inline(data):
                    return
            else:
                reader.feed(data)
        # Only when this much has arrived can a command be over the size limit.
        check_size = self._unparsed > self._max_bytes
        parsed = False
        slots = self._slots
        max_pipeline = self._max_pipeline
        while True:
            if len(slots) >= max_pipeline:  # saturated(), inlined on the hot path
                self.hold()
                break
            try:
                args = reader.gets()
            except hiredis.ProtocolError as exc:
                self._protocol_error(str(exc))
                return
            if args is False:
                break
            parsed = True
            if args.__class__ is not list:
                if args is not None:
                    self._protocol_error("expected an array of bulk strings")
                    return
                continue
            if not args:
                continue
            if check_size and sum(len(a) for a in args if a.__class__ is bytes) > self._max_bytes:
                self._refuse(self._metrics.command(OTHER), error(f"ERR {self._too_large()}"))
                continue
            if args[0].__class__ is not bytes:
                self._protocol_error("expected an array of bulk strings")
                return
            try:
                self._dispatch(args)
            except (TypeError, AttributeError):
                # An argument that is not a bulk string (a nested array, an integer): only
                # a handcrafted client sends one, and redis closes such a connection too.
                self._protocol_error("expected an array of bulk strings")
                return
        if parsed:
            self._unparsed = 0
        if self._unparsed > self._max_bytes and reader.has_data():
            self._protocol_error(self._too_large())

    def _feed_inline(self, data: bytes) -> bool:
        """Inline commands (`PING\\r\\n`, as typed into telnet) become RESP arrays."""
        buf = self._inline + data
        while buf and buf[0] != 42:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > self._max_bytes:
                    self._protocol_error("too big inline request")
                    return False
                self._inline = buf
                return True
            args = buf[:end].split()
            buf = buf[end + 1 :]
            if args:
                self._reader.feed(_pack(tuple(args)))
        self._inline = b""
        if buf:
            self._reader.feed(buf)
        return True

    def _too_large(self) -> str:
        return f"request over {self._max_bytes} bytes (--native-max-request-bytes)"

    def _protocol_error(self, detail: str) -> None:
        self._metrics.command(OTHER).client_error.inc()
        self.answer(error(f"ERR Protocol error: {detail}"))
        self.close_after_replies()

    # dispatch

    def _dispatch(self, args: list[bytes]) -> None:
        entry = self._commands.get(args[0]) or self._commands.get(args[0].lower())
        if entry is None:
            shown = args[0][:_LONGEST_NAME_SHOWN].decode("utf-8", "replace")
            self._refuse(self._metrics.command(OTHER), error(f"ERR unsupported command '{shown}'"))
            return
        command, counters = entry
        if not self._authenticated and command.name not in _ALLOWED_BEFORE_AUTH:
            self._refuse(counters, NOAUTH)
            return
        if len(args) < command.min_args:
            self._wrong_arity(counters, command)
            return
        kind = command.kind
        if kind is Kind.SINGLE:
            self._single(command, args, counters)
        elif kind is Kind.LOCAL:
            self._local(command, args, counters)
        elif kind is Kind.SAME_OWNER or kind is Kind.SCRIPT:
            self._same_owner(command, args, counters)
        else:
            self._split(command, args, counters)

    def _refuse(self, counters: CommandCounters, reply: bytes) -> None:
        counters.client_error.inc()
        self.answer(reply)

    def _wrong_arity(self, counters: CommandCounters, command: Command) -> None:
        self._refuse(counters, error(f"ERR wrong number of arguments for '{command.name}' command"))

    def _no_backend(self, counters: CommandCounters) -> None:
        counters.backend_error.inc()
        why = self._upstreams.mismatch or "the pool has no backends in its ring"
        self.answer(error(f"ERR no backend: {why}"))

    def _single(self, command: Command, args: list[bytes], counters: CommandCounters) -> None:
        key = args[1]
        upstream = self._route(key)
        if upstream is None:
            self._no_backend(counters)
            return
        payload = _pack(tuple(args))
        slot = self.enqueue(_Single(self.read_at, self, counters))
        upstream.send(payload, slot.done)
        if command.writes:
            self._cap((key,), upstream)

    def _cap(self, keys: tuple[bytes, ...] | list[bytes], upstream: Upstream) -> None:
        """Under failover, the written keys expire within the failover TTL."""
        upstreams = self._upstreams
        for key in keys:
            if upstreams.is_failover(key, upstream):
                ttl = upstreams.write_ttl(key, upstream, 0)
                upstream.send(_pack((b"EXPIRE", key, ttl, b"LT")), None)

    def _same_owner(self, command: Command, args: list[bytes], counters: CommandCounters) -> None:
        try:
            keys = command.keys(args)
        except ValueError as exc:
            self._refuse(counters, error(f"ERR {exc}"))
            return
        shown = command.name.upper()
        if not keys:
            self._refuse(counters, error(f"ERR {shown} without keys: the proxy routes by key"))
            return
        if len(keys) > self._max_keys:
            self._refuse(counters, self._too_many_keys(len(keys)))
            return
        owners = {self._route(key) for key in keys}
        if None in owners:
            self._no_backend(counters)
            return
        if len(owners) > 1:
            names = ", ".join(sorted(u.name for u in owners if u is not None))
            self._refuse(counters, error(
                f"ERR {shown} keys map to different backends ({names}); "
                f"they must share one, for instance through a hash tag"
            ))  # fmt: skip
            return
        upstream = owners.pop()
        assert upstream is not None
        slot = self.enqueue(_Single(self.read_at, self, counters))
        upstream.send(_pack(tuple(args)), slot.done)
        if command.writes:
            self._cap(keys if command.kind is Kind.SCRIPT else keys[:1], upstream)

    def _too_many_keys(self, count: int) -> bytes:
        return error(f"ERR {count} keys, more than {self._max_keys} (--native-max-keys)")

    def _split(self, command: Command, args: list[bytes], counters: CommandCounters) -> None:
        """MGET, MSET and the counting commands: one part per owner, merged in order."""
        mset = command.kind is Kind.MSET
        if mset and len(args) % 2 == 0:
            self._wrong_arity(counters, command)
            return
        keys = args[1::2] if mset else args[1:]
        if len(keys) > self._max_keys:
            self._refuse(counters, self._too_many_keys(len(keys)))
            return
        groups: dict[Upstream, list[int]] = {}
        route = self._route
        for position, key in enumerate(keys):
            upstream = route(key)
            if upstream is None:
                self._no_backend(counters)
                return
            groups.setdefault(upstream, []).append(position)
        if len(groups) == 1:
            # One owner (related keys under a hash tag): the command goes as it is.
            (upstream,) = groups
            slot = self.enqueue(_Single(self.read_at, self, counters))
            upstream.send(_pack(tuple(args)), slot.done)
            if mset:
                self._cap(keys, upstream)
            return
        gather = self.enqueue(
            _Gather(self.read_at, self, counters, command.kind, len(keys), len(groups))
        )
        for upstream, positions in groups.items():
            if mset:
                part = [args[0]]
                for position in positions:
                    part += args[1 + 2 * position : 3 + 2 * position]
            else:
                part = [args[0], *(keys[position] for position in positions)]
            upstream.send(_pack(tuple(part)), functools.partial(gather.part, positions))
            if mset:
                self._cap([keys[position] for position in positions], upstream)

    # answered here

    def _local(self, command: Command, args: list[bytes], counters: CommandCounters) -> None:
        name = command.name
        if name == "ping" and len(args) <= 2:
            reply = PONG if len(args) == 1 else bulk(args[1])
        elif name == "echo" and len(args) == 2:
            reply = bulk(args[1])
        elif name == "quit":
            counters.ok.inc()
            self.answer(OK)
            self.close_after_replies()
            return
        elif name == "select" and len(args) == 2:
            if args[1] != b"0":
                self._refuse(counters, error(
                    "ERR SELECT is not supported: the proxy serves one database per backend "
                    "(the backend URL's /DB); only SELECT 0 is accepted"
                ))  # fmt: skip
                return
            reply = OK
        elif name == "auth" and len(args) <= 3:
            self._auth(args[1:], counters)
            return
        elif name == "hello":
            self._hello(args, counters)
            return
        elif name == "info" and len(args) <= 2:
            reply = self._service.info(args[1] if len(args) == 2 else None)
        elif name == "command":
            self._command(args, counters)
            return
        else:
            self._wrong_arity(counters, command)
            return
        counters.ok.inc()
        self.answer(reply)

    def _auth(self, credentials: list[bytes], counters: CommandCounters) -> None:
        refusal = self._login(credentials)
        if refusal is not None:
            self._refuse(counters, refusal)
            return
        counters.ok.inc()
        self.answer(OK)

    def _login(self, credentials: list[bytes]) -> bytes | None:
        """Authenticates the connection; the error reply when it cannot."""
        password = self._service.password
        if password is None:
            return error(
                "ERR AUTH <password> called without any password configured for the "
                "default user. Are you sure your configuration is correct?"
            )
        user_ok = len(credentials) == 1 or credentials[0] == b"default"
        # compare_digest takes as long whatever the first differing byte.
        if hmac.compare_digest(credentials[-1], password) and user_ok:
            self._authenticated = True
            return None
        return error("WRONGPASS invalid username-password pair or user is disabled.")

    def _hello(self, args: list[bytes], counters: CommandCounters) -> None:
        if len(args) >= 2:
            if args[1] == b"3":
                self._refuse(
                    counters, error("NOPROTO sorry, this protocol version is not supported.")
                )
                return
            if args[1] != b"2":
                self._refuse(counters, error(
                    "ERR Protocol version is not an integer or out of range"
                ))  # fmt: skip
                return
        options = args[2:]
        credentials: list[bytes] | None = None
        at = 0
        while at < len(options):
            option = options[at].lower()
            if option == b"auth" and at + 2 < len(options):
                credentials = options[at + 1 : at + 3]
                at += 3
            elif option == b"setname" and at + 1 < len(options):
                at += 2
            else:
                shown = options[at][:_LONGEST_NAME_SHOWN].decode("utf-8", "replace")
                self._refuse(counters, error(f"ERR Syntax error in HELLO option '{shown}'"))
                return
        if credentials is not None:
            refusal = self._login(credentials)
            if refusal is not None:
                self._refuse(counters, refusal)
                return
        elif not self._authenticated:
            self._refuse(counters, error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise "
                "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
                "client and select the RESP protocol version at the same time"
            ))  # fmt: skip
            return
        counters.ok.inc()
        self.answer(array([
            bulk(b"server"), bulk(b"redis"),
            bulk(b"version"), bulk(REDIS_VERSION.encode()),
            bulk(b"proto"), b":2\r\n",
            bulk(b"id"), b":%d\r\n" % id(self),
            bulk(b"mode"), bulk(b"standalone"),
            bulk(b"role"), bulk(b"master"),
            bulk(b"modules"), b"*0\r\n",
        ]))  # fmt: skip

    def _command(self, args: list[bytes], counters: CommandCounters) -> None:
        """Enough of COMMAND for redis-cli and client libraries to start."""
        sub = args[1].lower() if len(args) > 1 else b""
        if sub in (b"", b"docs"):
            reply = b"*0\r\n"
        elif sub == b"count":
            reply = b":%d\r\n" % len(COMMANDS)
        elif sub == b"info":
            reply = array(b"*-1\r\n" for _ in args[2:])
        else:
            shown = sub[:_LONGEST_NAME_SHOWN].decode("utf-8", "replace")
            self._refuse(counters, error(f"ERR unsupported command 'COMMAND {shown}'"))
            return
        counters.ok.inc()
        self.answer(reply)
