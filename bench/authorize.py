"""Authorize with a destination, measured (issue 15, item 1): a closed-loop HTTP client.

    python -m bench.authorize --url http://127.0.0.1:PORT --tenants 300 --seed 1 --at MICROS \\
        --seconds 10 --concurrency 8

``--concurrency`` connections each ask ``GET /tenants/<id>/authorize?call_type=international&to=%2B<N>``
for a tenant of ``rater.sim.traffic.tenants(tenants, seed, at=MICROS)`` (round robin) and a
destination every shipped plan rates, the next question as soon as the answer is in,
for ``--seconds``. Prints one JSON line: answers, answers/s, latency p50/p99/max (ms,
from sending the request to reading the whole body), HTTP statuses, and how many
answers were allowed and carried a ``max_seconds``.

``bench.run`` (``make bench``, phase 7) runs it against a worker idle and against the
same worker while ``bench/pacer.py`` offers it CDRs at ``--authorize-load`` per second;
``--only authorize`` runs just that phase.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import Counter

import aiohttp
import orjson

from rater.core.rates import check_rate_tables
from rater.sim import traffic

from .procs import RATES_DIR

# International destinations that every shipped plan rates (UK mobile, Germany, France
# mobile, India, Brazil): each answer carries a rate and a max_seconds.
DESTINATIONS = ("%2B447700900123", "%2B4930123456", "%2B33612345678", "%2B919876543210", "%2B5511987654321")


def pct(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


async def ask(url: str, tenant_ids: list[str], seconds: float, concurrency: int) -> dict:
    paths = [f"/tenants/{t}/authorize?call_type=international&to={d}" for t, d in zip(tenant_ids, itertools.cycle(DESTINATIONS))]
    latencies: list[float] = []
    statuses: Counter = Counter()
    allowed = limited = 0
    deadline = time.monotonic() + seconds
    counter = itertools.count()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal allowed, limited
        while time.monotonic() < deadline:
            path = paths[next(counter) % len(paths)]
            t0 = time.perf_counter()
            async with session.get(url + path) as response:
                body = await response.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[response.status] += 1
            if response.status == 200:
                answer = orjson.loads(body)
                allowed += answer["allowed"] is True
                limited += answer.get("max_seconds") is not None

    t0 = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    latencies.sort()
    return {
        "answers": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "allowed": allowed,
        "with_max_seconds": limited,
        "concurrency": concurrency,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--tenants", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--at", type=int, required=True, help="the tenants' setup time, UTC µs")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    tables, problems = check_rate_tables(str(RATES_DIR))
    if tables is None:
        raise SystemExit("; ".join(problems))
    ids = [prof["tenant_id"] for prof in traffic.tenants(args.tenants, args.seed, tables, at=args.at)]
    print(orjson.dumps(asyncio.run(ask(args.url, ids, args.seconds, args.concurrency))).decode(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
