"""A minimal AMQP 0-9-1 publisher that sends a message's property bytes exactly as given.

pika refuses to encode (or recurses on) the red-team properties in
``tests/fixtures/redteam/amqp/``, yet a producer written in another language
can send them, and RabbitMQ passes them on.  This client speaks just enough
AMQP for one publish (handshake, ``channel.open``, ``confirm.select``,
``basic.publish`` with a hand-made content header, then the confirm), or for one
``basic.get`` rejected back to its queue.  Method frames are built with pika's
spec classes (they are ordinary); only the content header is raw.  Content
frames the broker sends are skipped, never decoded, so a returned or fetched
message cannot trip this client either.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import urllib.parse
from collections.abc import Iterator

import pika.frame
import pika.spec

_FRAME_END = b"\xce"
_DEFAULT_FRAME_MAX = 131072


class RawPublishError(Exception):
    """The broker refused, returned or nacked the message, or closed the connection."""


class _Wire:
    """Frames over one socket: write method and raw frames, read method frames."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def send_frame(self, frame_type: int, channel: int, payload: bytes) -> None:
        header = struct.pack(">BHI", frame_type, channel, len(payload))
        self._sock.sendall(header + payload + _FRAME_END)

    def send_method(self, channel: int, method: pika.spec.amqp_object.Method) -> None:
        self._sock.sendall(pika.frame.Method(channel, method).marshal())

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise RawPublishError("the broker closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def next_method(self) -> pika.spec.amqp_object.Method:
        """The next method frame's method; content and heartbeat frames are skipped."""
        while True:
            frame_type, _channel, size = struct.unpack(">BHI", self._read(7))
            payload = self._read(size + 1)[:-1]
            if frame_type != pika.spec.FRAME_METHOD:
                continue  # a returned message's header/body, or a heartbeat
            method = pika.spec.methods[struct.unpack_from(">I", payload)[0]]()
            method.decode(payload, 4)
            if isinstance(method, pika.spec.Connection.Close | pika.spec.Channel.Close):
                raise RawPublishError(f"broker closed: {method.reply_code} {method.reply_text}")
            return method

    def expect(self, kind: type) -> pika.spec.amqp_object.Method:
        method = self.next_method()
        if not isinstance(method, kind):
            raise RawPublishError(f"expected {kind.__name__}, got {method!r}")
        return method


@contextlib.contextmanager
def _session(url: str, timeout: float) -> Iterator[tuple[_Wire, int]]:
    """A connection with channel 1 open: (wire, frame_max); closed politely afterwards."""
    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    address = (parts.hostname or "localhost", parts.port or 5672)
    with socket.create_connection(address, timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # many tiny round trips
        wire = _Wire(sock)
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        wire.expect(pika.spec.Connection.Start)
        wire.send_method(
            0,
            pika.spec.Connection.StartOk(
                client_properties={"product": "webhook-relay red-team client"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        tune = wire.expect(pika.spec.Connection.Tune)
        frame_max = tune.frame_max or _DEFAULT_FRAME_MAX
        wire.send_method(0, pika.spec.Connection.TuneOk(1, frame_max, 0))
        wire.send_method(0, pika.spec.Connection.Open(virtual_host=vhost))
        wire.expect(pika.spec.Connection.OpenOk)
        wire.send_method(1, pika.spec.Channel.Open())
        wire.expect(pika.spec.Channel.OpenOk)
        yield wire, frame_max
        wire.send_method(0, pika.spec.Connection.Close(200, "bye", 0, 0))
        wire.expect(pika.spec.Connection.CloseOk)


def publish_raw_properties(
    url: str,
    exchange: str,
    routing_key: str,
    properties: bytes,
    body: bytes,
    *,
    timeout: float = 10.0,
) -> None:
    """Publish ``body`` with ``properties`` (a content header's property list, flags first).

    Waits for the broker's confirm; raises RawPublishError if the message was
    returned (``mandatory``), nacked, or the broker closed the connection.
    """
    with _session(url, timeout) as (wire, frame_max):
        wire.send_method(1, pika.spec.Confirm.Select())
        wire.expect(pika.spec.Confirm.SelectOk)
        wire.send_method(1, pika.spec.Basic.Publish(0, exchange, routing_key, mandatory=True))
        header = struct.pack(">HHQ", pika.spec.Basic.INDEX, 0, len(body)) + properties
        wire.send_frame(pika.spec.FRAME_HEADER, 1, header)
        step = frame_max - 8  # frame header (7) and end marker (1)
        for start in range(0, len(body), step):
            wire.send_frame(pika.spec.FRAME_BODY, 1, body[start : start + step])
        returned = False
        while True:
            method = wire.next_method()
            if isinstance(method, pika.spec.Basic.Return):
                returned = True  # the confirm follows
            elif isinstance(method, pika.spec.Basic.Nack):
                raise RawPublishError("the broker nacked the message")
            elif isinstance(method, pika.spec.Basic.Ack):
                break
        if returned:
            raise RawPublishError(f"unroutable: no queue bound on {exchange!r} for {routing_key!r}")


def reject_until_gone(url: str, queue: str, *, most: int = 50, timeout: float = 10.0) -> int:
    """Take the head of ``queue`` and reject it back, again and again, until the queue is empty.

    Never decodes the message, so it does to any message what a consumer that
    keeps failing on it does: every reject counts towards a quorum queue's
    delivery limit, which at last dead-letters it.  Returns how many rejects it took.
    """
    rejects = 0
    with _session(url, timeout) as (wire, _frame_max):
        while rejects < most:
            wire.send_method(1, pika.spec.Basic.Get(queue=queue, no_ack=False))
            method = wire.next_method()
            if isinstance(method, pika.spec.Basic.GetEmpty):
                return rejects
            if not isinstance(method, pika.spec.Basic.GetOk):
                raise RawPublishError(f"expected basic.get-ok, got {method!r}")
            wire.send_method(1, pika.spec.Basic.Reject(method.delivery_tag, requeue=True))
            rejects += 1
    raise RawPublishError(f"{queue} still not empty after {most} rejects")
