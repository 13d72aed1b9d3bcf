"""Synthetic telephony traffic: tenants, their setup commands and a stream of CDRs.

Deterministic for a seed and a clock, with no Kafka and no I/O: ``rater simulate``, the
demo, the benchmarks and the tests all draw their records from here.

* :func:`tenants` makes ``n`` tenant profiles: a plan (``standard-usd``,
  ``standard-eur``, ``premium-gbp`` mixed), a low-balance threshold, included domestic
  minutes, initial funds, and for about half of them auto-recharge with a card (a few of
  those cards expired). Traffic per tenant is skewed (a few big tenants, a long tail).
* :func:`setup_commands` turns the profiles into the commands a billing portal sends:
  ``configure_account``, an initial ``add_funds``, then (for auto-recharge tenants)
  a second ``configure_account`` switching auto-recharge on, the order of the worked
  example.
* :func:`cdr_stream` yields CDRs (dicts) with a call mix (45 % conference dial-out,
  25 % international, 15 % toll-free, 15 % domestic by default) to numbers built from
  the tenant's own plan prefixes (popular countries weighted up, home country for
  most dial-outs), log-normal durations (median about 3 min for dial-outs, a few
  unanswered 0-second calls, capped at 4 h), occasional manual ``add_funds``, and on
  request a share of bad records: invalid JSON (``bytes``), a CDR missing a field, a
  CDR of an unknown tenant, a call to a number no plan prices (``+99912345``).
* :func:`records` is setup then the stream, and :func:`payment_result` the answer of
  a payment-service stand-in to a recharge request.

A record is a dict (JSON-able, money as decimal strings) or, for invalid JSON, the raw
``bytes``. Commands have ``command``; CDRs have ``cdr_id``. Destination tables are
built once per plan, so a record costs a few random draws and one dict.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Callable, Iterator

from rater.core.rates import RatePlan, RateTables
from rater.core.timeutil import SECOND, format_time, to_datetime

PLAN_MIX = (("standard-usd", 0.5), ("standard-eur", 0.3), ("premium-gbp", 0.2))
CALL_MIX = (
    ("conference_dialout", 0.45),
    ("international", 0.25),
    ("toll_free", 0.15),
    ("domestic", 0.15),
)
# call type -> (median seconds, sigma of the log): log-normal call lengths.
DURATIONS = {
    "conference_dialout": (180.0, 1.1),
    "international": (240.0, 1.0),
    "toll_free": (300.0, 0.9),
    "domestic": (120.0, 1.0),
}
MAX_CALL_SECONDS = 4 * 3600
ZERO_SECOND_SHARE = 0.04  # unanswered / failed calls, still reported
HOME_DIALOUT_SHARE = 0.45  # dial-outs to the tenant's own country
BAD_KINDS = ("invalid_json", "invalid_record", "unknown_tenant", "no_rate")
NO_RATE_NUMBER = "+99912345"  # +999 is reserved by the ITU: no plan prices it

# Relative call volume to a destination (by country name as the rate tables spell it);
# every other country gets _TAIL, non-geographic services (satellite, ...) _RARE.
POPULAR = {
    "United States / Canada": 30.0,
    "United Kingdom": 12.0,
    "Germany": 10.0,
    "France": 7.0,
    "India": 8.0,
    "China": 5.0,
    "Japan": 4.0,
    "Australia": 4.0,
    "Spain": 4.0,
    "Italy": 4.0,
    "Netherlands": 4.0,
    "Mexico": 4.0,
    "Brazil": 4.0,
    "Ireland": 3.0,
    "Switzerland": 3.0,
    "Singapore": 3.0,
    "Philippines": 3.0,
    "Canada": 3.0,
    "Sweden": 2.0,
    "Poland": 2.0,
    "United Arab Emirates": 2.0,
    "South Africa": 2.0,
    "Israel": 2.0,
    "Belgium": 2.0,
    "Austria": 2.0,
    "Hong Kong": 2.0,
    "South Korea": 2.0,
    "Denmark": 1.5,
    "Norway": 1.5,
    "Portugal": 1.5,
    "Turkey": 1.5,
    "Nigeria": 1.0,
    "Egypt": 1.0,
    "Argentina": 1.0,
    "Colombia": 1.0,
    "Vietnam": 1.0,
    "Pakistan": 1.0,
    "Indonesia": 1.0,
    "Finland": 1.0,
}
_TAIL = 0.08
_RARE = 0.002
_NON_GEOGRAPHIC = ("International", "Inmarsat", "Iridium", "Thuraya", "Global", "Telecommunications", "Universal", "Diego Garcia")

TENANT_NAMES = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "wonka",
    "stark",
    "wayne",
    "tyrell",
    "cyberdyne",
    "soylent",
    "massive",
    "oscorp",
    "aperture",
    "blackmesa",
    "gringotts",
    "monarch",
    "nakatomi",
    "octan",
    "pied-piper",
    "prestige",
    "sirius",
    "virtucon",
    "zorg",
)


# ---------------------------------------------------------------------------- destinations


@dataclass(frozen=True, slots=True)
class _Destinations:
    """One plan's prefixes of one call type, with cumulative weights for bisect."""

    prefixes: tuple[str, ...]
    cum: tuple[float, ...]
    lengths: tuple[int, ...]  # total digits of a number under each prefix
    avoid: tuple[tuple[str, ...], ...]  # longer prefixes of the same type under each prefix

    def pick(self, rng: random.Random) -> int:
        return bisect.bisect_right(self.cum, rng.random() * self.cum[-1])


