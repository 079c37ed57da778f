"""The front flags (proxy/config.py): which fronts are on, and the start-up refusals."""

from __future__ import annotations

import subprocess

import pytest

from proxy.config import DEFAULT_LISTEN, build
from ringleader.address import Address
from ringleader.settings import ConfigError
from tests.support.servers import ringleader_argv

REDIS = "redis://127.0.0.1:6379/0"
MEMCACHED = "memcached://127.0.0.1:11211"


def test_http_alone_keeps_its_default_address() -> None:
    config = build({"backend": [REDIS]})
    assert config.listen == DEFAULT_LISTEN
    assert config.fronts == (("--listen", DEFAULT_LISTEN),)


def test_a_native_front_alone_turns_http_off_unless_asked() -> None:
    config = build({"backend": [REDIS], "redis-listen": "127.0.0.1:6380"})
    assert config.listen is None
    assert config.fronts == (("--redis-listen", Address("127.0.0.1", 6380)),)
    both = build({"backend": [REDIS], "redis-listen": "127.0.0.1:6380", "listen": "[::1]:80"})
    assert [flag for flag, _ in both.fronts] == ["--listen", "--redis-listen"]


@pytest.mark.parametrize(
    ("front", "backends", "message"),
    [
        ("memcached-listen", [REDIS], "the memcached front needs memcached backends, but the "
                                      "pool has redis backends"),
        ("redis-listen", [MEMCACHED], "the redis front needs redis backends"),
        ("redis-listen", [REDIS, "memcached://127.0.0.2:11211"], "has memcached and redis"),
    ],
)  # fmt: skip
def test_a_front_over_backends_of_another_protocol_is_refused(
    front: str, backends: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build({"backend": backends, front: "127.0.0.1:7000"})


def test_two_fronts_on_one_address_are_refused() -> None:
    with pytest.raises(ConfigError, match="already --listen's address"):
        build({"backend": [REDIS], "listen": "127.0.0.1:7000", "redis-listen": "127.0.0.1:7000"})


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--native-max-keys: must be above zero"):
        build({"backend": [REDIS], "native-max-keys": 0})


def test_the_cli_refuses_in_one_line() -> None:
    done = subprocess.run(
        [*ringleader_argv(), "proxy", "--redis-listen", "127.0.0.1:7000", "--backend", MEMCACHED],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--redis-listen: the redis front needs redis backends" in done.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://:pw@127.0.0.1:11211", "only redis:// backends take a password"),
        ("redis://:pw@127.0.0.1:6379/0?password_file=/x", "give the password inline or as"),
        ("redis://:hunter2@127.0.0.1:6379/0?weight=0", r"redis://:\*\*\*@127.0.0.1"),
    ],
)
def test_backend_passwords_in_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        build({"backend": [url]})
    assert "hunter2" not in str(refused.value)


def test_a_backend_password_is_kept_but_never_shown() -> None:
    (spec,) = build({"backend": ["redis://:p%40ss@127.0.0.1:6379/2?name=r"]}).backends
    assert spec.auth_password() == "p@ss"
    assert "p@ss" not in spec.url
    assert "p@ss" not in repr(spec)
    (filed,) = build({"backend": ["redis://127.0.0.1:6379/0?password_file=/run/pw"]}).backends
    assert filed.url.endswith("&password_file=/run/pw")
