"""The HTTP API in unit tests: its app on SQLite, with the broker and HTTP effects faked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from broker.change_notices import ChangeNotice
from config.errors import BrokerError, BrokerUnavailableError
from config.subscribers import Subscriber
from control.api.app import create_app
from control.api.auth import ApiTokens
from control.api.services import ApiServices
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from worker.delivery import DeliveryResult

TOKEN = "test-token-0123456789abcdef"
OTHER_TOKEN = "second-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_ENDPOINT = {
    "url": "https://shop.example/webhooks",
    "events": ["order.*"],
    "description": "the shop's order feed",
}


@dataclass
class RecordedNotices:
    """Change notices as a list, instead of RabbitMQ."""

    sent: list[ChangeNotice] = field(default_factory=list)
    started: bool = False
    stopped: bool = False

    async def start(self) -> None:
        self.started = True

    def publish(self, notice: ChangeNotice) -> None:
        self.sent.append(notice)

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakePauses:
    """Pause markers in a set; ``fail`` makes every call raise like an unreachable broker."""

    marked: dict[str, str] = field(default_factory=dict)
    fail: BrokerError | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def mark(self, endpoint_id: str, reason: str) -> bool:
        self.calls.append(("mark", endpoint_id))
        if self.fail is not None:
            raise self.fail
        created = endpoint_id not in self.marked
        self.marked[endpoint_id] = reason
        return created

    def clear(self, endpoint_id: str) -> bool:
        self.calls.append(("clear", endpoint_id))
        if self.fail is not None:
            raise self.fail
        return self.marked.pop(endpoint_id, None) is not None


def broker_down() -> BrokerUnavailableError:
    return BrokerUnavailableError("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/")


@dataclass
class FakeProbe:
    """Answers test deliveries with ``result`` (or raises ``error``); records the subscribers."""

    result: DeliveryResult = field(
        default_factory=lambda: DeliveryResult("success", 200, 0.0123, None, b'{"ok":true}')
    )
    error: BaseException | None = None
    sent: list[tuple[Subscriber, str]] = field(default_factory=list)

    async def send(self, subscriber: Subscriber, event_type: str) -> DeliveryResult:
        self.sent.append((subscriber, event_type))
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Api:
    """A running test app and its fakes."""

    client: TestClient
    store: EndpointStore
    notices: RecordedNotices
    pauses: FakePauses
    probe: FakeProbe

    def create(self, account: str = "acct_1", **changes: Any) -> dict[str, Any]:
        """Create an endpoint (201 expected) and return the answer."""
        response = self.client.post(
            f"/v1/accounts/{account}/endpoints", json={**NEW_ENDPOINT, **changes}, headers=AUTH
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def open_store(path: Path) -> EndpointStore:
    return EndpointStore.open(
        f"sqlite:///{path / 'store.db'}",
        secrets_key=SecretStr(SecretsKey.generate().as_text()),
        migrate=True,
    )


@contextmanager
def running_api(
    store: EndpointStore,
    *,
    tokens: tuple[str, ...] = (TOKEN, OTHER_TOKEN),
    allow_private_networks: bool = False,
) -> Iterator[Api]:
    """The app over ``store`` with faked broker and probe, lifespan running."""
    notices, pauses, probe = RecordedNotices(), FakePauses(), FakeProbe()
    services = ApiServices(
        store=store,
        tokens=ApiTokens(tokens),
        notices=notices,
        pauses=pauses,
        probe=probe,
        allow_private_networks=allow_private_networks,
    )
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        yield Api(client, store, notices, pauses, probe)
