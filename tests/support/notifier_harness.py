"""Run a real Notifier in the test's event loop against a real broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from broker.url import BrokerUrl
from control.notifications.aggregator import Aggregator
from control.notifications.destinations import AccountTargets, Destination, Destinations
from control.notifications.sender import NoticeSender, RetryPlan
from control.notifications.service import Notifier
from tests.support.receiver import Received

OPERATOR_SECRET = "ops-notice-secret-0123456789"


@asynccontextmanager
async def running_notifier(
    url: str,
    *,
    operator_url: str | None,
    accounts: AccountTargets | None = None,
    window_seconds: float = 2.0,
    batch_seconds: float = 0.3,
    plan: RetryPlan | None = None,
) -> AsyncIterator[Notifier]:
    """A started notifier (consuming), stopped gracefully on exit."""
    operator = (
        None
        if operator_url is None
        else Destination("operator", operator_url, SecretStr(OPERATOR_SECRET))
    )
    notifier = Notifier(
        BrokerUrl.parse(url),
        Destinations(operator, accounts, cache_seconds=1.0),
        NoticeSender(
            allow_private_accounts=True,
            plan=plan or RetryPlan(attempts=3, first_backoff_seconds=0.1, timeout_seconds=2),
        ),
        Aggregator(window_seconds=window_seconds, batch_seconds=batch_seconds),
        grace_seconds=5,
    )
    task = asyncio.create_task(notifier.run())
    deadline = time.monotonic() + 20
    try:
        while not notifier.is_ready():
            if task.done():
                task.result()
                raise AssertionError("notifier stopped before it was ready")
            if time.monotonic() > deadline:
                raise AssertionError("notifier not ready in time")
            await asyncio.sleep(0.05)
        yield notifier
    finally:
        notifier.request_stop()
        await asyncio.wait_for(task, timeout=30)


def notice_of(received: Received) -> dict[str, Any]:
    """The JSON body of a received notice."""
    body: dict[str, Any] = json.loads(received.body)
    return body
