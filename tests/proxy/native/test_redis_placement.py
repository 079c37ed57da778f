"""nutcracker (twemproxy) and Ringleader's redis front, given the same servers, names,
weights and hash tag, put every key on the same backend: a fleet moves from one to the
other without a cold cache. Where each key went is read from each backend directly."""

from __future__ import annotations

import random

import redis

from tests.proxy.native.redis_support import start_redis_proxy
from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    redis_url,
)

KEY_COUNT = 5000
WEIGHTS = {"rd1": 1, "rd2": 2, "rd3": 3}


def _placement(port: int, keys: list[str], direct: dict[str, redis.Redis]) -> dict[str, str]:
    """Writes every key through the proxy on `port`; key -> the backend that holds it."""
    # No CLIENT SETINFO on connect: nutcracker closes the connection on it.
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=10, lib_name=None,
                         lib_version=None)  # fmt: skip
    for start in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipe.set(key, "1")
        assert all(pipe.execute())
    placed: dict[str, str] = {}
    for name, backend in direct.items():
        for key in backend.scan_iter(count=1000):
            assert key.decode() not in placed, f"{key!r} is on two backends"
            placed[key.decode()] = name
        backend.flushdb()
    return placed


def test_nutcracker_and_the_redis_front_place_every_key_alike(procs: ProcessGroup) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    servers = {name: procs.redis() for name in WEIGHTS}
    direct = {n: redis.Redis(host=LOOPBACK, port=s.port) for n, s in servers.items()}
    nutcracker = procs.nutcracker(
        [f"{LOOPBACK}:{s.port}:{WEIGHTS[n]} {n}" for n, s in servers.items()],
        redis=True, hash_tag="{}",
    ).port
    urls = [redis_url(s, name=n, weight=WEIGHTS[n]) for n, s in servers.items()]
    _, front = start_redis_proxy(procs, urls, "--hash-tag", "{}")
    # Plain keys, tagged keys, empty tags (hashed whole) and bytes >= 0x80.
    keys = []
    for i in range(KEY_COUNT):
        word = f"{rng.getrandbits(40):x}"
        keys.append(rng.choice([f"k:{word}", f"{{user{i % 97}}}:{word}", f"x{{}}{word}",
                                f"\u00e9t\u00e9:{word}", f"a{{{word}}}b{{c}}"]))  # fmt: skip
    keys = list(dict.fromkeys(keys))
    by_nutcracker = _placement(nutcracker, keys, direct)
    by_ringleader = _placement(front, keys, direct)
    assert len(by_nutcracker) == len(keys)
    assert set(by_nutcracker.values()) == set(WEIGHTS)
    moved = [k for k in keys if by_nutcracker[k] != by_ringleader.get(k)]
    assert not moved, f"{len(moved)} keys placed differently, e.g. {moved[:5]}"
