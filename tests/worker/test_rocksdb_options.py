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


def _port_over(dbs: dict) -> adapter.FaustPort:
    table = SimpleNamespace(data=SimpleNamespace(_dbs=dbs), changelog_topic=SimpleNamespace(get_topic_name=lambda: "accounts-changelog"))
    return adapter.FaustPort(None, table, frozenset(), None)


def test_the_scan_of_every_account_leaves_the_block_cache_as_it_was(tmp_path):
    """The sweep index reads every account at a start; with the blocks it read kept, the
    cache held all of them (49 MiB per 100,000 accounts), blocks no batch asked for."""
    dbs = {p: _kept(_options(16, 8)).open(tmp_path / f"p{p}.db") for p in (0, 1)}
    value = b"x" * 400
    for p, db in dbs.items():
        for i in range(5000):
            db[f"t{p}-{i:05d}".encode()] = value
        db.flush()
    before = [db.property_int_value("rocksdb.block-cache-usage") for db in dbs.values()]
    assert max(before) < 1000
    items = list(_port_over(dbs).table_items({0}))
    assert len(items) == 5000 and items[0] == (b"t0-00000", value)
    assert [db.property_int_value("rocksdb.block-cache-usage") for db in dbs.values()] == before
    assert sum(1 for _ in dbs[1].items()) == 5000  # the same scan with the default read options
    assert dbs[1].property_int_value("rocksdb.block-cache-usage") > 5000 * 400
    for db in dbs.values():
        db.close()


def _buffered(db) -> int:
    return db.property_int_value("rocksdb.cur-size-all-mem-tables")


def test_a_rest_flushes_the_write_buffers_that_hold_enough_and_keeps_every_value(tmp_path):
    """``FaustPort.flush_store``: a partition whose write buffers hold at least the bytes
    given is flushed, the others are left; the values read back the same."""
    dbs = {p: _kept(_options(16, 8)).open(tmp_path / f"p{p}.db") for p in (0, 1)}
    for i in range(3000):  # partition 0: about 1.3 MB of values
        dbs[0][f"t{i:05d}".encode()] = b"x" * 400
    dbs[1][b"t"] = b"y"  # partition 1: one small value
    assert _buffered(dbs[0]) > MIB and _buffered(dbs[1]) < MIB
    small = _buffered(dbs[1])
    assert _port_over(dbs).flush_store(MIB) == 1
    assert _buffered(dbs[0]) < 64 * 1024  # an empty buffer's arena, not the values
    assert _buffered(dbs[1]) == small
    assert dbs[0][b"t02999"] == b"x" * 400 and dbs[1][b"t"] == b"y"
    for db in dbs.values():
        db.close()


def test_the_memory_store_has_nothing_to_flush():
    table = SimpleNamespace(data=SimpleNamespace(), changelog_topic=SimpleNamespace(get_topic_name=lambda: "c"))
    assert adapter.FaustPort(None, table, frozenset(), None).flush_store(0) == 0
