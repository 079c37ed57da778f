"""A twemproxy (nutcracker) pool as Ringleader proxy settings: `ringleader import-twemproxy`.

The conversion itself is pure; the command around it reads the YAML and writes the
config (and, for `redis_auth`, the password file beside it). The backends keep twemproxy's
server names (explicit, or its default rule) and weights in the same order, and the hash
and hash tag carry over, so the generated config places every key on the same server as
the nutcracker it replaces. `listen` becomes the memcached or redis front, so clients keep
speaking the protocol they spoke to nutcracker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ringleader.address import parse_address
from ringleader.backend_url import (
    MAX_WEIGHT,
    BackendSpec,
    BackendURLError,
    Protocol,
    default_name,
    parse_backend_url,
)
from ringleader.ring.hashes import KEY_HASHES
from ringleader.ring.hashtag import parse_hash_tag
from ringleader.settings import ConfigError
from ringleader.token import TokenError, load_token, read_token_file

FAILURE_DETECTOR = "replaced by the control plane's agreed failure detector (ringleader control)"
# twemproxy setting -> why Ringleader does without it. Reported, never dropped silently.
NOTES = {
    "auto_eject_hosts": FAILURE_DETECTOR,
    "server_failure_limit": FAILURE_DETECTOR,
    "server_retry_timeout": FAILURE_DETECTOR,
    "preconnect": "ignored; the proxy's heartbeats connect to every backend from the start",
    "backlog": "ignored; the proxy's listen backlog is fixed at 2048",
    "client_connections": (
        "not mapped; each front's limit is native-max-connections (per worker, default 1024)"
    ),
    "tcpkeepalive": "ignored; backend connections are kept open and checked by heartbeats",
    "reuseport": "ignored; --workers processes share one listening socket",
}
# `--output FILE` puts the redis_auth password in FILE + this, never in the config itself.
PASSWORD_SUFFIX = ".redis-password"
HANDLED = {
    "listen", "servers", "hash", "distribution", "hash_tag", "timeout", "redis", "redis_db",
    "redis_auth", "server_connections",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Conversion:
    """One pool's settings (proxy config keys, TOML-ready) and what was not carried over."""

    pool: str
    settings: dict[str, Any]
    backends: tuple[BackendSpec, ...]
    notes: list[str] = field(default_factory=list)
    # redis_auth, for the file that `settings` and every backend URL name instead.
    redis_password: str | None = field(default=None, repr=False)


def load_pools(text: str, source: str) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{source}: not valid YAML{line}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: expected a twemproxy config, a mapping of pool names")
    for name, pool in data.items():
        if not isinstance(pool, dict):
            raise ConfigError(f"{source}: pool {name!r} is not a mapping of settings")
    return {str(name): pool for name, pool in data.items()}


def select_pool(pools: dict[str, dict[str, Any]], name: str | None, source: str) -> str:
    if name is not None:
        if name not in pools:
            raise ConfigError(f"--pool {name}: {source} has pools {', '.join(pools)}")
        return name
    if len(pools) > 1:
        raise ConfigError(
            f"{source} has {len(pools)} pools ({', '.join(pools)}); choose one with --pool NAME"
        )
    return next(iter(pools))


