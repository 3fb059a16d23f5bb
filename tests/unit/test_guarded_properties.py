"""The guarded decode of message properties: it never raises, and says what it could not read.

The red-team fixtures (tests/fixtures/redteam/amqp/) make pika's own decode
raise, or decode into headers that cannot be sent on; through the guard each
yields properties marked with the reason, what could be read, and the bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import pika
import pika.data
import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import pika_internals
from broker.properties import MessageProperties
from broker.property_salvage import MAX_DEPTH, SALVAGE_BUDGET, salvage, unfit, unfit_header
from tests.support import redteam_amqp
from tests.support.redteam_amqp import long_string, properties, short_string, table, timestamp

# fixture -> (what pika's own decode does, the reason the guard gives)
EXPECTED = {
    "timestamp-2pow63": (OverflowError, "OverflowError in header 'x-sent-at'"),
    "timestamp-year-10000": (ValueError, "ValueError in header 'x-sent-at'"),
    "table-nested-5000-deep": (RecursionError, "RecursionError in header 'x-nested'"),
    "array-nested-5000-deep": (RecursionError, "RecursionError in header 'x-nested'"),
    "double-infinity": (OverflowError, "OverflowError in header 'x-amount'"),
    "double-nan": (ValueError, "ValueError in header 'x-amount'"),
    # These two decode: one can never be encoded again, the other is over MAX_DEPTH.
    "table-nested-100-deep": (None, "nested over 64 levels in header 'x-nested'"),
    "double-1e300": (None, "integer over 64 bits in header 'x-amount'"),
}


@pytest.fixture(autouse=True)
def _guarded() -> None:
    pika_internals.install_guarded_decode()


def _decode(raw: bytes) -> pika.spec.BasicProperties:
    decoded = pika.spec.BasicProperties()
    decoded.decode(raw)
    return decoded


def test_the_fixture_files_are_what_the_builder_makes() -> None:
    built = redteam_amqp.fixtures()
    on_disk = {p.stem: p.read_bytes() for p in redteam_amqp.FIXTURES.glob("*.props")}
    assert on_disk == built
    assert set(EXPECTED) | {"header-key-not-utf8"} == set(built)
    readme = (redteam_amqp.FIXTURES / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}.props`" in readme for name in built)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_what_pika_alone_does_with_each_fixture(name: str) -> None:
    error, _ = EXPECTED[name]
    raw = redteam_amqp.load(name)
    plain = pika.spec.BasicProperties()
    if error is None:
        pika_internals._PIKA_DECODE(plain, raw)  # decodes; the guard's limits refuse it
        if name == "double-1e300":
            with pytest.raises(struct.error):
                pika.data.encode_table([], plain.headers)  # as the worker's copy would
    else:
        with pytest.raises(error):
            pika_internals._PIKA_DECODE(plain, raw)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_guard_marks_each_fixture_and_keeps_what_could_be_read(name: str) -> None:
    raw = redteam_amqp.load(name)
    record = MessageProperties.from_pika(_decode(raw))
    assert record.undecodable == EXPECTED[name][1]
    assert record.raw == raw
    assert record.message_id == name
    assert record.type == "order.created"
    assert record.content_type == "application/json"
    assert record.delivery_mode == 2
    assert record.headers == {"x-webhook-account": "acme"}
    assert "undecodable" not in record.present() and "raw" not in record.present()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_frame_decoder_consumes_the_whole_frame(name: str) -> None:
    raw = redteam_amqp.load(name)
    payload = struct.pack(">HHQ", pika.spec.Basic.INDEX, 0, 2) + raw
    frame = struct.pack(">BHI", pika.spec.FRAME_HEADER, 1, len(payload)) + payload + b"\xce"
    consumed, decoded = pika.frame.decode_frame(frame + b"next")
    assert consumed == len(frame)
    assert isinstance(decoded, pika.frame.Header) and decoded.body_size == 2
    failure = pika_internals.decode_failure(decoded.properties)
    assert failure is not None and failure.raw == raw


def test_decodable_odd_properties_pass_through_unmarked() -> None:
    raw = redteam_amqp.load("header-key-not-utf8")
    record = MessageProperties.from_pika(_decode(raw))
    assert record.undecodable is None and record.raw is None
    assert record.headers[b"x-\xff\xfe"] == b"\xff not utf-8"  # type: ignore[index]


def test_install_is_idempotent_and_replaces_pikas_decode_once() -> None:
    pika_internals.install_guarded_decode()
    pika_internals.install_guarded_decode()
    assert pika.spec.BasicProperties.decode is pika_internals._guarded_decode
    assert pika_internals._PIKA_DECODE is not pika_internals._guarded_decode


header_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(st.text(max_size=10), header_values, max_size=5),
    message_id=st.text(max_size=20),
)
def test_decodable_properties_decode_exactly_as_pika_does(
    headers: dict[str, Any], message_id: str
) -> None:
    source = pika.BasicProperties(message_id=message_id, headers=headers, delivery_mode=2)
    raw = b"".join(source.encode())
    plain = pika.spec.BasicProperties()
    pika_internals._PIKA_DECODE(plain, raw)
    guarded = _decode(raw)
    assert pika_internals.decode_failure(guarded) is None
    assert vars(guarded) == vars(plain)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=200))
def test_any_bytes_decode_without_raising(raw: bytes, cut: int) -> None:
    for candidate in (raw, redteam_amqp.load("timestamp-2pow63")[:cut] + raw):
        decoded = _decode(candidate)
        failure = pika_internals.decode_failure(decoded)
        assert failure is None or (failure.raw == candidate and failure.reason)


# ------------------------------------------------------------------ salvage


def test_salvage_steps_over_a_bad_header_and_keeps_the_others() -> None:
    raw = properties(
        "evt",
        (b"x-before", long_string(b"kept")),
        (b"x-bad", timestamp(2**63)),
        (b"x-after", b"I" + struct.pack(">i", 7)),
    )
    rescued = salvage(raw, pika.data.decode_value)
    assert rescued.values["headers"] == {
        "x-webhook-account": "acme",
        "x-before": "kept",
        "x-after": 7,
    }
    assert rescued.values["message_id"] == "evt"
    assert rescued.reason("OverflowError") == "OverflowError in header 'x-bad'"


def test_salvage_stops_at_an_unknown_field_type_but_reads_on_after_the_table() -> None:
    raw = properties("evt", (b"x-odd", b"Z\x00\x00"), (b"x-lost", long_string(b"v")))
    rescued = salvage(raw, pika.data.decode_value)
    assert rescued.values["headers"] == {"x-webhook-account": "acme"}
    assert rescued.values["message_id"] == "evt" and rescued.values["type"] == "order.created"
    assert "unknown field type" in rescued.reason("x")


def test_salvage_of_cut_or_odd_bytes_never_raises() -> None:
    raw = redteam_amqp.load("timestamp-2pow63")
    for end in range(len(raw)):
        salvage(raw[:end], pika.data.decode_value)  # no exception, whatever the cut
    assert salvage(b"\x00\x01", pika.data.decode_value).values["headers"] is None  # 2nd flag word


def test_salvage_names_at_most_three_headers_and_cuts_long_keys() -> None:
    bad = [(f"x-{i}".encode(), timestamp(2**63)) for i in range(5)]
    rescued = salvage(properties("evt", *bad), pika.data.decode_value)
    assert rescued.reason("e") == (
        "OverflowError in header 'x-0', OverflowError in header 'x-1', "
        "OverflowError in header 'x-2' and 2 more"
    )
    long_key = salvage(properties("evt", (b"k" * 200, timestamp(2**63))), pika.data.decode_value)
    assert long_key.reason("e") == f"OverflowError in header '{'k' * 64}…'"


def test_salvage_keeps_at_most_its_budget_of_headers() -> None:
    big = long_string(b"v" * (SALVAGE_BUDGET // 2))
    raw = properties("evt", (b"x-a", big), (b"x-b", big), (b"x-bad", timestamp(2**63)))
    rescued = salvage(raw, pika.data.decode_value)
    assert list(rescued.values["headers"]) == ["x-webhook-account", "x-a"]
    assert "over the 64 KiB kept per message in header 'x-b'" in rescued.reason("e")


def test_unfit_values() -> None:
    def nested(depth: int) -> Any:
        value: Any = {}
        for _ in range(depth - 1):
            value = {"a": value}
        return value

    assert unfit(nested(MAX_DEPTH - 1)) is None
    assert unfit(nested(MAX_DEPTH)) == f"nested over {MAX_DEPTH} levels"
    assert unfit([[2**63]]) == "integer over 64 bits"
    assert unfit(-(2**63)) is None and unfit(True) is None
    assert not unfit_header({"a": "text", "b": b"x", "c": 1, "d": None, "e": {"f": [1]}})
    assert unfit_header({"a": 2**64})
    assert unfit_header({"a": nested(100)})


def test_a_short_string_running_past_the_end_is_not_read() -> None:
    raw = struct.pack(">H", 1 << 7) + short_string(b"evt")[:-1]
    assert salvage(raw, pika.data.decode_value).values["message_id"] is None
    assert table() == b"\x00\x00\x00\x00"
