"""rater: a Kafka-native usage rater for telephony prepaid credit.

The packages, from the inside out:

- ``rater.core``: the pure rating rules (no I/O framework).
- ``rater.offline`` and ``rater.statefile``: ``rater rate``, files in, files out.
- ``rater.worker``: ``rater worker``, the faust/aiokafka worker around the core.
- ``rater.notify``: ``rater notify``, notifications from balance events.
- ``rater.sim``: traffic, ``rater simulate`` and ``rater produce``.
- ``rater.cli``: the command line.
- ``rater.dev``: the dev broker, the demo, the schema loader (not in the Docker image).
"""
