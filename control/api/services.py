"""What the API's routes work with: the store, the tokens, and four outside effects.

The outside effects sit behind small protocols so tests can stand in for them:
change notices (``notices``), the broker's pause markers (``pauses``), the
signed test delivery (``probe``) and resending from the delivery log
(``resender``).  ``ApiServices.from_settings`` builds the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from broker.change_notices import ChangeNoticePublisher
from broker.url import BrokerUrl
from config.settings import Settings
from config.subscribers import Subscriber
from control.api.auth import ApiTokens
from control.api.notices import BrokerChangeNotices, ChangeNotices
from control.delivery_log.resender import LogResender, Resender
from control.store.endpoints import EndpointStore
from wire.envelope import build_envelope, new_event_id
from wire.queued_event import QueuedEvent
from wire.samples import sample_data
from worker.delivery import Deliverer, DeliveryResult
from worker.pause import mark_paused, paused_among, resume


class PauseMarkers(Protocol):
    """The broker-side pause every worker obeys (blocking calls; BrokerError on failure)."""

    def mark(self, endpoint_id: str, reason: str) -> bool:
        """Pause; True if it was not paused before."""
        ...

    def clear(self, endpoint_id: str) -> bool:
        """Resume; True if it was paused."""
        ...


class EndpointProbe(Protocol):
    """Sends one signed sample event to an endpoint, now."""

    async def send(self, subscriber: Subscriber, event_type: str) -> DeliveryResult: ...


@dataclass(frozen=True)
class BrokerPauseMarkers:
    """Pause markers on RabbitMQ (``worker.pause``): the same mechanism as a 410 Gone."""

    broker: BrokerUrl

    def mark(self, endpoint_id: str, reason: str) -> bool:
        was_paused = endpoint_id in paused_among(self.broker, [endpoint_id])
        mark_paused(self.broker, endpoint_id, reason=reason, event_id="")
        return not was_paused

    def clear(self, endpoint_id: str) -> bool:
        return resume(self.broker, endpoint_id)


@dataclass(frozen=True)
class DeliveryProbe:
    """A test delivery through the worker's own Deliverer (marked X-Webhook-Test: true),
    under the store's address policy."""

    allow_private_networks: bool

    async def send(self, subscriber: Subscriber, event_type: str) -> DeliveryResult:
        body = build_envelope(event_type, sample_data(event_type))
        event = QueuedEvent(new_event_id(), event_type, 1, body, None, None)
        async with Deliverer(
            allow_private_networks=self.allow_private_networks, pool_size=1
        ) as deliverer:
            return await deliverer.deliver(subscriber, event, test=True)


@dataclass(frozen=True)
class ApiServices:
    """Everything a route needs; one per app (``app.state.services``)."""

    store: EndpointStore
    tokens: ApiTokens
    notices: ChangeNotices
    pauses: PauseMarkers
    probe: EndpointProbe
    allow_private_networks: bool
    # Resend and recover (None: answered 503, e.g. in tests without a broker).
    resender: Resender | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, store: EndpointStore, tokens: ApiTokens
    ) -> ApiServices:
        """The real services: RabbitMQ from RABBITMQ_URL, the store's address policy."""
        allow_private = settings.store_allows_private_networks
        return cls(
            store=store,
            tokens=tokens,
            notices=BrokerChangeNotices(ChangeNoticePublisher(settings.broker)),
            pauses=BrokerPauseMarkers(settings.broker),
            probe=DeliveryProbe(allow_private),
            allow_private_networks=allow_private,
            resender=LogResender.from_settings(settings),
        )
