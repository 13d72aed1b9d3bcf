"""SPEC 2: a tenant's partition is the Java client's murmur2(key) mod partitions."""

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from rater.partitioning import murmur2, partition_for

# The test vectors of Apache Kafka's UtilsTest.testMurmur2 (signed 32-bit results).
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("key, signed", JAVA_MURMUR2.items())
def test_partition_is_the_java_clients_to_positive_murmur2_mod_n(key, signed):
    expected = (signed & 0x7FFFFFFF) % 8  # Utils.toPositive, then modulo
    assert partition_for(key.encode(), 8) == expected


def test_partition_of_key_21_worked_by_hand():
    # toPositive(-973932308) = 2^31 - 973932308 = 1173551340 = 8 * 146693917 + 4
    assert partition_for(b"21", 8) == 4


@pytest.mark.parametrize("key, signed", JAVA_MURMUR2.items())
def test_murmur2_is_the_java_clients_hash(key, signed):
    assert murmur2(key.encode()) == signed & 0xFFFFFFFF


@given(st.binary(max_size=80))
def test_murmur2_equals_aiokafkas_copy_on_any_bytes(data):
    assert murmur2(data) == aiokafka_murmur2(data)
