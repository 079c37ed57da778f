"""Backend addresses: `memcached://host:port?name=N&weight=W` and `redis://host:port/DB?...`.

A backend's *name* is what the ring hashes and what `X-Ringleader-Backend` shows. It
defaults to twemproxy's rule so that a fleet moved from twemproxy keeps its key placement:
the host alone when the port is 11211, otherwise `host:port`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qs, urlsplit

# nc_conf.c: CONF_DEFAULT_KETAMA_PORT. The port is left out of the default name on it.
KETAMA_DEFAULT_PORT = 11211
MAX_WEIGHT = 10_000


class Protocol(Enum):
    MEMCACHED = "memcached"
    REDIS = "redis"


DEFAULT_PORTS = {Protocol.MEMCACHED: 11211, Protocol.REDIS: 6379}


class BackendURLError(ValueError):
    """A backend URL that cannot be used; the message names the URL and the problem."""


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One cache server as configured. Immutable, so rings can share it freely."""

    name: str
    protocol: Protocol
    host: str
    port: int
    weight: int = 1
    db: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        path = f"/{self.db}" if self.protocol is Protocol.REDIS else ""
        return f"{self.protocol.value}://{self.address}{path}?name={self.name}&weight={self.weight}"


def default_name(host: str, port: int) -> str:
    return host if port == KETAMA_DEFAULT_PORT else f"{host}:{port}"


def parse_backend_url(url: str) -> BackendSpec:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BackendURLError(f"backend URL {url!r}: {exc}") from None
    try:
        protocol = Protocol(parts.scheme)
    except ValueError:
        raise BackendURLError(
            f"backend URL {url!r}: scheme must be memcached:// or redis://"
        ) from None
    host = parts.hostname
    if not host:
        raise BackendURLError(f"backend URL {url!r}: missing host")
    if port is None:
        port = DEFAULT_PORTS[protocol]
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - {"name", "weight"}
    if unknown:
        raise BackendURLError(f"backend URL {url!r}: unknown parameter {sorted(unknown)[0]!r}")
    name = _single(url, query, "name") or default_name(host, port)
    if any(c.isspace() for c in name):
        raise BackendURLError(f"backend URL {url!r}: name must not contain whitespace")
    weight = _parse_weight(url, _single(url, query, "weight"))
    db = _parse_db(url, protocol, parts.path)
    return BackendSpec(name=name, protocol=protocol, host=host, port=port, weight=weight, db=db)


def _single(url: str, query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    if values is None:
        return None
    if len(values) != 1:
        raise BackendURLError(f"backend URL {url!r}: {key} given more than once")
    return values[0]


def _parse_weight(url: str, raw: str | None) -> int:
    if raw is None:
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WEIGHT:
        raise BackendURLError(
            f"backend URL {url!r}: weight must be an integer from 1 to {MAX_WEIGHT}, got {raw!r}"
        )
    return int(raw)


def _parse_db(url: str, protocol: Protocol, path: str) -> int:
    path = path.strip("/")
    if not path:
        return 0
    if protocol is not Protocol.REDIS:
        raise BackendURLError(f"backend URL {url!r}: only redis:// URLs take a /DB path")
    if not path.isdigit():
        raise BackendURLError(f"backend URL {url!r}: database must be a number, got {path!r}")
    return int(path)
