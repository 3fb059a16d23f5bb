"""control.notifications.aggregator: windows per endpoint and the rate limit, on a fake clock."""

from __future__ import annotations

import itertools

from control.notifications.aggregator import Aggregator
from wire.operational_fact import FactKind, OperationalFact

WINDOW, BATCH = 60.0, 2.0


def fact(
    kind: FactKind = "dead_lettered",
    *,
    at: float = 1000.0,
    event_id: str | None = "evt_1",
    endpoint: str = "shop",
    account: str | None = "acme",
    reason: str | None = "exhausted",
) -> OperationalFact:
    return OperationalFact(kind, account, endpoint, at, event_id, reason)


def aggregator() -> Aggregator[int]:
    return Aggregator(window_seconds=WINDOW, batch_seconds=BATCH)


def test_first_fact_is_sent_after_the_batch_delay_with_what_came_with_it() -> None:
    agg = aggregator()
    agg.add(fact("dead_lettered", reason="gone"), 1, now=0.0)
    agg.add(fact("paused", reason="410 Gone"), 2, now=0.5)
    assert agg.next_send_at() == BATCH
    assert agg.take_due(BATCH - 0.01) == []
    [window] = agg.take_due(BATCH)
    assert window.tokens == [1, 2]
    assert window.counts["dead_lettered"] == 1 and window.counts["paused"] == 1
    assert window.pause is not None and window.pause.event_id == "evt_1"
    assert len(agg) == 0 and agg.next_send_at() is None


def test_many_facts_within_a_window_make_one_notice_with_counts() -> None:
    agg = aggregator()
    agg.add(fact(event_id="evt_0"), 0, now=0.0)
    [first] = agg.take_due(BATCH)
    assert first.facts == 1
    # 500 more within the minute: held until the window after the first notice ends.
    for i in range(1, 501):
        agg.add(fact(event_id=f"evt_{i}", at=1000.0 + i), i, now=BATCH + i * 0.1)
    assert agg.next_send_at() == BATCH + WINDOW
    for now in (10.0, 30.0, BATCH + WINDOW - 0.001):
        assert agg.take_due(now) == []
    [second] = agg.take_due(BATCH + WINDOW)
    assert second.counts["dead_lettered"] == 500
    assert second.first_dead_letter is not None and second.first_dead_letter.event_id == "evt_1"
    assert second.last_dead_letter is not None and second.last_dead_letter.event_id == "evt_500"
    assert second.reasons == {"exhausted": 500}
    assert len(second.tokens) == 500


def test_first_and_last_follow_the_time_facts_happened_not_arrival_order() -> None:
    agg = aggregator()
    agg.add(fact(event_id="late", at=1005.0), 1, now=0.0)
    agg.add(fact(event_id="early", at=1001.0), 2, now=0.1)
    agg.add(fact("circuit_closed", at=1010.0, event_id=None, reason=None), 3, now=0.2)
    agg.add(fact("circuit_opened", at=1003.0, event_id=None, reason=None), 4, now=0.3)
    [window] = agg.take_due(BATCH + 1)
    assert window.first_dead_letter is not None and window.first_dead_letter.event_id == "early"
    assert window.last_dead_letter is not None and window.last_dead_letter.event_id == "late"
    assert window.last_circuit is not None and window.last_circuit.kind == "circuit_closed"
    assert (window.first_at, window.last_at) == (1001.0, 1010.0)


def test_endpoints_are_limited_separately() -> None:
    agg = aggregator()
    agg.add(fact(endpoint="a"), 1, now=0.0)
    agg.take_due(BATCH)
    agg.add(fact(endpoint="a"), 2, now=5.0)  # waits for a's window
    agg.add(fact(endpoint="b"), 3, now=5.0)  # b was quiet: soon
    [window] = agg.take_due(5.0 + BATCH)
    assert window.endpoint == "b"
    [window] = agg.take_due(BATCH + WINDOW)
    assert window.endpoint == "a"


def test_same_endpoint_id_of_two_accounts_is_two_windows() -> None:
    agg = aggregator()
    agg.add(fact(account="acme"), 1, now=0.0)
    agg.add(fact(account="globex"), 2, now=0.0)
    windows = agg.take_due(BATCH)
    assert sorted((w.account or "", w.tokens[0]) for w in windows) == [("acme", 1), ("globex", 2)]


def test_a_quiet_endpoint_is_told_soon_again_after_a_whole_window() -> None:
    agg = aggregator()
    agg.add(fact(), 1, now=0.0)
    agg.take_due(BATCH)
    agg.take_due(BATCH + WINDOW + 1)  # forgets the quiet endpoint's last notice
    agg.add(fact(), 2, now=BATCH + WINDOW + 10)
    assert agg.next_send_at() == BATCH + WINDOW + 10 + BATCH


def test_at_most_one_notice_per_endpoint_per_window_over_a_long_storm() -> None:
    agg = aggregator()
    sent: list[float] = []
    now = 0.0
    token = 0
    while now < 600:  # ten minutes, a fact every 0.5 s
        agg.add(fact(at=now), token, now=now)
        token += 1
        sent.extend(now for _ in agg.take_due(now))
        now += 0.5
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) == 10
    assert min(gaps) >= WINDOW


def test_drop_open_forgets_windows_but_not_the_rate_limit() -> None:
    agg = aggregator()
    agg.add(fact(), 1, now=0.0)
    agg.take_due(BATCH)
    agg.add(fact(), 2, now=3.0)
    [dropped] = agg.drop_open()
    assert dropped.tokens == [2] and len(agg) == 0
    agg.add(fact(), 3, now=4.0)  # redelivered: still waits for the window
    assert agg.next_send_at() == BATCH + WINDOW
