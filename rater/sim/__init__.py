"""Traffic for the rater: the synthetic traffic model (``traffic``), ``rater simulate``
(``simulate``) and ``rater produce`` (``produce``). Shipped in the image: docker-compose
runs the simulator against the worker.

May import: ``rater.core`` (rate tables, times), aiokafka (producing), ``rater.worker``'s
Kafka client helpers (topic creation, connection settings).
"""
