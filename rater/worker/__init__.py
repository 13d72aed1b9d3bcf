"""``rater worker``: the Kafka worker around the core.

Owns the faust app wiring, the commit protocol, the account store, the sweep, the
rate-table watcher, the HTTP views (``/healthz``, ``/tenants``, ``/authorize``, ``/metrics``),
the worker's configuration and metrics, and the modules that touch faust's and aiokafka's
internals.

May import: ``rater.core``, faust, aiokafka, mode, rocksdict, aiohttp, prometheus-client.
The only package of the product that imports faust; nothing in ``rater.core`` imports it.
Importing this package itself imports nothing (each module is imported by name).
"""
