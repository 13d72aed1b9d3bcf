"""Money as integer micro-units (SPEC 1).

On the wire money is a decimal string with at most 6 fractional digits, optionally
signed. A JSON number is accepted only where its shortest decimal form (``repr``) is
such a string, so ``0.1`` is 0.100000 and ``1e-07`` is refused. Inside the rater money
is an ``int`` count of micro-units; no float ever holds an amount.
"""

from __future__ import annotations

import re
from decimal import Decimal

MICRO = 1_000_000
# 10^12 currency units: far above any real balance, and small enough that every amount
# the rater writes fits a signed 64-bit integer of micro-units (consumers in Java/Go).
MAX_ABS_MICRO = 10**12 * MICRO

_MONEY_RE = re.compile(r"([+-]?)([0-9]{1,13})(?:\.([0-9]{1,6}))?")


class MoneyError(ValueError):
    """A value that is not money in the wire format; the message says why."""


def parse_money(value: object) -> int:
    """Parse a wire amount (string, int or float per SPEC 1) into micro-units."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        raise MoneyError("must be a decimal string, not a boolean")
    elif isinstance(value, int):
        if abs(value) > MAX_ABS_MICRO // MICRO:
            raise MoneyError("is out of range")
        return value * MICRO
    elif isinstance(value, float):
        return _parse_float(value)
    else:
        raise MoneyError("must be a decimal string")
    m = _MONEY_RE.fullmatch(text)
    if m is None:
        if "." in text and re.fullmatch(r"[+-]?[0-9]+\.[0-9]{7,}", text):
            raise MoneyError(f"has more than 6 fractional digits: {text[:40]!r}")
        if re.fullmatch(r"[+-]?[0-9]+(?:\.[0-9]{1,6})?", text):  # well formed, too many digits
            raise MoneyError("is out of range")
        raise MoneyError(f"is not a decimal amount: {text[:40]!r}")
    sign, whole, frac = m.groups()
    micro = int(whole) * MICRO + (int(frac.ljust(6, "0")) if frac else 0)
    if micro > MAX_ABS_MICRO:
        raise MoneyError("is out of range")
    return -micro if sign == "-" else micro


def _parse_float(value: float) -> int:
    """A JSON number, through its shortest decimal form (``repr``): 0.1 is 0.1, 5e-05 is
    0.00005. What JSON text it came from (``1E2`` or ``100``) is no longer known here."""
    if value != value or value in (float("inf"), float("-inf")):
        raise MoneyError("is not a finite number")
    d = Decimal(repr(value))
    if d.as_tuple().exponent < -6:  # type: ignore[operator]
        raise MoneyError(f"has more than 6 fractional digits: {repr(value)[:40]!r}")
    if abs(d) > MAX_ABS_MICRO // MICRO:
        raise MoneyError("is out of range")
    return int(d * MICRO)


def format_money(micro: int) -> str:
    """Format micro-units with exactly 6 fractional digits: ``-30000`` -> ``"-0.030000"``."""
    if micro < 0:
        return "-" + format_money(-micro)
    s = str(micro)  # string slicing: a third faster than divmod and an f-string
    if len(s) > 6:
        return s[:-6] + "." + s[-6:]
    return "0." + s.rjust(6, "0")
