"""The proxy's settings, from flags and an optional TOML file with the same keys.

Precedence: built-in defaults < `--config FILE.toml` < command-line flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from proxy.httpcache.forwarding import UNKEYED
from proxy.httpcache.handler import CacheSettings
from proxy.httpcache.origin import OriginSettings
from proxy.httpcache.policy import CachePolicy
from ringleader.address import Address, parse_address
from ringleader.backend_url import BackendSpec, BackendURLError, parse_backend_url
from ringleader.backends import ClientSettings
from ringleader.ring.hashes import KEY_HASHES
from ringleader.ring.hashtag import parse_hash_tag
from ringleader.settings import ConfigError, Setting, Table, above_zero
from ringleader.token import TokenError, load_token, read_token_file

# Below this no ordinary request fits (a request line and a Host already take ~100 bytes).
MIN_HEADER_BYTES = 1024
# memcached's default item size (-I 1m): a cached body larger than it could never be stored.
MAX_HTTP_BODY_BYTES = 1024 * 1024
# The HTTP data port when no front at all is given (before the native fronts, the only one).
DEFAULT_LISTEN = Address("127.0.0.1", 8080)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The validated settings; `SETTINGS` below holds their defaults."""

    # The fronts: HTTP (KV API and HTTP cache), memcached text protocol, RESP2. None: off.
    listen: Address | None
    memcached_listen: Address | None
    redis_listen: Address | None
    admin: Address
    backends: tuple[BackendSpec, ...]
    hash: str
    # twemproxy's hash_tag: two bytes, opening and closing (ringleader/ring/hashtag.py).
    hash_tag: bytes | None
    origin: str | None
    control: tuple[str, ...]
    pool: str
    workers: int
    max_value_bytes: int
    connect_timeout: float
    request_timeout: float
    connections: int
    health_interval: float
    health_timeout: float
    # With --control: the cluster token (health reports change state), how often the
    # proxy reports even without news, and the TTL cap on writes that land on a backend
    # only because the key's owner is down (docs/invariants.md, invariant 3).
    token: str | None = field(repr=False)
    report_interval: float
    failover_ttl: int
    # The HTTP cache (with `origin`); see proxy/httpcache/handler.py.
    http_max_body_bytes: int
    cache_cookies: bool
    heuristic_cap: float
    purge_token: str | None = field(repr=False)
    lease_ttl: int
    lease_wait: float
    origin_timeout: float
    forward_headers: tuple[str, ...]
    pass_ttl: int
    max_variants: int
    # What one client may cost the data port (proxy/httpserver.py); per worker.
    max_header_bytes: int
    header_timeout: float
    idle_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int
    # The native fronts (proxy/native/): limits per worker, and the redis front's AUTH.
    redis_password: bytes | None = field(repr=False)
    native_max_request_bytes: int
    native_max_keys: int
    native_max_pipeline: int
    native_max_connections: int

    @property
    def fronts(self) -> tuple[tuple[str, Address], ...]:
        """(flag, address) of every front that is on."""
        fronts = (("--listen", self.listen), ("--memcached-listen", self.memcached_listen),
                  ("--redis-listen", self.redis_listen))  # fmt: skip
        return tuple((flag, address) for flag, address in fronts if address is not None)

    @property
    def client(self) -> ClientSettings:
        return ClientSettings(
            connect_timeout=self.connect_timeout,
            request_timeout=self.request_timeout,
            connections=self.connections,
        )

    @property
    def cache(self) -> CacheSettings:
        return CacheSettings(
            policy=CachePolicy(self.heuristic_cap, self.cache_cookies),
            max_body_bytes=self.http_max_body_bytes,
            purge_token=None if self.purge_token is None else self.purge_token.encode(),
            lease_ttl=self.lease_ttl,
            lease_wait=self.lease_wait,
            pass_ttl=self.pass_ttl,
            max_variants=self.max_variants,
            forward_headers=self.forward_headers,
        )

    def origin_settings(self, url: str) -> OriginSettings:
        return OriginSettings(url, timeout=self.origin_timeout)


