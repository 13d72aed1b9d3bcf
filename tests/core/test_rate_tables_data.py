"""Checks over the shipped prefix data (data/) and rate plans (rate_tables/).

Uses only the csv module and pytest, not the project's loader, so that the
shipped files are checked against the rate-table contract on their own.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
RATE_TABLES = ROOT / "rate_tables"
SCRIPT = ROOT / "scripts" / "gen_rate_tables.py"

REQUIRED_COLUMNS = {"call_type", "prefix", "currency", "rate_per_minute"}
ALL_COLUMNS = [
    "call_type",
    "prefix",
    "destination",
    "currency",
    "rate_per_minute",
    "connection_fee",
    "first_increment",
    "next_increment",
    "effective_from",
]
CALL_TYPES = {"conference_dialout", "international", "toll_free", "domestic"}

# plan id -> (currency, home prefix)
PLANS = {
    "standard-usd": ("USD", "1"),
    "standard-eur": ("EUR", "49"),
    "premium-gbp": ("GBP", "44"),
}
STANDARD_PLANS = ["standard-usd", "standard-eur"]

PREFIX_RE = re.compile(r"^[0-9]{1,15}$")
MONEY_RE = re.compile(r"^[0-9]+(\.[0-9]{1,6})?$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
ALWAYS = datetime.min.replace(tzinfo=timezone.utc)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def parse_effective(value: str) -> datetime:
    if value == "":
        return ALWAYS
    if DATE_RE.match(value):
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
    assert RFC3339_RE.match(value), value
    dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return dt.astimezone(timezone.utc)


def plan_rows(plan_id: str) -> list[dict[str, str]]:
    return read_rows(RATE_TABLES / f"{plan_id}.csv")[1]


def lookup(plan_id: str, call_type: str, e164: str, at: str = "2026-06-01T12:00:00Z") -> dict[str, str]:
    """Reference lookup: longest matching prefix among the rows in force at the call
    start (effective_from at or before it), then the latest effective_from."""
    digits = e164.lstrip("+")
    start = parse_effective(at)
    live = [
        r
        for r in plan_rows(plan_id)
        if r["call_type"] == call_type and digits.startswith(r["prefix"]) and parse_effective(r["effective_from"]) <= start
    ]
    assert live, f"no {call_type} row in force for {e164} at {at} in {plan_id}"
    return max(live, key=lambda r: (len(r["prefix"]), parse_effective(r["effective_from"])))


@pytest.fixture(scope="module")
def itu_codes() -> list[dict[str, str]]:
    return read_rows(DATA / "itu_country_codes.csv")[1]


@pytest.fixture(scope="module")
def toll_free_ranges() -> list[dict[str, str]]:
    return read_rows(DATA / "toll_free.csv")[1]


# ---------------------------------------------------------------- data/


def test_itu_country_codes_file(itu_codes):
    header, _ = read_rows(DATA / "itu_country_codes.csv")
    assert header == ["prefix", "country", "iso2", "zone", "notes"]
    prefixes = [r["prefix"] for r in itu_codes]
    assert len(prefixes) == len(set(prefixes)), "duplicate prefix"
    assert len(itu_codes) >= 230
    for r in itu_codes:
        assert PREFIX_RE.match(r["prefix"]), r
        assert r["zone"] in "123456789" and r["prefix"][0] == r["zone"], r
        assert r["country"], r
        assert r["iso2"] == "" or re.fullmatch(r"[A-Z]{2}", r["iso2"]), r
    by_prefix = {r["prefix"]: r["iso2"] for r in itu_codes}
    # spot checks across all zones, shared codes and global networks
    for prefix, iso2 in {
        "1": "US",
        "1242": "BS",
        "1876": "JM",
        "1809": "DO",
        "1787": "PR",
        "20": "EG",
        "27": "ZA",
        "290": "SH",
        "299": "GL",
        "33": "FR",
        "39": "IT",
        "3906698": "VA",
        "383": "XK",
        "44": "GB",
        "49": "DE",
        "500": "FK",
        "599": "CW",
        "61": "AU",
        "692": "MH",
        "7": "RU",
        "76": "KZ",
        "77": "KZ",
        "81": "JP",
        "86": "CN",
        "886": "TW",
        "90": "TR",
        "91": "IN",
        "998": "UZ",
        "870": "",
        "881": "",
        "882": "",
        "883": "",
        "888": "",
        "979": "",
        "800": "",
    }.items():
        assert by_prefix.get(prefix) == iso2, prefix
    # every world zone is present
    assert {r["zone"] for r in itu_codes} == set("123456789")


def test_toll_free_file(toll_free_ranges):
    header, _ = read_rows(DATA / "toll_free.csv")
    assert header == ["prefix", "country", "iso2", "notes"]
    prefixes = [r["prefix"] for r in toll_free_ranges]
    assert len(prefixes) == len(set(prefixes))
    for r in toll_free_ranges:
        assert PREFIX_RE.match(r["prefix"]), r
    assert len({r["iso2"] for r in toll_free_ranges if r["iso2"]}) >= 25
    for prefix in [
        "1800",
        "1888",
        "44800",
        "44808",
        "49800",
        "33800",
        "611800",
        "39800",
        "34900",
        "3531800",
        "81120",
        "911800",
        "8280",
        "9721800",
    ]:
        assert prefix in prefixes, prefix


# ---------------------------------------------------------------- rate_tables/


def test_only_plan_csvs_in_rate_tables():
    assert sorted(p.name for p in RATE_TABLES.glob("*.csv")) == sorted(f"{p}.csv" for p in PLANS)


@pytest.mark.parametrize("plan_id", PLANS)
def test_plan_format(plan_id):
    path = RATE_TABLES / f"{plan_id}.csv"
    raw = path.read_bytes()
    assert b"\r" not in raw, "LF line endings only"
    assert raw.endswith(b"\n")
    header, rows = read_rows(path)
    assert REQUIRED_COLUMNS <= set(header)
    assert header == ALL_COLUMNS
    assert rows
    currency, _ = PLANS[plan_id]
    for r in rows:
        assert r["call_type"] in CALL_TYPES, r
        assert PREFIX_RE.match(r["prefix"]), r
        assert r["currency"] == currency, r
        for col in ("rate_per_minute", "connection_fee"):
            assert MONEY_RE.match(r[col]), (col, r)
            assert Decimal(r[col]) >= 0
        assert Decimal(r["rate_per_minute"]) > 0, r
        for col in ("first_increment", "next_increment"):
            assert r[col].isdigit() and int(r[col]) >= 1, (col, r)
        parse_effective(r["effective_from"])  # asserts the format


@pytest.mark.parametrize("plan_id", PLANS)
def test_plan_sorted_and_no_duplicates(plan_id):
    rows = plan_rows(plan_id)
    keys = [(r["call_type"], r["prefix"], r["effective_from"]) for r in rows]
    assert keys == sorted(keys)
    normalized = [(r["call_type"], r["prefix"], parse_effective(r["effective_from"])) for r in rows]
    assert len(normalized) == len(set(normalized)), "duplicate (call_type, prefix, effective_from)"


@pytest.mark.parametrize("plan_id", PLANS)
def test_every_country_code_has_international_and_conference_rows(plan_id, itu_codes):
    rows = plan_rows(plan_id)
    have = {(r["call_type"], r["prefix"]) for r in rows if r["effective_from"] == ""}
    for code in itu_codes:
        for call_type in ("international", "conference_dialout"):
            assert (call_type, code["prefix"]) in have, (plan_id, call_type, code)


@pytest.mark.parametrize("plan_id", PLANS)
def test_conference_priced_above_international(plan_id):
    rows = plan_rows(plan_id)
    intl = {(r["prefix"], r["effective_from"]): Decimal(r["rate_per_minute"]) for r in rows if r["call_type"] == "international"}
    conf = {(r["prefix"], r["effective_from"]): Decimal(r["rate_per_minute"]) for r in rows if r["call_type"] == "conference_dialout"}
    assert intl.keys() == conf.keys()
    for key, rate in intl.items():
        assert conf[key] > rate, key


@pytest.mark.parametrize("plan_id", PLANS)
def test_toll_free_rows(plan_id, toll_free_ranges):
    rows = [r for r in plan_rows(plan_id) if r["call_type"] == "toll_free"]
    prefixes = {r["prefix"] for r in rows}
    assert prefixes == {r["prefix"] for r in toll_free_ranges}
    iso_by_prefix = {r["prefix"]: r["iso2"] for r in toll_free_ranges}
    countries = {iso_by_prefix[p] for p in prefixes if iso_by_prefix[p]}
    assert len(countries) >= 20


@pytest.mark.parametrize("plan_id", PLANS)
def test_domestic_row_for_home_prefix(plan_id):
    _, home = PLANS[plan_id]
    rows = plan_rows(plan_id)
    assert any(r["call_type"] == "domestic" and r["prefix"] == home and r["effective_from"] == "" for r in rows)
    assert {r["prefix"][: len(home)] for r in rows if r["call_type"] == "domestic"} == {home}


@pytest.mark.parametrize("plan_id", PLANS)
def test_dated_rate_change_present(plan_id):
    rows = plan_rows(plan_id)
    undated = {(r["call_type"], r["prefix"]) for r in rows if r["effective_from"] == ""}
    changes = [r for r in rows if r["effective_from"]]
    assert changes
    for r in changes:
        assert (r["call_type"], r["prefix"]) in undated, r
        assert parse_effective(r["effective_from"]) == datetime(2027, 1, 1, tzinfo=timezone.utc)


def test_increments_per_plan():
    for r in plan_rows("standard-usd"):
        expected = ("6", "6") if r["prefix"].startswith("1") else ("60", "60")
        assert (r["first_increment"], r["next_increment"]) == expected, r
    for r in plan_rows("standard-eur"):
        assert (r["first_increment"], r["next_increment"]) == ("60", "60"), r
    for r in plan_rows("premium-gbp"):
        assert (r["first_increment"], r["next_increment"]) == ("1", "1"), r


def test_connection_fees():
    for plan_id in STANDARD_PLANS:
        assert all(Decimal(r["connection_fee"]) == 0 for r in plan_rows(plan_id))
    premium = plan_rows("premium-gbp")
    assert all(Decimal(r["connection_fee"]) > 0 for r in premium if r["call_type"] in ("international", "conference_dialout", "domestic"))


def test_usd_rates_plausible():
    rows = {(r["call_type"], r["prefix"], r["effective_from"]): Decimal(r["rate_per_minute"]) for r in plan_rows("standard-usd")}
    assert Decimal("0.01") <= rows[("international", "1", "")] <= Decimal("0.02")
    assert Decimal("0.005") <= rows[("domestic", "1", "")] <= Decimal("0.02")
    for prefix in ("44", "49", "33", "39", "34", "31"):
        assert Decimal("0.02") <= rows[("international", prefix, "")] <= Decimal("0.05"), prefix
    for prefix in ("447", "4915", "336", "393", "346", "316"):
        assert Decimal("0.05") <= rows[("international", prefix, "")] <= Decimal("0.15"), prefix
    assert Decimal("0.02") <= rows[("international", "91", "")] <= Decimal("0.04")
    for prefix in ("870", "881", "8816"):
        assert Decimal("5") <= rows[("international", prefix, "")] <= Decimal("10"), prefix
    for (call_type, _, _), rate in rows.items():
        if call_type == "toll_free":
            assert Decimal("0.02") <= rate <= Decimal("0.06")
        assert rate <= Decimal("10")


# Spot checks worked out by hand from the tier table in scripts/gen_rate_tables.py:
# USD list prices; EUR = USD * 0.92; premium GBP = USD * 0.79 * 1.15;
# conference_dialout = international * 1.10; rounded half-up to 4 places.
@pytest.mark.parametrize(
    "plan_id, call_type, number, at, prefix, rate",
    [
        # UK mobile: 447 (not 44); the 2027 change raises it 20 %
        ("standard-usd", "international", "+447911123456", "2026-06-01T12:00:00Z", "447", "0.0500"),
        ("standard-usd", "international", "+447911123456", "2027-03-01T12:00:00Z", "447", "0.0600"),
        ("standard-usd", "conference_dialout", "+447911123456", "2026-06-01T12:00:00Z", "447", "0.0550"),
        ("standard-usd", "international", "+442079460000", "2026-06-01T12:00:00Z", "44", "0.0200"),
        # change takes effect at 2027-01-01T00:00Z exactly, not a second before
        ("standard-usd", "international", "+919812345678", "2026-12-31T23:59:59Z", "91", "0.0300"),
        ("standard-usd", "international", "+919812345678", "2027-01-01T00:00:00Z", "91", "0.0270"),
        ("standard-usd", "international", "+918012345678", "2027-01-01T00:30:00+01:00", "91", "0.0300"),
        # NANP: Jamaica by area code, US/Canada by the shared code
        ("standard-usd", "international", "+18765550123", "2026-06-01T12:00:00Z", "1876", "0.1800"),
        ("standard-usd", "international", "+14165550123", "2026-06-01T12:00:00Z", "1", "0.0120"),
        ("standard-usd", "domestic", "+12125550123", "2026-06-01T12:00:00Z", "1", "0.0100"),
        ("standard-usd", "domestic", "+12125550123", "2027-06-01T12:00:00Z", "1", "0.0090"),
        # shared codes
        ("standard-usd", "international", "+390669812345", "2026-06-01T12:00:00Z", "3906698", "0.0300"),
        ("standard-usd", "international", "+390612345678", "2026-06-01T12:00:00Z", "39", "0.0200"),
        ("standard-usd", "international", "+77012345678", "2026-06-01T12:00:00Z", "77", "0.0900"),
        ("standard-usd", "international", "+74951234567", "2026-06-01T12:00:00Z", "7", "0.0900"),
        # satellite
        ("standard-usd", "international", "+881612345678", "2026-06-01T12:00:00Z", "8816", "8.5000"),
        ("standard-usd", "international", "+870772123456", "2026-06-01T12:00:00Z", "870", "7.0000"),
        # toll-free ranges
        ("standard-usd", "toll_free", "+18005550123", "2026-06-01T12:00:00Z", "1800", "0.0200"),
        ("standard-usd", "toll_free", "+448001234567", "2026-06-01T12:00:00Z", "44800", "0.0350"),
        # EUR plan, home DE
        ("standard-eur", "domestic", "+4915112345678", "2026-06-01T12:00:00Z", "4915", "0.0300"),
        ("standard-eur", "domestic", "+493012345678", "2026-06-01T12:00:00Z", "49", "0.0100"),
        ("standard-eur", "international", "+12125550123", "2026-06-01T12:00:00Z", "1", "0.0110"),
        ("standard-eur", "international", "+12125550123", "2027-06-01T00:00:00Z", "1", "0.0099"),
        ("standard-eur", "toll_free", "+498001234567", "2026-06-01T12:00:00Z", "49800", "0.0322"),
        # premium GBP, home GB
        ("premium-gbp", "international", "+447911123456", "2026-06-01T12:00:00Z", "447", "0.0454"),
        ("premium-gbp", "international", "+4917612345678", "2026-06-01T12:00:00Z", "4917", "0.0727"),
        ("premium-gbp", "international", "+4917612345678", "2027-01-01T00:00:00Z", "4917", "0.0836"),
        ("premium-gbp", "domestic", "+447911123456", "2026-06-01T12:00:00Z", "447", "0.0350"),
        ("premium-gbp", "domestic", "+447911123456", "2027-02-01T00:00:00Z", "447", "0.0280"),
        ("premium-gbp", "domestic", "+442079460000", "2027-02-01T00:00:00Z", "44", "0.0120"),
    ],
)
def test_lookup_spot_checks(plan_id, call_type, number, at, prefix, rate):
    row = lookup(plan_id, call_type, number, at)
    assert (row["prefix"], row["rate_per_minute"]) == (prefix, rate)


def test_regeneration_is_byte_identical(tmp_path):
    out = tmp_path / "rate_tables"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True, cwd=tmp_path)
    generated = sorted(p.name for p in out.iterdir())
    assert generated == sorted(f"{p}.csv" for p in PLANS)
    for name in generated:
        assert (out / name).read_bytes() == (RATE_TABLES / name).read_bytes(), name
