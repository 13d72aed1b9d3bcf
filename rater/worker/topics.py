"""Creating the topics a client writes to before it writes, as the worker does.

A producer that writes to a topic that does not exist makes the broker create it with
its own default partition count (``num.partitions``, 1 out of the box); the worker then
refuses inputs whose partition count differs from ``--partitions``. So ``rater produce``
and ``rater simulate`` create the topics they write to, with the configured count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable


async def create_missing(
    client: dict[str, Any], names: Iterable[str], partitions: int, replication: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create those of ``names`` that do not exist, with ``partitions`` partitions, and wait
    until each partition of them has a leader. Returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(**client, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in set(await admin.list_topics())]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, partitions, replication) for n in missing])
            except TopicAlreadyExistsError:  # another client created one meanwhile
                pass
            deadline = time.monotonic() + timeout
            while True:
                meta = await admin.describe_topics(missing)
                if all(
                    m.get("error_code", 0) == 0 and m["partitions"] and all(p.get("leader", -1) >= 0 for p in m["partitions"]) for m in meta
                ):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics {', '.join(missing)} have no leaders after {timeout:.0f} s")
                await asyncio.sleep(0.2)
        return missing
    finally:
        await admin.close()


async def partitions_of(client: dict[str, Any], names: Iterable[str], timeout: float = 10.0) -> dict[str, list[int]]:
    """The partitions of those of ``names`` that exist, from the broker's metadata (public
    admin API: a consumer's ``partitions_for_topic`` only knows topics its client tracks).
    Waits up to ``timeout`` for all of them to show."""
    from aiokafka.admin import AIOKafkaAdminClient

    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            meta = await admin.describe_topics(wanted)
            found = {
                m["topic"]: sorted(p["partition"] for p in m["partitions"]) for m in meta if m.get("error_code", 0) == 0 and m["partitions"]
            }
            if len(found) == len(wanted) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