def _country(destination: str) -> str:
    return destination.split(" - ", 1)[0].strip()


def _number_length(prefix: str) -> int:
    if prefix[0] == "1":
        return 11  # NANP: +1 NPA NXX XXXX
    return min(15, max(12, len(prefix) + 6))


def _build(plan: RatePlan, call_type: str, at: int, home: set[str], *, home_factor: float, exclude_home: bool) -> _Destinations | None:
    by_prefix = plan.index.get(call_type) or {}
    rows: list[tuple[str, str]] = []  # prefix, destination
    for prefix, (starts, rates) in by_prefix.items():
        if starts[0] > at:
            continue  # not priced yet at the start of the stream
        country = _country(rates[0].destination) or prefix
        if exclude_home and country in home:
            continue
        rows.append((prefix, rates[0].destination or prefix))
    if not rows:
        return None
    rows.sort()
    # A country's weight is shared by its rows: 60 % to the plain ranges, 40 % to the
    # named sub-ranges (mobile, ...) when there are both.
    groups: dict[str, list[tuple[str, str]]] = {}
    for prefix, dest in rows:
        groups.setdefault(_country(dest), []).append((prefix, dest))
    weights: dict[str, float] = {}
    for country, members in groups.items():
        if any(country.startswith(w) for w in _NON_GEOGRAPHIC):
            w = _RARE
        else:
            w = POPULAR.get(country, _TAIL)
        if country in home:
            w *= home_factor
        plain = [p for p, d in members if d == country]
        sub = [p for p, d in members if d != country]
        if plain and sub:
            shares = [(plain, 0.6), (sub, 0.4)]
        else:
            shares = [(plain or sub, 1.0)]
        for group, share in shares:
            for p in group:
                weights[p] = w * share / len(group)
    prefixes = tuple(p for p, _ in rows)
    all_prefixes = tuple(by_prefix)
    avoid = tuple(tuple(q for q in all_prefixes if len(q) > len(p) and q.startswith(p)) for p in prefixes)
    return _Destinations(
        prefixes=prefixes,
        cum=tuple(accumulate(weights[p] for p in prefixes)),
        lengths=tuple(_number_length(p) for p in prefixes),
        avoid=avoid,
    )


class _PlanTraffic:
    """Everything needed to draw calls for one plan, built once."""

    def __init__(self, plan: RatePlan, at: int):
        self.plan_id = plan.plan_id
        self.currency = plan.currency
        home = {_country(r[0].destination) for _p, (_s, r) in (plan.index.get("domestic") or {}).items()}
        self.home = home
        self.home_prefix = min((p for p in (plan.index.get("domestic") or {})), key=len, default="1")
        self.dest: dict[str, _Destinations] = {}
        # Dial-outs: the home country gets HOME_DIALOUT_SHARE of the volume.
        dialout = _build(plan, "conference_dialout", at, home, home_factor=1.0, exclude_home=False)
        if dialout is not None:
            home_w = sum(
                dialout.cum[i] - (dialout.cum[i - 1] if i else 0.0) for i, p in enumerate(dialout.prefixes) if self._is_home(plan, p, home)
            )
            rest = dialout.cum[-1] - home_w
            factor = (HOME_DIALOUT_SHARE * rest / (1 - HOME_DIALOUT_SHARE) / home_w) if home_w and rest else 1.0
            dialout = _build(plan, "conference_dialout", at, home, home_factor=factor, exclude_home=False)
            self.dest["conference_dialout"] = dialout  # type: ignore[assignment]
        intl = _build(plan, "international", at, home, home_factor=1.0, exclude_home=True)
        if intl is not None:
            self.dest["international"] = intl
        toll = _build(plan, "toll_free", at, home, home_factor=8.0, exclude_home=False)
        if toll is not None:
            self.dest["toll_free"] = toll
        dom = _build(plan, "domestic", at, home, home_factor=1.0, exclude_home=False)
        if dom is not None:
            self.dest["domestic"] = dom

    @staticmethod
    def _is_home(plan: RatePlan, prefix: str, home: set[str]) -> bool:
        _starts, rates = plan.index["conference_dialout"][prefix]
        return _country(rates[0].destination) in home

    def number(self, call_type: str, rng: random.Random) -> str:
        d = self.dest[call_type]
        i = d.pick(rng)
        return _digits(d.prefixes[i], d.lengths[i], d.avoid[i], rng)


