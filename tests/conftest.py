# Shared pytest fixtures for rater's tests.
# kafka_broker: one real Kafka 4.x broker for the session (see tests/support/kafka.py);
# tests that use it are marked @pytest.mark.kafka.
from tests.support.kafka import kafka_broker  # noqa: F401