def convert(name: str, pool: dict[str, Any], password_file: str | None = None) -> Conversion:
    """Proxy settings for twemproxy pool `name`; ConfigError for what cannot carry over.

    A `redis_auth` password is left to `password_file`, which the settings and every backend
    URL name; without one such a pool is refused.
    """
    where = f"pool {name}"
    settings: dict[str, Any] = {}
    notes: list[str] = []

    distribution = str(pool.get("distribution", "ketama"))
    if distribution != "ketama":
        raise ConfigError(
            f"{where}: distribution {distribution!r} is not supported; Ringleader places keys "
            "with ketama only"
        )
    hash_name = str(pool.get("hash", "fnv1a_64"))
    if hash_name not in KEY_HASHES:
        raise ConfigError(
            f"{where}: hash {hash_name!r} is not supported; Ringleader's ketama hashes are "
            f"{' and '.join(KEY_HASHES)}"
        )
    redis = _bool(where, "redis", pool.get("redis", False))
    settings["redis-listen" if redis else "memcached-listen"] = _listen(where, pool.get("listen"))
    settings["hash"] = hash_name
    if "hash_tag" in pool:
        try:
            parse_hash_tag(str(pool["hash_tag"]))
        except ValueError as exc:
            raise ConfigError(f"{where}: hash_tag: {exc}") from None
        settings["hash-tag"] = str(pool["hash_tag"])
    if "timeout" in pool:
        timeout = _whole(where, "timeout", pool["timeout"])
        # twemproxy's timeout is in milliseconds; a negative one means wait forever.
        if timeout > 0:
            settings["request-timeout"] = timeout / 1000
        else:
            notes.append("timeout: no limit in twemproxy; request-timeout keeps its 0.5s default")
    if "server_connections" in pool:
        settings["connections"] = _whole(where, "server_connections", pool["server_connections"])
        if settings["connections"] < 1:
            raise ConfigError(f"{where}: server_connections must be at least 1")
    password = None
    if "redis_auth" in pool:
        if not redis:
            raise ConfigError(
                f"{where}: redis_auth needs redis: true (twemproxy has no memcached AUTH)"
            )
        password = _password(where, pool["redis_auth"])
        if password_file is None:
            raise ConfigError(
                f"{where}: redis_auth: the password goes in a file beside the config, never "
                "in the config or on stdout; give --output FILE"
            )
        _check_password_path(where, password_file)
        # twemproxy requires clients to AUTH with redis_auth and sends it to its servers.
        settings["redis-password-file"] = password_file
        notes.append(
            f"redis_auth: the password is in {password_file} (mode 0600); clients AUTH with "
            "it at redis-listen and the proxy AUTHs with it to every server"
        )
    db = _whole(where, "redis_db", pool.get("redis_db", 0))
    if "redis_db" in pool and not redis:
        raise ConfigError(f"{where}: redis_db needs redis: true")
    if db and password is not None:
        notes.append(
            f"redis_db: nutcracker 0.5.0 sends SELECT before AUTH, which the servers refuse, "
            f"so its keys may be in database 0; the backends here use database {db}"
        )
    protocol = Protocol.REDIS if redis else Protocol.MEMCACHED
    backends = tuple(
        _server(where, s, protocol, db, None if password is None else password_file)
        for s in _servers(where, pool)
    )
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: two servers are named {duplicates[0]!r}")
    settings["backend"] = [b.url for b in backends]
    for key in pool:
        if key in NOTES:
            notes.append(f"{key}: {NOTES[key]}")
        elif key not in HANDLED:
            notes.append(f"{key}: not a setting Ringleader knows; ignored")
    return Conversion(name, settings, backends, notes, password)


def to_toml(settings: dict[str, Any], header: list[str]) -> str:
    """`settings` as a proxy TOML config (flat keys; strings, numbers, lists of strings)."""
    lines = [f"# {line}" for line in header]
    for key, value in settings.items():
        if isinstance(value, list):
            lines.append(f"{key} = [")
            lines.extend(f"    {_toml_string(v)}," for v in value)
            lines.append("]")
        elif isinstance(value, bool | int | float):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {_toml_string(str(value))}")
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    # A JSON string with every non-ASCII character escaped is a valid TOML basic string.
    return json.dumps(text, ensure_ascii=True)


def _listen(where: str, value: Any) -> str:
    text = str(value) if value is not None else ""
    if not text:
        raise ConfigError(f"{where}: listen is missing")
    if text.startswith("/"):
        raise ConfigError(
            f"{where}: listen {text!r} is a unix socket; Ringleader listens on HOST:PORT only"
        )
    return str(parse_address(f"{where}: listen", text))


def _password(where: str, value: Any) -> str:
    # The proxy reads password files as one printable ASCII line, stripped.
    if not isinstance(value, str):
        raise ConfigError(f"{where}: redis_auth must be a string; quote it in the YAML")
    if not value or value != value.strip() or not value.isascii() or not value.isprintable():
        raise ConfigError(
            f"{where}: redis_auth must be printable ASCII without leading or trailing spaces"
        )
    return value


def _check_password_path(where: str, path: str) -> None:
    try:
        fits = parse_backend_url(f"redis://h/0?password_file={path}").password_file == path
    except BackendURLError:
        fits = False
    if not fits:
        raise ConfigError(
            f"{where}: redis_auth: the password file {path!r} cannot be named in a backend "
            "URL (no &, #, % or +); choose another --output"
        )


def _servers(where: str, pool: dict[str, Any]) -> list[str]:
    servers = pool.get("servers")
    if not isinstance(servers, list) or not servers:
        raise ConfigError(f"{where}: servers must be a non-empty list")
    return [str(s) for s in servers]


