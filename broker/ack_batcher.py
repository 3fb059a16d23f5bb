"""Settling deliveries on one channel: acks batched per event-loop turn, rejects at once."""

from __future__ import annotations

from collections import deque

import pika.exceptions

from broker.channel_rpc import ChannelRpc

# See AckBatcher.flush.
_SETTLED_COMPACT_AT = 10_000


class AckBatcher:
    """The delivery tags of one channel, from arrival until their ack or reject is sent."""

    def __init__(self, rpc: ChannelRpc) -> None:
        self._rpc = rpc
        # Delivery tags in the order they arrived and not yet known to be
        # settled, acks waiting for the end of this loop turn, and tags already
        # settled one by one that are still in the deque.
        self._unsettled: deque[int] = deque()
        self._acks_due: set[int] = set()
        self._settled: set[int] = set()
        self._flush_scheduled = False

    def received(self, delivery_tag: int) -> None:
        """Note a delivery, in arrival order; it is unsettled until settle() is called."""
        self._unsettled.append(delivery_tag)

    def settle(self, delivery_tag: int, *, ack: bool, requeue: bool = True) -> bool:
        """Ack or nack one delivery; False if the channel is gone (the broker redelivers).

        Acks are sent at the end of the event-loop turn, and a run of acked tags
        that starts at the oldest unsettled one goes out as one
        ``basic.ack(multiple=True)``: a ``multiple`` ack settles *every*
        unsettled tag up to it, so it is only used where each of those tags has
        been acked here (or already settled on its own).  Nacks go at once.
        """
        # A tag from a closed channel must never be used on a new one: the broker
        # has already requeued that message and will deliver it again.
        if not self._rpc.is_open:
            return False
        if ack:
            self._acks_due.add(delivery_tag)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._rpc.loop.call_soon(self.flush)
            return True
        try:
            # basic.reject, not basic.nack: from RabbitMQ 4.3 on, only a reject (or a
            # lost consumer) counts towards a quorum queue's delivery limit, the
            # guard that dead-letters a message that keeps crashing the worker.
            self._rpc.channel.basic_reject(delivery_tag, requeue=requeue)
        except pika.exceptions.AMQPError:
            return False
        self._settled.add(delivery_tag)
        return True

    def flush(self) -> None:
        """Send the acks collected during this loop turn."""
        self._flush_scheduled = False
        due = self._acks_due
        if not due or not self._rpc.is_open:
            due.clear()
            return
        unsettled, settled = self._unsettled, self._settled
        last, covered = 0, 0
        while unsettled and (unsettled[0] in due or unsettled[0] in settled):
            tag = unsettled.popleft()
            if tag in due:
                due.discard(tag)
                last, covered = tag, covered + 1
            else:
                settled.discard(tag)
        channel = self._rpc.channel
        try:
            if covered:
                channel.basic_ack(last, multiple=covered > 1)
            for tag in due:  # behind a tag still being worked on: one by one
                channel.basic_ack(tag)
        except pika.exceptions.AMQPError:
            return  # the channel is going away; the broker redelivers
        finally:
            settled.update(due)
            due.clear()
        if len(settled) > _SETTLED_COMPACT_AT:
            # A delivery left unsettled for long (its next step was uncertain)
            # blocks the run; drop what was settled behind it so memory stays flat.
            self._unsettled = deque(t for t in unsettled if t not in settled)
            settled.clear()
