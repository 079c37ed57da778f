"""Vary done properly: several variants per URI, Accept-Encoding in buckets, variants
recorded from the request as forwarded, revalidation with the matching variant only."""

from __future__ import annotations

from tests.proxy.httpcache.conftest import PURGE_TOKEN, Stack, seen_headers

MAX_AGE = ["cache-control", "max-age=60"]


def get(stack: Stack, name: str, **headers: str) -> tuple[str, str]:
    response = stack.client.get(f"/{name}", headers=headers)
    assert response.status_code == 200
    return response.headers["x-cache"], response.text


def test_alternating_encodings_keep_one_variant_each(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE, ["vary", "Accept-Encoding"]],
                           echo="accept-encoding")  # fmt: skip
    browsers = ["gzip, deflate, br, zstd", "gzip, deflate", "identity", "br;q=1.0, gzip;q=0.8"]
    first = [get(stack, name, **{"accept-encoding": value}) for value in browsers]
    assert [result for result, _ in first] == ["MISS", "MISS", "MISS", "HIT"]
    # The origin was asked with the bucket, so what is stored is what the bucket gets.
    assert [body.rsplit(" ", 1)[1] for _, body in first] == ["br", "gzip", "-", "br"]
    for _ in range(2):
        for value in browsers:
            assert get(stack, name, **{"accept-encoding": value})[0] == "HIT"
    assert stack.origin.count(name) == 3


def test_variants_past_the_bound_push_out_the_oldest(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE, ["vary", "accept-language"]],
                           echo="accept-language")  # fmt: skip
    languages = [f"l{i}" for i in range(9)]  # one more than the default bound of 8
    for language in languages:
        assert get(stack, name, **{"accept-language": language})[0] == "MISS"
    for language in languages[2:]:
        assert get(stack, name, **{"accept-language": language}) == (
            "HIT",
            f"body of {name} {language}",
        )
    assert get(stack, name, **{"accept-language": "l0"})[0] == "MISS"


def test_purge_drops_every_variant(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE, ["vary", "accept-language"]])
    for language in ("en", "fr", "de"):
        get(stack, name, **{"accept-language": language})
        assert get(stack, name, **{"accept-language": language})[0] == "HIT"
    token = {"authorization": f"bearer {PURGE_TOKEN}"}  # the scheme in any case
    assert stack.client.request("PURGE", f"/{name}", headers=token).status_code == 200
    for language in ("en", "fr", "de"):
        assert get(stack, name, **{"accept-language": language})[0] == "MISS"


def test_a_field_named_in_connection_cannot_select_a_variant(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[MAX_AGE, ["vary", "x-variant"]], echo="x-variant")
    sneaky = get(stack, name, connection="x-variant", **{"x-variant": "evil"})
    assert sneaky == ("MISS", f"body of {name} -")
    assert "x-variant" not in seen_headers(stack, name)
    # Stored as the variant without X-Variant, which is what the origin answered.
    assert get(stack, name) == ("HIT", f"body of {name} -")
    assert get(stack, name, **{"x-variant": "evil"}) == ("MISS", f"body of {name} evil")


def test_another_variant_is_never_revalidated_with_the_stored_ones_validators(
    stack: Stack, name: str
) -> None:
    """The origin gives every variant the same ETag and answers If-None-Match with 304:
    revalidating "fr" with the "en" entry's validators would serve "en" to "fr"."""
    stack.origin.configure(name, headers=[MAX_AGE, ["vary", "accept-language"]],
                           echo="accept-language", etag='"same"')  # fmt: skip
    assert get(stack, name, **{"accept-language": "en"}) == ("MISS", f"body of {name} en")
    assert get(stack, name, **{"accept-language": "fr"}) == ("MISS", f"body of {name} fr")
    assert "if-none-match" not in seen_headers(stack, name)
    assert get(stack, name, **{"accept-language": "en"}) == ("HIT", f"body of {name} en")
    assert get(stack, name, **{"accept-language": "fr"}) == ("HIT", f"body of {name} fr")
