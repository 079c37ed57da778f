"""Requirement 1 (storing, RFC 9111 §3) and 2 (freshness and age, §4.2), end to end:
client -> `ringleader proxy --origin` -> memcached, against the real test origin."""

from __future__ import annotations

import time

from proxy.httpcache.dates import format_http_date
from tests.proxy.httpcache.conftest import Stack, client_for


def fetch_twice(stack: Stack, path: str, **kwargs: object) -> tuple[str, str]:
    first = stack.client.get(path, **kwargs)  # type: ignore[arg-type]
    second = stack.client.get(path, **kwargs)  # type: ignore[arg-type]
    assert first.status_code == second.status_code
    return first.headers["x-cache"], second.headers["x-cache"]


def cc(value: str) -> list[list[str]]:
    return [["cache-control", value]]


# -- requirement 1: storing ----------------------------------------------------------


def test_storable_response_is_served_from_cache(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=60"))
    first = stack.client.get(f"/{name}")
    second = stack.client.get(f"/{name}")
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert (second.status_code, second.headers["x-cache"]) == (200, "HIT")
    assert second.text == first.text == f"body of {name}"
    assert second.headers["via"].endswith("1.1 ringleader")
    assert stack.origin.count(name) == 1


def test_head_is_answered_from_the_get_entry(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=60"))
    stack.client.get(f"/{name}")
    head = stack.client.head(f"/{name}")
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "HIT", b"")
    assert head.headers["content-length"] == str(len(f"body of {name}"))
    assert stack.origin.count(name) == 1


def test_no_store_and_private_are_never_stored(stack: Stack, name: str) -> None:
    # The second request is a hit-for-pass: straight to the origin, never a HIT.
    for i, directive in enumerate(["no-store, max-age=60", "private, max-age=60"]):
        stack.origin.configure(f"{name}{i}", headers=cc(directive))
        assert fetch_twice(stack, f"/{name}{i}") == ("MISS", "PASS")
        assert stack.origin.count(f"{name}{i}") == 2


def test_request_no_store_is_not_stored(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=60"))
    stack.client.get(f"/{name}", headers={"cache-control": "no-store"})
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"


def test_authorization_is_shared_only_when_the_response_allows(stack: Stack, name: str) -> None:
    auth = {"authorization": "Bearer alice"}
    stack.origin.configure(f"{name}a", headers=cc("max-age=60"))
    assert fetch_twice(stack, f"/{name}a", headers=auth) == ("MISS", "MISS")
    for i, directive in enumerate(
        ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"]
    ):
        stack.origin.configure(f"{name}{i}", headers=cc(directive))
        assert fetch_twice(stack, f"/{name}{i}", headers=auth) == ("MISS", "HIT")


def test_cookie_requests_pass_and_set_cookie_is_not_stored(stack: Stack, name: str) -> None:
    stack.origin.configure(f"{name}c", headers=cc("max-age=60"))
    assert fetch_twice(stack, f"/{name}c", headers={"cookie": "session=1"}) == ("PASS", "PASS")
    stack.origin.configure(f"{name}s", headers=[*cc("max-age=60"), ["set-cookie", "id=7"]])
    assert fetch_twice(stack, f"/{name}s") == ("MISS", "PASS")


def test_partial_content_is_never_stored(stack: Stack, name: str) -> None:
    stack.origin.configure(
        name, status=206, headers=[*cc("max-age=60"), ["content-range", "bytes 0-3/10"]]
    )
    assert fetch_twice(stack, f"/{name}") == ("MISS", "PASS")
    assert stack.origin.count(name) == 2


def test_storing_needs_freshness_or_a_heuristically_cacheable_status(
    stack: Stack, name: str
) -> None:
    # 302 is not heuristically cacheable, and carries no expiry: not stored.
    stack.origin.configure(f"{name}r", status=302, headers=[["location", "/elsewhere"]])
    first = stack.client.get(f"/{name}r")
    stack.client.get(f"/{name}r")
    assert first.status_code == 302
    assert stack.origin.count(f"{name}r") == 2
    # The same status with explicit freshness is stored.
    stack.origin.configure(f"{name}e", status=302, headers=[["location", "/x"], *cc("max-age=60")])
    assert fetch_twice(stack, f"/{name}e") == ("MISS", "HIT")


def test_hop_by_hop_and_connection_listed_fields_are_removed(stack: Stack, name: str) -> None:
    stack.origin.configure(
        name,
        headers=[*cc("max-age=60"), ["connection", "x-private-hop"], ["x-private-hop", "1"],
                 ["keep-alive", "timeout=5"], ["x-end-to-end", "kept"]],
    )  # fmt: skip
    # nginx drops the origin's Connection line but not the field it names, so behind
    # nginx X-Private-Hop reaches the proxy as an end-to-end field, and is relayed.
    private_hop_relayed = stack.origin.kind == "nginx"
    for response in (stack.client.get(f"/{name}"), stack.client.get(f"/{name}")):
        assert ("x-private-hop" in response.headers) is private_hop_relayed
        assert "keep-alive" not in response.headers
        assert response.headers["x-end-to-end"] == "kept"


def test_non_get_responses_are_not_stored(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=60"))
    stack.client.request("OPTIONS", f"/{name}")
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"


# -- requirement 2: freshness and age ----------------------------------------------------


def test_s_maxage_takes_precedence_over_max_age(stack: Stack, name: str) -> None:
    stack.origin.configure(f"{name}a", headers=cc("max-age=0, s-maxage=60"))
    assert fetch_twice(stack, f"/{name}a") == ("MISS", "HIT")
    stack.origin.configure(f"{name}b", headers=cc("max-age=60, s-maxage=0"))
    assert fetch_twice(stack, f"/{name}b")[1] != "HIT"
    assert stack.origin.count(f"{name}b") == 2


def test_expires_minus_date(stack: Stack, name: str) -> None:
    now = time.time()
    stack.origin.configure(f"{name}a", headers=[["expires", format_http_date(now + 60).decode()]])
    assert fetch_twice(stack, f"/{name}a") == ("MISS", "HIT")
    # An invalid Expires means already expired.
    stack.origin.configure(f"{name}b", headers=[["expires", "0"]])
    assert fetch_twice(stack, f"/{name}b")[1] != "HIT"
    # max-age wins over Expires.
    past = format_http_date(now - 60).decode()
    stack.origin.configure(f"{name}c", headers=[["expires", past], *cc("max-age=60")])
    assert fetch_twice(stack, f"/{name}c") == ("MISS", "HIT")


def test_conflicting_duplicate_max_age_reads_as_stale(stack: Stack, name: str) -> None:
    stack.origin.configure(f"{name}a", headers=[*cc("max-age=60"), *cc("max-age=120")])
    assert fetch_twice(stack, f"/{name}a")[1] != "HIT"
    stack.origin.configure(f"{name}b", headers=cc('max-age="60'))
    assert fetch_twice(stack, f"/{name}b")[1] != "HIT"
    stack.origin.configure(f"{name}c", headers=cc("max-age=60, max-age=60"))
    assert fetch_twice(stack, f"/{name}c") == ("MISS", "HIT")


def test_heuristic_freshness_from_last_modified(stack: Stack, name: str) -> None:
    ten_days_ago = format_http_date(time.time() - 10 * 86400).decode()
    stack.origin.configure(name, last_modified=ten_days_ago)
    assert fetch_twice(stack, f"/{name}") == ("MISS", "HIT")
    assert stack.origin.count(name) == 1


def test_age_is_computed_and_sent(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[*cc("max-age=600"), ["age", "100"]])
    stack.client.get(f"/{name}")
    hit = stack.client.get(f"/{name}")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers.get_list("age") == [hit.headers["age"]]
    assert 100 <= int(hit.headers["age"]) <= 102


def test_cache_cookies_and_heuristic_cap_settings(stack: Stack, name: str) -> None:
    """--cache-cookies caches Cookie requests and never replays Set-Cookie;
    --heuristic-cap bounds heuristic freshness."""
    proxy = stack.group.proxy(
        stack.backends, "--origin", stack.origin.url, "--cache-cookies", "--heuristic-cap", "2"
    )
    with client_for(proxy) as client:
        stack.origin.configure(name, headers=[*cc("max-age=60"), ["set-cookie", "id=alice"]])
        first = client.get(f"/{name}", headers={"cookie": "session=alice"})
        second = client.get(f"/{name}", headers={"cookie": "session=bob"})
        assert (first.headers["x-cache"], first.headers["set-cookie"]) == ("MISS", "id=alice")
        assert second.headers["x-cache"] == "HIT"
        assert "set-cookie" not in second.headers
        ten_days_ago = format_http_date(time.time() - 10 * 86400).decode()
        stack.origin.configure(f"{name}h", last_modified=ten_days_ago)
        client.get(f"/{name}h")
        assert client.get(f"/{name}h").headers["x-cache"] == "HIT"
        time.sleep(2.1)  # Date has 1 s resolution: the age starts within [0, 1)
        assert client.get(f"/{name}h").headers["x-cache"] == "REVALIDATED"
