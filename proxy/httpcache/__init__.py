"""The pure policy layer of Ringleader's RFC 9111 shared HTTP cache.

No I/O, no clock: callers pass header lists (ASGI raw form, lowercase names) and
times in seconds since the epoch. See README.md for the choices made where the
RFC leaves one.
"""

from .age import (
    age_value,
    apparent_age,
    corrected_age_value,
    corrected_initial_age,
    current_age,
    date_value,
    resident_time,
    response_delay,
)
from .cache_control import DELTA_MAX, CacheControl, parse_cache_control, parse_delta_seconds
from .conditional import is_not_modified, not_modified_headers
from .dates import format_http_date, parse_http_date
from .entry import Entry, UnreadableEntry, decode_entry, encode_entry
from .freshness import HEURISTICALLY_CACHEABLE, freshness_lifetime, has_explicit_expiration
from .headers import HOP_BY_HOP, HeaderList, Headers, strip_hop_by_hop
from .invalidation import SAFE_METHODS, invalidated_keys
from .key import cache_key, origin
from .policy import CachePolicy
from .reuse import (
    OnError,
    Reuse,
    decide,
    on_origin_error,
    request_cache_control,
    served_headers,
    stale_if_error_window,
    stale_while_revalidate_window,
)
from .storable import UNDERSTOOD_STATUSES, Storability, make_entry, storability, stored_headers
from .validation import freshen, revalidation_headers
from .vary import VaryRecord, vary_matches, vary_names

__all__ = [
    "DELTA_MAX",
    "HEURISTICALLY_CACHEABLE",
    "HOP_BY_HOP",
    "SAFE_METHODS",
    "UNDERSTOOD_STATUSES",
    "CacheControl",
    "CachePolicy",
    "Entry",
    "HeaderList",
    "Headers",
    "OnError",
    "Reuse",
    "Storability",
    "UnreadableEntry",
    "VaryRecord",
    "age_value",
    "apparent_age",
    "cache_key",
    "corrected_age_value",
    "corrected_initial_age",
    "current_age",
    "date_value",
    "decide",
    "decode_entry",
    "encode_entry",
    "format_http_date",
    "freshen",
    "freshness_lifetime",
    "has_explicit_expiration",
    "invalidated_keys",
    "is_not_modified",
    "make_entry",
    "not_modified_headers",
    "on_origin_error",
    "origin",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_http_date",
    "request_cache_control",
    "resident_time",
    "response_delay",
    "revalidation_headers",
    "served_headers",
    "stale_if_error_window",
    "stale_while_revalidate_window",
    "storability",
    "stored_headers",
    "strip_hop_by_hop",
    "vary_matches",
    "vary_names",
]
