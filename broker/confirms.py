"""Publisher-confirm bookkeeping, shared by the producer and the worker's adapter.

On a channel in confirm mode the broker numbers the publishes 1, 2, 3 ... and
answers each with basic.ack or basic.nack, possibly ``multiple`` (everything up
to that tag) and not necessarily in order.  A ``mandatory`` publish no queue
takes comes back first as basic.return, which carries no tag but always
precedes the confirm of its message.  :class:`ConfirmTracker` does that
pairing; the pika callbacks that feed it stay with each connection adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from config.errors import NackedError, PublishError, UnroutableError

T = TypeVar("T")


def _unroutable(_token: object) -> UnroutableError:
    return UnroutableError("the broker returned the message: no queue is bound for it")


def _nacked(_token: object) -> NackedError:
    return NackedError("the broker refused the message")


class ConfirmTracker(Generic[T]):
    """Maps the delivery tags of one confirm-mode channel to their pending publishes.

    A *token* is whatever the caller wants back when a publish settles (a
    future, a batch index); it must not be None.  ``identity(token)`` must equal
    what :meth:`returned` is given for that publish's basic.return (e.g. the
    routing key and message id).  ``unroutable`` and ``nacked`` build the error
    a token ends with.  One tracker per channel: tags restart on a new one.
    """

    __slots__ = ("_floor", "_identity", "_last", "_nacked", "_pending", "_returned", "_unroutable")

    def __init__(
        self,
        identity: Callable[[T], object],
        *,
        unroutable: Callable[[T], UnroutableError] = _unroutable,
        nacked: Callable[[T], NackedError] = _nacked,
    ) -> None:
        self._identity = identity
        self._unroutable = unroutable
        self._nacked = nacked
        # Ascending tag order, because tags are handed out in order; returned()
        # relies on it to find the oldest match.
        self._pending: dict[int, T] = {}
        self._returned: set[int] = set()
        self._last = 0
        # Every tag below this is settled: a ``multiple`` confirm only walks the
        # tags from here up, so each tag is walked once however the confirms
        # are spread, and per-publish work stays O(1).
        self._floor = 1

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, token: T) -> int:
        """Record the next publish on the channel; return its delivery tag."""
        tag = self._last = self._last + 1
        self._pending[tag] = token
        return tag

    def forget(self, tag: int) -> T | None:
        """Drop a publish that never reached the wire (its send raised); return its token."""
        self._returned.discard(tag)
        return self._pending.pop(tag, None)

    def returned(self, identity: object) -> bool:
        """Pair a basic.return with the oldest pending publish of ``identity``; False if none."""
        returned = self._returned
        for tag, token in self._pending.items():
            if tag not in returned and self._identity(token) == identity:
                returned.add(tag)
                return True
        return False

    def settle(
        self, tag: int, *, multiple: bool, acked: bool
    ) -> list[tuple[T, PublishError | None]]:
        """Apply a basic.ack (``acked``) or basic.nack; return what it settles, oldest first.

        Each settled token comes with None (confirmed) or the error it ends
        with: UnroutableError if it was returned, else NackedError for a nack.
        Tags already settled (or never tracked) are skipped.
        """
        if multiple:
            start, end = self._floor, min(tag, self._last)
            if end < start:
                return []
            self._floor = end + 1
            tags: range | tuple[int] = range(start, end + 1)
        else:
            tags = (tag,)
        pending, returned = self._pending, self._returned
        settled: list[tuple[T, PublishError | None]] = []
        for one in tags:
            token = pending.pop(one, None)
            if token is None:
                continue
            if returned and one in returned:
                returned.discard(one)
                settled.append((token, self._unroutable(token)))
            elif acked:
                settled.append((token, None))
            else:
                settled.append((token, self._nacked(token)))
        return settled

    def channel_lost(self) -> list[T]:
        """The channel is gone: forget every pending publish; return their tokens, oldest first.

        Their confirms will never come, so the caller fails them (or sends
        them again on a new channel, with a new tracker).
        """
        tokens = list(self._pending.values())
        self._pending.clear()
        self._returned.clear()
        self._floor = self._last + 1
        return tokens
