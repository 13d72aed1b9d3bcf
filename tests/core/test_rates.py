"""SPEC 4: rate tables. Expected values are worked out by hand in each test."""

import os

import pytest

from rater.core.rates import Rate, RateTableError, billable_seconds, charge, check_rate_tables, load_rate_tables
from rater.core.timeutil import parse_time
from tests.support.ledger import write_tables


def _rate(per_minute: int, fee: int = 0) -> Rate:
    return Rate("p", "international", "1", "", "USD", per_minute, fee, 60, 60, 0, 2)


@pytest.mark.parametrize(
    "duration, first, nxt, billable",
    [
        (0, 60, 60, 0),
        (1, 60, 60, 60),
        (60, 60, 60, 60),
        (61, 60, 60, 120),
        (125, 60, 60, 180),
        (1, 30, 6, 30),
        (30, 30, 6, 30),
        (31, 30, 6, 36),
        (61, 30, 6, 66),  # 30 + ceil(31/6)=6 increments of 6
        (1, 1, 1, 1),
        (61, 1, 1, 61),
        (86_400, 60, 60, 86_400),
    ],
)
def test_billing_increments_round_each_call_up(duration, first, nxt, billable):
    assert billable_seconds(duration, first, nxt) == billable


def test_charge_rounds_half_up_once_at_the_micro_unit():
    # 0.000001 a minute for 30 s is 0.0000005 -> rounds up to 0.000001
    assert charge(_rate(1), 30) == 1
    # ... and for 29 s is 0.00000048 -> 0
    assert charge(_rate(1), 29) == 0
    # 0.0315/min for 61 s = 0.0320250 exactly -> 32025 micro
    assert charge(_rate(31_500), 61) == 32_025
    # 0.000007/min for 90 s = 0.0000105 -> half up -> 0.000011
    assert charge(_rate(7), 90) == 11


def test_connection_fee_is_added_only_when_seconds_are_charged():
    assert charge(_rate(60_000, fee=10_000), 60) == 70_000
    assert charge(_rate(60_000, fee=10_000), 0) == 0


def test_longest_prefix_beats_a_shorter_one(tmp_path):
    plan = write_tables(str(tmp_path)).get("test-usd")
    at = parse_time("2026-11-02T10:00:00Z")
    assert plan.lookup("international", "447700900123", at).prefix == "447"
    assert plan.lookup("international", "442071234567", at).prefix == "44"
    assert plan.lookup("international", "33123456789", at) is None


def test_effective_from_switches_the_rate_at_its_instant(tmp_path):
    plan = write_tables(str(tmp_path)).get("test-usd")
    before = plan.lookup("international", "4930123456", parse_time("2026-11-30T23:59:59Z"))
    after = plan.lookup("international", "4930123456", parse_time("2026-12-01T00:00:00Z"))
    assert (before.rate_per_minute, after.rate_per_minute) == (30_000, 90_000)


def test_a_longer_prefix_not_yet_in_force_falls_back_to_the_shorter(tmp_path):
    plan = write_tables(str(tmp_path)).get("test-usd")
    # 4479 starts 2027-06-01; before that 447 applies.
    assert plan.lookup("international", "447912345678", parse_time("2026-11-02T00:00:00Z")).prefix == "447"
    assert plan.lookup("international", "447912345678", parse_time("2027-06-01T00:00:00Z")).prefix == "4479"


def test_defaults_fill_optional_columns(tmp_path):
    tables = write_tables(str(tmp_path))
    r = tables.get("test-eur").lookup("international", "4930", 0)
    assert (r.connection_fee, r.first_increment, r.next_increment, r.destination) == (0, 60, 60, "")
    assert tables.get("test-eur").currency == "EUR"


def _problems(tmp_path, name: str, text: str) -> list[str]:
    d = tmp_path / "rates"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    tables, problems = check_rate_tables(str(d))
    assert tables is None
    return problems


