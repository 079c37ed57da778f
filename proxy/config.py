"""The proxy's settings, from flags and an optional TOML file with the same keys.

Precedence: built-in defaults < `--config FILE.toml` < command-line flags.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from proxy.httpcache.forwarding import UNKEYED
from ringleader.address import Address, parse_address
from ringleader.backend_url import BackendSpec, BackendURLError, parse_backend_url
from ringleader.backends import ClientSettings
from ringleader.ring.hashes import KEY_HASHES
from ringleader.ring.hashtag import parse_hash_tag
from ringleader.settings import ConfigError
from ringleader.token import TokenError, load_token, read_token_file

DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
# Below this no ordinary request fits (a request line and a Host already take ~100 bytes).
MIN_HEADER_BYTES = 1024
# memcached's default item size (-I 1m): a cached body larger than it could never be stored.
MAX_HTTP_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    listen: Address = Address("127.0.0.1", 8080)
    admin: Address = Address("127.0.0.1", 8081)
    backends: tuple[BackendSpec, ...] = ()
    hash: str = "fnv1a_64"
    # twemproxy's hash_tag: two bytes, opening and closing (ringleader/ring/hashtag.py).
    hash_tag: bytes | None = None
    origin: str | None = None
    control: tuple[str, ...] = ()
    pool: str = "default"
    workers: int = 1
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    client: ClientSettings = field(default_factory=ClientSettings)
    health_interval: float = 0.5
    health_timeout: float = 0.25
    # With --control: the cluster token (health reports change state), how often the
    # proxy reports even without news, and the TTL cap on writes that land on a backend
    # only because the key's owner is down (docs/invariants.md, invariant 3).
    token: str | None = field(default=None, repr=False)
    report_interval: float = 2.0
    failover_ttl: int = 30
    # The HTTP cache (with `origin`); see proxy/httpcache/handler.py.
    http_max_body_bytes: int = MAX_HTTP_BODY_BYTES
    cache_cookies: bool = False
    heuristic_cap: float = 86400.0
    purge_token: str | None = field(default=None, repr=False)
    lease_ttl: int = 3
    lease_wait: float = 2.0
    origin_timeout: float = 10.0
    forward_headers: tuple[str, ...] = ()
    pass_ttl: int = 120
    max_variants: int = 8
    # What one client may cost the data port (proxy/httpserver.py); per worker.
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 5.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    max_connections: int = 1024


# Setting name (as a flag without dashes, or a TOML key) -> how to read it.
_KEYS = {
    "listen", "admin", "backend", "hash", "hash-tag", "origin", "control", "pool", "workers",
    "max-value-bytes", "connect-timeout", "request-timeout", "connections",
    "health-interval", "health-timeout", "http-max-body-bytes", "cache-cookies",
    "heuristic-cap", "purge-token-file", "lease-ttl", "lease-wait", "origin-timeout",
    "token-file", "report-interval", "failover-ttl", "forward-header", "pass-ttl",
    "max-variants", "max-header-bytes", "header-timeout", "idle-timeout", "body-timeout",
    "send-timeout", "max-connections",
}  # fmt: skip


def load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    settings = {key.replace("_", "-"): value for key, value in data.items()}
    unknown = sorted(set(settings) - _KEYS)
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting {unknown[0]!r}")
    return settings


def build(settings: dict[str, Any]) -> ProxyConfig:
    """A validated config from setting name -> value (file values overlaid by flags)."""
    get = settings.get
    backends = tuple(_backend(url) for url in _list("backend", get("backend")))
    control = tuple(u for item in _list("control", get("control")) for u in item.split(",") if u)
    if backends and control:
        raise ConfigError("--backend and --control are exclusive: the ring comes from one")
    if not backends and not control:
        raise ConfigError("no backends: give --backend URL (repeatable) or --control URL")
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--backend: two backends are named {duplicates[0]!r}; set ?name=")
    hash_name = str(get("hash", "fnv1a_64"))
    if hash_name not in KEY_HASHES:
        raise ConfigError(f"--hash: expected one of {', '.join(KEY_HASHES)}, got {hash_name!r}")
    defaults = ProxyConfig()
    client = ClientSettings(
        connect_timeout=_positive("connect-timeout", get("connect-timeout"), 0.5),
        request_timeout=_positive("request-timeout", get("request-timeout"), 0.5),
        connections=int(_positive("connections", get("connections"), 1, integer=True)),
    )
    return ProxyConfig(
        listen=parse_address("--listen", str(get("listen", defaults.listen))),
        admin=parse_address("--admin", str(get("admin", defaults.admin))),
        backends=backends,
        hash=hash_name,
        hash_tag=_hash_tag(get("hash-tag")),
        origin=_origin(get("origin")),
        control=control,
        pool=str(get("pool", "default")),
        workers=int(_positive("workers", get("workers"), 1, integer=True)),
        max_value_bytes=int(
            _positive("max-value-bytes", get("max-value-bytes"), DEFAULT_MAX_VALUE_BYTES, True)
        ),
        client=client,
        health_interval=_positive("health-interval", get("health-interval"), 0.5),
        health_timeout=_positive("health-timeout", get("health-timeout"), 0.25),
        token=_cluster_token(get("token-file"), control),
        report_interval=_positive("report-interval", get("report-interval"), 2.0),
        failover_ttl=int(_positive("failover-ttl", get("failover-ttl"), 30, integer=True)),
        http_max_body_bytes=_max_body(get("http-max-body-bytes")),
        cache_cookies=bool(get("cache-cookies", False)),
        heuristic_cap=_positive("heuristic-cap", get("heuristic-cap"), 86400.0),
        purge_token=_token(get("purge-token-file")),
        lease_ttl=int(_positive("lease-ttl", get("lease-ttl"), 3, integer=True)),
        lease_wait=_positive("lease-wait", get("lease-wait"), 2.0),
        origin_timeout=_positive("origin-timeout", get("origin-timeout"), 10.0),
        forward_headers=_forward_headers(get("forward-header")),
        pass_ttl=int(_positive("pass-ttl", get("pass-ttl"), 120, integer=True)),
        max_variants=int(_positive("max-variants", get("max-variants"), 8, integer=True)),
        max_header_bytes=_max_header_bytes(get("max-header-bytes")),
        header_timeout=_positive("header-timeout", get("header-timeout"), 10.0),
        idle_timeout=_positive("idle-timeout", get("idle-timeout"), 5.0),
        body_timeout=_positive("body-timeout", get("body-timeout"), 30.0),
        send_timeout=_positive("send-timeout", get("send-timeout"), 30.0),
        max_connections=int(
            _positive("max-connections", get("max-connections"), 1024, integer=True)
        ),
    )


def _hash_tag(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"--hash-tag: expected a string of two characters, got {value!r}")
    try:
        return parse_hash_tag(value)
    except ValueError as exc:
        raise ConfigError(f"--hash-tag: {exc}") from None


def _cluster_token(path: Any, control: tuple[str, ...]) -> str | None:
    if not control:
        return None
    try:
        token = load_token(str(path) if path is not None else None)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    if token is None:
        raise ConfigError(
            "--control needs the cluster token to report backend health: "
            "give --token-file FILE or set RINGLEADER_TOKEN"
        )
    return token


def _max_body(value: Any) -> int:
    limit = int(_positive("http-max-body-bytes", value, MAX_HTTP_BODY_BYTES, integer=True))
    if limit > MAX_HTTP_BODY_BYTES:
        raise ConfigError(
            f"--http-max-body-bytes: at most {MAX_HTTP_BODY_BYTES} (memcached's item size)"
        )
    return limit


def _token(path: Any) -> str | None:
    if path is None:
        return None
    try:
        return read_token_file(str(path), "--purge-token-file")
    except TokenError as exc:
        raise ConfigError(str(exc)) from None


def _max_header_bytes(value: Any) -> int:
    limit = int(_positive("max-header-bytes", value, 32 * 1024, integer=True))
    if limit < MIN_HEADER_BYTES:
        raise ConfigError(f"--max-header-bytes: at least {MIN_HEADER_BYTES}, got {limit}")
    return limit


def _forward_headers(value: Any) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in _list("forward-header", value))
    unknown = [name for name in names if name.encode("latin-1") not in UNKEYED]
    if unknown:
        raise ConfigError(
            f"--forward-header: {unknown[0]!r} is forwarded already; the option takes one of "
            f"{', '.join(sorted(n.decode() for n in UNKEYED))}"
        )
    return names


def _list(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"{name}: expected a string or a list of strings")


def _backend(url: str) -> BackendSpec:
    try:
        return parse_backend_url(url)
    except BackendURLError as exc:
        raise ConfigError(f"--backend: {exc}") from None


def _origin(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--origin: expected an http:// or https:// URL, got {text!r}")
    if parts.query or parts.fragment or parts.username is not None:
        raise ConfigError(
            f"--origin: a query, fragment or user name cannot be a prefix, got {text!r}"
        )
    # A path is a prefix: `--origin http://h/app` forwards /x as /app/x.
    return text.rstrip("/")


def _positive(name: str, value: Any, default: float, integer: bool = False) -> float:
    if value is None:
        return default
    try:
        if isinstance(value, bool) or (integer and not float(value).is_integer()):
            raise ValueError(value)
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"--{name}: expected {kind}, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"--{name}: must be above zero, got {value!r}")
    return number
