"""A paced producer for the latency runs: CDRs at a fixed offered rate.

    python -m bench.pacer --broker B --topic T --rate 5000 --seconds 25 --tenants 10000 \\
        --seed 1 --at MICROS --run-id L5000

Draws ``rate x seconds`` records of the tenants of ``rater.sim.traffic.tenants(tenants, seed,
at=MICROS)`` (their setup commands must be on T already) before the clock starts, then
every 5 ms appends what is due to one batch per partition (murmur2 of the tenant) and
sends it. Each record's Kafka timestamp (CreateTime) is the moment it was appended: the
"produce time" the latencies are measured from. Prints one JSON line: records sent,
seconds, achieved rate, worst lag behind schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from rater.core.rates import check_rate_tables
from rater.core.timeutil import SECOND
from rater.sim import traffic

from .kio import group_by_partition
from .procs import RATES_DIR

TICK = 0.005


def draw(args: argparse.Namespace) -> list[tuple[bytes, bytes]]:
    tables, problems = check_rate_tables(str(RATES_DIR))
    if tables is None:
        raise SystemExit("; ".join(problems))
    profiles = traffic.tenants(args.tenants, args.seed, tables, at=args.at)
    t = traffic.Traffic(profiles, tables, at=args.at)
    count = int(args.rate * args.seconds)
    # Event times from just after the setup, 1 ms apart: all in the past, none too late.
    clock = traffic.synthetic_clock(args.at + SECOND, 1_000)
    out = []
    for rec in t.stream(args.seed + 1000, clock, run_id=args.run_id, count=count):
        # An exact-size copy: a small orjson.dumps result keeps a ~4 KiB allocation.
        out.append((rec["tenant_id"].encode(), bytes(memoryview(orjson.dumps(rec)))))
    return out


async def pace(args: argparse.Namespace, items: list[tuple[bytes, bytes]]) -> dict:
    producer = AIOKafkaProducer(bootstrap_servers=args.broker, acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=1 << 20)
    await producer.start()
    try:
        n = len(items)
        pending: list = []
        sent = 0
        worst = 0.0
        t0 = time.monotonic()
        while sent < n:
            now = time.monotonic()
            due = min(n, int(args.rate * (now - t0)) + 1)
            if due > sent:
                worst = max(worst, (due - sent) / args.rate)
                for partition, recs in group_by_partition(items[sent:due], args.partitions).items():
                    batch = producer.create_batch()
                    for key, value in recs:
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            pending.append(await producer.send_batch(batch, args.topic, partition=partition))
                            batch = producer.create_batch()
                            batch.append(key=key, value=value, timestamp=None)
                    pending.append(await producer.send_batch(batch, args.topic, partition=partition))
                sent = due
                if len(pending) > 2000:
                    await asyncio.gather(*pending)
                    pending.clear()
            next_tick = t0 + (int((time.monotonic() - t0) / TICK) + 1) * TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        elapsed = time.monotonic() - t0
        await asyncio.gather(*pending)
        return {"sent": n, "seconds": round(elapsed, 3), "rate": round(n / elapsed, 1), "worst_lag_s": round(worst, 4)}
    finally:
        await producer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--tenants", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--at", type=int, required=True, help="the tenants' setup time, UTC µs")
    p.add_argument("--run-id", required=True)
    args = p.parse_args()
    items = draw(args)
    print("ready", flush=True, file=sys.stderr)
    print(orjson.dumps(asyncio.run(pace(args, items))).decode(), flush=True)


if __name__ == "__main__":
    main()
