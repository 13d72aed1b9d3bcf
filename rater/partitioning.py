"""Where a tenant's records belong (SPEC 2): ``murmur2(tenant_id) mod partitions``, the
default partitioner of the Java client (``toPositive(murmur2(key)) % n``)."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=200_000)
def partition_for(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions
