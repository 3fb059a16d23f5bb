"""Frames pika writes during one event-loop turn, sent with one ``send()``."""

from __future__ import annotations

import asyncio

from pika.adapters.asyncio_connection import AsyncioConnection

from broker import pika_internals


class FrameCoalescer:
    """Sends the frames pika emits during one event-loop turn with one ``send()``.

    pika hands every frame (each ack, each publish's three frames) to its
    transport separately, and the transport sends each one with its own
    ``send()`` after a round of add_writer / writable / remove_writer.  At a
    few thousand deliveries a second that was the worker's largest single cost
    after the HTTP client.  Here frames are only collected; at the end of the
    loop turn they go out as one buffer, straight to the socket when pika has
    nothing queued, else through pika's own write path (which also deals with
    a full socket buffer and reports errors the usual way).  Order is kept
    because every frame passes through here.  TLS transports are left alone.
    """

    def __init__(self, connection: AsyncioConnection, loop: asyncio.AbstractEventLoop) -> None:
        self._connection = connection
        self._loop = loop
        self._chunks: list[bytes] = []
        self._scheduled = False

    @classmethod
    def install(cls, connection: AsyncioConnection, loop: asyncio.AbstractEventLoop) -> None:
        # TLS, or a pika whose internals we do not know: pika keeps its own path.
        pika_internals.intercept_frames(connection, cls(connection, loop).emit)

    def emit(self, data: bytes) -> None:
        self._chunks.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        sock = pika_internals.idle_socket(self._connection)
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # would block, or a broken link that pika's path will report
            if sent == len(data):
                return
            data = data[sent:]
        # False: the connection is gone; pika drops unsent frames then too.
        pika_internals.write_through_pika(self._connection, data)