def _backends(flag: str, urls: tuple[str, ...]) -> tuple[BackendSpec, ...]:
    try:
        return tuple(parse_backend_url(url) for url in urls)
    except BackendURLError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _control_urls(_flag: str, items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(url for item in items for url in item.split(",") if url)


def _hash_tag(flag: str, text: str) -> bytes:
    try:
        return parse_hash_tag(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _origin(flag: str, text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag}: expected an http:// or https:// URL, got {text!r}")
    if parts.query or parts.fragment or parts.username is not None:
        raise ConfigError(
            f"{flag}: a query, fragment or user name cannot be a prefix, got {text!r}"
        )
    # A path is a prefix: `--origin http://h/app` forwards /x as /app/x.
    return text.rstrip("/")


def _token(flag: str, path: str) -> str:
    try:
        return read_token_file(path, flag)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None


def _forward_headers(flag: str, names: tuple[str, ...]) -> tuple[str, ...]:
    lowered = tuple(name.strip().lower() for name in names)
    unknown = [name for name in lowered if name.encode("latin-1") not in UNKEYED]
    if unknown:
        raise ConfigError(
            f"{flag}: {unknown[0]!r} is forwarded already; the option takes one of "
            f"{', '.join(sorted(n.decode() for n in UNKEYED))}"
        )
    return lowered


def _body_limit(flag: str, limit: float) -> None:
    above_zero(flag, limit)
    if limit > MAX_HTTP_BODY_BYTES:
        raise ConfigError(f"{flag}: at most {MAX_HTTP_BODY_BYTES} (memcached's item size)")


def _header_limit(flag: str, limit: float) -> None:
    if limit < MIN_HEADER_BYTES:
        raise ConfigError(f"{flag}: at least {MIN_HEADER_BYTES}, got {limit}")


def _password(flag: str, path: str) -> bytes:
    return _token(flag, path).encode()


_CACHE = "HTTP cache"
_PORT = "data port"
_NATIVE = "native fronts"

SETTINGS = Table((
    Setting("listen", "str", None, "HTTP front: the KV API and the HTTP cache",
            metavar="HOST:PORT", parse=parse_address,
            default_text=f"{DEFAULT_LISTEN} unless a native front is set"),
    Setting("memcached-listen", "str", None, "memcached text protocol front",
            metavar="HOST:PORT", parse=parse_address),
    Setting("redis-listen", "str", None, "redis (RESP2) front",
            metavar="HOST:PORT", parse=parse_address),
    Setting("admin", "str", "127.0.0.1:8081", "admin address",
            metavar="HOST:PORT", parse=parse_address),
    Setting("backend", "str", None,
            "memcached://host:port?name=N&weight=W or redis://host:port/DB?...",
            metavar="URL", repeatable=True, parse=_backends),
    Setting("hash", "str", "fnv1a_64", "ketama key hash", choices=tuple(KEY_HASHES)),
    Setting("hash-tag", "str", None,
            "hash only the part of a key between A and B, as twemproxy's hash_tag (e.g. {})",
            metavar="AB", parse=_hash_tag),
    Setting("control", "str", None, "control plane; the ring comes from it instead of --backend",
            metavar="URL[,URL...]", repeatable=True, parse=_control_urls),
    Setting("pool", "str", "default", "pool to serve with --control", metavar="NAME"),
    Setting("workers", "int", 1, "worker processes", metavar="N", check=above_zero),
    Setting("max-value-bytes", "int", 1024 * 1024, "KV value limit",
            metavar="N", check=above_zero),
    Setting("connect-timeout", "float", 0.5, "backend connect",
            metavar="SECONDS", check=above_zero),
    Setting("request-timeout", "float", 0.5, "backend reply",
            metavar="SECONDS", check=above_zero),
    Setting("connections", "int", 1, "pipelined connections per backend and worker",
            metavar="N", check=above_zero),
    Setting("health-interval", "float", 0.5, "heartbeat period",
            metavar="SECONDS", check=above_zero),
    Setting("health-timeout", "float", 0.25, "heartbeat timeout",
            metavar="SECONDS", check=above_zero),
    Setting("token-file", "path", None, "cluster token, needed with --control",
            metavar="FILE", default_text="$RINGLEADER_TOKEN"),
    Setting("report-interval", "float", 2.0,
            "with --control: report backend health at least this often",
            metavar="SECONDS", check=above_zero),
    Setting("failover-ttl", "int", 30,
            "TTL cap on writes that land elsewhere because the key's owner is down",
            metavar="SECONDS", check=above_zero),
    Setting("origin", "str", None, "the origin; enables the HTTP cache",
            _CACHE, metavar="URL", parse=_origin),
    Setting("http-max-body-bytes", "int", MAX_HTTP_BODY_BYTES,
            f"larger bodies stream through uncached; at most {MAX_HTTP_BODY_BYTES}",
            _CACHE, metavar="N", check=_body_limit),
    Setting("cache-cookies", "bool", False,
            "cache requests with Cookie; Set-Cookie is still never stored", _CACHE),
    Setting("heuristic-cap", "float", 86400.0, "longest heuristic freshness",
            _CACHE, metavar="SECONDS", check=above_zero),
    Setting("purge-token-file", "path", None, "enables PURGE with this token",
            _CACHE, metavar="FILE", parse=_token),
    Setting("lease-ttl", "int", 3, "lifetime of a fleet-wide fetch lease",
            _CACHE, metavar="SECONDS", check=above_zero),
    Setting("lease-wait", "float", 2.0, "longest wait for another request's fetch",
            _CACHE, metavar="SECONDS", check=above_zero),
    Setting("origin-timeout", "float", 10.0, "origin reply",
            _CACHE, metavar="SECONDS", check=above_zero),
    Setting("forward-header", "str", None,
            "forward this unkeyed request field (X-Forwarded-Proto, ...)",
            _CACHE, metavar="NAME", repeatable=True, parse=_forward_headers),
    Setting("pass-ttl", "int", 120,
            "seconds an uncacheable answer sends its URL straight to the origin",
            _CACHE, metavar="SECONDS", check=above_zero),
    Setting("max-variants", "int", 8, "variants kept per URI",
            _CACHE, metavar="N", check=above_zero),
    Setting("max-header-bytes", "int", 32 * 1024,
            "request line and headers above this get 431",
            _PORT, metavar="N", check=_header_limit),
    Setting("header-timeout", "float", 10.0, "time to send a request's headers, else 408",
            _PORT, metavar="SECONDS", check=above_zero),
    Setting("idle-timeout", "float", 5.0, "a keep-alive connection idle this long is closed",
            _PORT, metavar="SECONDS", check=above_zero),
    Setting("body-timeout", "float", 30.0, "longest gap while reading a request body",
            _PORT, metavar="SECONDS", check=above_zero),
    Setting("send-timeout", "float", 30.0, "longest a client may leave a response unread",
            _PORT, metavar="SECONDS", check=above_zero),
    Setting("max-connections", "int", 1024, "connections per worker; more get 503",
            _PORT, metavar="N", check=above_zero),
    Setting("redis-password-file", "path", None,
            "the redis front requires AUTH with this password", _NATIVE, metavar="FILE",
            parse=_password),
    Setting("native-max-request-bytes", "int", 2 * 1024 * 1024,
            "a larger command gets an error (a memcached value counts)",
            _NATIVE, metavar="N", check=above_zero),
    Setting("native-max-keys", "int", 1000, "keys in one multi-key command",
            _NATIVE, metavar="N", check=above_zero),
    Setting("native-max-pipeline", "int", 128,
            "commands in flight per connection; reading pauses beyond",
            _NATIVE, metavar="N", check=above_zero),
    Setting("native-max-connections", "int", 1024,
            "connections per worker and front; more are refused",
            _NATIVE, metavar="N", check=above_zero),
))  # fmt: skip

load_file = SETTINGS.load_file


def build(settings: Mapping[str, Any]) -> ProxyConfig:
    """A validated config from setting name -> value (file values overlaid by flags)."""
    values = SETTINGS.parse(settings)
    backends: tuple[BackendSpec, ...] = values.pop("backend")
    control: tuple[str, ...] = values["control"]
    if backends and control:
        raise ConfigError("--backend and --control are exclusive: the ring comes from one")
    if not backends and not control:
        raise ConfigError("no backends: give --backend URL (repeatable) or --control URL")
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--backend: two backends are named {duplicates[0]!r}; set ?name=")
    native = {"memcached": values["memcached_listen"], "redis": values["redis_listen"]}
    if values["listen"] is None and not any(native.values()):
        values["listen"] = DEFAULT_LISTEN
    _check_front_protocols(backends, native)
    _check_distinct_addresses(values)
    return ProxyConfig(
        backends=backends,
        redis_password=values.pop("redis_password_file"),
        token=_cluster_token(values.pop("token_file"), control),
        purge_token=values.pop("purge_token_file"),
        forward_headers=values.pop("forward_header"),
        **values,
    )


def _check_front_protocols(
    backends: tuple[BackendSpec, ...], native: dict[str, Address | None]
) -> None:
    """A native front relays its protocol as it is, so the pool must speak it. (With
    --control the pool is known only from the ring: the front then checks each ring and
    answers with errors while it does not match; see proxy/native/upstream.py.)"""
    spoken = sorted({b.protocol.value for b in backends})
    for protocol, address in native.items():
        if address is None or not spoken or spoken == [protocol]:
            continue
        raise ConfigError(
            f"--{protocol}-listen: the {protocol} front needs {protocol} backends, "
            f"but the pool has {' and '.join(spoken)} backends"
        )


def _check_distinct_addresses(values: dict[str, Any]) -> None:
    seen: dict[Address, str] = {}
    for name in ("listen", "memcached_listen", "redis_listen", "admin"):
        address = values[name]
        if address is None:
            continue
        flag = "--" + name.replace("_", "-")
        if address in seen and address.port != 0:
            raise ConfigError(f"{flag}: {address} is already {seen[address]}'s address")
        seen[address] = flag


def _cluster_token(path: str | None, control: tuple[str, ...]) -> str | None:
    if not control:
        return None
    try:
        token = load_token(path)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    if token is None:
        raise ConfigError(
            "--control needs the cluster token to report backend health: "
            "give --token-file FILE or set RINGLEADER_TOKEN"
        )
    return token
