"""No state is shared between two users' requests (docs/invariants.md, invariant 8), and
no client can reach another client's answers through a side door: the origin client
keeps no cookies and adds no header, the KV API cannot touch cache slots, a junk
Authorization evicts nothing, and unkeyed headers are not forwarded."""

from __future__ import annotations

import httpx

from proxy.httpcache.key import origin, uri_key
from proxy.httpcache.storage import digest
from proxy.keys import CACHE_PREFIX
from tests.proxy.httpcache.conftest import Stack, client_for, seen_headers

MAX_AGE = ["cache-control", "max-age=60"]


def test_one_users_set_cookie_never_reaches_the_origin_on_anothers_request(
    stack: Stack, name: str
) -> None:
    stack.origin.configure(
        name, headers=[["cache-control", "private, no-store"], ["set-cookie", "session=alice"]]
    )
    alice = stack.client.get(f"/{name}", headers={"cookie": "me=alice"})
    assert alice.headers["set-cookie"] == "session=alice"
    with client_for(stack.proxy) as bob:
        assert bob.get(f"/{name}").status_code == 200
        assert "cookie" not in seen_headers(stack, name)
        assert bob.post(f"/{name}", content=b"x").status_code == 200
        assert "cookie" not in seen_headers(stack, name)


def test_the_origin_sees_only_what_the_client_sent_plus_via_and_forwarded_for(
    stack: Stack, name: str
) -> None:
    stack.origin.configure(name, headers=[MAX_AGE])
    sent = {"x-app": "1", "accept-language": "en"}
    with httpx.Client(base_url=stack.proxy.url, headers={}) as bare:
        bare.headers.clear()
        assert bare.get(f"/{name}", headers=sent).status_code == 200
    seen = seen_headers(stack, name)
    # Host is the origin's; nginx (as origin) adds its own Connection line.
    added = set(seen) - set(sent) - {"host", "connection"}
    assert added == {"via", "x-forwarded-for"}
    assert seen["via"] == "1.1 ringleader"
    for header in ("user-agent", "accept", "accept-encoding"):
        assert header not in seen


def test_the_kv_api_cannot_write_read_or_lease_a_cache_slot(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE])
    slot = digest(uri_key(origin(b"http", stack.origin.authority.encode()), f"/{name}".encode()))
    for prefix in (CACHE_PREFIX, b"rlhl:"):
        key = (prefix + slot).decode()
        put = stack.client.put(f"/v1/kv/{key}", content=b"RLHC poisoned")
        assert put.status_code == 400
        assert "reserved for the HTTP cache" in put.json()["message"]
        assert stack.client.get(f"/v1/kv/{key}").status_code == 400
        assert stack.client.delete(f"/v1/kv/{key}").status_code == 400
    answer = stack.client.get(f"/{name}")
    assert (answer.headers["x-cache"], answer.text) == ("MISS", f"body of {name}")


def test_a_junk_authorization_never_evicts_a_shared_entry(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE], etag='"v1"')
    stack.client.get(f"/{name}")
    assert stack.client.get(f"/{name}").headers["x-cache"] == "HIT"
    junk = stack.client.get(f"/{name}", headers={"authorization": "Basic junk"})
    assert junk.headers["x-cache"] == "MISS"
    # The origin answered the Authorization request unconditionally: the shared entry's
    # validators are not that request's to use.
    assert "if-none-match" not in seen_headers(stack, name)
    assert stack.client.get(f"/{name}").headers["x-cache"] == "HIT"
    assert stack.origin.count(name) == 2


def test_unkeyed_headers_are_not_forwarded_unless_named(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE])
    poison = {
        "forwarded": "host=evil.example;proto=https",
        "x-forwarded-host": "evil.example",
        "x-forwarded-proto": "https",
        "x-forwarded-port": "8443",
        "x-forwarded-scheme": "https",
        "x-forwarded-server": "evil.example",
        "x-host": "evil.example",
        "x-original-url": "/admin",
        "x-rewrite-url": "/admin",
        "x-http-method-override": "DELETE",
    }
    stack.client.get(f"/{name}", headers=poison)
    assert not set(poison) & set(seen_headers(stack, name))
    trusting = stack.group.proxy(
        stack.backends, "--origin", stack.origin.url, "--forward-header", "X-Forwarded-Proto"
    )
    httpx.get(f"{trusting.url}/{name}x", headers=poison)
    assert set(poison) & set(seen_headers(stack, f"{name}x")) == {"x-forwarded-proto"}
