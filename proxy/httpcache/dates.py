"""HTTP-date parsing and formatting (RFC 9110 §5.6.7)."""

import calendar
import functools
import time

_SHORT_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_LONG_DAYS = frozenset(
    {b"Monday", b"Tuesday", b"Wednesday", b"Thursday", b"Friday", b"Saturday", b"Sunday"}
)
_MONTHS = (
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
    b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
)  # fmt: skip
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}
_SHORT_DAY_SET = frozenset(_SHORT_DAYS)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# The longest valid form, RFC 850 with "Wednesday", is 33 bytes; anything much
# longer is rejected before any splitting so hostile values cost O(1).
_MAX_LENGTH = 40

MIN_TIMESTAMP = -62135596800
"""0001-01-01T00:00:00Z, the earliest instant a four-digit HTTP-date can express."""
MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z, the latest instant a four-digit HTTP-date can express."""


def parse_http_date(value: bytes, now: float) -> int | None:
    """Seconds since the epoch for an HTTP-date, or None if ``value`` is not one.

    Accepts IMF-fixdate and, as recipients MUST (§5.6.7), the obsolete RFC 850 and
    asctime forms. ``now`` resolves RFC 850 two-digit years: a year that would lie
    more than 50 years in the future is the most recent past year with those
    digits. Names are case-sensitive, as in the ABNF. Never raises.
    """
    if len(value) > _MAX_LENGTH:
        return None
    parts = value.split()
    if len(parts) == 6:  # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        return _imf_fixdate(value)
    if len(parts) == 4:  # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
        weekday, date, clock, zone = parts
        if weekday[:-1] not in _LONG_DAYS or weekday[-1:] != b"," or len(date) != 9:
            return None
        day, month, short_year = date[:2], date[3:6], date[7:]
        if date[2:3] != b"-" or date[6:7] != b"-" or not short_year.isdigit():
            return None
        year = b"%04d" % _expand_year(int(short_year), now)
    elif len(parts) == 5:  # asctime-date: Sun Nov  6 08:49:37 1994
        weekday, month, day, clock, year = parts
        zone = b"GMT"
        if weekday not in _SHORT_DAY_SET or not 1 <= len(day) <= 2:
            return None
    else:
        return None
    return _timestamp(day, month, year, clock) if zone == b"GMT" else None


@functools.lru_cache(maxsize=4096)
def _imf_fixdate(value: bytes) -> int | None:
    """IMF-fixdate alone: it does not depend on ``now``, so its parses are memoised.
    Every cache hit re-reads the same few stored Date values."""
    weekday, day, month, year, clock, zone = value.split()
    if weekday[:-1] not in _SHORT_DAY_SET or weekday[-1:] != b"," or len(day) != 2:
        return None
    return _timestamp(day, month, year, clock) if zone == b"GMT" else None


def _expand_year(short_year: int, now: float) -> int:
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + short_year
    if year > this_year + 50:
        return year - 100
    if year <= this_year - 50:
        return year + 100
    return year


def _timestamp(day: bytes, month: bytes, year: bytes, clock: bytes) -> int | None:
    month_number = _MONTH_NUMBER.get(month)
    if (
        month_number is None
        or len(year) != 4
        or len(clock) != 8
        or clock[2:3] != b":"
        or clock[5:6] != b":"
        # bytes.isdigit() accepts ASCII digits only, unlike str.isdigit().
        or not (day.isdigit() and year.isdigit())
    ):
        return None
    hour, minute, second = clock[:2], clock[3:5], clock[6:]
    if not (hour.isdigit() and minute.isdigit() and second.isdigit()):
        return None
    y, d, h, mi, s = int(year), int(day), int(hour), int(minute), int(second)
    # second may be 60 (a leap second, §5.6.7); timegm carries it into the next minute.
    if y < 1 or h > 23 or mi > 59 or s > 60 or not 1 <= d <= _DAYS_IN_MONTH[month_number - 1]:
        return None
    if month_number == 2 and d == 29 and not calendar.isleap(y):
        return None
    return calendar.timegm((y, month_number, d, h, mi, s))


def format_http_date(timestamp: float) -> bytes:
    """IMF-fixdate for a finite ``timestamp``, floored to whole seconds and clamped to
    the years 1-9999."""
    t = time.gmtime(min(max(int(timestamp // 1), MIN_TIMESTAMP), MAX_TIMESTAMP))
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _SHORT_DAYS[t.tm_wday],
        t.tm_mday,
        _MONTHS[t.tm_mon - 1],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )
