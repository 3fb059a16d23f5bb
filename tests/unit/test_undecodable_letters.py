"""Dead letters whose properties could not be decoded: how the DLQ tools read, show, replay them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from broker.properties import MessageProperties
from cli.dlq_output import note_line, show_json, show_text
from control.dead_letters.model import decode_dead_letter
from control.dead_letters.replay import _replay_properties, replay_headers, replay_note
from control.redaction import Redactor
from wire import contract

QUEUE = "webhooks.shop.dlq"
BODY = b'{"event":"order.created","data":{"id":"x"},"timestamp":"t"}'
RAW = b"\x20\xa0raw bytes with s3cret-value and tok-123 inside"
REASON = "OverflowError in header 'x-sent-at'"
DEATH = {
    "reason": "delivery_limit",
    "queue": "webhooks.shop.work",
    "time": datetime(2026, 1, 31, tzinfo=UTC),
}
REDACTOR = Redactor(("s3cret-value",))


def _broker_copy() -> MessageProperties:
    """What the guarded decode makes of a copy the broker dead-lettered."""
    return MessageProperties(
        message_id="evt_1",
        type="order.created",
        headers={contract.ACCOUNT: "acme", "x-api-token": "tok-123", "x-death": [DEATH]},
        undecodable=REASON,
        raw=RAW,
    )


def _worker_copy(raw_header: str) -> MessageProperties:
    return MessageProperties(
        message_id="evt_2",
        headers={
            contract.ACCOUNT: "acme",
            contract.DEAD_LETTER_REASON: f"poison: message properties cannot be decoded ({REASON})",
            contract.RAW_PROPERTIES: raw_header,
            contract.RAW_PROPERTIES_SIZE: 40000,
        },
    )


def test_a_broker_copy_reads_with_its_reason_and_raw_bytes() -> None:
    letter = decode_dead_letter(QUEUE, _broker_copy(), BODY)
    assert letter.undecodable == REASON and letter.raw_properties == RAW
    assert letter.reason == "broker: delivery_limit"
    assert letter.event_id == "evt_1" and letter.account == "acme"
    assert letter.summary()["undecodable"] == REASON
    record = letter.to_json()
    assert base64.b64decode(record["raw_properties_base64"]) == RAW  # whole, for backups
    assert "undecodable" not in letter.properties


def test_a_worker_copy_shows_the_raw_bytes_from_its_header() -> None:
    letter = decode_dead_letter(QUEUE, _worker_copy(base64.b64encode(RAW).decode()), BODY)
    assert letter.undecodable is None and "undecodable" not in letter.summary()
    assert letter.raw_properties == RAW
    assert decode_dead_letter(QUEUE, _worker_copy("not base64!"), BODY).raw_properties is None


def test_show_prints_the_raw_bytes_blanked_and_the_reason() -> None:
    letter = decode_dead_letter(QUEUE, _broker_copy(), BODY)
    text = show_text([letter], REDACTOR)
    assert f"undecodable:       {REASON}" in text
    assert f"raw properties ({len(RAW)} bytes, base64, secrets blanked):" in text
    shown = base64.b64decode(text.split("secrets blanked):\n  ")[1].split("\n")[0])
    assert len(shown) == len(RAW)
    assert b"s3cret-value" not in shown and b"tok-123" not in shown and b"raw bytes" in shown

    worker = decode_dead_letter(QUEUE, _worker_copy(base64.b64encode(RAW).decode()), BODY)
    text = show_text([worker], REDACTOR)
    assert "x-webhook-raw-properties: (shown below as raw properties)" in text
    assert f"raw properties ({len(RAW)} of 40000 bytes" in text
    [record] = json.loads(show_json([worker], REDACTOR))
    assert record["headers"][contract.RAW_PROPERTIES] == record["raw_properties_base64"]
    assert b"s3cret-value" not in base64.b64decode(record["raw_properties_base64"])


def test_replay_drops_what_could_not_be_read_and_says_so() -> None:
    broker = decode_dead_letter(QUEUE, _broker_copy(), BODY)
    note = f"replayed without the headers that could not be decoded ({REASON})"
    assert replay_note(broker) == note
    assert note_line(broker) == f"  note: {note}"
    headers = _replay_properties(broker).headers
    assert headers[contract.REPLAY_NOTE] == note
    assert headers[contract.ATTEMPT] == 1 and headers[contract.ACCOUNT] == "acme"
    assert "x-death" not in headers

    worker = decode_dead_letter(QUEUE, _worker_copy(base64.b64encode(RAW).decode()), BODY)
    headers = _replay_properties(worker).headers
    assert contract.RAW_PROPERTIES not in headers and contract.RAW_PROPERTIES_SIZE not in headers
    assert headers[contract.REPLAY_NOTE] == note

    plain = decode_dead_letter(QUEUE, MessageProperties(message_id="evt_3"), BODY)
    assert replay_note(plain) is None and note_line(plain) is None
    assert contract.REPLAY_NOTE not in _replay_properties(plain).headers


def test_replay_keeps_a_header_key_that_is_not_utf8() -> None:
    # pika decodes such a key as bytes; replay used to fail on it (bytes.startswith(str)).
    headers = {b"x-\xff": b"v", "x-death": [], "x-first-death-queue": "q", contract.ATTEMPT: 3}
    fresh = replay_headers(headers)  # type: ignore[arg-type]
    assert fresh[b"x-\xff"] == b"v"  # type: ignore[index]
    assert "x-death" not in fresh and "x-first-death-queue" not in fresh
    assert fresh[contract.ATTEMPT] == 1


def test_redactor_blanks_raw_bytes_keeping_their_length() -> None:
    raw = b"\x00token=s3cret-value;\x00tok-123\x00other"
    masked = REDACTOR.raw(raw, {"x-api-token": "tok-123", b"x-\xff": b"other", "x": 5})
    assert masked == b"\x00token=************;\x00*******\x00other"
    assert REDACTOR.raw(raw, {b"x-token-\xff": b"other"}).endswith(b"*****")
