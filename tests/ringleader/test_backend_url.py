"""Backend URLs: `memcached://host:port?name=N&weight=W` and `redis://host:port/DB?...`."""

from __future__ import annotations

import pytest

from ringleader.backend_url import BackendSpec, BackendURLError, Protocol, parse_backend_url


def test_memcached_url_defaults_to_twemproxy_name_and_weight_one() -> None:
    spec = parse_backend_url("memcached://10.0.0.5:11212")
    assert spec == BackendSpec(
        name="10.0.0.5:11212", protocol=Protocol.MEMCACHED, host="10.0.0.5", port=11212
    )
    assert spec.weight == 1
    assert spec.address == "10.0.0.5:11212"


@pytest.mark.parametrize(
    ("url", "name", "port"),
    [
        ("memcached://cache-1:11211", "cache-1", 11211),
        ("memcached://cache-1", "cache-1", 11211),  # default port, so no port in the name
        ("redis://cache-1:11211", "cache-1", 11211),  # the rule is about 11211, not memcached
        ("redis://cache-1", "cache-1:6379", 6379),
        ("redis://cache-1:6380/2", "cache-1:6380", 6380),
    ],
)
def test_name_omits_the_port_only_when_it_is_11211(url: str, name: str, port: int) -> None:
    spec = parse_backend_url(url)
    assert (spec.name, spec.port) == (name, port)


def test_explicit_name_and_weight() -> None:
    spec = parse_backend_url("memcached://10.0.0.5:11211?name=shard-a&weight=7")
    assert (spec.name, spec.weight, spec.host, spec.port) == ("shard-a", 7, "10.0.0.5", 11211)


def test_redis_database_comes_from_the_path() -> None:
    assert parse_backend_url("redis://h:6379/3").db == 3
    assert parse_backend_url("redis://h:6379/").db == 0
    assert parse_backend_url("redis://h:6379").db == 0


@pytest.mark.parametrize(
    "url", ["memcached://h:1?name=a&weight=3", "redis://h:6379/4?name=r&weight=2"]
)
def test_url_property_round_trips(url: str) -> None:
    spec = parse_backend_url(url)
    assert parse_backend_url(spec.url) == spec


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:1", "scheme must be memcached:// or redis://"),
        ("h:1", "scheme must be memcached:// or redis://"),
        ("memcached://:11211", "missing host"),
        ("memcached://h:99999", "out of range"),
        ("memcached://h:port", "Port could not be cast to integer"),
        ("memcached://h:1?colour=red", "unknown parameter 'colour'"),
        ("memcached://h:1?name=a&name=b", "name given more than once"),
        ("memcached://h:1?weight=0", "weight must be an integer from 1 to 10000"),
        ("memcached://h:1?weight=-1", "weight must be an integer from 1 to 10000"),
        ("memcached://h:1?weight=1.5", "weight must be an integer from 1 to 10000"),
        ("memcached://h:1?weight=10001", "weight must be an integer from 1 to 10000"),
        ("memcached://h:1/3", "only redis:// URLs take a /DB path"),
        ("redis://h:1/db", "database must be a number"),
        ("memcached://h:1?name=a%20b", "name must not contain whitespace"),
    ],
)
def test_bad_urls_are_refused_with_the_url_and_the_problem(url: str, problem: str) -> None:
    with pytest.raises(BackendURLError) as caught:
        parse_backend_url(url)
    message = str(caught.value)
    assert problem in message
    assert repr(url) in message
    assert "\n" not in message
