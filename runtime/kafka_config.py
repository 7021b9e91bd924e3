"""Kafka client configuration shared by the components (confluent-kafka and Faust/aiokafka)."""

from __future__ import annotations

from typing import Any

from runtime.settings import KafkaSettings


def common_config(settings: KafkaSettings, component: str) -> dict[str, Any]:
    """Connection and security settings in librdkafka's names."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "client.id": f"{settings.client_id}-{component}",
        "security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username:
        conf["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        conf["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_ca_location is not None:
        conf["ssl.ca.location"] = str(settings.ssl_ca_location)
    return conf


def producer_config(settings: KafkaSettings, component: str, **extra: Any) -> dict[str, Any]:
    """A durable producer: acks=all, idempotent, ordered retries, lz4-compressed batches."""
    conf = common_config(settings, component)
    conf.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
        }
    )
    conf.update(extra)
    return conf


def consumer_config(
    settings: KafkaSettings, component: str, group_id: str, **extra: Any
) -> dict[str, Any]:
    """A consumer that commits explicitly and reads only committed transactional data."""
    conf = common_config(settings, component)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    conf.update(extra)
    return conf


def admin_config(settings: KafkaSettings, component: str = "admin") -> dict[str, Any]:
    return common_config(settings, component)


def faust_broker_url(settings: KafkaSettings) -> str:
    """Faust's broker URL (kafka://host:port;host:port)."""
    return "kafka://" + ";".join(h.strip() for h in settings.bootstrap.split(","))
