"""Operational facts: their wire form, the worker's sink and outbox, and the notice they become."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import cast

import pytest
from prometheus_client import REGISTRY

from broker.url import BrokerUrl
from config.subscribers import Subscriber
from control.notifications.aggregator import Aggregator, Window
from control.notifications.notice import notice_body, notice_event, notice_headers
from tests.support.node_bridge import NodeBridge, find_node_or_skip
from wire.json_body import canonicalize
from wire.operational_fact import FactKind, OperationalFact, decode_fact, encode_fact, reason_kind
from wire.signature import verify
from worker.fact_emitter import FactEmitter
from worker.fact_outbox import FactSink, note_circuit, note_dead_lettered, note_paused


def shop(**extra: object) -> Subscriber:
    fields: dict[str, object] = {
        "id": "shop",
        "account": "acme",
        "url": "https://shop.example/hook",
        "secret": "s3cret-value",
        "events": ["order.*"],
    }
    fields.update(extra)
    return Subscriber.model_validate(fields)


def dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value("webhook_operational_facts_dropped_total", {"reason": reason})
    return value or 0.0


def test_a_fact_survives_its_wire_form() -> None:
    fact = OperationalFact("dead_lettered", "acme", "shop", 1234.5, "evt_1", "exhausted")
    assert decode_fact(encode_fact(fact)) == fact
    internal = OperationalFact("circuit_opened", None, "sink", 1.0)
    assert decode_fact(encode_fact(internal)) == internal


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"kind":"exploded","account":"a","endpoint":"e","at":1}',
        b'{"kind":"paused","account":"a","endpoint":"e","at":"soon"}',
        b'{"kind":"paused","account":"a","endpoint":"e","at":true}',
        b'{"kind":"paused","account":"a b","endpoint":"e","at":1}',
        b'{"kind":"paused","account":"a","endpoint":"","at":1}',
        b'{"kind":"dead_lettered","account":"a","endpoint":"e","at":1,"reason":"free text"}',
        b'{"kind":"paused","account":"a","endpoint":"e","at":1,"event_id":5}',
        b"{" + b'"x":"' + b"y" * 5000 + b'"}',
    ],
)
def test_what_is_not_a_fact_decodes_to_none(body: bytes) -> None:
    assert decode_fact(body) is None


def test_reasons_are_reduced_to_bounded_kinds() -> None:
    assert reason_kind("poison: no valid x-webhook-account header") == "poison"
    assert reason_kind("wrong_account: event of account 'globex'") == "wrong_account"
    assert reason_kind("exhausted") == "exhausted"
    assert reason_kind("something new") == "other"


class Taken:
    """Stands for the emitter's outbox: what the sink passes on."""

    def __init__(self) -> None:
        self.facts: list[OperationalFact] = []

    def put(self, item: OperationalFact) -> None:
        self.facts.append(item)


