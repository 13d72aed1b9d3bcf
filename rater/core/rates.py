"""Rate tables (SPEC 4): loading, validation, longest-prefix lookup and the charge.

A rate-table directory holds one CSV file per plan. Loading is all or nothing: every
problem in every file is collected with its ``file:line`` and reported together, and a
set with any problem is never used (the worker keeps the tables it had).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field

from rater.core.money import MoneyError, format_money, parse_money
from rater.core.timeutil import TimeError, parse_time_or_date

CALL_TYPES = ("conference_dialout", "international", "toll_free", "domestic")
COLUMNS = (
    "call_type",
    "prefix",
    "destination",
    "currency",
    "rate_per_minute",
    "connection_fee",
    "first_increment",
    "next_increment",
    "effective_from",
)
REQUIRED_COLUMNS = ("call_type", "prefix", "currency", "rate_per_minute")
ALWAYS = -(2**62)  # effective_from of a row without one: before any call

_PREFIX_RE = re.compile(r"[0-9]{1,15}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_PLAN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_INT_RE = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True, slots=True)
class Rate:
    plan: str
    call_type: str
    prefix: str
    destination: str
    currency: str
    rate_per_minute: int  # micro-units
    connection_fee: int  # micro-units
    first_increment: int  # seconds
    next_increment: int  # seconds
    effective_from: int  # UTC microseconds; ALWAYS when the row has none
    line: int
    rate_text: str = ""  # rate_per_minute and connection_fee as written in outputs
    fee_text: str = ""


@dataclass(slots=True)
class RatePlan:
    plan_id: str
    currency: str
    # call_type -> prefix -> (effective_from ascending, rates in the same order)
    index: dict[str, dict[str, tuple[list[int], list[Rate]]]] = field(default_factory=dict)
    rows: int = 0
    # call_type -> the prefix lengths it has rows for, longest first: a lookup tries only these
    lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def lookup(self, call_type: str, digits: str, started_at: int) -> Rate | None:
        """Longest prefix of ``digits`` with a row in force at ``started_at``, then the
        latest ``effective_from``. A prefix whose rows all start later falls through to
        a shorter prefix: those rows are not among the candidates at all."""
        by_prefix = self.index.get(call_type)
        if not by_prefix:
            return None
        size = len(digits)
        for n in self.lengths[call_type]:
            if n > size:
                continue
            entry = by_prefix.get(digits[:n])
            if entry is None:
                continue
            starts, rates = entry
            i = bisect.bisect_right(starts, started_at)
            if i:
                return rates[i - 1]
        return None


@dataclass(slots=True)
class RateTables:
    plans: dict[str, RatePlan]
    version: str  # content hash of the loaded files, shown in metrics and logs
    directory: str

    def get(self, plan_id: str) -> RatePlan | None:
        return self.plans.get(plan_id)


class RateTableError(ValueError):
    """A rate-table set that does not load; ``problems`` lists every ``file:line: why``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def billable_seconds(duration: int, first: int, nxt: int) -> int:
    """``0`` for no call, ``first`` up to it, then whole ``nxt`` increments (SPEC 4)."""
    if duration <= 0:
        return 0
    if duration <= first:
        return first
    return first + -(-(duration - first) // nxt) * nxt


def charge(rate: Rate, charged_seconds: int) -> int:
    """Connection fee plus ``rate * seconds / 60`` rounded half up once, in micro-units."""
    if charged_seconds <= 0:
        return 0
    return rate.connection_fee + (rate.rate_per_minute * charged_seconds + 30) // 60


MAX_DURATION = 86_400  # SPEC 3: the longest call a CDR may carry


def longest_affordable(rate: Rate, budget: int, limit: int = MAX_DURATION) -> int:
    """The longest duration ``d`` in ``0..limit`` whose ``charge(rate, billable_seconds(d))``
    is at most ``budget`` micro-units (SPEC 10, ``max_seconds``); 0 when no call is.

    Closed form over the monotone charge. With ``left = budget - connection_fee``, the
    rounded part ``(rate * c + 30) // 60 <= left`` holds exactly for
    ``c <= (60 * left + 29) // rate``; the billable seconds are ``F, F + X, F + 2X, ...``,
    so the answer is the largest of those at most that bound, and a call of that many
    seconds is billed exactly that many (any longer call is billed the next step up).
    A zero budget or less affords no charged second: a call costs the fee and at least
    one increment, except on a free rate."""
    if budget < 0:
        return 0
    left = budget - rate.connection_fee
    if left < 0:
        return 0  # the fee alone is more than the balance
    if rate.rate_per_minute == 0:
        return limit
    seconds = (60 * left + 29) // rate.rate_per_minute
    first, nxt = rate.first_increment, rate.next_increment
    if seconds < first:
        return 0
    return min(first + (seconds - first) // nxt * nxt, limit)


def _parse_plan(name: str, text: str, problems: list[str]) -> RatePlan | None:
    plan_id = name[: -len(".csv")]
    if not _PLAN_ID_RE.fullmatch(plan_id):
        problems.append(f"{name}: plan id {plan_id!r} must be 1 to 64 of A-Z a-z 0-9 . _ -")
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    plan = RatePlan(plan_id=plan_id, currency="")
    seen: dict[tuple[str, str, int], int] = {}
    rows: list[Rate] = []
    start_problems = len(problems)
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            header_line = line
            if not any(col in COLUMNS for col in header):  # a data row where the header belongs
                problems.append(
                    f"{name}:{line}: no header row: the first row must name the columns "
                    f"({', '.join(REQUIRED_COLUMNS)}, ...), not {','.join(row)[:60]!r}"
                )
                return None
            for col in header:
                if col not in COLUMNS:
                    problems.append(f"{name}:{line}: unknown column {col!r}")
            for col in REQUIRED_COLUMNS:
                if col not in header:
                    problems.append(f"{name}:{line}: missing required column {col!r}")
            dupes = {c for c in header if header.count(c) > 1}
            for col in sorted(dupes):
                problems.append(f"{name}:{line}: column {col!r} appears twice")
            if len(problems) > start_problems:
                return None
            continue
        if len(row) != len(header):
            problems.append(f"{name}:{line}: {len(row)} cells, the header has {len(header)}")
            continue
        cells = {col: cell.strip() for col, cell in zip(header, row)}
        rate = _parse_row(name, line, plan_id, cells, problems)
        if rate is None:
            continue
        if not plan.currency:
            plan.currency = rate.currency
        elif rate.currency != plan.currency:
            problems.append(f"{name}:{line}: currency {rate.currency} differs from {plan.currency} of the file's first row")
            continue
        key = (rate.call_type, rate.prefix, rate.effective_from)
        if key in seen:
            problems.append(f"{name}:{line}: duplicate of line {seen[key]} (same call_type, prefix and effective_from)")
            continue
        seen[key] = line
        rows.append(rate)
    if header is None:
        problems.append(f"{name}:1: empty file, no header row")
        return None
    if not rows and len(problems) == start_problems:
        problems.append(f"{name}:{header_line}: no rate rows")
    if len(problems) > start_problems:
        return None
    rows.sort(key=lambda r: (r.call_type, r.prefix, r.effective_from))
    for r in rows:
        starts, rates = plan.index.setdefault(r.call_type, {}).setdefault(r.prefix, ([], []))
        starts.append(r.effective_from)
        rates.append(r)
    plan.lengths = {ct: tuple(sorted({len(p) for p in by_prefix}, reverse=True)) for ct, by_prefix in plan.index.items()}
    plan.rows = len(rows)
    return plan


def _parse_row(name: str, line: int, plan_id: str, cells: dict[str, str], problems: list[str]) -> Rate | None:
    where = f"{name}:{line}"
    before = len(problems)
    call_type = cells.get("call_type", "")
    if call_type not in CALL_TYPES:
        problems.append(f"{where}: call_type {call_type!r} is not one of {', '.join(CALL_TYPES)}")
    prefix = cells.get("prefix", "")
    if not _PREFIX_RE.fullmatch(prefix):
        problems.append(f"{where}: prefix {prefix!r} must be 1 to 15 digits without '+'")
    currency = cells.get("currency", "")
    if not _CURRENCY_RE.fullmatch(currency):
        problems.append(f"{where}: currency {currency!r} is not an ISO 4217 code")

    def money(col: str, default: int | None) -> int:
        text = cells.get(col, "")
        if text == "" and default is not None:
            return default
        try:
            value = parse_money(text)
        except MoneyError as exc:
            problems.append(f"{where}: {col} {exc}")
            return 0
        if value < 0:
            problems.append(f"{where}: {col} must be >= 0, got {text!r}")
        return value

    def seconds(col: str) -> int:
        text = cells.get(col, "")
        if text == "":
            return 60
        if not _INT_RE.fullmatch(text) or int(text) < 1:
            problems.append(f"{where}: {col} must be a whole number of seconds >= 1, got {text!r}")
            return 60
        return int(text)

    rate_per_minute = money("rate_per_minute", None)
    connection_fee = money("connection_fee", 0)
    first = seconds("first_increment")
    nxt = seconds("next_increment")
    effective_text = cells.get("effective_from", "")
    effective_from = ALWAYS
    if effective_text:
        try:
            effective_from = parse_time_or_date(effective_text)
        except TimeError as exc:
            problems.append(f"{where}: effective_from {exc}")
    if len(problems) > before:
        return None
    return Rate(
        plan=plan_id,
        call_type=call_type,
        prefix=prefix,
        destination=cells.get("destination", ""),
        currency=currency,
        rate_per_minute=rate_per_minute,
        connection_fee=connection_fee,
        first_increment=first,
        next_increment=nxt,
        effective_from=effective_from,
        line=line,
        rate_text=format_money(rate_per_minute),
        fee_text=format_money(connection_fee),
    )


def check_rate_tables(directory: str) -> tuple[RateTables | None, list[str]]:
    """Load every ``*.csv`` of ``directory``; return the tables, or None and the problems."""
    problems: list[str] = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".csv"))
    except OSError as exc:
        return None, [f"{directory}: cannot read the directory ({exc.strerror})"]
    if not names:
        return None, [f"{directory}: no rate plans (*.csv files)"]
    digest = hashlib.sha256()
    plans: dict[str, RatePlan] = {}
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            problems.append(f"{name}: cannot read ({exc.strerror})")
            continue
        digest.update(name.encode() + b"\0" + data + b"\0")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            problems.append(f"{name}:{line}: not UTF-8 text (byte {column} of the line is 0x{data[exc.start]:02x})")
            continue
        plan = _parse_plan(name, text, problems)
        if plan is not None:
            plans[plan.plan_id] = plan
    if problems:
        return None, problems
    return RateTables(plans=plans, version=digest.hexdigest()[:12], directory=directory), []


def load_rate_tables(directory: str) -> RateTables:
    tables, problems = check_rate_tables(directory)
    if tables is None:
        raise RateTableError(problems)
    return tables
