"""`ringleader proxy` flags."""

from __future__ import annotations

import argparse
from typing import Any

from proxy import config as cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", metavar="FILE.toml", help="settings file with the same keys as these flags")
    add("--listen", metavar="HOST:PORT", help="data plane address (default 127.0.0.1:8080)")
    add("--admin", metavar="HOST:PORT", help="admin address (default 127.0.0.1:8081)")
    add(
        "--backend",
        metavar="URL",
        action="append",
        help="memcached://host:port?name=N&weight=W or redis://host:port/DB?...; repeatable",
    )
    add("--hash", choices=["fnv1a_64", "md5"], help="ketama key hash (default fnv1a_64)")
    add(
        "--hash-tag",
        metavar="AB",
        help="hash only the part of a key between A and B, as twemproxy's hash_tag (e.g. {})",
    )
    add("--origin", metavar="URL", help="origin for the HTTP cache")
    add(
        "--control",
        metavar="URL[,URL...]",
        action="append",
        help="control plane; the ring comes from it instead of --backend",
    )
    add("--pool", metavar="NAME", help="pool to serve with --control (default 'default')")
    add("--workers", type=int, metavar="N", help="worker processes (default 1)")
    add("--max-value-bytes", type=int, metavar="N", help="KV value limit (default 1048576)")
    add("--connect-timeout", type=float, metavar="SECONDS", help="backend connect (0.5)")
    add("--request-timeout", type=float, metavar="SECONDS", help="backend reply (0.5)")
    add(
        "--connections",
        type=int,
        metavar="N",
        help="pipelined connections per backend and worker (default 1)",
    )
    add("--health-interval", type=float, metavar="SECONDS", help="heartbeat period (0.5)")
    add("--health-timeout", type=float, metavar="SECONDS", help="heartbeat timeout (0.25)")
    add(
        "--token-file",
        metavar="FILE",
        help="cluster token, needed with --control (else $RINGLEADER_TOKEN)",
    )
    add(
        "--report-interval",
        type=float,
        metavar="SECONDS",
        help="with --control: report backend health at least this often (2.0)",
    )
    add(
        "--failover-ttl",
        type=int,
        metavar="SECONDS",
        help="TTL cap on writes that land elsewhere because the key's owner is down (30)",
    )
    add(
        "--http-max-body-bytes",
        type=int,
        metavar="N",
        help="HTTP cache: larger bodies stream through uncached (default and max 1048576)",
    )
    add(
        "--cache-cookies",
        action="store_true",
        default=None,
        help="HTTP cache: cache requests with Cookie (Set-Cookie is still never stored)",
    )
    add(
        "--heuristic-cap",
        type=float,
        metavar="SECONDS",
        help="HTTP cache: longest heuristic freshness (86400)",
    )
    add("--purge-token-file", metavar="FILE", help="HTTP cache: enables PURGE with this token")
    add(
        "--lease-ttl",
        type=int,
        metavar="SECONDS",
        help="HTTP cache: lifetime of a fleet-wide fetch lease (3)",
    )
    add(
        "--lease-wait",
        type=float,
        metavar="SECONDS",
        help="HTTP cache: longest wait for another request's fetch (2.0)",
    )
    add("--origin-timeout", type=float, metavar="SECONDS", help="HTTP cache: origin reply (10)")
    add(
        "--forward-header",
        metavar="NAME",
        action="append",
        help="HTTP cache: forward this unkeyed request field (X-Forwarded-Proto, ...); repeatable",
    )
    add(
        "--pass-ttl",
        type=int,
        metavar="SECONDS",
        help="HTTP cache: seconds an uncacheable answer sends its URL straight to the origin (120)",
    )
    add("--max-variants", type=int, metavar="N", help="HTTP cache: variants kept per URI (8)")
    add(
        "--max-header-bytes",
        type=int,
        metavar="N",
        help="data port: request line and headers above this get 431 (32768)",
    )
    add(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="data port: time to send a request's headers, else 408 (10)",
    )
    add(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="data port: a keep-alive connection idle this long is closed (5)",
    )
    add(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="data port: longest gap while reading a request body (30)",
    )
    add(
        "--send-timeout",
        type=float,
        metavar="SECONDS",
        help="data port: longest a client may leave a response unread (30)",
    )
    add(
        "--max-connections",
        type=int,
        metavar="N",
        help="data port: connections per worker; more get 503 (1024)",
    )


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = cfg.load_file(args.config) if args.config else {}
    for key, value in vars(args).items():
        if value is not None and key not in ("config", "command", "func"):
            settings[key.replace("_", "-")] = value
    return settings


def run(args: argparse.Namespace) -> None:
    import uvloop

    from proxy.server import serve
    from ringleader import jsonlog

    config = cfg.build(settings_from(args))
    jsonlog.configure("proxy")
    uvloop.run(serve(config))
