"""Conditionals and ranges answered from the cache (RFC 9111 §4.3.2, RFC 9110 §13-§14),
what reaches the origin when the cache fills or passes, and `--origin` with a path
prefix, end to end against every origin kind."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass

import httpx
import pytest

from proxy.config import MAX_HTTP_BODY_BYTES
from tests.proxy.httpcache.conftest import Stack, seen_headers
from tests.support.servers import Proxy, ringleader_argv

MAX_AGE = [["cache-control", "max-age=60"]]
BODY = "0123456789abcdefghijklmnopqrstuvwxyz"  # 36 bytes: a byte's value is its offset
LENGTH = len(BODY)
ETAG = '"v1"'
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
CONDITIONS = ("range", "if-range", "if-none-match", "if-modified-since")


def cached(stack: Stack, name: str, **config: object) -> str:
    """Configure ``name`` (cacheable, BODY, ETAG, LAST_MODIFIED unless overridden),
    fill the cache with one plain GET and return the path."""
    settings: dict[str, object] = {
        "headers": MAX_AGE,
        "body": BODY,
        "etag": ETAG,
        "last_modified": LAST_MODIFIED,
    }
    settings.update(config)
    stack.origin.configure(name, **settings)
    fill = stack.client.get(f"/{name}")
    assert (fill.status_code, fill.headers["x-cache"]) == (200, "MISS")
    return f"/{name}"


def assert_partial(response: httpx.Response, start: int, end: int, length: int) -> None:
    """A valid 206 for bytes start-end of a BODY-like representation of ``length``."""
    assert response.status_code == 206, (response.status_code, response.headers)
    assert response.headers["content-range"] == f"bytes {start}-{end}/{length}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.content == BODY.encode()[start : end + 1]


# -- client conditionals on a fresh entry ----------------------------------------------


@pytest.mark.parametrize(
    "conditions",
    [
        {"if-none-match": ETAG},
        {"if-none-match": f'"other", W/{ETAG}'},
        {"if-none-match": "*"},
        {"if-modified-since": LAST_MODIFIED},
        {"if-modified-since": "Tue, 02 Jan 2024 00:00:00 GMT"},
    ],
    ids=["inm", "inm-weak-list", "inm-star", "ims-equal", "ims-later"],
)
def test_a_client_conditional_on_a_fresh_entry_gets_304_from_the_cache(
    stack: Stack, name: str, conditions: dict[str, str]
) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers=conditions)
    assert (answer.status_code, answer.headers["x-cache"], answer.content) == (304, "HIT", b"")
    assert answer.headers["etag"] == ETAG
    assert stack.origin.count(name) == 1


@pytest.mark.parametrize(
    "conditions",
    [
        {"if-none-match": '"v2"'},
        # If-None-Match decides alone: a matching If-Modified-Since does not count.
        {"if-none-match": '"v2"', "if-modified-since": LAST_MODIFIED},
        {"if-modified-since": "Sun, 31 Dec 2023 00:00:00 GMT"},
        {"if-modified-since": "not a date"},
    ],
    ids=["inm-other", "inm-over-ims", "ims-earlier", "ims-invalid"],
)
def test_a_failed_client_conditional_gets_the_whole_entry(
    stack: Stack, name: str, conditions: dict[str, str]
) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers=conditions)
    assert (answer.status_code, answer.headers["x-cache"], answer.text) == (200, "HIT", BODY)
    assert stack.origin.count(name) == 1


# -- ranges of a cached 200 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=2-5", 2, 5),
        ("bytes=0-0", 0, 0),
        ("bytes=30-", 30, LENGTH - 1),
        ("bytes=30-1000", 30, LENGTH - 1),
        ("bytes=-4", LENGTH - 4, LENGTH - 1),
        ("bytes=-1000", 0, LENGTH - 1),
        ("BYTES = 3-3", 3, 3),
    ],
    ids=["closed", "first-byte", "open", "past-the-end", "suffix", "suffix-longer", "spaced"],
)
def test_a_single_range_of_a_cached_200_is_a_206_from_the_cache(
    stack: Stack, name: str, spec: str, start: int, end: int
) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers={"range": spec})
    assert answer.headers["x-cache"] == "HIT"
    assert_partial(answer, start, end, LENGTH)
    assert answer.headers["etag"] == ETAG
    assert stack.origin.count(name) == 1


@pytest.mark.parametrize("spec", ["bytes=36-", "bytes=1000-2000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416(stack: Stack, name: str, spec: str) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers={"range": spec})
    assert (answer.status_code, answer.headers["x-cache"]) == (416, "HIT")
    assert answer.headers["content-range"] == f"bytes */{LENGTH}"
    assert answer.content == b""
    assert stack.origin.count(name) == 1


@pytest.mark.parametrize(
    "spec",
    ["bytes=0-1,3-4", "bytes=0-1, -2", "bytes=5-2", "bytes=x-y", "lines=1-2", "bytes=0x1-2"],
    ids=["two", "two-suffix", "reversed", "junk", "other-unit", "hex"],
)
def test_a_range_that_is_not_one_valid_byte_range_gets_the_whole_200(
    stack: Stack, name: str, spec: str
) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers={"range": spec})
    assert (answer.status_code, answer.headers["x-cache"], answer.text) == (200, "HIT", BODY)
    assert "content-range" not in answer.headers
    assert answer.headers["content-length"] == str(LENGTH)


@pytest.mark.parametrize("spec", ["bytes=-5", "bytes=0-", "bytes=0-0"])
def test_ranges_of_an_empty_representation_are_never_a_malformed_206(
    stack: Stack, name: str, spec: str
) -> None:
    """A zero-length body has no byte to send, so no 206 can describe a part of it
    (its Content-Range would need first <= last < 0): a 200, or a 416 saying
    `bytes */0`."""
    path = cached(stack, name, body="")
    answer = stack.client.get(path, headers={"range": spec})
    assert answer.status_code in (200, 416), (answer.status_code, answer.headers)
    assert answer.content == b""
    if answer.status_code == 416:
        assert answer.headers["content-range"] == "bytes */0"


def test_a_range_answer_for_head_has_the_partial_length(stack: Stack, name: str) -> None:
    path = cached(stack, name)
    answer = stack.client.head(path, headers={"range": "bytes=2-5"})
    assert (answer.status_code, answer.headers["x-cache"], answer.content) == (206, "HIT", b"")
    assert answer.headers["content-range"] == f"bytes 2-5/{LENGTH}"
    assert answer.headers["content-length"] == "4"


@pytest.mark.parametrize(
    ("if_range", "partial"),
    [
        (ETAG, True),
        ('"v2"', False),
        (f"W/{ETAG}", False),  # If-Range needs a strong comparison (RFC 9110 §13.1.5)
        (LAST_MODIFIED, True),
        ("Tue, 02 Jan 2024 00:00:00 GMT", False),
    ],
    ids=["etag", "other-etag", "weak-etag", "date", "other-date"],
)
def test_if_range_selects_the_206_or_the_whole_200(
    stack: Stack, name: str, if_range: str, partial: bool
) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers={"range": "bytes=2-5", "if-range": if_range})
    assert answer.headers["x-cache"] == "HIT"
    if partial:
        assert_partial(answer, 2, 5, LENGTH)
    else:
        assert (answer.status_code, answer.text) == (200, BODY)
    assert stack.origin.count(name) == 1


def test_a_weak_stored_etag_never_satisfies_if_range(stack: Stack, name: str) -> None:
    path = cached(stack, name, etag=f"W/{ETAG}")
    answer = stack.client.get(path, headers={"range": "bytes=2-5", "if-range": f"W/{ETAG}"})
    assert (answer.status_code, answer.text) == (200, BODY)


# -- what the origin sees --------------------------------------------------------------


def test_a_range_miss_fetches_the_whole_object(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=MAX_AGE, body=BODY, etag=ETAG)
    answer = stack.client.get(
        f"/{name}", headers={"range": "bytes=4-9", "if-range": ETAG, "if-none-match": '"v0"'}
    )
    assert answer.headers["x-cache"] == "MISS"
    assert_partial(answer, 4, 9, LENGTH)
    seen = seen_headers(stack, name)
    assert not set(CONDITIONS) & set(seen), seen
    whole = stack.client.get(f"/{name}")
    assert (whole.status_code, whole.headers["x-cache"], whole.text) == (200, "HIT", BODY)
    assert whole.headers["content-length"] == str(LENGTH)
    assert stack.origin.count(name) == 1


def test_a_range_miss_over_the_size_limit_gets_the_whole_200_then_passes(
    stack: Stack, name: str
) -> None:
    size = MAX_HTTP_BODY_BYTES + 10  # the default --http-max-body-bytes
    stack.origin.configure(name, headers=MAX_AGE, size=size)
    answer = stack.client.get(f"/{name}", headers={"range": "bytes=0-9"})
    # The whole object was asked for; too large to store, it is relayed as it is.
    assert (answer.status_code, answer.headers["x-cache"]) == (200, "MISS")
    assert (len(answer.content), answer.headers["content-length"]) == (size, str(size))
    assert "range" not in seen_headers(stack, name)
    # Too large marks the URL hit-for-pass: Range now reaches the origin.
    again = stack.client.get(f"/{name}", headers={"range": "bytes=0-9"})
    assert again.headers["x-cache"] == "PASS"
    assert seen_headers(stack, name)["range"] == "bytes=0-9"


def test_a_range_on_an_entry_to_revalidate_is_answered_after_the_304(
    stack: Stack, name: str
) -> None:
    path = cached(stack, name, headers=[["cache-control", "max-age=0"]])
    answer = stack.client.get(path, headers={"range": "bytes=-3", "if-none-match": '"v0"'})
    assert answer.headers["x-cache"] == "REVALIDATED"
    assert_partial(answer, LENGTH - 3, LENGTH - 1, LENGTH)
    seen = seen_headers(stack, name)
    # The entry's own validator, never the client's conditionals or Range.
    assert seen.get("if-none-match") == ETAG
    assert not {"range", "if-range"} & set(seen), seen
    assert stack.origin.count(name) == 2


def assert_forwarded_untouched(stack: Stack, name: str, sent: dict[str, str]) -> None:
    seen = seen_headers(stack, name)
    for field in CONDITIONS:
        assert seen.get(field) == sent[field], (field, seen)


PASSED_CONDITIONS = {
    "range": "bytes=1-2",
    "if-range": '"v9"',
    "if-none-match": '"v0"',
    "if-modified-since": "Sun, 31 Dec 2023 00:00:00 GMT",
}


def test_a_request_with_cookie_passes_its_conditions_and_range(stack: Stack, name: str) -> None:
    path = cached(stack, name)
    answer = stack.client.get(path, headers={**PASSED_CONDITIONS, "cookie": "s=1"})
    assert answer.headers["x-cache"] == "PASS"
    assert answer.status_code in (200, 206)
    assert_forwarded_untouched(stack, name, PASSED_CONDITIONS)
    # A matching conditional passed through is the origin's to answer.
    matching = stack.client.get(path, headers={"if-none-match": ETAG, "cookie": "s=1"})
    assert (matching.status_code, matching.headers["x-cache"]) == (304, "PASS")
    assert seen_headers(stack, name)["if-none-match"] == ETAG
    assert stack.origin.count(name) == 3


def test_hit_for_pass_passes_conditions_and_range(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[["cache-control", "no-store"]], body=BODY, etag=ETAG)
    assert stack.client.get(f"/{name}").headers["x-cache"] == "MISS"
    answer = stack.client.get(f"/{name}", headers=PASSED_CONDITIONS)
    assert answer.headers["x-cache"] == "PASS"
    assert_forwarded_untouched(stack, name, PASSED_CONDITIONS)
    matching = stack.client.get(f"/{name}", headers={"if-none-match": ETAG})
    assert (matching.status_code, matching.headers["x-cache"]) == (304, "PASS")
    assert stack.origin.count(name) == 3


# -- --origin with a path prefix -------------------------------------------------------


@dataclass
class Prefixed:
    proxy: Proxy
    name: str
    """The origin resource the prefix is: `--origin URL/NAME/app`."""

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.proxy.url}{path}", timeout=10)


@pytest.fixture(scope="module")
def prefixed(stack: Stack) -> Prefixed:
    """A second proxy on the stack's backends, for `--origin ORIGIN/NAME/app`: the
    origin names resources by the first path segment, so all of its targets belong to
    NAME."""
    name = f"p{uuid.uuid4().hex[:12]}"
    stack.origin.configure(name, headers=MAX_AGE, counter_body=True)
    # The stack's group owns the proxy and ends it with the stack.
    proxy = stack.group.proxy(stack.backends, "--origin", f"{stack.origin.url}/{name}/app")
    return Prefixed(proxy, name)


def test_an_origin_prefix_is_prepended_to_every_target(prefixed: Prefixed, stack: Stack) -> None:
    before = stack.origin.count(prefixed.name)
    first = prefixed.get("/x/y?q=1&r=%2F")
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert stack.origin.last_request(prefixed.name)["target"] == (
        f"/{prefixed.name}/app/x/y?q=1&r=%2F"
    )
    second = prefixed.get("/x/y?q=1&r=%2F")
    assert (second.headers["x-cache"], second.text) == ("HIT", first.text)
    root = prefixed.get("/")
    assert stack.origin.last_request(prefixed.name)["target"] == f"/{prefixed.name}/app/"
    assert root.headers["x-cache"] == "MISS"
    assert stack.origin.count(prefixed.name) == before + 2


def test_an_origin_prefix_is_part_of_the_cache_key(prefixed: Prefixed, stack: Stack) -> None:
    """The prefixed proxy's `/NAME` is the origin's `/NAME/app/NAME`; the stack's own
    proxy, on the same backends, must not answer its `/NAME` (the origin's `/NAME`) with
    it."""
    through_prefix = prefixed.get(f"/{prefixed.name}")
    assert through_prefix.headers["x-cache"] == "MISS"
    direct = stack.client.get(f"/{prefixed.name}")
    assert direct.headers["x-cache"] == "MISS", (
        f"{direct.text!r} was stored for /{prefixed.name}/app/{prefixed.name}"
    )
    assert stack.origin.last_request(prefixed.name)["target"] == f"/{prefixed.name}"


@pytest.mark.parametrize("origin", ["http://h/app?x=1", "http://h/app#top", "http://u@h/app"])
def test_an_origin_with_a_query_fragment_or_user_is_refused(origin: str) -> None:
    argv = [*ringleader_argv(), "proxy", "--backend", "memcached://127.0.0.1:11211"]
    done = subprocess.run(
        [*argv, "--origin", origin], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ringleader proxy: error: --origin:")
    assert repr(origin) in lines[0]
