"""Backend addresses: `memcached://host:port?name=N&weight=W` and `redis://host:port/DB?...`.

A redis backend that wants `AUTH` takes its password in the URL (`redis://:PASSWORD@host`)
or, better, from a file (`?password_file=/path`): only the file's path is part of the URL
that the control plane stores and `/status` shows; the password itself never is.

A backend's *name* is what the ring hashes and what `X-Ringleader-Backend` shows. It
defaults to twemproxy's rule so that a fleet moved from twemproxy keeps its key placement:
the host alone when the port is 11211, otherwise `host:port`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import parse_qs, unquote, urlsplit

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
    # redis AUTH: the password given inline, or the file to read it from at connect time.
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL without the inline password, which is never shown or stored."""
        path = f"/{self.db}" if self.protocol is Protocol.REDIS else ""
        query = f"name={self.name}&weight={self.weight}"
        if self.password_file is not None:
            query += f"&password_file={self.password_file}"
        return f"{self.protocol.value}://{self.address}{path}?{query}"

    def auth_password(self) -> str | None:
        """The password to AUTH with; OSError when its file cannot be read."""
        if self.password_file is None:
            return self.password
        with open(self.password_file, encoding="utf-8") as f:
            return f.read().strip()


def default_name(host: str, port: int) -> str:
    return host if port == KETAMA_DEFAULT_PORT else f"{host}:{port}"


def redacted(url: str) -> str:
    """`url` with any inline password replaced by `***`, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def parse_backend_url(url: str) -> BackendSpec:
    shown = redacted(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BackendURLError(f"backend URL {shown!r}: {exc}") from None
    try:
        protocol = Protocol(parts.scheme)
    except ValueError:
        raise BackendURLError(
            f"backend URL {shown!r}: scheme must be memcached:// or redis://"
        ) from None
    host = parts.hostname
    if not host:
        raise BackendURLError(f"backend URL {shown!r}: missing host")
    if port is None:
        port = DEFAULT_PORTS[protocol]
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - {"name", "weight", "password_file"}
    if unknown:
        raise BackendURLError(f"backend URL {shown!r}: unknown parameter {sorted(unknown)[0]!r}")
    name = _single(shown, query, "name") or default_name(host, port)
    if any(c.isspace() for c in name):
        raise BackendURLError(f"backend URL {shown!r}: name must not contain whitespace")
    weight = _parse_weight(shown, _single(shown, query, "weight"))
    db = _parse_db(shown, protocol, parts.path)
    password_file = _single(shown, query, "password_file")
    password = unquote(parts.password) if parts.password else None
    if (password is not None or password_file is not None) and protocol is not Protocol.REDIS:
        raise BackendURLError(f"backend {name!r}: only redis:// backends take a password")
    if password is not None and password_file is not None:
        raise BackendURLError(
            f"backend {name!r}: give the password inline or as ?password_file=, not both"
        )
    if password_file == "":
        raise BackendURLError(f"backend {name!r}: password_file is empty")
    return BackendSpec(
        name=name, protocol=protocol, host=host, port=port, weight=weight, db=db,
        password=password, password_file=password_file,
    )  # fmt: skip


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
