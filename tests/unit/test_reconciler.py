"""The reconciler's diff (old snapshot + new snapshot -> steps), and the lanes it drives.

Pure: no broker. tests/integration/test_live_changes.py carries the steps out
on a real one.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.url import BrokerUrl
from config.subscribers import CircuitBreakerPolicy, RetryPolicy
from tests.support.worker_harness import subscriber
from worker.change_notices import ChangeNotice
from worker.circuit_breaker import CircuitState
from worker.lanes import Lanes
from worker.reconcile_plan import ADDED, CHANGED, REMOVED, plan_changes
from worker.reconciler import Reconciler
from worker.subscriber_source import (
    DISABLED,
    ENABLED,
    PAUSED,
    SourceSnapshot,
    SubscriberSpec,
)

DEFAULTS = CircuitBreakerPolicy()
URL = "https://shop.example/hook?token=secret-token-in-query"


def spec(sub_id: str = "shop", *, paused: bool = False, **fields: Any) -> SubscriberSpec:
    url = fields.pop("url", URL)
    return SubscriberSpec.of(subscriber(sub_id, url, **fields), DEFAULTS, paused=paused)


def specs(*items: SubscriberSpec) -> dict[str, SubscriberSpec]:
    return {item.id: item for item in items}


# ---------------------------------------------------------------- the plan


def test_nothing_to_do_for_equal_snapshots() -> None:
    assert plan_changes({}, {}) == ()
    assert plan_changes(specs(spec("a"), spec("b")), specs(spec("a"), spec("b"))) == ()


def test_a_new_subscriber_is_added_with_its_account_scoped_keys() -> None:
    [step] = plan_changes({}, specs(spec("new", account="globex", events=("order.*", "refund.#"))))
    assert (step.kind, step.id, step.old) == (ADDED, "new", None)
    assert step.bind == ("globex.order.*", "globex.refund.#")
    assert step.unbind == () and step.fields == ()


def test_a_gone_subscriber_is_removed_with_all_its_keys_to_unbind() -> None:
    old = spec("gone", events=("order.created", "order.cancelled"))
    [step] = plan_changes(specs(old, spec("stays")), specs(spec("stays")))
    assert (step.kind, step.id, step.new) == (REMOVED, "gone", None)
    assert step.unbind == ("acme.order.created", "acme.order.cancelled") and step.bind == ()


def test_changed_patterns_bind_the_new_keys_and_unbind_only_the_dropped() -> None:
    old = spec(events=("order.created", "order.updated"))
    new = spec(events=("order.updated", "order.cancelled"))
    [step] = plan_changes(specs(old), specs(new))
    assert step.kind == CHANGED and step.fields == ("events",)
    assert step.bind == ("acme.order.cancelled",)
    assert step.unbind == ("acme.order.created",)


def test_a_changed_account_moves_every_key() -> None:
    [step] = plan_changes(specs(spec(account="acme")), specs(spec(account="globex")))
    assert step.fields == ("account",)
    assert (step.bind, step.unbind) == (("globex.order.*",), ("acme.order.*",))


def test_becoming_an_all_accounts_sink_binds_every_account() -> None:
    sink = spec(account=None, all_accounts=True)
    [step] = plan_changes(specs(spec()), specs(sink))
    assert set(step.fields) == {"account", "all_accounts"}
    assert (step.bind, step.unbind) == (("*.order.*",), ("acme.order.*",))


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"secret": "a-new-secret-value"}, ("secret",)),
        ({"url": "https://shop.example/other?token=another"}, ("url",)),
        ({"max_in_flight": 2}, ("max_in_flight",)),
        (
            {"timeout_seconds": 1, "standard_webhooks": True},
            ("timeout_seconds", "standard_webhooks"),
        ),
        ({"circuit_breaker": {"failure_threshold": 2}}, ("circuit_breaker",)),
        ({"enabled": False}, ("enabled",)),
    ],
)
def test_other_changes_name_their_fields_and_leave_bindings_alone(
    change: dict[str, Any], fields: tuple[str, ...]
) -> None:
    [step] = plan_changes(specs(spec()), specs(spec(**change)))
    assert (step.kind, step.fields, step.bind, step.unbind) == (CHANGED, fields, (), ())


def test_names_only_never_values() -> None:
    new = spec(secret="a-new-secret-value", url="https://shop.example/x?token=t0k3n")
    [step] = plan_changes(specs(spec()), specs(new))
    assert step.fields == ("url", "secret")
    assert "t0k3n" not in repr(step.fields) and "a-new-secret" not in repr(step.fields)


def test_states_disabled_and_paused() -> None:
    assert spec().state == ENABLED
    assert spec(enabled=False).state == DISABLED
    assert spec(paused=True).state == PAUSED
    assert spec(enabled=False, paused=True).state == DISABLED  # disabled says more
    [step] = plan_changes(specs(spec()), specs(spec(paused=True)))
    assert step.fields == ("paused",) and step.new is not None and step.new.state == PAUSED


def test_changed_file_wide_breaker_defaults_change_the_policy() -> None:
    stricter = CircuitBreakerPolicy(failure_threshold=2)
    old = spec()
    new = SubscriberSpec.of(old.subscriber, stricter)
    [step] = plan_changes(specs(old), specs(new))
    assert step.fields == ("circuit_breaker",)
    assert step.new is not None and step.new.breaker.failure_threshold == 2


def test_own_breaker_keys_override_the_defaults() -> None:
    own = spec(circuit_breaker={"cooldown_seconds": 9})
    assert own.breaker.cooldown_seconds == 9
    assert own.breaker.failure_threshold == DEFAULTS.failure_threshold


def test_additions_come_first_then_changes_then_removals() -> None:
    old = specs(spec("gone"), spec("kept"), spec("changed"))
    new = specs(spec("changed", max_in_flight=3), spec("kept"), spec("fresh"))
    steps = plan_changes(old, new)
    assert [(s.kind, s.id) for s in steps] == [
        (ADDED, "fresh"),
        (CHANGED, "changed"),
        (REMOVED, "gone"),
    ]


# ---------------------------------------------------------------- the lanes


def _lanes() -> Lanes:
    return Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10)


def test_lanes_follow_the_state_in_the_configuration() -> None:
    lanes = _lanes()
    shop = spec(max_in_flight=7)
    lane = lanes.add(shop.subscriber, shop.breaker, shop.state)
    assert lane.wanted_prefetch() == 7
    lanes.update(shop.subscriber, shop.breaker, DISABLED)
    assert lane.wanted_prefetch() == 0
    lanes.update(shop.subscriber, shop.breaker, PAUSED)
    assert lane.wanted_prefetch() == 0
    bigger = spec(max_in_flight=9)
    assert lanes.update(bigger.subscriber, bigger.breaker, ENABLED) is lane
    assert lane.wanted_prefetch() == 9 and lane.subscriber is bigger.subscriber
    assert lanes.subscribers == [bigger.subscriber] and "shop" in lanes


def test_switching_the_breaker_off_closes_an_open_circuit() -> None:
    lanes = _lanes()
    shop = spec(circuit_breaker={"failure_threshold": 1})
    lane = lanes.add(shop.subscriber, shop.breaker, shop.state)
    lane.breaker.record(lane.breaker.ticket(), ok=False)
    assert lane.breaker.state is CircuitState.OPEN
    off = spec(circuit_breaker={"enabled": False})
    lanes.update(off.subscriber, off.breaker, off.state)
    assert lane.breaker.state is CircuitState.CLOSED and lane.wanted_prefetch() == 16


async def test_a_removed_lane_is_forgotten_and_never_consumes_again() -> None:
    lanes = _lanes()
    shop = spec()
    lane = lanes.add(shop.subscriber, shop.breaker, shop.state)
    await lanes.remove("shop")
    await lanes.remove("shop")  # twice is harmless
    assert "shop" not in lanes and lanes.subscriber_ids == []
    await lanes.sync(lane)  # a late delivery's breaker change: no consumer comes back
    assert lane.tag is None


# ---------------------------------------------------------------- notices


class _Source:
    poll_seconds = 30.0

    def __init__(self, snapshot: SourceSnapshot) -> None:
        self.snapshot = snapshot

    async def load(self) -> SourceSnapshot:
        return self.snapshot

    def describe(self) -> str:
        return "test source"

    def close(self) -> None:
        pass


def test_adopting_a_snapshot_creates_its_lanes_and_only_newer_notices_wake() -> None:
    snapshot = SourceSnapshot.of(7, "v7", [spec("a"), spec("b", enabled=False)], 0.0)
    lanes = _lanes()
    reconciler = Reconciler(
        _Source(snapshot), lanes, BrokerUrl.parse("amqp://localhost/"), RetryPolicy()
    )
    reconciler.adopt(snapshot)
    assert lanes.subscriber_ids == ["a", "b"] and lanes["b"].config_state == DISABLED
    assert (reconciler.version, reconciler.fingerprint) == (7, "v7")
    reconciler.notice(ChangeNotice(version=7))
    assert not reconciler._wake.is_set()
    reconciler.notice(ChangeNotice(version=8, account="acme", change="created"))
    assert reconciler._wake.is_set()
