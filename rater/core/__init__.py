"""The rating core: pure rules, no I/O framework.

Owns money and times, rate tables, record decoding, the ledger (one account's rules), the
engine and the batch processor (a batch of records in, outputs and changed accounts out),
the account codec, partitioning, authorize, the bounds on record sizes, the id segments, the
replay marks and the continuity check of input offsets.

May import: the standard library, orjson, and other ``rater.core`` modules. Never faust,
aiokafka, mode, rocksdict or aiohttp (``tests/core/test_architecture.py`` checks it), nor any
other ``rater`` package: the worker, ``rater rate`` and the tests drive the core, not the
other way round.
"""
