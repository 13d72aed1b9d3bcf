import pytest

from rater.core.timeutil import TimeError, add_months, format_time, month_key, parse_time, parse_time_or_date


def test_offsets_are_kept_as_utc():
    assert parse_time("2026-11-24T10:00:00+01:00") == parse_time("2026-11-24T09:00:00Z")
    assert parse_time("2026-11-24T10:00:00-05:30") == parse_time("2026-11-24T15:30:00Z")
    # 56 years of 365 days + 14 leap days (1972..2024) + 327 days of 2026 = 20,781 days.
    assert parse_time("2026-11-24T00:00:00Z") == 20_781 * 86_400 * 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-24T10:00:00",
        "2026-11-24",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-24 10:00:00Z",
        "20261124T100000Z",
        "2026-11-24T10:00:00+25:00",
        "yesterday",
        1700000000,
    ],
)
def test_a_time_without_zone_or_out_of_range_is_invalid(text):
    with pytest.raises(TimeError):
        parse_time(text)


def test_a_time_without_zone_says_so():
    with pytest.raises(TimeError, match="no zone offset"):
        parse_time("2026-11-24T10:00:00")


def test_fractional_seconds_round_trip_in_utc():
    t = parse_time("2026-11-24T10:00:00.25+00:00")
    assert format_time(t) == "2026-11-24T10:00:00.250000Z"
    assert format_time(parse_time("2026-11-24T10:00:00Z")) == "2026-11-24T10:00:00Z"


def test_twelve_months_after_a_leap_day_is_the_last_day_of_february():
    assert format_time(add_months(parse_time("2024-02-29T08:30:00Z"), 12)) == "2025-02-28T08:30:00Z"
    assert format_time(add_months(parse_time("2026-01-31T00:00:00Z"), 12)) == "2027-01-31T00:00:00Z"


def test_a_date_means_midnight_utc():
    assert parse_time_or_date("2027-01-01") == parse_time("2027-01-01T00:00:00Z")


def test_month_key_is_the_utc_month():
    assert month_key(parse_time("2026-12-01T00:30:00+01:00")) == "2026-11"
