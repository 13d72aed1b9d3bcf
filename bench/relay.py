"""The baseline: a bare aiokafka relay, no state, no rating.

    python -m bench.relay --broker B --topic IN --out OUT --group G [--mode batch|send]

Consumes IN with its own consumer group, parses every record with orjson, produces one
record per input to OUT (same key, same partition number, the parsed object serialized
again), waits until Kafka has acknowledged the outputs (acks=all, idempotent producer, as
the worker's), and commits the consumed offsets, at most once a second, as the worker
does. What it costs is what moving a CDR through Kafka in Python costs, the floor under
any rater built on aiokafka.

``--mode batch`` (default) appends the outputs to one ``BatchBuilder`` per partition, the
way ``rater/worker/sending.py`` does; ``--mode send`` calls ``producer.send()`` per record, the
textbook aiokafka loop. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def relay(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.broker,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1 << 20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.broker, acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loads, dumps = orjson.loads, orjson.dumps
    out = args.out
    positions: dict = {}
    last_commit = 0.0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=int(args.wait * 1000), max_records=args.batch_size)
            if not batches:
                continue
            pending = []
            for tp, msgs in batches.items():
                if args.mode == "send":
                    for m in msgs:
                        value = dumps(loads(m.value))
                        pending.append(await producer.send(out, value, key=m.key, partition=tp.partition))
                else:
                    batch = producer.create_batch()
                    for m in msgs:
                        value = dumps(loads(m.value))
                        if batch.append(key=m.key, value=value, timestamp=None) is None:
                            pending.append(await producer.send_batch(batch, out, partition=tp.partition))
                            batch = producer.create_batch()
                            batch.append(key=m.key, value=value, timestamp=None)
                    pending.append(await producer.send_batch(batch, out, partition=tp.partition))
                positions[tp] = msgs[-1].offset + 1
            await asyncio.gather(*pending)
            now = time.monotonic()
            if now - last_commit >= 1.0:
                await consumer.commit(dict(positions))
                last_commit = now
        if positions:
            await consumer.commit(dict(positions))
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--mode", choices=("batch", "send"), default="batch")
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--wait", type=float, default=0.02)
    asyncio.run(relay(p.parse_args()))


if __name__ == "__main__":
    main()