def _server(
    where: str, line: str, protocol: Protocol, db: int, password_file: str | None
) -> BackendSpec:
    """`host:port:weight [name]`, split from the right as nc_conf.c does."""
    text = line.strip()
    address, space, name = text.rpartition(" ")
    if not space:
        address, name = text, ""
    address = address.strip()
    problem = f"{where}: server {line!r}"
    if address.startswith("/"):
        raise ConfigError(f"{problem}: unix-socket servers are not supported; use host:port")
    head, _, weight = address.rpartition(":")
    host, _, port = head.rpartition(":")
    if not host or not port.isdigit() or not weight.isdigit():
        raise ConfigError(f"{problem}: expected host:port:weight [name]")
    if not 1 <= int(weight) <= MAX_WEIGHT:
        raise ConfigError(f"{problem}: weight must be from 1 to {MAX_WEIGHT}")
    spec = BackendSpec(
        name=name.strip() or default_name(host, int(port)),
        protocol=protocol,
        host=host,
        port=int(port),
        weight=int(weight),
        db=db,
        password_file=password_file,
    )
    # The URL must read back as the same backend, name included, or placement would move.
    try:
        same = parse_backend_url(spec.url) == spec
    except BackendURLError:
        same = False
    if not same:
        raise ConfigError(f"{problem}: the name {spec.name!r} cannot be used in a backend URL")
    return spec


def _bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _whole(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be a whole number, got {value!r}")
    return value


# -- the command ----------------------------------------------------------------------------

Register = Callable[[argparse.Namespace, Conversion], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("config", metavar="nutcracker.yml", help="twemproxy configuration file")
    add("--pool", metavar="NAME", help="the pool to import (needed when the file has several)")
    add(
        "--control",
        action="append",
        metavar="URL[,URL...]",
        help="also register the servers as the pool's backends with this control plane",
    )
    add("--token-file", metavar="FILE", help="cluster token for --control (else $RINGLEADER_TOKEN)")
    add("--who", default=None, help="with --control: recorded as the author (default $USER)")
    add(
        "--output",
        metavar="FILE",
        help=f"write the proxy config here, not to stdout (redis_auth: FILE{PASSWORD_SUFFIX})",
    )


def run(args: argparse.Namespace, register: Register) -> None:
    """Writes the proxy config; with --control, registers the backends first via `register`."""
    source = str(args.config)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a text file") from None
    pools = load_pools(text, source)
    name = select_pool(pools, args.pool, source)
    password_file = os.path.abspath(args.output + PASSWORD_SUFFIX) if args.output else None
    conversion = convert(name, pools[name], password_file)
    if password_file is not None and conversion.redis_password is not None:
        write_password_file(password_file, conversion.redis_password)
    for note in conversion.notes:
        print(f"ringleader import-twemproxy: note: {note}", file=sys.stderr)
    settings = dict(conversion.settings)
    header = [f"Ringleader proxy config from twemproxy pool {name!r} in {source}",
              "(ringleader import-twemproxy)."]  # fmt: skip
    if args.control:
        try:
            token = load_token(args.token_file)
        except TokenError as exc:
            raise ConfigError(str(exc)) from None
        if token is None:
            raise ConfigError(
                "--control needs the cluster token to register backends: "
                "give --token-file FILE or set RINGLEADER_TOKEN"
            )
        register(args, conversion)
        # The ring (backends and hash) now comes from the control plane.
        del settings["backend"], settings["hash"]
        settings["control"] = [u for item in args.control for u in item.split(",") if u]
        settings["pool"] = name
        header.append("The proxy also needs the cluster token: token-file = FILE, or set")
        header.append("RINGLEADER_TOKEN.")
    document = to_toml(settings, header)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(document)
        except OSError as exc:
            raise ConfigError(f"--output {args.output}: {exc.strerror}") from None
    else:
        sys.stdout.write(document)


def write_password_file(path: str, password: str) -> None:
    """Creates `path` (0600, never through a symlink) holding `password`. A file already
    there is kept if it holds the same password (a rerun), else refused: never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            same = read_token_file(path, "--output") == password
        except TokenError:
            same = False
        if not same:
            raise ConfigError(
                f"{path} exists and does not hold this pool's redis_auth; remove it or choose "
                "another --output"
            ) from None
        return
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        # The umask may have taken bits away; the mode must be exactly owner-only.
        os.fchmod(f.fileno(), 0o600)
        f.write(password + "\n")