def _digits(prefix: str, length: int, avoid: tuple[str, ...], rng: random.Random) -> str:
    k = length - len(prefix)
    for _ in range(4):
        if prefix == "1":  # NANP area codes start 2-9
            digits = f"1{2 + rng.randrange(8)}{rng.randrange(10 ** (k - 1)):0{k - 1}d}"
        else:
            digits = f"{prefix}{rng.randrange(10**k):0{k}d}" if k > 0 else prefix
        if not avoid or not digits.startswith(avoid):
            break
    return "+" + digits


# ---------------------------------------------------------------------------- tenants


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _month(micro: int, delta_months: int) -> str:
    dt = to_datetime(micro)
    total = dt.year * 12 + dt.month - 1 + delta_months
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


def now_micros() -> int:
    return time.time_ns() // 1000


def tenant_id_of(i: int, n: int) -> str:
    """The id of the ``i``-th of ``n`` simulated tenants (``acme-0000``); no seed involved."""
    width = max(4, len(str(n)))
    return f"{TENANT_NAMES[i % len(TENANT_NAMES)]}-{i:0{width}d}"


def tenants(
    n: int,
    seed: int,
    tables: RateTables,
    *,
    at: int | None = None,
    funds_scale: float = 1.0,
    plans: tuple[tuple[str, float], ...] = PLAN_MIX,
) -> list[dict[str, Any]]:
    """``n`` tenant profiles, the same for the same seed (and ``at``, which only dates
    the cards). ``funds_scale`` multiplies the initial funds (small values make tenants
    run low at once: tests, demos). Plans missing from ``tables`` are left out."""
    at = now_micros() if at is None else at
    rng = random.Random(f"tenants:{seed}")
    mix = [(p, w) for p, w in plans if p in tables.plans]
    if not mix:
        mix = [(p, 1.0) for p in sorted(tables.plans)]
    plan_ids = [p for p, _ in mix]
    plan_cum = list(accumulate(w for _, w in mix))
    # Zipf-like activity: rank r gets 1 / r^0.8, ranks shuffled over the tenants.
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    out = []
    for i in range(n):
        tenant_id = tenant_id_of(i, n)
        plan = plan_ids[bisect.bisect_right(plan_cum, rng.random() * plan_cum[-1])]
        funds = int(min(2000.0, max(10.0, rng.lognormvariate(math.log(80.0), 0.9))) * 100 * funds_scale)
        funds = max(funds, 1)
        threshold = 0 if rng.random() < 0.15 else rng.choice((5, 10, 20, 25, 50)) * 100
        minutes = rng.choice((0, 0, 100, 500, 1000))
        auto = None
        if rng.random() < 0.5:
            expired = rng.random() < 0.12
            expires = _month(at, -rng.randint(1, 18)) if expired else _month(at, rng.randint(2, 48))
            auto = {
                "enabled": True,
                "threshold": _money(rng.choice((5, 10, 20, 25)) * 100),
                "amount": _money(rng.choice((25, 50, 100, 200, 500)) * 100),
                "payment_method": {"type": "card", "expires": expires, "last4": f"{rng.randrange(10000):04d}"},
            }
        out.append(
            {
                "tenant_id": tenant_id,
                "rate_plan": plan,
                "currency": tables.plans[plan].currency,
                "low_balance_threshold": _money(threshold),
                "included_domestic_minutes": minutes,
                "initial_funds": _money(funds),
                "auto_recharge": auto,
                "activity": 1.0 / ranks[i] ** 0.8,
            }
        )
    return out


