import pytest

from rater.core.money import MoneyError, format_money, parse_money


@pytest.mark.parametrize(
    "wire, micro",
    [
        ("12", 12_000_000),
        ("0.0315", 31_500),
        ("-3.500000", -3_500_000),
        ("+1.5", 1_500_000),
        ("0.000001", 1),
        (0.1, 100_000),  # a JSON number converts through its shortest decimal form
        (7, 7_000_000),
        (100.0, 100_000_000),
        (0.00005, 50),  # repr is '5e-05', the shortest decimal form is 0.00005
        (-2.5, -2_500_000),
    ],
)
def test_wire_money_parses_to_exact_micro_units(wire, micro):
    assert parse_money(wire) == micro


@pytest.mark.parametrize(
    "wire",
    [
        "0.0000001",
        "1e3",
        "1E3",
        "NaN",
        "inf",
        "-inf",
        "",
        ".5",
        "5.",
        "1,5",
        " 1",
        "0x10",
        "--1",
        1e-07,
        1e16,
        float("nan"),
        float("inf"),
        True,
        None,
        [],
        {},
    ],
)
def test_invalid_money_is_refused(wire):
    with pytest.raises(MoneyError):
        parse_money(wire)


def test_more_than_six_fractional_digits_is_named_in_the_error():
    with pytest.raises(MoneyError, match="more than 6 fractional digits"):
        parse_money("0.1234567")


def test_huge_amounts_are_refused():
    with pytest.raises(MoneyError, match="out of range"):
        parse_money(10**13)
    with pytest.raises(MoneyError):
        parse_money("99999999999999999999")


@pytest.mark.parametrize(
    "micro, wire",
    [(12_500_000, "12.500000"), (-30_000, "-0.030000"), (0, "0.000000"), (1, "0.000001"), (-1, "-0.000001")],
)
def test_written_money_has_exactly_six_fractional_digits(micro, wire):
    assert format_money(micro) == wire
