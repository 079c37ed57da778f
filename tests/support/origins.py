"""The origins HTTP cache tests run against, as processes the tests own.

Kinds (the servers and their config protocol are in tests/support/origin.py):

  nginx      Debian's nginx in front of a titlecase origin: nginx's own Title-Case
             Server, Date, framing and Connection lines, the origin's other fields
  titlecase  stdlib http.server, Title-Case names
  raw        hand-written bytes over asyncio streams, Title-Case names, edge replies
  uvicorn    the ASGI origin: lowercase names (not in the default parametrisation)

`ORIGIN_KINDS` is what the HTTP cache suite runs against; the environment variable
RINGLEADER_TEST_ORIGINS (comma-separated kinds, e.g. "uvicorn") replaces it.

Through nginx the protocol is the titlecase origin's, with these differences:
  - Server, Date: nginx's (`Server: nginx/1.22.1`); the origin's are dropped.
  - Connection: nginx writes its own line (keep-alive, or close when the client asked)
    and drops the origin's Connection and Keep-Alive lines; it does not remove the
    fields a Connection line lists, so a configured `["connection", "x-hop"]` with
    `["x-hop", "1"]` reaches the client as a plain `X-Hop: 1`.
  - Framing: nginx re-frames: a Content-Length answer keeps it, a chunked one stays
    chunked (proxy_buffering off) but the chunk boundaries are nginx's, and a HEAD answer
    to a chunked resource has no framing line at all.
  - Requests: the origin sees nginx's own `Host` line carrying the client's value, no
    Connection line (upstream keep-alive), a chunked request body re-framed with
    Content-Length, and the other header names as the client sent them.
  - Conditionals: nginx's not-modified filter is off for uncached proxied answers, so
    304s are the origin's (etag/last_modified semantics unchanged).
  - The raw-only fields (raw, no_length, close, informational) are refused (400) by the
    origin behind it; nginx 1.22 does not relay 1xx interim answers in any case.

Run a server by hand: ``python -m tests.support.origins {titlecase|raw|uvicorn} PORT``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.origin import SERVERS
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port

ORIGIN_KINDS = ("nginx", "titlecase", "raw")
ALL_KINDS = ("uvicorn", *ORIGIN_KINDS)
KINDS_ENV = "RINGLEADER_TEST_ORIGINS"


def selected_kinds() -> tuple[str, ...]:
    """ORIGIN_KINDS, or the kinds named in $RINGLEADER_TEST_ORIGINS."""
    override = os.environ.get(KINDS_ENV, "").strip()
    if not override:
        return ORIGIN_KINDS
    kinds = tuple(k.strip() for k in override.split(",") if k.strip())
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"{KINDS_ENV}: unknown origin kinds {sorted(unknown)}")
    return kinds


@dataclass
class Origin:
    kind: str
    process: ServerProcess
    url: str
    # The titlecase origin behind nginx; None for the other kinds.
    upstream: ServerProcess | None = None

    def configure(self, name: str, **config: Any) -> None:
        reply = httpx.put(f"{self.url}/__config/{name}", json=config, timeout=5)
        if reply.status_code != 204:
            raise RuntimeError(f"{self.kind} origin refused config {config}: {reply.text}")

    def stats(self, name: str) -> dict[str, Any]:
        reply = httpx.get(f"{self.url}/__stats/{name}", timeout=5)
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    def count(self, name: str, method: str = "total") -> int:
        return int(self.stats(name)["counts"].get(method, 0))

    def last_request(self, name: str) -> dict[str, Any]:
        request: dict[str, Any] = self.stats(name)["requests"][-1]
        return request

    @property
    def authority(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def port(self) -> int:
        return self.process.port


def start_origin(group: ProcessGroup, kind: str) -> Origin:
    """A ready origin of `kind`, its processes owned by `group`."""
    if kind == "nginx":
        upstream = _start_server(group, "titlecase")
        nginx = _start_nginx(group, upstream.port)
        return Origin(kind, nginx, f"http://{LOOPBACK}:{nginx.port}", upstream)
    if kind not in SERVERS:
        raise ValueError(f"unknown origin kind {kind!r}; one of {ALL_KINDS}")
    process = _start_server(group, kind)
    return Origin(kind, process, f"http://{LOOPBACK}:{process.port}")


def _start_server(group: ProcessGroup, kind: str) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.origins", kind, str(port)]
    return group.spawn(f"origin-{kind}", argv, port).wait_port()


def nginx_binary() -> str:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed; .ci/run installs it (apt-get install)")
    return found


def nginx_config(prefix: Path, port: int, upstream_port: int) -> str:
    temp = {k: prefix / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    return f"""\
# One process, no daemon: the test owns it by PID and SIGKILL leaves no worker behind.
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    # Pass everything the proxy may send: bodies of any size, heads up to its 32 KiB
    # limit, names with underscores.
    client_max_body_size 0;
    large_client_header_buffers 8 64k;
    underscores_in_headers on;
    keepalive_requests 100000;
    upstream origin {{
        server {LOOPBACK}:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            # Empty Connection: upstream keep-alive instead of nginx's default "close".
            proxy_set_header Connection "";
            # The origin's Host is the one the proxy sends (our authority), not the
            # upstream block's name.
            proxy_set_header Host $http_host;
            proxy_pass_request_headers on;
            proxy_pass_request_body on;
            # Stream answers as they come: chunked stays chunked.
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 128k;
            proxy_redirect off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def _start_nginx(group: ProcessGroup, upstream_port: int) -> ServerProcess:
    port = free_port()
    prefix = group.workdir / f"nginx-{port}"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, upstream_port))
    # -e: the error log before the config is read; the default is outside the prefix.
    argv = [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return group.spawn("nginx", argv, port).wait_port()


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in SERVERS:
        sys.exit(f"usage: python -m tests.support.origins {{{'|'.join(SERVERS)}}} PORT")
    SERVERS[sys.argv[1]](int(sys.argv[2]))


if __name__ == "__main__":
    main()