def setup_commands(profiles: list[dict[str, Any]], at: int, run_id: str = "setup") -> list[dict[str, Any]]:
    """The billing portal's commands for ``profiles``, all at ``at``: per tenant a
    ``configure_account``, an ``add_funds`` (id ``<run_id>-<tenant>-funds``), and for
    auto-recharge tenants a ``configure_account`` with ``auto_recharge``."""
    when = format_time(at - at % SECOND)
    out = []
    for p in profiles:
        t = p["tenant_id"]
        out.append(
            {
                "command_id": f"{run_id}-{t}-configure",
                "tenant_id": t,
                "command": "configure_account",
                "occurred_at": when,
                "rate_plan": p["rate_plan"],
                "low_balance_threshold": p["low_balance_threshold"],
                "included_domestic_minutes": p["included_domestic_minutes"],
            }
        )
        out.append(
            {
                "command_id": funds_command_id(run_id, t),
                "tenant_id": t,
                "command": "add_funds",
                "occurred_at": when,
                "amount": p["initial_funds"],
                "reference": f"INV-{run_id}-{t}",
            }
        )
        if p["auto_recharge"] is not None:
            out.append(
                {
                    "command_id": f"{run_id}-{t}-autorecharge",
                    "tenant_id": t,
                    "command": "configure_account",
                    "occurred_at": when,
                    "auto_recharge": p["auto_recharge"],
                }
            )
    return out


def funds_command_id(run_id: str, tenant_id: str) -> str:
    return f"{run_id}-{tenant_id}-funds"


# ---------------------------------------------------------------------------- the stream


def synthetic_clock(start: int, step: int = 5_000) -> Callable[[], int]:
    """A clock for reproducible streams: ``start``, then ``step`` µs later per call."""
    state = [start - step]

    def clock() -> int:
        state[0] += step
        return state[0]

    return clock


class Traffic:
    """Destination tables for ``profiles``, built once; :meth:`stream` draws from them."""

    def __init__(
        self,
        profiles: list[dict[str, Any]],
        tables: RateTables,
        *,
        at: int | None = None,
        call_mix: tuple[tuple[str, float], ...] = CALL_MIX,
    ):
        at = now_micros() if at is None else at
        self.profiles = profiles
        self.plans = {pid: _PlanTraffic(tables.plans[pid], at) for pid in {p["rate_plan"] for p in profiles}}
        self.tenant_ids = [p["tenant_id"] for p in profiles]
        self.tenant_plans = [self.plans[p["rate_plan"]] for p in profiles]
        self.tenant_cum = list(accumulate(p["activity"] for p in profiles))
        self.call_types = [c for c, _ in call_mix]
        self.call_cum = list(accumulate(w for _, w in call_mix))
        self.bridges = []
        rng = random.Random("bridges")
        for plan in self.tenant_plans:
            self.bridges.append(_digits(plan.home_prefix, _number_length(plan.home_prefix), (), rng))
        self.bad: Counter = Counter()  # bad records yielded so far, by the reject they should get
        self.duration_mu = {c: math.log(m) for c, (m, _s) in DURATIONS.items()}
        self.duration_sigma = {c: s for c, (_m, s) in DURATIONS.items()}

    def stream(
        self,
        seed: int,
        clock: Callable[[], int],
        *,
        run_id: str | None = None,
        bad_share: float = 0.0,
        topup_share: float = 0.002,
        count: int | None = None,
    ) -> Iterator[dict[str, Any] | bytes]:
        rng = random.Random(f"stream:{seed}")
        run = run_id if run_id is not None else f"r{seed}"
        rand = rng.random
        randrange = rng.randrange
        lognorm = rng.lognormvariate
        ids, plans, bridges = self.tenant_ids, self.tenant_plans, self.bridges
        tcum, ttotal = self.tenant_cum, self.tenant_cum[-1]
        ctypes, ccum, ctotal = self.call_types, self.call_cum, self.call_cum[-1]
        mu, sigma = self.duration_mu, self.duration_sigma
        bisect_right = bisect.bisect_right
        last_second = None
        when = ""
        seq = 0
        while count is None or seq < count:
            seq += 1
            now = clock()
            second = now // SECOND
            if second != last_second:
                last_second = second
                when = format_time(second * SECOND)
            i = bisect_right(tcum, rand() * ttotal)
            tenant = ids[i]
            r = rand()
            if r < bad_share:
                yield self._bad(rng, run, seq, tenant, plans[i], when)
                continue
            if r < bad_share + topup_share:
                yield {
                    "command_id": f"{run}-topup-{seq}",
                    "tenant_id": tenant,
                    "command": "add_funds",
                    "occurred_at": when,
                    "amount": _money(rng.choice((20, 50, 100, 250, 500)) * 100),
                    "reference": f"INV-{run}-{seq}",
                }
                continue
            plan = plans[i]
            call_type = ctypes[bisect_right(ccum, rand() * ctotal)]
            if call_type not in plan.dest:
                call_type = "conference_dialout"
            if rand() < ZERO_SECOND_SHARE:
                duration = 0
            else:
                duration = min(MAX_CALL_SECONDS, int(lognorm(mu[call_type], sigma[call_type])) + 1)
            cdr = {
                "cdr_id": f"{run}-{seq}",
                "tenant_id": tenant,
                "call_type": call_type,
                "to": plan.number(call_type, rng),
                "from": bridges[i],
                "started_at": when,
                "duration_seconds": duration,
            }
            if call_type == "conference_dialout":
                cdr["meeting_id"] = f"m-{randrange(1_000_000):06d}"
            yield cdr

    def _bad(self, rng: random.Random, run: str, seq: int, tenant: str, plan: _PlanTraffic, when: str) -> dict[str, Any] | bytes:
        kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
        self.bad[kind] += 1
        cdr: dict[str, Any] = {
            "cdr_id": f"{run}-{seq}",
            "tenant_id": tenant,
            "call_type": "international",
            "to": plan.number("international", rng) if "international" in plan.dest else NO_RATE_NUMBER,
            "started_at": when,
            "duration_seconds": 1 + rng.randrange(600),
        }
        if kind == "invalid_json":  # a record cut short in transit
            return f'{{"cdr_id":"{run}-{seq}","tenant_id":"{tenant}","call_type":"intern'.encode()
        if kind == "invalid_record":
            del cdr[rng.choice(("duration_seconds", "to", "started_at"))]
        elif kind == "unknown_tenant":
            cdr["tenant_id"] = f"ghost-{rng.randrange(1000):03d}"
        else:
            cdr["to"] = NO_RATE_NUMBER
        return cdr


