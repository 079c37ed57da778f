"""Age calculation (RFC 9111 §4.2.3).

All times are seconds since the epoch; ``request_time`` and ``response_time`` are
the local clock when the request was sent and the response received.
"""

from .cache_control import parse_delta_seconds
from .dates import parse_http_date
from .headers import OWS, Headers, first


def apparent_age(date_value: float, response_time: float) -> float:
    return max(0.0, response_time - date_value)


def response_delay(request_time: float, response_time: float) -> float:
    return response_time - request_time


def corrected_age_value(age_value: float, request_time: float, response_time: float) -> float:
    return age_value + response_delay(request_time, response_time)


def corrected_initial_age(
    date_value: float, age_value: float, request_time: float, response_time: float
) -> float:
    return max(
        apparent_age(date_value, response_time),
        corrected_age_value(age_value, request_time, response_time),
    )


def resident_time(response_time: float, now: float) -> float:
    return now - response_time


def current_age(
    date_value: float, age_value: float, request_time: float, response_time: float, now: float
) -> float:
    return corrected_initial_age(
        date_value, age_value, request_time, response_time
    ) + resident_time(response_time, now)


def age_value(headers: Headers) -> int:
    """The Age field (§5.1): the first member of the first line; 0 if absent or invalid."""
    value = first(headers, b"age")
    if value is None:
        return 0
    age = parse_delta_seconds(value.partition(b",")[0].strip(OWS))
    return 0 if age is None else age


def date_value(headers: Headers, response_time: float) -> float:
    """The Date field, or ``response_time`` when it is absent or invalid (RFC 9110 §6.6.1)."""
    value = first(headers, b"date")
    date = None if value is None else parse_http_date(value, response_time)
    return response_time if date is None else date
