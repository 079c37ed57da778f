"""Requirement 3 (reuse, RFC 9111 §4) and 4 (validation, §4.3; RFC 5861), end to end."""

from __future__ import annotations

import time

from tests.proxy.httpcache.conftest import Stack
from tests.support.servers import wait_until


def cc(value: str) -> list[list[str]]:
    return [["cache-control", value]]


# -- requirement 3: reuse -------------------------------------------------------------


def test_key_covers_the_target_path_and_query(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=60"), echo="x-none", counter_body=True)
    bodies = {p: stack.client.get(p).text for p in (f"/{name}/a", f"/{name}/b", f"/{name}/a?q=1")}
    assert len(set(bodies.values())) == 3
    for path, body in bodies.items():
        hit = stack.client.get(path)
        assert (hit.headers["x-cache"], hit.text) == ("HIT", body)
    assert stack.origin.count(name) == 3


def test_vary_selects_the_variant(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[*cc("max-age=60"), ["vary", "accept-language"]],
                           echo="accept-language")  # fmt: skip

    def get(language: str | None) -> tuple[str, str]:
        headers = {} if language is None else {"accept-language": language}
        response = stack.client.get(f"/{name}", headers=headers)
        return response.headers["x-cache"], response.text

    assert get("en") == ("MISS", f"body of {name} en")
    assert get("en") == ("HIT", f"body of {name} en")
    # Empty list members are dropped before matching.
    assert (
        stack.client.get(f"/{name}", headers={"accept-language": "en,"}).headers["x-cache"] == "HIT"
    )
    # Another variant is never served the stored one.
    assert get("fr") == ("MISS", f"body of {name} fr")
    assert get(None) == ("MISS", f"body of {name} -")
    assert get(None) == ("HIT", f"body of {name} -")


def test_vary_star_never_matches(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[*cc("max-age=60"), ["vary", "*"]])
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"
    assert stack.client.get(f"/{name}").headers["x-cache"] == "PASS"
    assert stack.origin.count(name) == 2


def test_response_no_cache_always_revalidates(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("no-cache, max-age=60"), etag='"v1"')
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"
    second = stack.client.get(f"/{name}")
    assert (second.status_code, second.headers["x-cache"]) == (200, "REVALIDATED")
    assert second.text == f"body of {name}"
    assert stack.origin.last_request(name)["headers"].count(["if-none-match", '"v1"']) == 1


def test_request_no_cache_and_max_age_zero_revalidate(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=60"), etag='"v1"')
    stack.client.get(f"/{name}")
    for request_cc in ("no-cache", "max-age=0"):
        response = stack.client.get(f"/{name}", headers={"cache-control": request_cc})
        assert response.headers["x-cache"] == "REVALIDATED"
    pragma = stack.client.get(f"/{name}", headers={"pragma": "no-cache"})
    assert pragma.headers["x-cache"] == "REVALIDATED"
    assert stack.client.get(f"/{name}").headers["x-cache"] == "HIT"


def test_must_revalidate_without_an_origin_is_504(stack: Stack, name: str) -> None:
    # Stale on arrival (Age > max-age); the origin then stops answering in time.
    stack.origin.configure(name, headers=[*cc("max-age=10, must-revalidate"), ["age", "20"]],
                           etag='"v1"')  # fmt: skip
    assert stack.client.get(f"/{name}").status_code == 200
    stack.origin.configure(name, delay=5)
    started = time.monotonic()
    response = stack.client.get(f"/{name}", headers={"cache-control": "max-stale=600"})
    assert response.status_code == 504
    assert time.monotonic() - started < 4


def test_only_if_cached_without_an_entry_is_504(stack: Stack, name: str) -> None:
    response = stack.client.get(f"/{name}", headers={"cache-control": "only-if-cached"})
    assert response.status_code == 504
    assert stack.origin.count(name) == 0


def test_client_conditionals_are_answered_304_from_a_fresh_entry(stack: Stack, name: str) -> None:
    last_modified = "Tue, 01 Sep 2026 10:00:00 GMT"
    stack.origin.configure(name, headers=cc("max-age=60"), etag='"v7"', last_modified=last_modified)
    stack.client.get(f"/{name}")
    by_etag = stack.client.get(f"/{name}", headers={"if-none-match": 'W/"v7"'})
    assert (by_etag.status_code, by_etag.headers["x-cache"], by_etag.content) == (304, "HIT", b"")
    assert by_etag.headers["etag"] == '"v7"'
    by_date = stack.client.get(f"/{name}", headers={"if-modified-since": last_modified})
    assert by_date.status_code == 304
    other = stack.client.get(f"/{name}", headers={"if-none-match": '"v8"'})
    assert (other.status_code, other.text) == (200, f"body of {name}")
    assert stack.origin.count(name) == 1


# -- requirement 4: validation ----------------------------------------------------------


def test_stale_entry_is_revalidated_and_304_updates_headers(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[*cc("max-age=0"), ["x-version", "1"]], etag='"e1"')
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"
    stack.origin.configure(name, headers=[*cc("max-age=60"), ["x-version", "2"]], etag='"e1"')
    revalidated = stack.client.get(f"/{name}")
    assert revalidated.headers["x-cache"] == "REVALIDATED"
    assert revalidated.headers["x-version"] == "2"
    assert revalidated.text == f"body of {name}"
    request = stack.origin.last_request(name)
    assert ["if-none-match", '"e1"'] in request["headers"]
    hit = stack.client.get(f"/{name}")
    assert (hit.headers["x-cache"], hit.headers["x-version"]) == ("HIT", "2")
    assert stack.origin.count(name) == 2


def test_revalidation_by_last_modified(stack: Stack, name: str) -> None:
    last_modified = "Tue, 01 Sep 2026 10:00:00 GMT"
    stack.origin.configure(name, headers=cc("max-age=0"), last_modified=last_modified)
    stack.client.get(f"/{name}")
    assert stack.client.get(f"/{name}").headers["x-cache"] == "REVALIDATED"
    assert ["if-modified-since", last_modified] in stack.origin.last_request(name)["headers"]


def test_changed_representation_replaces_the_entry(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=cc("max-age=0"), etag='"a"', body="old")
    stack.client.get(f"/{name}")
    stack.origin.configure(name, headers=cc("max-age=60"), etag='"b"', body="new")
    changed = stack.client.get(f"/{name}")
    assert (changed.headers["x-cache"], changed.text) == ("MISS", "new")
    assert (stack.client.get(f"/{name}").headers["x-cache"]) == "HIT"


def test_stale_while_revalidate_serves_stale_and_refreshes(stack: Stack, name: str) -> None:
    # Age 70 of max-age 60: stale on arrival, inside the 600 s window.
    headers = [*cc("max-age=60, stale-while-revalidate=600"), ["age", "70"]]
    stack.origin.configure(name, headers=headers, counter_body=True)
    assert stack.client.get(f"/{name}").text == f"body of {name} #1"
    stack.origin.configure(name, headers=cc("max-age=60"), counter_body=True)
    stale = stack.client.get(f"/{name}")
    assert (stale.headers["x-cache"], stale.text) == ("STALE", f"body of {name} #1")
    wait_until(lambda: stack.origin.count(name) == 2, 5, "background refresh")

    def refreshed() -> bool:
        response = stack.client.get(f"/{name}")
        return response.headers["x-cache"] == "HIT" and response.text == f"body of {name} #2"

    wait_until(refreshed, 5, "refreshed entry served")
    assert stack.origin.count(name) == 2


def test_stale_if_error_serves_stale_when_the_origin_fails(stack: Stack, name: str) -> None:
    stack.origin.configure(f"{name}a", headers=[*cc("max-age=60, stale-if-error=600"),
                                                ["age", "70"]])  # fmt: skip
    stack.origin.configure(f"{name}b", headers=[*cc("max-age=60"), ["age", "70"]])
    for suffix in "ab":
        assert stack.client.get(f"/{name}{suffix}").status_code == 200
        stack.origin.configure(f"{name}{suffix}", status=503, body="down")
    served = stack.client.get(f"/{name}a")
    assert (served.status_code, served.headers["x-cache"]) == (200, "STALE")
    assert served.text == f"body of {name}a"
    # Without stale-if-error the origin's error is passed on.
    failed = stack.client.get(f"/{name}b")
    assert (failed.status_code, failed.text) == (503, "down")