def cdr_stream(
    profiles: list[dict[str, Any]],
    tables: RateTables,
    seed: int,
    *,
    clock: Callable[[], int] | None = None,
    start: int | None = None,
    run_id: str | None = None,
    bad_share: float = 0.0,
    topup_share: float = 0.002,
    count: int | None = None,
    call_mix: tuple[tuple[str, float], ...] = CALL_MIX,
) -> Iterator[dict[str, Any] | bytes]:
    """CDRs (and occasional manual ``add_funds``, and ``bad_share`` bad records) of
    ``profiles``; endless unless ``count``. ``clock()`` gives each record's time in UTC
    µs (``started_at``, ``occurred_at``, truncated to the second); without one a
    synthetic clock runs from ``start`` (default now) 5 ms per record."""
    if clock is None:
        clock = synthetic_clock(now_micros() if start is None else start)
    at = clock()
    traffic = Traffic(profiles, tables, at=at, call_mix=call_mix)
    first = [True]

    def again() -> int:  # the first record reuses the time read to build the tables
        if first[0]:
            first[0] = False
            return at
        return clock()

    return traffic.stream(seed, again, run_id=run_id, bad_share=bad_share, topup_share=topup_share, count=count)


def records(
    n_tenants: int,
    seed: int,
    tables: RateTables,
    count: int,
    *,
    start: int | None = None,
    step: int = 5_000,
    run_id: str | None = None,
    bad_share: float = 0.0,
    topup_share: float = 0.002,
    funds_scale: float = 1.0,
) -> Iterator[dict[str, Any] | bytes]:
    """Setup commands of ``n_tenants`` then ``count`` stream records, on a synthetic clock
    from ``start`` (default now) advancing ``step`` µs a record: a reproducible input."""
    start = now_micros() if start is None else start
    profiles = tenants(n_tenants, seed, tables, at=start, funds_scale=funds_scale)
    run = run_id if run_id is not None else f"r{seed}"
    yield from setup_commands(profiles, start, run)
    yield from cdr_stream(
        profiles,
        tables,
        seed,
        clock=synthetic_clock(start + SECOND, step),
        run_id=run,
        bad_share=bad_share,
        topup_share=topup_share,
        count=count,
    )


def payment_result(
    request: dict[str, Any], rng: random.Random, at: int, *, fail_share: float = 0.1, command_id: str | None = None
) -> dict[str, Any]:
    """The payment service's answer to a recharge request: ``succeeded``, or with
    ``fail_share`` ``failed`` (``card_declined`` or ``insufficient_funds``)."""
    tenant = request["tenant_id"]
    out = {
        "command_id": command_id or f"pay-{request['request_id']}",
        "tenant_id": tenant,
        "command": "payment_result",
        "occurred_at": format_time(at - at % SECOND),
        "request_id": request["request_id"],
        "status": "succeeded",
    }
    if rng.random() < fail_share:
        out["status"] = "failed"
        out["reason"] = rng.choice(("card_declined", "insufficient_funds"))
    return out
