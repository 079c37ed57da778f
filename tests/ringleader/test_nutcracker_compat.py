"""Moving from twemproxy must not cold-start the cache: keys written through a real
nutcracker are found by `ringleader proxy` on the same memcached, for every key.

Each test writes 5,000 keys through nutcracker (memcached text protocol, pipelined), finds
where each landed by asking every memcached directly, then reads every key through the proxy
and checks the value and the backend named by `X-Ringleader-Backend`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    ServerProcess,
    free_port,
    port_open,
    require_binary,
)

KEY_COUNT = 5000
BATCH = 250


def compat_keys() -> list[bytes]:
    """Deterministic keys; one in four has bytes >= 0x80 (signed-char hashing)."""
    keys = []
    for i in range(KEY_COUNT):
        if i % 4 == 0:
            keys.append(b"caf\xc3\xa9:%d:\x80\xff" % i)
        elif i % 4 == 1:
            keys.append(b"user:%d" % i)
        elif i % 4 == 2:
            keys.append(b"session/%08x" % (i * 2654435761 % 2**32))
        else:
            keys.append(bytes([0x21 + i % 90, 0x80 + i % 128]) + b"-%d" % i)
    return keys


def value_of(key: bytes) -> bytes:
    return b"value-of:" + key


def _exchange(sock: socket.socket, payload: bytes, replies_end: bytes, count: int) -> bytes:
    sock.sendall(payload)
    buf = b""
    while buf.count(replies_end) < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise AssertionError(f"connection closed; got {buf[-200:]!r}")
        buf += chunk
    return buf


def write_through_nutcracker(port: int, keys: Sequence[bytes]) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            payload = b"".join(
                b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value_of(k)), value_of(k)) for k in batch
            )
            replies = _exchange(sock, payload, b"\r\n", len(batch))
            assert replies == b"STORED\r\n" * len(batch), replies[:300]


def held_by(port: int, keys: Sequence[bytes]) -> dict[bytes, bytes]:
    """The keys among `keys` that the memcached on `port` holds, with their values."""
    found: dict[bytes, bytes] = {}
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        for start in range(0, len(keys), BATCH):
            reply = _exchange(sock, b"get " + b" ".join(keys[start : start + BATCH]) + b"\r\n",
                              b"END\r\n", 1)  # fmt: skip
            # Values never contain CRLF here, so the reply splits cleanly into lines.
            lines = reply.split(b"\r\n")
            assert lines[-2:] == [b"END", b""], reply[-100:]
            for header, value in zip(lines[0:-2:2], lines[1:-2:2], strict=True):
                _, key, _, _ = header.split(b" ")
                found[key] = value
    return found


@dataclass
class Server:
    """One memcached as both configurations see it."""

    proc: ServerProcess
    weight: int
    name: str | None  # explicit name, or None for twemproxy's default

    @property
    def nutcracker_line(self) -> str:
        line = f"{LOOPBACK}:{self.proc.port}:{self.weight}"
        return f"{line} {self.name}" if self.name else line

    @property
    def url(self) -> str:
        url = f"memcached://{LOOPBACK}:{self.proc.port}?weight={self.weight}"
        return f"{url}&name={self.name}" if self.name else url

    @property
    def expected_header(self) -> str:
        if self.name:
            return self.name
        return LOOPBACK if self.proc.port == 11211 else f"{LOOPBACK}:{self.proc.port}"


def tagged_keys() -> list[bytes]:
    """Keys for `hash_tag: "{}"`: most tagged (tags shared by many keys, at either end, in
    the middle, several in one key, bytes >= 0x80 inside), some untagged, some with an empty
    tag or an unclosed one (both hash the whole key)."""
    keys = []
    for i in range(KEY_COUNT):
        group = i % 37
        match i % 10:
            case 0:
                keys.append(b"{user:%d}:profile:%d" % (group, i))
            case 1:
                keys.append(b"cart:%d:{user:%d}" % (i, group))
            case 2:
                keys.append(b"x{\xc3\xa9\x80%d\xff}y:%d" % (group, i))
            case 3:
                keys.append(b"{a%d}{b%d}:%d" % (group, i, i))
            case 4:
                keys.append(b"{}empty:%d" % i)
            case 5:
                keys.append(b"open{only:%d" % i)
            case 6:
                keys.append(b"close}only{:%d" % i)
            case 7:
                keys.append(b"}{%d}" % group + b":%d" % i)
            case 8:
                keys.append(b"plain:%d" % i)
            case _:
                keys.append(b"{{nested:%d}}:%d" % (group, i))
    return keys


def start_nutcracker(procs: ProcessGroup, yaml_text: str, port: int) -> ServerProcess:
    """nutcracker with `yaml_text` as its whole config; it must listen on `port`."""
    conf = procs.workdir / f"nutcracker-{port}.yml"
    conf.write_text(yaml_text)
    argv = [require_binary("nutcracker"), "-c", str(conf), "-s", str(free_port()),
            "-o", str(procs.workdir / f"nutcracker-{port}.out")]  # fmt: skip
    return procs.spawn("nutcracker", argv, port).wait_port()


def assert_same_placement(
    procs: ProcessGroup,
    servers: list[Server],
    hash_name: str,
    hash_tag: str | None = None,
    keys: list[bytes] | None = None,
) -> None:
    keys = keys if keys is not None else compat_keys()
    if hash_tag is None:
        nutcracker = procs.nutcracker([s.nutcracker_line for s in servers], hash_name)
    else:
        port = free_port()
        conf = [
            "pool:",
            f"  listen: {LOOPBACK}:{port}",
            f"  hash: {hash_name}",
            f"  hash_tag: {json.dumps(hash_tag)}",
            "  distribution: ketama",
            "  auto_eject_hosts: false",
            "  timeout: 2000",
            "  servers:",
            *(f"   - {s.nutcracker_line}" for s in servers),
        ]
        nutcracker = start_nutcracker(procs, "\n".join(conf) + "\n", port)
    write_through_nutcracker(nutcracker.port, keys)

    # Where nutcracker put every key, asked of each memcached directly.
    truth: dict[bytes, Server] = {}
    for server in servers:
        for key, value in held_by(server.proc.port, keys).items():
            assert value == value_of(key)
            assert key not in truth, f"{key!r} is on two servers"
            truth[key] = server
    assert len(truth) == len(keys), "some keys were not stored anywhere"
    used = {s.expected_header for s in truth.values()}
    assert len(used) == len(servers), "every server should own some of 5,000 keys"

    tag_flags = ["--hash-tag", hash_tag] if hash_tag is not None else []
    proxy = procs.proxy([s.url for s in servers], "--hash", hash_name, *tag_flags)
    wrong: list[tuple[bytes, str, str]] = []
    by_header = {s.expected_header: s for s in servers}
    routed: dict[str, list[bytes]] = {}
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        for key in keys:
            response = client.get("/v1/kv/" + quote(key, safe=""))
            backend = response.headers.get("x-ringleader-backend", "?")
            if response.status_code != 200 or backend != truth[key].expected_header:
                wrong.append((key, backend, truth[key].expected_header))
                continue
            assert response.content == value_of(key)
            routed.setdefault(backend, []).append(key)
    assert wrong == [], f"{len(wrong)} of {len(keys)} keys routed elsewhere, first: {wrong[:5]}"

    # And the backend the proxy named does hold each key it served.
    for name, routed_keys in routed.items():
        assert len(held_by(by_header[name].proc.port, routed_keys)) == len(routed_keys)


@pytest.fixture
def port_11211(procs: ProcessGroup) -> ServerProcess:
    """memcached on 11211, where twemproxy's default name drops the port."""
    if port_open(11211):
        pytest.fail(
            "port 11211 is busy: the naming rule (host without :11211) needs a memcached "
            "there; stop whatever listens on 11211 and rerun"
        )
    return procs.memcached(port=11211)


