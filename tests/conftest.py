# Shared pytest fixtures for rater's tests.
# kafka_broker: one real Kafka 4.x broker for the session (see tests/kafka_support.py);
# tests that use it are marked @pytest.mark.kafka.
from tests.kafka_support import kafka_broker  # noqa: F401
