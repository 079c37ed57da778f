"""`ringleader import-twemproxy`: twemproxy's example pools (conf/nutcracker.yml) become
proxy configs that place every key where nutcracker does, through the same protocol.

For each example, nutcracker runs the original YAML (servers rewritten to local memcached or
redis-server ports, same names and weights), 5,000 keys are written through it, and each
backend is asked directly which keys it holds. Then nutcracker stops, the backends are
emptied, and `ringleader proxy --config generated.toml` takes nutcracker's address with its
memcached or redis front: the same keys written through it must land on the same backends.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hiredis
import httpx
import pytest

from tests.ringleader.test_nutcracker_compat import (
    compat_keys,
    held_by,
    start_nutcracker,
    tagged_keys,
    value_of,
    write_through_nutcracker,
)
from tests.support.control_cluster import control_cluster
from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    ServerProcess,
    free_port,
    port_open,
    require_binary,
    ringleader_argv,
    wait_until,
)

DEADLINE = 60.0
BATCH = 250


def ringleader(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "RINGLEADER_TOKEN"}
    return subprocess.run(
        [*ringleader_argv(), *args], capture_output=True, text=True, timeout=DEADLINE,
        env={**base, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- redis through nutcracker -------------------------------------------------------------


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _replies(sock_file: Callable[[int], bytes], count: int) -> list[object]:
    reader = hiredis.Reader()
    replies: list[object] = []
    while len(replies) < count:
        chunk = sock_file(1 << 16)
        if not chunk:
            raise AssertionError("connection closed")
        reader.feed(chunk)
        while (reply := reader.gets()) is not False:
            replies.append(reply)
    return replies


@contextmanager
def redis_connection(port: int, password: str | None = None) -> Iterator[socket.socket]:
    """A RESP connection, AUTHed with `password` when one is given."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        if password is not None:
            sock.sendall(_resp(b"AUTH", password.encode()))
            assert _replies(sock.recv, 1) == [b"OK"]
        yield sock


def redis_write(port: int, keys: Sequence[bytes], password: str | None = None) -> None:
    with redis_connection(port, password) as sock:
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            sock.sendall(b"".join(_resp(b"SET", k, value_of(k)) for k in batch))
            assert _replies(sock.recv, len(batch)) == [b"OK"] * len(batch)


def redis_held_by(
    port: int, keys: Sequence[bytes], password: str | None = None
) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    with redis_connection(port, password) as sock:
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            sock.sendall(_resp(b"MGET", *batch))
            (values,) = _replies(sock.recv, 1)
            assert isinstance(values, list)
            found.update((k, v) for k, v in zip(batch, values, strict=True) if v is not None)
    return found


def redis_command(port: int, *parts: bytes, password: str | None = None) -> object:
    with redis_connection(port, password) as sock:
        sock.sendall(_resp(*parts))
        (reply,) = _replies(sock.recv, 1)
        return reply


def memcached_flush(port: int) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(b"flush_all\r\n")
        assert sock.recv(64) == b"OK\r\n"


# -- the examples --------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A pool modelled on twemproxy's conf/nutcracker.yml; `{listen}` and `{s0}`, `{s1}`, ...
    stand for the local ports of nutcracker and of each server."""

    name: str
    yaml: str
    servers: int
    redis: bool
    # Each server's name as twemproxy (and X-Ringleader-Backend) calls it, by port.
    names: Callable[[list[int]], list[str]]
    keys: Callable[[], list[bytes]] = compat_keys
    # The pool's redis_auth: its servers run with --requirepass. (No example has redis_db
    # with it: nutcracker 0.5.0 sends SELECT before AUTH, which the servers refuse.)
    password: str | None = None


def default_names(ports: list[int]) -> list[str]:
    return [f"{LOOPBACK}:{p}" for p in ports]


EXAMPLES = [
    Example(
        "alpha",
        """
alpha:
  listen: 127.0.0.1:{listen}
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: true
  redis: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:{s0}:1
   - 127.0.0.1:{s1}:1
   - 127.0.0.1:{s2}:1
""",
        3,
        True,
        default_names,
    ),
    Example(
        "beta",
        """
beta:
  listen: 127.0.0.1:{listen}
  hash: fnv1a_64
  hash_tag: "{{}}"
  distribution: ketama
  auto_eject_hosts: false
  timeout: 400
  redis: true
  servers:
   - 127.0.0.1:{s0}:1 server1
   - 127.0.0.1:{s1}:1 server2
   - 127.0.0.1:{s2}:1 server3
   - 127.0.0.1:{s3}:1 server4
