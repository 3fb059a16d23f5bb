"""pika's internals that broker/pika_internals.py uses are all there in the pika installed.

If this fails after a pika upgrade, read broker/pika_internals.py: each function
names what it needs; adapt it there (and only there), or pin pika back.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pika
import pika.spec
import pytest
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.blocking_connection import BlockingChannel

from broker import pika_internals


def test_the_installed_pika_has_every_internal_we_use() -> None:
    assert pika_internals.missing_internals() == [], (
        "pika changed under broker/pika_internals.py: "
        + ", ".join(pika_internals.missing_internals())
    )


def test_the_private_members_set_in_constructors_exist_on_a_live_transport() -> None:
    # _sock, _state and _tx_buffers are set in __init__, so check a real
    # transport over a real (loopback) socket pair rather than the class.
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    try:
        from pika.adapters.asyncio_connection import _AsyncioIOServicesAdapter

        services = _AsyncioIOServicesAdapter(loop)
        transport: Any = pika_internals._PLAINTEXT_TRANSPORT(ours, _Protocol(), services)
        assert transport._sock is ours
        assert len(transport._tx_buffers) == 0  # a deque join_send_buffers may rewrite
        assert transport._state == pika_internals._PLAINTEXT_TRANSPORT._STATE_ACTIVE
    finally:
        ours.close()
        theirs.close()
        loop.close()


def test_channel_under_returns_the_async_channel() -> None:
    blocking: Any = BlockingChannel.__new__(BlockingChannel)
    marker = object()
    blocking._impl = marker
    assert pika_internals.channel_under(blocking) is marker


def test_frames_are_not_intercepted_without_a_plaintext_transport() -> None:
    connection: Any = AsyncioConnection.__new__(AsyncioConnection)
    connection._transport = None
    assert pika_internals.intercept_frames(connection, lambda _data: None) is False
    assert pika_internals.idle_socket(connection) is None
    assert pika_internals.write_through_pika(connection, b"x") is False


def test_the_guarded_decode_is_what_pikas_frame_decoder_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pika_internals.install_guarded_decode()
    assert pika.spec.props[pika.spec.Basic.INDEX].decode is pika_internals._guarded_decode
    # missing_internals notices if the frame decoder would build another class.
    monkeypatch.setitem(pika.spec.props, pika.spec.Basic.INDEX, object)
    assert "pika.spec.props[Basic.INDEX] is BasicProperties" in pika_internals.missing_internals()


def test_properties_pika_decodes_carry_no_failure() -> None:
    assert pika_internals.decode_failure(pika.BasicProperties(message_id="m")) is None


def test_pika_major_version_is_pinned_in_pyproject() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"pika>=1.3,<2"' in text
    assert int(pika.__version__.split(".")[0]) == pika_internals.SUPPORTED_MAJOR


class _Protocol:
    def connection_made(self, transport: Any) -> None:
        pass

    def connection_lost(self, error: BaseException | None) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def data_received(self, data: bytes) -> None:
        pass