def test_every_load_error_names_the_file_and_line(tmp_path):
    problems = _problems(
        tmp_path,
        "bad.csv",
        "call_type,prefix,currency,rate_per_minute,first_increment\n"
        "international,44,USD,0.05,60\n"
        "intl,44,USD,0.05,60\n"
        "international,+44,USD,0.05,60\n"
        "international,45,USD,-0.05,60\n"
        "international,46,USD,0.05,0\n"
        "international,47,EUR,0.05,60\n"
        "international,44,USD,0.07,60\n"
        "international,48,USD,0.1234567,60\n",
    )
    assert problems == [
        "bad.csv:3: call_type 'intl' is not one of conference_dialout, international, toll_free, domestic",
        "bad.csv:4: prefix '+44' must be 1 to 15 digits without '+'",
        "bad.csv:5: rate_per_minute must be >= 0, got '-0.05'",
        "bad.csv:6: first_increment must be a whole number of seconds >= 1, got '0'",
        "bad.csv:7: currency EUR differs from USD of the file's first row",
        "bad.csv:8: duplicate of line 2 (same call_type, prefix and effective_from)",
        "bad.csv:9: rate_per_minute has more than 6 fractional digits: '0.1234567'",
    ]


def test_missing_and_unknown_columns_are_errors(tmp_path):
    problems = _problems(tmp_path, "x.csv", "call_type,prefix,rate,currency\ninternational,1,0.1,USD\n")
    assert problems == ["x.csv:1: unknown column 'rate'", "x.csv:1: missing required column 'rate_per_minute'"]


def test_same_prefix_with_different_effective_from_is_not_a_duplicate(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "p.csv").write_text(
        "call_type,prefix,currency,rate_per_minute,effective_from\ninternational,1,USD,0.1,\ninternational,1,USD,0.2,2027-01-01\n"
    )
    assert check_rate_tables(str(d))[1] == []


def test_a_table_that_does_not_load_is_never_half_used(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "good.csv").write_text("call_type,prefix,currency,rate_per_minute\ninternational,1,USD,0.1\n")
    (d / "bad.csv").write_text("call_type,prefix,currency,rate_per_minute\ninternational,1,USD,oops\n")
    with pytest.raises(RateTableError) as exc:
        load_rate_tables(str(d))
    assert exc.value.problems == ["bad.csv:2: rate_per_minute is not a decimal amount: 'oops'"]


def test_plan_id_is_the_file_name_without_csv(tmp_path):
    tables = write_tables(str(tmp_path))
    assert sorted(tables.plans) == ["test-eur", "test-usd"]


def test_shipped_rate_tables_load():
    here = os.path.join(os.path.dirname(__file__), "..", "..", "rate_tables")
    tables = load_rate_tables(here)
    assert {"standard-usd", "standard-eur"} <= set(tables.plans)


def _file_problems(tmp_path, name: str, data: bytes) -> list[str]:
    d = tmp_path / "r"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)
    tables, problems = check_rate_tables(str(d))
    assert tables is None
    return problems


def test_a_file_without_a_header_row_is_one_problem_saying_so(tmp_path):
    assert _file_problems(tmp_path, "p.csv", b"international,44,,USD,0.02,,60,60,\ninternational,1,,USD,0.01,,60,60,\n") == [
        "p.csv:1: no header row: the first row must name the columns (call_type, prefix, currency, "
        "rate_per_minute, ...), not 'international,44,,USD,0.02,,60,60,'"
    ]


def test_non_utf8_names_the_line_and_the_byte_in_it(tmp_path):
    data = (
        b"call_type,prefix,currency,rate_per_minute,destination\ninternational,1,USD,0.1,ok\ninternational,44,USD,0.1,Gro\xdfbritannien\n"  # noqa: E501
    )
    # Line 3; "international,44,USD,0.1,Gro" is 28 bytes, so 0xdf is its 29th.
    assert _file_problems(tmp_path, "p.csv", data) == ["p.csv:3: not UTF-8 text (byte 29 of the line is 0xdf)"]


def test_an_amount_with_too_many_digits_is_out_of_range_not_malformed(tmp_path):
    data = b"call_type,prefix,currency,rate_per_minute\ninternational,1,USD,99999999999999999999\n"
    assert _file_problems(tmp_path, "p.csv", data) == ["p.csv:2: rate_per_minute is out of range"]


def test_rates_check_prints_problems_to_stderr_and_exits_1(tmp_path, capsys):
    from rater.cli import main as cli

    (tmp_path / "p.csv").write_text("call_type,prefix,currency,rate_per_minute\nintl,1,USD,0.1\n")
    assert cli.main(["rates", "check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "p.csv:2: call_type 'intl' is not one of conference_dialout, international, toll_free, domestic",
        f"1 problem(s) in {tmp_path}",
    ]
