"""Timestamps (SPEC 1): RFC 3339 with a zone offset in, integer UTC microseconds inside.

Inside the rater a time is an ``int`` of microseconds since 1970-01-01T00:00:00Z, so
comparisons and arithmetic are exact and cheap. Out on the wire it is written in UTC
with a ``Z``: ``2026-11-24T10:00:00Z`` (fractional seconds only when they are not zero).
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Lots expire 12 months after purchase: keep every time the rater computes inside datetime.
MIN_YEAR, MAX_YEAR = 1970, 9000
_ONE_MICRO = timedelta(microseconds=1)
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


class TimeError(ValueError):
    """A value that is not an RFC 3339 time with a zone; the message says why."""


_DAY_CACHE: dict[str, int] = {}


def _fast_utc(value: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SSZ``, the shape nearly every producer sends, without the
    regex and datetime: the date's midnight is cached. None when it is another shape."""
    if len(value) != 20 or value[19] != "Z" or value[10] != "T" or value[13] != ":" or value[16] != ":":
        return None
    day = _DAY_CACHE.get(value[:10])
    if day is None:
        m = _DATE_RE.fullmatch(value[:10])
        if m is None or not MIN_YEAR <= int(m[1]) <= MAX_YEAR:
            return None
        try:
            dt = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=timezone.utc)
        except ValueError:
            return None
        day = (dt - _EPOCH) // _ONE_MICRO
        if len(_DAY_CACHE) > 4096:
            _DAY_CACHE.clear()
        _DAY_CACHE[value[:10]] = day
    hh, mm, ss = value[11:13], value[14:16], value[17:19]
    if not (hh.isdigit() and mm.isdigit() and ss.isdigit() and hh.isascii() and mm.isascii() and ss.isascii()):
        return None
    h, mi, sec = int(hh), int(mm), int(ss)
    if h > 23 or mi > 59 or sec > 59:
        return None
    return day + ((h * 60 + mi) * 60 + sec) * SECOND


def parse_time(value: object) -> int:
    """Parse an RFC 3339 timestamp with a zone offset into UTC microseconds."""
    if not isinstance(value, str):
        raise TimeError("must be an RFC 3339 timestamp string")
    fast = _fast_utc(value)
    if fast is not None:
        return fast
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+", value):
            raise TimeError(f"has no zone offset: {value[:40]!r}")
        raise TimeError(f"is not an RFC 3339 timestamp: {value[:40]!r}")
    y, mo, d, h, mi, s, frac, z, osign, oh, om = m.groups()
    if not MIN_YEAR <= int(y) <= MAX_YEAR:
        raise TimeError(f"is out of range (years {MIN_YEAR} to {MAX_YEAR}): {value[:40]!r}")
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError as exc:
        raise TimeError(f"is not a valid date and time: {value[:40]!r} ({exc})") from None
    micro = (dt - _EPOCH) // _ONE_MICRO
    if frac:
        micro += int(frac[:6].ljust(6, "0"))  # finer than a microsecond is dropped
    if not z:
        offset_h, offset_m = int(oh), int(om)
        if offset_h > 23 or offset_m > 59:
            raise TimeError(f"has an invalid zone offset: {value[:40]!r}")
        offset = (offset_h * 60 + offset_m) * MINUTE
        micro = micro - offset if osign == "+" else micro + offset
    return micro


def parse_time_or_date(value: str) -> int:
    """A rate table's ``effective_from``: a full timestamp, or a date meaning 00:00Z."""
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return parse_time(value)
    try:
        dt = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=timezone.utc)
    except ValueError as exc:
        raise TimeError(f"is not a valid date: {value!r} ({exc})") from None
    return (dt - _EPOCH) // _ONE_MICRO


def to_datetime(micro: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micro)


def format_time(micro: int) -> str:
    dt = _EPOCH + timedelta(microseconds=micro)
    base = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    if dt.microsecond:
        return f"{base}.{dt.microsecond:06d}Z"
    return base + "Z"


def utc_text(text: str, micro: int) -> str:
    """``format_time(micro)``, reusing ``text`` when it is already written that way
    (``YYYY-MM-DDTHH:MM:SSZ``, the common case), which saves the formatting."""
    if len(text) == 20 and text[19] == "Z" and text[10] == "T":
        return text
    return format_time(micro)


def add_months(micro: int, months: int) -> int:
    """Calendar months later, the day clamped to the month's end (2024-02-29 + 12 -> 2025-02-28)."""
    dt = _EPOCH + timedelta(microseconds=micro)
    total = dt.year * 12 + (dt.month - 1) + months
    year, month0 = divmod(total, 12)
    day = min(dt.day, calendar.monthrange(year, month0 + 1)[1])
    return ((dt.replace(year=year, month=month0 + 1, day=day)) - _EPOCH) // _ONE_MICRO


def month_key(micro: int) -> str:
    """The calendar month (UTC) of a time, as ``YYYY-MM``."""
    dt = _EPOCH + timedelta(microseconds=micro)
    return f"{dt.year:04d}-{dt.month:02d}"


def previous_month_key(key: str) -> str:
    year, month = int(key[:4]), int(key[5:7])
    if month == 1:
        return f"{year - 1:04d}-12"
    return f"{year:04d}-{month - 1:02d}"