""",
        4,
        True,
        lambda _: ["server1", "server2", "server3", "server4"],
        tagged_keys,
    ),
    Example(
        "gamma",
        """
gamma:
  listen: 127.0.0.1:{listen}
  hash: md5
  distribution: ketama
  timeout: 400
  backlog: 1024
  preconnect: true
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 3
  servers:
   - 127.0.0.1:{s0}:1
   - 127.0.0.1:{s1}:1
""",
        2,
        False,
        default_names,
    ),
    Example(
        "delta",
        """
delta:
  listen: 127.0.0.1:{listen}
  hash: fnv1a_64
  distribution: ketama
  timeout: 100
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  server_connections: 2
  servers:
   - 127.0.0.1:{s0}:1 d-one
   - 127.0.0.1:{s1}:3 d-two
   - 127.0.0.1:{s2}:1
   - 127.0.0.1:{s3}:7 d-four
   - 127.0.0.1:{s4}:2
""",
        5,
        False,
        lambda p: ["d-one", "d-two", f"{LOOPBACK}:{p[2]}", "d-four", f"{LOOPBACK}:{p[4]}"],
    ),
    Example(
        "omega",
        """
omega:
  listen: 127.0.0.1:{listen}
  hash: md5
  hash_tag: "$$"
  distribution: ketama
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:{s0}:10 omega-a
   - 127.0.0.1:{s1}:1
""",
        2,
        False,
        lambda p: ["omega-a", f"{LOOPBACK}:{p[1]}"],
        lambda: [b"a$%d$:%d" % (i % 13, i) if i % 3 else b"plain-%d" % i for i in range(5000)],
    ),
    Example(
        "sigma",
        """
sigma:
  listen: 127.0.0.1:{listen}
  hash: md5
  distribution: ketama
  redis: true
  redis_auth: "s3cret pass"
  servers:
   - 127.0.0.1:{s0}:2 sigma-1
   - 127.0.0.1:{s1}:1 sigma-2
   - 127.0.0.1:{s2}:1
