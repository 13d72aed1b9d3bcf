#!/usr/bin/env python3
"""Generate the shipped rate plans in rate_tables/ from the prefix data in data/.

Inputs (see data/README.md):
  data/itu_country_codes.csv  prefix,country,iso2,zone,notes
  data/toll_free.csv          prefix,country,iso2,notes

Outputs (one rate plan per file, plan id = file name without .csv):
  standard-usd.csv   home US, USD, 60/60 billing (6/6 for NANP destinations)
  standard-eur.csv   home DE, EUR, 60/60 billing
  premium-gbp.csv    home GB, GBP, per-second billing (1/1), +15 %, connection fee

Prices are not random: every destination gets a tier (by ISO 3166 code, with a
default per ITU world zone, or by prefix for the global networks and services
that have no country), every tier has one list price in USD per minute, and a
plan turns that into its own currency with a fixed list-price exchange rate
and its markup. See docs/rate-tables.md.

Standard library only, no network, deterministic: running it twice gives
byte-identical files.

    python scripts/gen_rate_tables.py               # writes rate_tables/
    python scripts/gen_rate_tables.py --out DIR     # writes DIR/ instead
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from rater.core.rates import COLUMNS as RATE_COLUMNS

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = list(RATE_COLUMNS)  # rater/core/rates.py: the one column list

CALL_TYPES = ("conference_dialout", "international", "toll_free", "domestic")

# --------------------------------------------------------------------------
# Price tiers: list price in USD per minute (2026 wholesale cost + margin for
# a UCaaS provider).  Every destination maps to exactly one tier.
# --------------------------------------------------------------------------
TIERS: dict[str, str] = {
    # fixed-line / whole-country tiers
    "nanp": "0.0120",  # United States / Canada
    "t1": "0.0200",  # cheapest international fixed: big W. European and E. Asian markets
    "t2": "0.0300",  # other W. Europe, AU/NZ/JP, India, US territories, IL, MX, BR
    "t3": "0.0450",  # rest of Europe (zone 3/4 default), ZA, TR, AR, CO, PE
    "t4": "0.0900",  # Latin America / Asia / Middle East default, E. Europe fringe
    "t5": "0.1800",  # Caribbean (NANP default), Gulf, smaller or costlier markets
    "t6": "0.3500",  # Africa and Pacific default
    "t7": "0.6000",  # very remote or costly: small islands, fragile networks, Cuba
    "t8": "1.2000",  # extreme: Diego Garcia, Ascension, St Helena, North Korea ...
    # mobile sub-prefix tiers (mobile termination costs more)
    "m1": "0.0500",
    "m2": "0.0800",
    "m3": "0.1200",
    "m4": "0.1500",
    # global networks and services (country codes without a country)
    "freephone": "0.0600",  # +800 UIFN
    "net883": "2.5000",  # +883 international networks (mostly terrestrial/virtual)
    "premium_svc": "3.0000",  # +979 IPRS
    "sat_thuraya": "5.0000",
    "sat_globalstar": "5.5000",
    "net882": "6.0000",  # +882 international networks (largely satellite/maritime)
    "sat_inmarsat": "7.0000",
    "sat_iridium": "8.5000",
    "sat_gmss": "9.0000",  # +881 other GMSS
    # toll-free (inbound, paid by the tenant)
    "tf_nanp": "0.0200",
    "tf_low": "0.0350",
    "tf_std": "0.0450",
    "tf_high": "0.0600",
}

# Default tier per ITU world zone (first digit of the country code).
ZONE_DEFAULT_TIER: dict[str, str] = {
    "1": "t5",  # NANP members outside US/CA: Caribbean
    "2": "t6",  # Africa
    "3": "t3",  # Europe
    "4": "t3",  # Europe
    "5": "t4",  # Latin America
    "6": "t6",  # South-East Asia and Oceania
    "7": "t4",  # Russia / Kazakhstan
    "8": "t4",  # East Asia and global services
    "9": "t4",  # Middle East, West / South / Central Asia
}

# Exceptions to the zone default, by ISO 3166-1 alpha-2 code.
COUNTRY_TIER: dict[str, str] = {
    "US": "nanp",
    # t1
    **dict.fromkeys(
        ["GB", "DE", "FR", "NL", "BE", "IE", "SE", "NO", "DK", "ES", "IT", "LU", "CN", "HK", "SG", "KR", "TW"],
        "t1",
    ),
    # t2
    **dict.fromkeys(
        [
            "AT",
            "CH",
            "PT",
            "FI",
            "GR",
            "PL",
            "CZ",
            "IS",
            "VA",
            "AX",
            "SJ",
            "AU",
            "NZ",
            "JP",
            "IL",
            "IN",
            "MX",
            "BR",
            "CL",
            "MY",
            "TH",
            "PR",
            "VI",
            "GU",
            "MP",
            "AS",
        ],
        "t2",
    ),
    # t3
    **dict.fromkeys(
        ["ZA", "TR", "AR", "CO", "PE", "MO", "GG", "JE", "IM"],
        "t3",
    ),
    # t4
    **dict.fromkeys(
        [
            "RU",
            "KZ",
            "UA",
            "RS",
            "BA",
            "MK",
            "ME",
            "AL",
            "MD",
            "AM",
            "GE",
            "AZ",
            "EG",
            "MA",
            "DZ",
            "TN",
            "KE",
            "NG",
            "GH",
            "RE",
            "MU",
            "VN",
            "ID",
            "PH",
            "PK",
            "BD",
            "LK",
            "NP",
            "KH",
            "MN",
            "BN",
            "UZ",
            "KW",
            "BH",
            "QA",
            "OM",
            "JO",
            "SA",
            "PS",
            "DO",
            "PA",
            "CR",
            "GT",
            "SV",
            "EC",
            "UY",
            "PY",
        ],
        "t4",
    ),
    # t5
    **dict.fromkeys(
        [
            "AE",
            "IQ",
            "IR",
            "LB",
            "SY",
            "YE",
            "AF",
            "MM",
            "LA",
            "BT",
            "TJ",
            "KG",
            "LI",
            "SM",
            "MC",
            "AD",
            "GI",
            "BY",
            "XK",
            "FO",
            "HT",
            "BZ",
            "CW",
            "AW",
            "BQ",
            "YT",
            "NC",
            "PF",
            "FJ",
        ],
        "t5",
    ),
    # t7
    **dict.fromkeys(
        [
            "CU",
            "ER",
            "SO",
            "GW",
            "ST",
            "CF",
            "TD",
            "SS",
            "SL",
            "LR",
            "BI",
            "DJ",
            "KM",
            "MR",
            "GQ",
            "FK",
            "PM",
            "GL",
            "TV",
            "NU",
            "NR",
            "KI",
            "SB",
            "VU",
            "WF",
            "CK",
            "MH",
            "FM",
            "PW",
            "TL",
            "NF",
            "MV",
            "TM",
        ],
        "t7",
    ),
    # t8
    **dict.fromkeys(["IO", "AC", "SH", "TA", "KP", "TK"], "t8"),
}

# Tiers of the country codes that belong to no country (global services and
# international networks), by prefix.  A sub-prefix (8816) wins over its
# parent (881) because the longest listed prefix is used.
PREFIX_TIER: dict[str, str] = {
    "800": "freephone",
    "808": "t5",
    "870": "sat_inmarsat",
    "878": "t8",
    "881": "sat_gmss",
    "8816": "sat_iridium",
    "8817": "sat_iridium",
    "8818": "sat_globalstar",
    "8819": "sat_globalstar",
    "882": "net882",
    "88216": "sat_thuraya",
    "883": "net883",
    "888": "t8",
    "979": "premium_svc",
    "991": "t8",
}

# Mobile sub-prefixes in markets where mobile termination costs more than
# fixed.  Longest prefix wins, so "447" beats the country row "44".
# prefix -> (iso2, tier)
MOBILE_PREFIXES: dict[str, tuple[str, str]] = {
    "447": ("GB", "m1"),
    "4915": ("DE", "m2"),
    "4916": ("DE", "m2"),
    "4917": ("DE", "m2"),
    "336": ("FR", "m1"),
    "337": ("FR", "m1"),
    "393": ("IT", "m1"),
    "346": ("ES", "m1"),
    "347": ("ES", "m1"),
    "316": ("NL", "m2"),
    "3246": ("BE", "m2"),
    "3247": ("BE", "m2"),
    "3248": ("BE", "m2"),
    "3249": ("BE", "m2"),
    "4175": ("CH", "m4"),
    "4176": ("CH", "m4"),
    "4177": ("CH", "m4"),
    "4178": ("CH", "m4"),
    "4179": ("CH", "m4"),
    # Austria: only the mobile network codes, 06xx also holds Salzburg/Upper Austria fixed lines
    "43650": ("AT", "m2"),
    "43660": ("AT", "m2"),
    "43664": ("AT", "m2"),
    "43676": ("AT", "m2"),
    "43677": ("AT", "m2"),
    "43678": ("AT", "m2"),
    "43680": ("AT", "m2"),
    "43681": ("AT", "m2"),
    "43688": ("AT", "m2"),
    "43699": ("AT", "m2"),
    "4670": ("SE", "m1"),
    "4672": ("SE", "m1"),
    "4673": ("SE", "m1"),
    "4676": ("SE", "m1"),
    "4679": ("SE", "m1"),
    "474": ("NO", "m1"),
    "479": ("NO", "m1"),
    "35383": ("IE", "m1"),
    "35385": ("IE", "m1"),
    "35386": ("IE", "m1"),
    "35387": ("IE", "m1"),
    "35389": ("IE", "m1"),
    "35191": ("PT", "m1"),
    "35192": ("PT", "m1"),
    "35193": ("PT", "m1"),
    "35196": ("PT", "m1"),
    "3069": ("GR", "m1"),
    "614": ("AU", "m1"),
    "8170": ("JP", "m3"),
    "8180": ("JP", "m3"),
    "8190": ("JP", "m3"),
    "8210": ("KR", "t2"),
    "905": ("TR", "m3"),
    "549": ("AR", "m3"),
    "9725": ("IL", "m1"),
}

# Toll-free (inbound) tier by ISO code; everything else is "tf_std".
TOLL_FREE_TIER: dict[str, str] = {
    "US": "tf_nanp",
    **dict.fromkeys(
        ["GB", "DE", "FR", "NL", "BE", "IE", "IT", "ES", "AT", "CH", "SE", "DK", "NO", "FI", "PT", "LU"],
        "tf_low",
    ),
    **dict.fromkeys(
        ["BR", "MX", "AR", "CL", "PE", "IN", "CN", "ID", "PH", "TH", "VN", "EG", "SA", "AE", ""],
        "tf_high",
    ),
}

CONFERENCE_FACTOR = Decimal("1.10")  # conference dial-out over international
MONEY_QUANTUM = Decimal("0.0001")  # 4 fractional digits (the contract allows 6)
MIN_RATE = MONEY_QUANTUM


@dataclass(frozen=True)
class RateChange:
    """A dated price change: a second row for call_type+prefix from `effective_from`."""

    call_types: tuple[str, ...]
    prefix: str
    effective_from: str
    factor: str  # new price = current price * factor


@dataclass(frozen=True)
class Plan:
    plan_id: str
    currency: str
    home_iso2: str
    fx_from_usd: str  # fixed list-price exchange rate, not a market rate
    markup: str  # multiplier over the standard list price
    connection_fee: str  # for international and conference_dialout rows
    domestic_connection_fee: str
    per_second: bool  # 1/1 billing on every row
    nanp_six_second: bool  # 6/6 billing for destinations in +1
    # domestic rows in plan currency: (prefix, destination, rate)
    domestic: tuple[tuple[str, str, str], ...]
    changes: tuple[RateChange, ...] = field(default_factory=tuple)


BOTH = ("international", "conference_dialout")

PLANS: tuple[Plan, ...] = (
    Plan(
        plan_id="standard-usd",
        currency="USD",
        home_iso2="US",
        fx_from_usd="1",
        markup="1",
        connection_fee="0",
        domestic_connection_fee="0",
        per_second=False,
        nanp_six_second=True,
        domestic=(("1", "United States / Canada", "0.0100"),),
        changes=(
            RateChange(BOTH, "447", "2027-01-01", "1.20"),
            RateChange(BOTH, "91", "2027-01-01", "0.90"),
            RateChange(("domestic",), "1", "2027-01-01", "0.90"),
        ),
    ),
    Plan(
        plan_id="standard-eur",
        currency="EUR",
        home_iso2="DE",
        fx_from_usd="0.92",
        markup="1",
        connection_fee="0",
        domestic_connection_fee="0",
        per_second=False,
        nanp_six_second=False,
        domestic=(
            ("49", "Germany", "0.0100"),
            ("4915", "Germany - Mobile", "0.0300"),
            ("4916", "Germany - Mobile", "0.0300"),
            ("4917", "Germany - Mobile", "0.0300"),
        ),
        changes=(
            RateChange(BOTH, "1", "2027-01-01", "0.90"),
            RateChange(BOTH, "447", "2027-01-01", "1.20"),
        ),
    ),
    Plan(
        plan_id="premium-gbp",
        currency="GBP",
        home_iso2="GB",
        fx_from_usd="0.79",
        markup="1.15",
        connection_fee="0.0150",
        domestic_connection_fee="0.0100",
        per_second=True,
        nanp_six_second=False,
        domestic=(
            ("44", "United Kingdom", "0.0120"),
            ("447", "United Kingdom - Mobile", "0.0350"),
        ),
        changes=(
            RateChange(BOTH, "4917", "2027-01-01T00:00:00Z", "1.15"),
            RateChange(BOTH, "91", "2027-01-01T00:00:00Z", "0.90"),
            RateChange(("domestic",), "447", "2027-01-01T00:00:00Z", "0.80"),
        ),
    ),
)

_PREFIX_RE = re.compile(r"^[0-9]{1,15}$")
_MONEY_RE = re.compile(r"^[0-9]+(\.[0-9]{1,6})?$")


class DataError(Exception):
    pass


def money(value: Decimal) -> str:
    q = value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)
    if value > 0 and q < MIN_RATE:
        q = MIN_RATE
    s = format(q, "f")
    if not _MONEY_RE.match(s):
        raise DataError(f"bad money value {s!r}")
    return s


def read_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing}")
        rows = [{k: (v or "").strip() for k, v in r.items()} for r in reader]
    seen: set[str] = set()
    for i, r in enumerate(rows, start=2):
        p = r["prefix"]
        if not _PREFIX_RE.match(p):
            raise DataError(f"{path}:{i}: bad prefix {p!r}")
        if p in seen:
            raise DataError(f"{path}:{i}: duplicate prefix {p}")
        seen.add(p)
    return rows


def country_tier(row: dict[str, str]) -> str:
    prefix, iso2 = row["prefix"], row["iso2"]
    if prefix in PREFIX_TIER:
        return PREFIX_TIER[prefix]
    if iso2 in COUNTRY_TIER:
        return COUNTRY_TIER[iso2]
    if not iso2:
        raise DataError(f"prefix {prefix} has no country and no entry in PREFIX_TIER")
    return ZONE_DEFAULT_TIER[row["zone"]]


def increments(plan: Plan, prefix: str) -> tuple[str, str]:
    if plan.per_second:
        return ("1", "1")
    if plan.nanp_six_second and prefix.startswith("1"):
        return ("6", "6")
    return ("60", "60")


def build_plan(plan: Plan, countries: list[dict[str, str]], toll_free: list[dict[str, str]]):
    fx = Decimal(plan.fx_from_usd) * Decimal(plan.markup)
    rows: dict[tuple[str, str, str], dict[str, str]] = {}

    def add(call_type: str, prefix: str, destination: str, rate: str, fee: str, eff: str = "") -> None:
        key = (call_type, prefix, eff)
        if key in rows:
            raise DataError(f"{plan.plan_id}: duplicate row {key}")
        first, nxt = increments(plan, prefix)
        rows[key] = {
            "call_type": call_type,
            "prefix": prefix,
            "destination": destination,
            "currency": plan.currency,
            "rate_per_minute": rate,
            "connection_fee": fee,
            "first_increment": first,
            "next_increment": nxt,
            "effective_from": eff,
        }

    def price(tier: str) -> Decimal:
        return Decimal(TIERS[tier]) * fx

    fee = money(Decimal(plan.connection_fee))
    names = {r["iso2"]: r["country"] for r in countries if r["iso2"]}

    # international + conference dial-out: every country code, then mobile splits
    destinations: list[tuple[str, str, str]] = [(r["prefix"], r["country"], country_tier(r)) for r in countries]
    for prefix, (iso2, tier) in MOBILE_PREFIXES.items():
        destinations.append((prefix, f"{names[iso2]} - Mobile", tier))
    for prefix, destination, tier in destinations:
        base = price(tier)
        add("international", prefix, destination, money(base), fee)
        add("conference_dialout", prefix, destination, money(base * CONFERENCE_FACTOR), fee)

    # toll-free: the tenant pays for calls reaching its toll-free numbers
    zero = money(Decimal(0))
    for r in toll_free:
        tier = TOLL_FREE_TIER.get(r["iso2"], "tf_std")
        add("toll_free", r["prefix"], f"{r['country']} - Toll-free", money(price(tier)), zero)

    # domestic rows of the home country, already in plan currency
    dom_fee = money(Decimal(plan.domestic_connection_fee))
    for prefix, destination, rate in plan.domestic:
        add("domestic", prefix, destination, money(Decimal(rate)), dom_fee)

    # dated price changes
    for ch in plan.changes:
        for ct in ch.call_types:
            cur = rows.get((ct, ch.prefix, ""))
            if cur is None:
                raise DataError(f"{plan.plan_id}: change for missing row {ct} {ch.prefix}")
            new_rate = money(Decimal(cur["rate_per_minute"]) * Decimal(ch.factor))
            add(ct, ch.prefix, cur["destination"], new_rate, cur["connection_fee"], ch.effective_from)

    return [rows[k] for k in sorted(rows)]


def render(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="directory with the prefix data (default: data/)")
    ap.add_argument("--out", type=Path, default=ROOT / "rate_tables", help="output directory (default: rate_tables/)")
    args = ap.parse_args(argv)

    try:
        countries = read_csv(args.data / "itu_country_codes.csv", ["prefix", "country", "iso2", "zone"])
        toll_free = read_csv(args.data / "toll_free.csv", ["prefix", "country", "iso2"])
        for prefix in MOBILE_PREFIXES:
            if any(r["prefix"] == prefix for r in countries):
                raise DataError(f"mobile prefix {prefix} is also a country code row")
        outputs = {p.plan_id: render(build_plan(p, countries, toll_free)) for p in PLANS}
    except DataError as e:
        print(f"gen_rate_tables: {e}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    for plan_id, data in outputs.items():
        path = args.out / f"{plan_id}.csv"
        path.write_bytes(data)
        nrows = data.count(b"\n") - 1
        print(f"{path}: {nrows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
