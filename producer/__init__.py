"""Producer side: publish webhook events to RabbitMQ (library and ``webhook-publish`` CLI)."""

from producer.publisher import Publisher

__all__ = ["Publisher"]
