"""Requirement 5: invalidation after unsafe methods (RFC 9111 §4.4) and token PURGE."""

from __future__ import annotations

import httpx

from tests.proxy.httpcache.conftest import PURGE_TOKEN, Stack

MAX_AGE = [["cache-control", "max-age=60"]]


def cached(stack: Stack, path: str) -> None:
    stack.client.get(path)
    assert stack.client.get(path).headers["x-cache"] == "HIT"


def test_unsafe_method_goes_to_origin_and_invalidates(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=MAX_AGE)
    cached(stack, f"/{name}")
    posted = stack.client.post(f"/{name}", content=b"payload")
    assert (posted.status_code, posted.headers["x-cache"]) == (200, "PASS")
    request = stack.origin.last_request(name)
    assert (request["method"], request["body_length"]) == ("POST", 7)
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"


def test_other_methods_are_unsafe(stack: Stack, name: str) -> None:
    # Methods the HTTP parser does not know at all are refused with 400 before us.
    stack.origin.configure(name, headers=MAX_AGE)
    cached(stack, f"/{name}")
    assert stack.client.request("PROPFIND", f"/{name}").status_code == 200
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"


def test_error_answers_do_not_invalidate(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=MAX_AGE, methods={"DELETE": {"status": 500}})
    cached(stack, f"/{name}")
    assert stack.client.delete(f"/{name}").status_code == 500
    assert stack.client.get(f"/{name}").headers["x-cache"] == "HIT"


def test_same_origin_location_is_invalidated_and_other_hosts_are_not(
    stack: Stack, name: str
) -> None:
    stack.origin.configure(name, headers=MAX_AGE)
    for path in (f"/{name}/new", f"/{name}/other", f"/{name}/list"):
        cached(stack, path)
    stack.origin.configure(
        name,
        headers=MAX_AGE,
        methods={"PUT": {"status": 201, "headers": [
            ["location", f"/{name}/new"],
            ["content-location", f"http://{stack.origin.authority}/{name}/list"],
        ]}},
    )  # fmt: skip
    assert stack.client.put(f"/{name}/target", content=b"x").status_code == 201
    assert stack.client.get(f"/{name}/new").headers["x-cache"] == "MISS"
    assert stack.client.get(f"/{name}/list").headers["x-cache"] == "MISS"
    assert stack.client.get(f"/{name}/other").headers["x-cache"] == "HIT"
    stack.origin.configure(
        name,
        headers=MAX_AGE,
        methods={"POST": {"headers": [["location", f"http://elsewhere.example/{name}/other"]]}},
    )
    stack.client.post(f"/{name}/target")
    assert stack.client.get(f"/{name}/other").headers["x-cache"] == "HIT"


def test_purge_needs_the_token_and_removes_every_variant(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[*MAX_AGE, ["vary", "accept-language"]])
    languages = {"accept-language": "en"}
    stack.client.get(f"/{name}", headers=languages)
    assert stack.client.get(f"/{name}", headers=languages).headers["x-cache"] == "HIT"
    assert stack.client.request("PURGE", f"/{name}").status_code == 403
    wrong = {"authorization": "Bearer nope"}
    assert stack.client.request("PURGE", f"/{name}", headers=wrong).status_code == 403
    assert stack.client.get(f"/{name}", headers=languages).headers["x-cache"] == "HIT"
    token = {"authorization": f"Bearer {PURGE_TOKEN}"}
    purged = stack.client.request("PURGE", f"/{name}", headers=token)
    assert (purged.status_code, purged.json()) == (200, {"purged": True})
    assert stack.client.get(f"/{name}", headers=languages).headers["x-cache"] == "MISS"
    assert (
        stack.client.head(f"/{name}", headers={"accept-language": "fr"}).headers["x-cache"]
        == "MISS"
    )
    assert stack.origin.count(name, "PURGE") == 0


def test_purge_is_fleet_wide(stack: Stack, name: str) -> None:
    """Entries live in the shared backends, so a purge through one proxy is seen by all."""
    other = stack.group.proxy(stack.backends, "--origin", stack.origin.url)
    stack.origin.configure(name, headers=MAX_AGE)
    cached(stack, f"/{name}")
    assert httpx.get(f"{other.url}/{name}").headers["x-cache"] == "HIT"
    token = {"authorization": f"Bearer {PURGE_TOKEN}"}
    assert stack.client.request("PURGE", f"/{name}", headers=token).status_code == 200
    assert httpx.get(f"{other.url}/{name}").headers["x-cache"] == "MISS"
    # This proxy has no token file: PURGE is disabled rather than forwarded.
    disabled = httpx.request("PURGE", f"{other.url}/{name}", headers=token)
    assert disabled.status_code == 405