def test_the_sink_keeps_nothing_without_an_emitter(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FactSink()
    monkeypatch.setattr("worker.fact_outbox.SINK", sink)
    sink.put(OperationalFact("paused", "acme", "shop", 1.0))
    note_paused(shop(), "evt_1")
    assert not sink.attached
    taken = Taken()
    sink.attach(taken)
    note_paused(shop(), "evt_2")
    sink.detach()
    note_paused(shop(), "evt_3")
    assert [f.event_id for f in taken.facts] == ["evt_2"]


async def test_a_full_fact_outbox_drops_the_newest_and_counts_never_blocks() -> None:
    sink = FactSink()
    emitter = FactEmitter.start(BrokerUrl.parse("amqp://g:g@127.0.0.1:1/"), sink, capacity=3)
    before = dropped("buffer_full")
    for i in range(10):
        sink.put(OperationalFact("dead_lettered", "acme", "shop", float(i), f"evt_{i}"))
    assert emitter.outbox.buffered == 3
    assert dropped("buffer_full") - before == 7
    before_shutdown = dropped("shutdown")
    await emitter.stop(flush_seconds=0.1)
    # What was kept (the oldest three) was not published: counted at the stop.
    assert dropped("shutdown") - before_shutdown == 3
    assert not sink.attached and emitter.outbox.buffered == 0


def test_the_hooks_record_facts_of_the_endpoints_account(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FactSink()
    taken = Taken()
    sink.attach(taken)
    monkeypatch.setattr("worker.fact_outbox.SINK", sink)
    note_dead_lettered(shop(), "evt_1", "poison: bad body")
    note_dead_lettered(shop(), "evt_other", "wrong_account: event of account 'globex'")
    note_paused(shop(), "evt_2")
    note_circuit(shop(), "open")
    note_circuit(shop(), "half_open")  # not a fact
    note_circuit(shop(), "closed")
    facts = taken.facts
    assert [(f.kind, f.event_id, f.reason) for f in facts] == [
        ("dead_lettered", "evt_1", "poison"),
        # another merchant's event: not even its id goes into this account's notice
        ("dead_lettered", None, "wrong_account"),
        ("paused", "evt_2", "410 Gone"),
        ("circuit_opened", None, None),
        ("circuit_closed", None, None),
    ]
    assert {(f.account, f.endpoint) for f in facts} == {("acme", "shop")}


def _window(*facts: OperationalFact) -> Window[int]:
    agg: Aggregator[int] = Aggregator(window_seconds=60, batch_seconds=0)
    for i, fact in enumerate(facts):
        agg.add(fact, i, now=0.0)
    [window] = agg.take_due(0.0)
    return window


@pytest.mark.parametrize(
    ("kinds", "event"),
    [
        (("dead_lettered", "paused", "circuit_opened"), "endpoint.paused"),
        (("dead_lettered", "circuit_opened"), "endpoint.circuit_opened"),
        (("circuit_opened", "circuit_closed", "dead_lettered"), "endpoint.dead_lettered"),
        (("circuit_opened", "circuit_closed"), "endpoint.circuit_closed"),
        (("dead_lettered",), "endpoint.dead_lettered"),
    ],
)
def test_the_notice_event_names_the_most_important_fact(kinds: tuple[str, ...], event: str) -> None:
    facts = [
        OperationalFact(cast(FactKind, kind), "acme", "shop", float(i), None, None)
        for i, kind in enumerate(kinds)
    ]
    window = _window(*facts)
    assert notice_event(window) == event


def test_a_notice_is_canonical_json_signed_like_a_webhook() -> None:
    window = _window(
        OperationalFact("dead_lettered", "acme", "shop", 1700000000.5, "evt_ü", "exhausted"),
        OperationalFact("paused", "acme", "shop", 1700000001.25, "evt_2", "410 Gone"),
    )
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    body = notice_body(window, 0.5, now=now)
    assert canonicalize(body) == body  # what JSON.stringify(JSON.parse(body)) gives back
    notice = json.loads(body)
    assert notice["event"] == "endpoint.paused"
    assert notice["timestamp"] == "2026-11-30T12:00:00.000Z"
    assert notice["data"]["window_seconds"] == 0.5
    assert notice["data"]["first_at"] == "2023-11-14T22:13:20.500Z"
    headers = notice_headers(body, notice["event"], "ntc_1", "whsec_x", now_ms=1_700_000_000_000)
    assert verify("whsec_x", body, headers["X-Webhook-Signature"], tolerance_seconds=1e12)
    assert headers["X-Webhook-Event"] == "endpoint.paused"
    assert headers["Content-Type"] == "application/json"


def test_the_page_verifier_accepts_every_kind_of_notice() -> None:
    bridge = NodeBridge(find_node_or_skip())
    try:
        for kinds in (("paused",), ("circuit_opened",), ("circuit_closed",), ("dead_lettered",)):
            facts = [
                OperationalFact(cast(FactKind, k), "acme", "shop", 1.0 / 3, "evt_\u2028", "gone")
                for k in kinds
            ]
            body = notice_body(_window(*facts), 1 / 3)
            headers = notice_headers(body, "e", "ntc", "sek\u00e9ret", now_ms=1)
            assert bridge.page_verify(body, headers["X-Webhook-Signature"], "sek\u00e9ret") is True
    finally:
        bridge.close()
