"""The RocksDB options of a table partition hold from the second start on too
(``rater/worker/adapter.py`` ``keep_rocksdb_options``)."""

from __future__ import annotations

from types import SimpleNamespace

from faust.stores.rocksdb import RocksDBOptions

from rater.worker import adapter

MIB = 1 << 20


def _options(block_cache_mib: int, write_buffer_mib: int) -> RocksDBOptions:
    return RocksDBOptions(write_buffer_size=write_buffer_mib * MIB, max_write_buffer_number=2, block_cache_size=block_cache_mib * MIB)


def _kept(options: RocksDBOptions) -> RocksDBOptions:
    adapter.keep_rocksdb_options(SimpleNamespace(data=SimpleNamespace(rocksdb_options=options)))
    return options


def _capacity(db) -> int:
    return db.property_int_value("rocksdb.block-cache-capacity")


def test_faust_alone_reopens_a_partition_with_rocksdb_defaults_not_the_options_given(tmp_path):
    """What ``keep_rocksdb_options`` is for (if rocksdict changes this, the adapter can go)."""
    path = tmp_path / "p0.db"
    db = _options(16, 8).open(path)
    assert _capacity(db) == 16 * MIB  # created: the options given
    db.close()
    db = _options(4, 2).open(path)
    assert _capacity(db) == 8 * MIB  # reopened: RocksDB's default cache, not 4 MiB
    db.close()


def test_a_reopened_partition_has_the_block_cache_and_write_buffers_given(tmp_path):
    path = tmp_path / "p0.db"
    db = _kept(_options(16, 8)).open(path)
    db[b"k"] = b"v"
    assert _capacity(db) == 16 * MIB
    db.close()
    db = _kept(_options(4, 2)).open(path)
    assert _capacity(db) == 4 * MIB
    assert db[b"k"] == b"v"
    log = (path / "LOG").read_text()
    assert "Options.write_buffer_size: 2097152" in log
    db.close()


def test_the_memory_store_is_left_alone():
    table = SimpleNamespace(data=SimpleNamespace())
    adapter.keep_rocksdb_options(table)
    assert vars(table.data) == {}
