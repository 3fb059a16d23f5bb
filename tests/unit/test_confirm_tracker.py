"""broker.confirms.ConfirmTracker: acks, nacks, returns and channel loss, without a broker."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.confirms import ConfirmTracker
from config.errors import NackedError, PublishError, UnroutableError

Outcome = tuple[str, type[PublishError] | None]


def _tracker() -> ConfirmTracker[str]:
    # Tokens are message ids; every message goes to the same routing key.
    return ConfirmTracker(identity=lambda token: ("orders", token))


def _outcomes(settled: list[tuple[str, PublishError | None]]) -> list[Outcome]:
    return [(token, None if error is None else type(error)) for token, error in settled]


def test_tags_are_handed_out_in_order_from_one() -> None:
    tracker = _tracker()
    assert [tracker.track(t) for t in "abc"] == [1, 2, 3]
    assert len(tracker) == 3


def test_a_multiple_ack_settles_every_tag_up_to_it_oldest_first() -> None:
    tracker = _tracker()
    for token in "abcde":
        tracker.track(token)
    assert _outcomes(tracker.settle(3, multiple=True, acked=True)) == [
        ("a", None),
        ("b", None),
        ("c", None),
    ]
    assert len(tracker) == 2
    assert _outcomes(tracker.settle(5, multiple=True, acked=True)) == [("d", None), ("e", None)]
    assert len(tracker) == 0


def test_a_nack_fails_only_its_own_publish() -> None:
    tracker = _tracker()
    for token in "abc":
        tracker.track(token)
    assert _outcomes(tracker.settle(2, multiple=False, acked=False)) == [("b", NackedError)]
    assert _outcomes(tracker.settle(3, multiple=True, acked=True)) == [("a", None), ("c", None)]


def test_a_multiple_nack_fails_every_tag_up_to_it() -> None:
    tracker = _tracker()
    for token in "abc":
        tracker.track(token)
    assert _outcomes(tracker.settle(2, multiple=True, acked=False)) == [
        ("a", NackedError),
        ("b", NackedError),
    ]
    assert len(tracker) == 1


def test_return_then_ack_is_unroutable() -> None:
    tracker = _tracker()
    for token in "abc":
        tracker.track(token)
    assert tracker.returned(("orders", "b"))
    assert _outcomes(tracker.settle(3, multiple=True, acked=True)) == [
        ("a", None),
        ("b", UnroutableError),
        ("c", None),
    ]


def test_return_then_nack_is_still_unroutable() -> None:
    tracker = _tracker()
    tracker.track("a")
    assert tracker.returned(("orders", "a"))
    assert _outcomes(tracker.settle(1, multiple=False, acked=False)) == [("a", UnroutableError)]


def test_a_return_pairs_with_the_oldest_pending_publish_of_its_identity() -> None:
    tracker = _tracker()
    for token in ("same", "other", "same"):
        tracker.track(token)
    assert tracker.returned(("orders", "same"))
    assert _outcomes(tracker.settle(1, multiple=False, acked=True)) == [("same", UnroutableError)]
    # A second return of the same identity goes to the next one, not the settled one.
    assert tracker.returned(("orders", "same"))
    assert _outcomes(tracker.settle(3, multiple=False, acked=True)) == [("same", UnroutableError)]
    assert _outcomes(tracker.settle(2, multiple=False, acked=True)) == [("other", None)]


def test_a_return_is_not_paired_twice_with_the_same_publish() -> None:
    tracker = _tracker()
    tracker.track("a")
    tracker.track("a")
    assert tracker.returned(("orders", "a"))
    assert tracker.returned(("orders", "a"))
    assert not tracker.returned(("orders", "a"))
    assert _outcomes(tracker.settle(2, multiple=True, acked=True)) == [
        ("a", UnroutableError),
        ("a", UnroutableError),
    ]


def test_a_return_for_nothing_pending_changes_nothing() -> None:
    tracker = _tracker()
    tracker.track("a")
    assert not tracker.returned(("orders", "zzz"))
    assert not tracker.returned(("payments", "a"))
    assert _outcomes(tracker.settle(1, multiple=False, acked=True)) == [("a", None)]


def test_out_of_order_confirms_settle_each_publish_once() -> None:
    tracker = _tracker()
    for token in "abcdef":
        tracker.track(token)
    assert _outcomes(tracker.settle(3, multiple=False, acked=True)) == [("c", None)]
    assert _outcomes(tracker.settle(5, multiple=False, acked=False)) == [("e", NackedError)]
    # The multiple ack covers 1-4 but 3 is already settled.
    assert _outcomes(tracker.settle(4, multiple=True, acked=True)) == [
        ("a", None),
        ("b", None),
        ("d", None),
    ]
    # Stale or repeated confirms settle nothing.
    assert tracker.settle(2, multiple=True, acked=True) == []
    assert tracker.settle(3, multiple=False, acked=True) == []
    assert tracker.settle(5, multiple=False, acked=True) == []
    assert _outcomes(tracker.settle(6, multiple=True, acked=True)) == [("f", None)]
    assert len(tracker) == 0


def test_a_multiple_confirm_beyond_the_last_publish_settles_what_is_there() -> None:
    tracker = _tracker()
    tracker.track("a")
    assert _outcomes(tracker.settle(10, multiple=True, acked=True)) == [("a", None)]
    tracker.track("b")
    assert _outcomes(tracker.settle(2, multiple=True, acked=True)) == [("b", None)]


def test_channel_loss_hands_back_everything_pending() -> None:
    tracker = _tracker()
    for token in "abcd":
        tracker.track(token)
    tracker.settle(2, multiple=False, acked=True)
    tracker.returned(("orders", "c"))
    assert tracker.channel_lost() == ["a", "c", "d"]
    assert len(tracker) == 0
    # Confirms that straggle in afterwards find nothing to settle.
    assert tracker.settle(4, multiple=True, acked=True) == []
    assert not tracker.returned(("orders", "c"))


def test_forget_drops_a_publish_that_never_went_out() -> None:
    tracker = _tracker()
    tracker.track("a")
    tag = tracker.track("b")
    tracker.returned(("orders", "b"))
    assert tracker.forget(tag) == "b"
    assert tracker.forget(tag) is None
    assert _outcomes(tracker.settle(2, multiple=True, acked=True)) == [("a", None)]


def test_the_errors_are_built_from_the_token() -> None:
    tracker: ConfirmTracker[tuple[int, str]] = ConfirmTracker(
        identity=lambda token: token[1],
        unroutable=lambda token: UnroutableError(f"nobody wants event {token[0]}"),
        nacked=lambda token: NackedError(f"event {token[0]} refused"),
    )
    tracker.track((7, "x"))
    tracker.track((8, "y"))
    tracker.returned("x")
    settled = tracker.settle(2, multiple=True, acked=False)
    assert [str(error) for _, error in settled] == ["nobody wants event 7", "event 8 refused"]


def test_a_long_run_stays_consistent() -> None:
    tracker = _tracker()
    outstanding = 0
    for tag in range(1, 100_001):
        assert tracker.track(str(tag)) == tag
        outstanding += 1
        if tag % 64 == 0:
            assert len(tracker.settle(tag, multiple=True, acked=True)) == outstanding
            outstanding = 0
    assert len(tracker) == outstanding


# One step: ("publish",), ("return", index of a pending publish), ("confirm", tag, multiple, ack).
_steps = st.lists(
    st.one_of(
        st.just(("publish",)),
        st.tuples(st.just("return"), st.integers(0, 20)),
        st.tuples(st.just("confirm"), st.integers(1, 40), st.booleans(), st.booleans()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_matches_a_naive_model(steps: list[tuple[object, ...]]) -> None:
    """Against a model that scans every pending tag: the same outcomes, each tag once."""
    tracker: ConfirmTracker[int] = ConfirmTracker(identity=lambda token: token % 3)
    model_pending: dict[int, bool] = {}  # tag -> returned
    model_last = 0
    seen: set[int] = set()
    for step in steps:
        if step[0] == "publish":
            model_last += 1
            assert tracker.track(model_last) == model_last
            model_pending[model_last] = False
        elif step[0] == "return":
            candidates = sorted(t for t, ret in model_pending.items() if not ret)
            if not candidates:
                continue
            pick = step[1]
            assert isinstance(pick, int)
            identity = candidates[pick % len(candidates)] % 3
            oldest = next(t for t in candidates if t % 3 == identity)
            model_pending[oldest] = True
            assert tracker.returned(identity)
        else:
            _, tag, multiple, acked = step
            assert isinstance(tag, int)
            tags = [t for t in sorted(model_pending) if t <= tag] if multiple else [tag]
            expected: list[tuple[int, type[PublishError] | None]] = []
            for t in tags:
                if t not in model_pending:
                    continue
                was_returned = model_pending.pop(t)
                kind = UnroutableError if was_returned else None if acked else NackedError
                expected.append((t, kind))
            got = tracker.settle(tag, multiple=bool(multiple), acked=bool(acked))
            assert [(t, None if e is None else type(e)) for t, e in got] == expected
            assert not seen & {t for t, _ in got}
            seen |= {t for t, _ in got}
        assert len(tracker) == len(model_pending)
    assert sorted(tracker.channel_lost()) == sorted(model_pending)