""",
        3,
        True,
        lambda p: ["sigma-1", "sigma-2", f"{LOOPBACK}:{p[2]}"],
        password="s3cret pass",
    ),
]


def start_server(procs: ProcessGroup, example: Example) -> ServerProcess:
    if not example.redis:
        return procs.memcached()
    if example.password is None:
        return procs.redis()
    port = free_port()
    argv = [require_binary("redis-server"), "--bind", LOOPBACK, "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", str(procs.workdir),
            "--requirepass", example.password]  # fmt: skip
    return procs.spawn("redis", argv, port).wait_port()


def start_example(
    procs: ProcessGroup, example: Example
) -> tuple[Path, ServerProcess, list[ServerProcess]]:
    servers = [start_server(procs, example) for _ in range(example.servers)]
    listen = free_port()
    ports = {f"s{i}": s.port for i, s in enumerate(servers)}
    text = example.yaml.format(listen=listen, **ports)
    path = procs.workdir / f"{example.name}.yml"
    path.write_text(text)
    return path, start_nutcracker(procs, text, listen), servers


def assert_proxy_places_like_nutcracker(
    procs: ProcessGroup, example: Example, nutcracker: ServerProcess,
    servers: list[ServerProcess], config: Path, env: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """Writes the keys through nutcracker, notes which server holds each, empties the
    servers, stops nutcracker and writes the keys again through a proxy started with only
    `config` on nutcracker's address: every key must be back on the same server."""
    keys = example.keys()
    names = example.names([s.port for s in servers])

    def write(port: int) -> None:
        if example.redis:
            redis_write(port, keys, example.password)
        else:
            write_through_nutcracker(port, keys)

    def placement() -> dict[bytes, str]:
        found: dict[bytes, str] = {}
        for server, name in zip(servers, names, strict=True):
            held = (redis_held_by(server.port, keys, example.password)
                    if example.redis else held_by(server.port, keys))  # fmt: skip
            for key, value in held.items():
                assert value == value_of(key)
                assert key not in found, f"{key!r} is on two servers"
                found[key] = name
        return found

    write(nutcracker.port)
    truth = placement()
    assert len(truth) == len(keys), "some keys were not stored anywhere"
    assert set(truth.values()) == set(names), "every server should own some of 5,000 keys"

    nutcracker.terminate()
    for server in servers:
        if example.redis:
            assert redis_command(server.port, b"FLUSHALL", password=example.password) == b"OK"
        else:
            memcached_flush(server.port)
    assert placement() == {}

    admin = free_port()
    args = ["proxy", "--config", str(config), "--admin", f"{LOOPBACK}:{admin}"]
    front = nutcracker.port
    proc = procs.ringleader(args, front, name="proxy", env={**os.environ, **env} if env else None)

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"proxy exited early:\n{proc.log_tail()}")
        try:
            status = httpx.get(f"http://{LOOPBACK}:{admin}/readyz", timeout=1).status_code
        except httpx.HTTPError:
            return False
        return status == 200 and port_open(front)

    wait_until(ready, 30, "proxy /readyz and its native front")
    write(front)
    placed = placement()
    wrong = [(k, placed.get(k), truth[k]) for k in keys if placed.get(k) != truth[k]]
    assert wrong == [], f"{len(wrong)} of {len(keys)} keys placed elsewhere, first: {wrong[:5]}"
    if example.password is not None:
        # The front demands AUTH, with twemproxy's password and no other.
        with redis_connection(front) as sock:
            sock.sendall(_resp(b"GET", keys[0]) + _resp(b"AUTH", b"wrong") + _resp(b"GET", keys[0]))
            before, denied, after = _replies(sock.recv, 3)
        assert str(before).startswith("NOAUTH")
        assert str(after).startswith("NOAUTH")
        assert isinstance(denied, hiredis.ReplyError)
        reply = redis_command(front, b"GET", keys[0], password=example.password)
        assert reply == value_of(keys[0])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_generated_config_places_keys_like_nutcracker(
    procs: ProcessGroup, example: Example
) -> None:
    yml, nutcracker, servers = start_example(procs, example)
    toml_path = procs.workdir / f"{example.name}.toml"
    result = ringleader("import-twemproxy", str(yml), "--output", str(toml_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    config = tomllib.loads(toml_path.read_text())
    front = "redis-listen" if example.redis else "memcached-listen"
    assert config[front] == f"{LOOPBACK}:{nutcracker.port}"
    assert "listen" not in config, "the HTTP front stays off, as nutcracker had none"
    assert len(config["backend"]) == example.servers
    assert_proxy_places_like_nutcracker(procs, example, nutcracker, servers, toml_path)


def test_example_output(tmp_path: Path) -> None:
    yml = tmp_path / "nutcracker.yml"
    yml.write_text(EXAMPLES[3].yaml.format(listen=22124, s0=11214, s1=11215, s2=11211, s3=11217,
                                           s4=11218))  # fmt: skip
    result = ringleader("import-twemproxy", str(yml))
    assert result.returncode == 0, result.stderr
    config = tomllib.loads(result.stdout)
    assert config == {
        "memcached-listen": "127.0.0.1:22124",
        "hash": "fnv1a_64",
        "request-timeout": 0.1,
        "connections": 2,
        "backend": [
            "memcached://127.0.0.1:11214?name=d-one&weight=1",
            "memcached://127.0.0.1:11215?name=d-two&weight=3",
            # twemproxy leaves the port out of the default name on 11211
            "memcached://127.0.0.1:11211?name=127.0.0.1&weight=1",
            "memcached://127.0.0.1:11217?name=d-four&weight=7",
            "memcached://127.0.0.1:11218?name=127.0.0.1:11218&weight=2",
        ],
    }
    notes = result.stderr.strip().splitlines()
    assert notes == [
        "ringleader import-twemproxy: note: auto_eject_hosts: replaced by the control plane's "
        "agreed failure detector (ringleader control)",
        "ringleader import-twemproxy: note: server_retry_timeout: replaced by the control "
        "plane's agreed failure detector (ringleader control)",
        "ringleader import-twemproxy: note: server_failure_limit: replaced by the control "
        "plane's agreed failure detector (ringleader control)",
    ]


def test_default_name_on_11211_drops_the_port(tmp_path: Path) -> None:
    yml = tmp_path / "n.yml"
    yml.write_text("p:\n  listen: 0.0.0.0:22121\n  servers:\n   - 10.0.0.1:11211:1\n"
                   "   - 10.0.0.2:11212:1\n")  # fmt: skip
    config = tomllib.loads(ringleader("import-twemproxy", str(yml)).stdout)
    assert config["backend"] == [
        "memcached://10.0.0.1:11211?name=10.0.0.1&weight=1",
        "memcached://10.0.0.2:11212?name=10.0.0.2:11212&weight=1",
    ]
    assert config["hash"] == "fnv1a_64"  # twemproxy's default


MULTI = "\n".join(e.yaml.format(listen=22121 + i, s0=7000, s1=7001, s2=7002, s3=7003, s4=7004)
                  for i, e in enumerate(EXAMPLES))  # fmt: skip


def test_several_pools_need_pool_and_the_error_lists_them(tmp_path: Path) -> None:
    yml = tmp_path / "nutcracker.yml"
    yml.write_text(MULTI)
    one_line_error(ringleader("import-twemproxy", str(yml)),
                   "6 pools (alpha, beta, gamma, delta, omega, sigma)", "--pool")  # fmt: skip
    one_line_error(ringleader("import-twemproxy", str(yml), "--pool", "zeta"),
                   "--pool zeta", "alpha, beta, gamma, delta, omega, sigma")  # fmt: skip
    beta = ringleader("import-twemproxy", str(yml), "--pool", "beta")
    assert beta.returncode == 0, beta.stderr
    config = tomllib.loads(beta.stdout)
    assert config["hash-tag"] == "{}"
    assert config["request-timeout"] == 0.4
    assert config["backend"][0] == "redis://127.0.0.1:7000/0?name=server1&weight=1"
    assert config["redis-listen"] == "127.0.0.1:22122"
    assert "listen" not in config
    assert "memcached-listen" not in config


@pytest.mark.parametrize(
    ("pool", "says"),
    [
        ("listen: /tmp/gamma 0666\n  servers:\n   - 127.0.0.1:11211:1", "unix socket"),
        ("listen: 127.0.0.1:22121\n  hash: hsieh\n  servers:\n   - 127.0.0.1:11211:1",
         "hash 'hsieh' is not supported; Ringleader's ketama hashes are fnv1a_64 and md5"),
        ("listen: 127.0.0.1:22121\n  distribution: modula\n  servers:\n   - 127.0.0.1:11211:1",
         "distribution 'modula' is not supported"),
        ("listen: 127.0.0.1:22121\n  hash_tag: \"{\"\n  servers:\n   - 127.0.0.1:11211:1",
         "hash_tag: expected two ASCII characters"),
        ("listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:100000", "weight must be"),
        ("listen: 127.0.0.1:22121\n  servers:\n   - /tmp/memcached.sock:1 a", "unix-socket"),
        ("listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211", "host:port:weight"),
        ("listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:1:1 a\n   - 127.0.0.1:2:1 a",
         "two servers are named 'a'"),
        ("listen: 127.0.0.1:22121\n  servers: []", "servers must be a non-empty list"),
        ("listen: 127.0.0.1:22121\n  redis: true\n  redis_auth: secret\n  servers:\n"
         "   - 127.0.0.1:6379:1", "redis_auth: the password goes in a file beside the config, "
         "never in the config or on stdout; give --output FILE"),
        ("listen: 127.0.0.1:22121\n  redis_auth: secret\n  servers:\n   - 127.0.0.1:11211:1",
         "redis_auth needs redis: true"),
        ("listen: 127.0.0.1:22121\n  redis: true\n  redis_auth: 1234\n  servers:\n"
         "   - 127.0.0.1:6379:1", "redis_auth must be a string; quote it in the YAML"),
    ],
)  # fmt: skip
def test_refused_settings_exit_2_with_one_line(tmp_path: Path, pool: str, says: str) -> None:
    yml = tmp_path / "n.yml"
    yml.write_text(f"web:\n  {pool}\n")
    one_line_error(ringleader("import-twemproxy", str(yml)), "ringleader import-twemproxy: ",
                   says)  # fmt: skip


def test_redis_auth_goes_to_a_0600_file_never_to_the_config(tmp_path: Path) -> None:
    yml = tmp_path / "n.yml"
    yml.write_text("web:\n  listen: 127.0.0.1:22121\n  redis: true\n  redis_db: 3\n"
                   "  redis_auth: s3cret\n  servers:\n   - 127.0.0.1:6379:1\n"
                   "   - 127.0.0.1:6380:2 two\n")  # fmt: skip
    result = ringleader("import-twemproxy", str(yml), "--output", "web.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = tmp_path / "web.toml.redis-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() == "s3cret\n"
    toml_text = (tmp_path / "web.toml").read_text()
    assert "s3cret" not in toml_text + result.stdout + result.stderr
    assert f"note: redis_auth: the password is in {secret} (mode 0600)" in result.stderr
    assert "note: redis_db: nutcracker 0.5.0 sends SELECT before AUTH" in result.stderr
    config = tomllib.loads(toml_text)
    assert config["redis-listen"] == "127.0.0.1:22121"
    assert config["redis-password-file"] == str(secret)
    assert config["backend"] == [
        f"redis://127.0.0.1:6379/3?name=127.0.0.1:6379&weight=1&password_file={secret}",
        f"redis://127.0.0.1:6380/3?name=two&weight=2&password_file={secret}",
    ]

    # A rerun keeps the file that holds the same password; another password is refused.
    again = ringleader("import-twemproxy", str(yml), "--output", "web.toml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    yml.write_text(yml.read_text().replace("s3cret", "other"))
    (tmp_path / "web.toml").unlink()
    one_line_error(
        ringleader("import-twemproxy", str(yml), "--output", "web.toml", cwd=tmp_path),
        f"{secret} exists and does not hold this pool's redis_auth",
    )
    assert secret.read_text() == "s3cret\n"
    assert not (tmp_path / "web.toml").exists(), "a refused import writes nothing"


def test_unknown_and_unreadable(tmp_path: Path) -> None:
    one_line_error(ringleader("import-twemproxy", str(tmp_path / "missing.yml")),
                   "missing.yml: No such file or directory")  # fmt: skip
    bad = tmp_path / "bad.yml"
    bad.write_text("a: [\n")
    one_line_error(ringleader("import-twemproxy", str(bad)), "not valid YAML")
    odd = tmp_path / "odd.yml"
    odd.write_text("web:\n  listen: 127.0.0.1:1\n  frobnicate: 3\n  servers:\n   - h:1:1\n")
    result = ringleader("import-twemproxy", str(odd))
    assert result.returncode == 0
    assert "note: frobnicate: not a setting Ringleader knows; ignored" in result.stderr


def test_control_needs_a_token(tmp_path: Path) -> None:
    yml = tmp_path / "n.yml"
    yml.write_text("web:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\n")
    one_line_error(ringleader("import-twemproxy", str(yml), "--control", "http://127.0.0.1:1"),
                   "--control needs the cluster token")  # fmt: skip


def test_control_registers_the_servers_and_the_proxy_follows_the_pool(
    procs: ProcessGroup,
) -> None:
    """beta (hash tag, named servers) on memcached, registered with a 3-node cluster; a proxy
    from the generated config (ring from the control plane) places keys like nutcracker."""
    example = Example(
        "beta",
        EXAMPLES[1].yaml.replace("  redis: true\n", "").replace(":1 server2", ":3 server2"),
        4, False, EXAMPLES[1].names, tagged_keys,
    )  # fmt: skip
    yml, nutcracker, servers = start_example(procs, example)
    with control_cluster(procs, size=3) as cluster:
        toml_path = procs.workdir / "beta.toml"
        token_env = {"RINGLEADER_TOKEN": cluster.token}
        result = ringleader("import-twemproxy", str(yml), "--control", cluster.control_arg,
                            "--output", str(toml_path), env=token_env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "add memcached://" in result.stderr
        config = tomllib.loads(toml_path.read_text())
        assert config["control"] == cluster.control_arg.split(",")
        assert (config["pool"], config["hash-tag"]) == ("beta", "{}")
        assert config["memcached-listen"] == f"{LOOPBACK}:{nutcracker.port}"
        assert "backend" not in config

        listing = ringleader("backend", "list", "--pool", "beta", "--control",
                             cluster.control_arg, "--json")  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        backends = json.loads(listing.stdout)["backends"]
        assert [(b["name"], b["weight"]) for b in backends] == [
            ("server1", 1), ("server2", 3), ("server3", 1), ("server4", 1)]  # fmt: skip
        assert [b["url"] for b in backends] == [
            f"memcached://{LOOPBACK}:{s.port}?name={n}&weight={w}"
            for s, n, w in zip(servers, EXAMPLES[1].names([]), (1, 3, 1, 1), strict=True)
        ]
        # Rerunning the import changes nothing.
        again = ringleader("import-twemproxy", str(yml), "--control", cluster.control_arg,
                           env=token_env)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert again.stderr.count("(no change)") == 4, again.stderr

        assert_proxy_places_like_nutcracker(
            procs, example, nutcracker, servers, toml_path, env=token_env
        )
