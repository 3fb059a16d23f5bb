"""Every use of pika's private internals, in one place, checked against the pika installed.

pika's public API makes each publish wait for its confirm, sends each frame
with its own ``send()``, and has no nowait declare on a blocking channel.  The
speed documented in docs/performance.md needs a few of its internals; they are
reached only through the functions here, and :func:`missing_internals` (run by
tests/unit/test_pika_internals.py) fails loudly if an upgrade of pika moves one.
pyproject.toml pins pika below 2 for the same reason.

Starting thousands of consumers one ``consume-ok`` at a time costs a round trip
each; :func:`consume_nowait` sends ``basic.consume`` in its no-wait form, which
pika's public API does not offer.

pika also decodes every content header while reading the socket, and a header
it cannot decode raises there, which drops the whole connection (and requeues
everything in flight on it).  :func:`install_guarded_decode` replaces that
decode with one that never raises; see :mod:`broker.property_salvage`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.data
import pika.frame
import pika.spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.base_connection import BaseConnection
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils import io_services_utils
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.channel import Channel

from broker.property_salvage import error_name, salvage, unfit_header

SUPPORTED_MAJOR = 1
_PLAINTEXT_TRANSPORT = io_services_utils._AsyncPlaintextTransport
_PROPERTIES = pika.spec.BasicProperties
# pika's own decode, captured before anything replaces it.
_PIKA_DECODE = _PROPERTIES.decode
_INSTALL_LOCK = threading.Lock()
# Set on the guarded function, and on a BasicProperties that could not be decoded.
# What opening a blocking connection can raise.  A busy broker that times the AMQP
# handshake out surfaces as pika's connection-workflow AMQPConnectorStackTimeout,
# which is no AMQPError: caught as AMQPError alone it escaped the callers' retries
# (a worker exited 1 instead of trying again).
CONNECT_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError, AMQPConnectorException)
_GUARD_MARK = "_webhook_relay_guard"
_FAILURE = "_webhook_relay_decode_failure"


def channel_under(channel: BlockingChannel) -> Channel:
    """The asynchronous channel under a blocking one: its methods without a callback are nowait."""
    impl: Channel = channel._impl
    return impl


def drive_until(channel: BlockingChannel, ready: Callable[[], bool]) -> None:
    """Send what is buffered and process input until ``ready()`` or the channel closes."""
    channel._flush_output(ready)


def consume_nowait(channel: Channel, queue: str, on_message: Callable[..., None]) -> str:
    """Send ``basic.consume`` with no-wait set and register ``on_message`` for its tag.

    The broker sends no ``consume-ok``: a refusal closes the channel, so the
    caller confirms a run of these with one ordinary RPC on the same channel
    afterwards (a channel's methods are handled in order). pika's ``_rpc``
    keeps the order too: while a synchronous call of ours waits for its reply
    it queues this one behind it.
    """
    tag: str = channel._generate_consumer_tag()
    channel._consumers[tag] = on_message
    channel._rpc(pika.spec.Basic.Consume(queue=queue, consumer_tag=tag, no_ack=False, nowait=True))
    return tag


def join_send_buffers(connection: BlockingConnection) -> None:
    """Join the frames queued on a blocking connection so they go out with one ``send()``.

    pika queues every frame (three per message) as its own buffer and sends
    each with its own system call.
    """
    transport = getattr(connection._impl, "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    if buffers is not None and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


def intercept_frames(connection: AsyncioConnection, emit: Callable[[bytes], None]) -> bool:
    """Route the frames pika writes through ``emit`` instead of its transport.

    Only on a plaintext transport (TLS keeps pika's own path); False if not installed.
    """
    if type(getattr(connection, "_transport", None)) is not _PLAINTEXT_TRANSPORT:
        return False
    connection._adapter_emit_data = emit
    return True


def idle_socket(connection: AsyncioConnection) -> socket.socket | None:
    """The connection's socket if nothing is queued in pika's transport, else None.

    Sending straight to it is then in order; otherwise the caller must use
    :func:`write_through_pika`, which also handles a full socket buffer.
    """
    transport: Any = getattr(connection, "_transport", None)
    if transport is None:
        return None
    sock: socket.socket | None = getattr(transport, "_sock", None)
    active = getattr(transport, "_state", None) == _PLAINTEXT_TRANSPORT._STATE_ACTIVE
    if sock is None or not active or transport.get_write_buffer_size() != 0:
        return None
    return sock


def write_through_pika(connection: AsyncioConnection, data: bytes) -> bool:
    """Queue ``data`` on pika's transport; False if the connection is gone."""
    transport: Any = getattr(connection, "_transport", None)
    if transport is None:
        return False
    transport.write(data)
    return True


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a message's properties could not be decoded, and their bytes as received."""

    reason: str
    raw: bytes


def _guarded_decode(self: Any, encoded: bytes, offset: int = 0) -> Any:
    """pika's decode, except that undecodable or unfit properties yield a marked object."""
    try:
        _PIKA_DECODE(self, encoded, offset)
    except Exception as exc:  # OverflowError, RecursionError, ValueError, struct.error, ...
        error = error_name(exc)
    else:
        headers = self.headers
        if not headers or not unfit_header(headers):
            return self
        error = "header that cannot be sent on"
    # The frame is consumed normally; the message arrives with what could be read.
    raw = bytes(encoded[offset:])  # bounded: a content header fits in one frame
    rescued = salvage(raw, pika.data.decode_value)
    for name, value in rescued.values.items():
        setattr(self, name, value)
    setattr(self, _FAILURE, DecodeFailure(rescued.reason(error), raw))
    return self


setattr(_guarded_decode, _GUARD_MARK, True)


def install_guarded_decode() -> None:
    """Make pika's content-header decoding survive any property bytes (idempotent)."""
    with _INSTALL_LOCK:
        if not getattr(_PROPERTIES.decode, _GUARD_MARK, False):
            _PROPERTIES.decode = _guarded_decode


def decode_failure(properties: pika.BasicProperties) -> DecodeFailure | None:
    """Set on properties the guarded decode could not (fully) decode; else None."""
    failure: DecodeFailure | None = getattr(properties, _FAILURE, None)
    return failure


def missing_internals() -> list[str]:
    """The internals above that the installed pika no longer has (empty when all is well)."""
    missing = []
    if int(pika.__version__.split(".")[0]) != SUPPORTED_MAJOR:
        missing.append(f"pika {pika.__version__} (written for {SUPPORTED_MAJOR}.x)")
    for owner, name in (
        (BlockingChannel, "_flush_output"),
        (Channel, "_generate_consumer_tag"),
        (Channel, "_rpc"),
        (BaseConnection, "_adapter_emit_data"),
        (_PLAINTEXT_TRANSPORT, "_STATE_ACTIVE"),
        (_PLAINTEXT_TRANSPORT, "get_write_buffer_size"),
        (_PLAINTEXT_TRANSPORT, "write"),
        (_PROPERTIES, "decode"),
        (pika.data, "decode_value"),
    ):
        if not hasattr(owner, name):
            missing.append(f"{getattr(owner, '__qualname__', owner.__name__)}.{name}")
    # Set in the constructor, so look for the assignment rather than the attribute.
    if "_consumers" not in Channel.__init__.__code__.co_names:
        missing.append("Channel._consumers")
    # The frame decoder builds the class registered here and calls its decode.
    if pika.spec.props.get(pika.spec.Basic.INDEX) is not _PROPERTIES:
        missing.append("pika.spec.props[Basic.INDEX] is BasicProperties")
    if not hasattr(pika.frame, "decode_frame"):
        missing.append("pika.frame.decode_frame")
    return missing