@pytest.mark.parametrize("hash_name", ["fnv1a_64", "md5"])
def test_unequal_weights_with_one_server_on_11211(
    procs: ProcessGroup, port_11211: ServerProcess, hash_name: str
) -> None:
    servers = [
        Server(port_11211, weight=2, name=None),
        Server(procs.memcached(), weight=1, name=None),
        Server(procs.memcached(), weight=5, name=None),
    ]
    assert_same_placement(procs, servers, hash_name)


def test_explicit_server_names(procs: ProcessGroup) -> None:
    servers = [
        Server(procs.memcached(), weight=1, name="alpha"),
        Server(procs.memcached(), weight=3, name="beta"),
        Server(procs.memcached(), weight=1, name="cache-gamma.example"),
    ]
    assert_same_placement(procs, servers, "fnv1a_64")


def test_twenty_five_equal_servers_get_156_points_each(procs: ProcessGroup) -> None:
    servers = [Server(procs.memcached(memory_mb=8), weight=1, name=None) for _ in range(25)]
    assert_same_placement(procs, servers, "fnv1a_64")


@pytest.mark.parametrize("hash_name", ["fnv1a_64", "md5"])
def test_hash_tag_places_tagged_keys_like_nutcracker(procs: ProcessGroup, hash_name: str) -> None:
    servers = [
        Server(procs.memcached(), weight=1, name="tag-a"),
        Server(procs.memcached(), weight=2, name=None),
        Server(procs.memcached(), weight=1, name="tag-c"),
        Server(procs.memcached(), weight=3, name=None),
    ]
    assert_same_placement(procs, servers, hash_name, hash_tag="{}", keys=tagged_keys())
