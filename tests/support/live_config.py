"""Change a running worker's endpoints the way operators do: in the subscriber file, or
in the endpoint store followed by a change notice.

``FileEndpoints`` and ``StoreEndpoints`` have the same methods, so one test body
runs against either source (tests/integration/test_live_changes.py,
tests/unit/test_subscriber_sources.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pika
import yaml
from pydantic import SecretStr

from config.settings import Settings
from config.subscriber_file import load_subscriber_file
from config.topology import CONTROL_EXCHANGE
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.models import EndpointInput, EndpointPatch
from tests.support.amqp import channel
from tests.support.worker_harness import ACCOUNT
from worker.service import Worker


def publish_notice(url: str, version: int, **fields: Any) -> None:
    """What the control API publishes after a write: a persistent JSON notice (fanout)."""
    body = json.dumps({"version": version, **fields}).encode()
    with channel(url) as ch:
        ch.confirm_delivery()
        ch.basic_publish(
            CONTROL_EXCHANGE,
            "",
            body,
            pika.BasicProperties(content_type="application/json", delivery_mode=2),
        )


class FileEndpoints:
    """Endpoints in a subscriber file, rewritten whole (atomically) on every change."""

    kind = "file"

    def __init__(self, path: Path, broker_url: str) -> None:
        self.path = path
        self._url = broker_url
        self._endpoints: dict[str, dict[str, Any]] = {}
        self._count = 0
        self.fingerprint = ""

    def settings(self, base: Settings, *, reconcile_seconds: float = 30.0) -> Settings:
        """``base`` reading this file (as load_settings would have at start-up)."""
        file = load_subscriber_file(self.path, {})
        return base.model_copy(
            update={
                "config_path": self.path,
                "subscribers": file.subscribers,
                "reconcile_seconds": reconcile_seconds,
            }
        )

    def _write(self, text: str | None = None) -> None:
        if text is None:
            document = {
                "subscribers": list(self._endpoints.values()),
                "retry": {"delays_seconds": [0.5, 0.5]},
                "security": {"allow_private_networks": True},
            }
            text = yaml.safe_dump(document, sort_keys=False)
        data = text.encode()
        # Atomic, as a ConfigMap update or an editor's save: never half a file.
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.path)
        self.fingerprint = hashlib.sha256(data).hexdigest()[:16]

    async def write_text(self, text: str) -> None:
        """Replace the file with ``text`` (valid or not)."""
        await asyncio.to_thread(self._write, text)

    async def create(
        self,
        url: str,
        *,
        account: str = ACCOUNT,
        events: tuple[str, ...] = ("order.*",),
        **options: Any,
    ) -> tuple[str, str]:
        self._count += 1
        endpoint_id = f"file-ep-{self._count}"
        secret = f"whsec-{secrets.token_hex(12)}"
        self._endpoints[endpoint_id] = {
            "id": endpoint_id,
            "account": account,
            "url": url,
            "secret": secret,
            "events": list(events),
            "timeout_seconds": 5,
            **options,
        }
        await asyncio.to_thread(self._write)
        return endpoint_id, secret

    async def update(self, endpoint_id: str, **changes: Any) -> None:
        entry = self._endpoints[endpoint_id]
        entry.update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
        await asyncio.to_thread(self._write)

    async def set_enabled(self, endpoint_id: str, enabled: bool) -> None:
        await self.update(endpoint_id, enabled=enabled)

    async def set_paused(self, endpoint_id: str, paused: bool) -> None:
        raise NotImplementedError("the subscriber file has no store pause (use enabled)")

    async def rotate(self, endpoint_id: str) -> str:
        secret = f"whsec-{secrets.token_hex(12)}"
        await self.update(endpoint_id, secret=secret)
        return secret

    async def delete(self, endpoint_id: str) -> None:
        del self._endpoints[endpoint_id]
        await asyncio.to_thread(self._write)

    async def announce(self) -> None:
        """Nothing to announce: the worker polls the file."""

    def applied(self, worker: Worker) -> bool:
        """Whether the worker runs the file as last written."""
        return worker.reconciler.fingerprint == self.fingerprint

    def close(self) -> None:
        """Nothing to release."""


class StoreEndpoints:
    """Endpoints in the endpoint store (SQLite or PostgreSQL), announced by notice."""

    def __init__(self, database_url: str, broker_url: str, *, kind: str) -> None:
        self.kind = kind
        self.database_url = database_url
        self.key = SecretStr(SecretsKey.generate().as_text())
        self.store = EndpointStore.open(database_url, secrets_key=self.key, migrate=True)
        self._url = broker_url
        self._accounts: dict[str, str] = {}
        self.version = 0

    def settings(
        self,
        base: Settings,
        *,
        reconcile_seconds: float = 30.0,
        database_url: str | None = None,
    ) -> Settings:
        """``base`` reading this store (``database_url``: reach it another way, e.g. a proxy)."""
        return base.model_copy(
            update={
                "database_url": SecretStr(database_url or self.database_url),
                "secrets_key": self.key,
                "subscribers": (),
                "reconcile_seconds": reconcile_seconds,
            }
        )

    async def _call(self, method: Any, *args: Any) -> Any:
        result = await asyncio.to_thread(method, *args)
        self.version = (await asyncio.to_thread(self.store.changed_since, 0)).version
        return result

    async def create(
        self,
        url: str,
        *,
        account: str = ACCOUNT,
        events: tuple[str, ...] = ("order.*",),
        **options: Any,
    ) -> tuple[str, str]:
        data = EndpointInput.parse({"url": url, "events": list(events), **options})
        endpoint, secret = await self._call(self.store.create_endpoint, account, data)
        self._accounts[endpoint.id] = account
        return endpoint.id, secret.get_secret_value()

    async def update(self, endpoint_id: str, **changes: Any) -> None:
        patch = EndpointPatch.parse(
            {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
        )
        await self._call(
            self.store.update_endpoint, self._accounts[endpoint_id], endpoint_id, patch
        )

    async def set_enabled(self, endpoint_id: str, enabled: bool) -> None:
        await self.update(endpoint_id, enabled=enabled)

    async def set_paused(self, endpoint_id: str, paused: bool) -> None:
        account = self._accounts[endpoint_id]
        await self._call(self.store.set_paused, account, endpoint_id, paused, "maintenance")

    async def rotate(self, endpoint_id: str) -> str:
        account = self._accounts[endpoint_id]
        _endpoint, secret = await self._call(self.store.rotate_secret, account, endpoint_id, 0)
        return str(secret.get_secret_value())

    async def delete(self, endpoint_id: str) -> None:
        await self._call(self.store.delete_endpoint, self._accounts[endpoint_id], endpoint_id)

    async def announce(self) -> None:
        """Publish the change notice the control API would."""
        await asyncio.to_thread(publish_notice, self._url, self.version, change="updated")

    def applied(self, worker: Worker) -> bool:
        """Whether the worker applied the store's version as last written."""
        return worker.reconciler.version >= self.version

    def close(self) -> None:
        self.store.close()
