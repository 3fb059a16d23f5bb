"""A typed record of an AMQP message's properties, built once where a message arrives.

pika hands over ``BasicProperties`` whose fields may be absent or of any type a
producer chose to send; reading them once here gives the rest of the code plain
attributes (``headers`` is always a dict) instead of defensive ``getattr`` calls.
Values are kept as received: validating them is the reader's job (a bad
``message_id`` is a poison message, not a crash here).  Properties the guarded
decode could not fully read (see :mod:`broker.property_salvage`) say why in
``undecodable`` and keep their bytes as received in ``raw``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pika

from broker import pika_internals

# Not AMQP properties: what the guarded decode says about them.
_NOT_PROPERTIES = frozenset({"headers", "undecodable", "raw"})


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """The AMQP basic properties of one message; None where the message has none."""

    content_type: Any = None
    content_encoding: Any = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    delivery_mode: Any = None
    priority: Any = None
    correlation_id: Any = None
    reply_to: Any = None
    expiration: Any = None
    message_id: Any = None
    timestamp: Any = None
    type: Any = None
    user_id: Any = None
    app_id: Any = None
    cluster_id: Any = None
    # Why the properties could not be (fully) decoded, e.g. "OverflowError in header
    # 'x-sent-at'"; the fields above then hold what could be read.  None normally.
    undecodable: str | None = None
    raw: bytes | None = field(default=None, repr=False)  # the property bytes, when undecodable

    def __post_init__(self) -> None:
        # A producer may send no header table, or (through another client) a non-table.
        if not isinstance(self.headers, Mapping):
            object.__setattr__(self, "headers", {})

    @classmethod
    def from_pika(cls, properties: pika.BasicProperties | None) -> MessageProperties:
        """Read pika's properties once (a missing or non-table ``headers`` becomes {})."""
        if properties is None:
            return cls()
        failure = pika_internals.decode_failure(properties)
        return cls(
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            headers=properties.headers,
            delivery_mode=properties.delivery_mode,
            priority=properties.priority,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            expiration=properties.expiration,
            message_id=properties.message_id,
            timestamp=properties.timestamp,
            type=properties.type,
            user_id=properties.user_id,
            app_id=properties.app_id,
            cluster_id=properties.cluster_id,
            undecodable=None if failure is None else failure.reason,
            raw=None if failure is None else failure.raw,
        )

    def header(self, name: str) -> Any:
        """One header's value, or None."""
        return self.headers.get(name)

    def present(self) -> dict[str, Any]:
        """The AMQP properties the message has (not None), headers excluded, by name."""
        values = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_PROPERTIES
        }
        return {name: value for name, value in values.items() if value is not None}
