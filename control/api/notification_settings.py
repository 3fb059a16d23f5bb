"""An account's own operational-notification URL: set it, show it, remove it.

Operational notices (an endpoint paused by a 410, its circuit opened or closed,
events dead-lettered) about the account's endpoints go to this URL, signed
like webhooks with the secret the ``PUT`` answer shows once.  Nothing here
reaches the workers: the notifier reads the target when it sends.  Each change
writes one audit line (``api_audit``) with the URL's host only.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from config.subscribers import WebhookUrl
from control.api.auth import Actor
from control.api.dependencies import AccountId, Services
from control.api.errors import error_responses
from control.api.url_rules import check_endpoint_url
from control.store.notification_targets import NotificationTarget

log = structlog.get_logger("control.api.audit")

router = APIRouter(prefix="/v1/accounts/{account}/notifications", tags=["notifications"])


class NotificationTargetInput(BaseModel):
    """Where the account's notices go, and optionally the secret to sign them with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: WebhookUrl
    secret: SecretStr | None = Field(
        None, description="your own signing secret; by default a fresh whsec_... one"
    )


class NotificationTargetView(BaseModel):
    """The account's notification URL (its secret is only shown when set)."""

    model_config = ConfigDict(frozen=True)

    account: str
    url: str
    updated_at: datetime

    @classmethod
    def of(cls, target: NotificationTarget) -> NotificationTargetView:
        """The API's view of a stored target."""
        return cls(account=target.account, url=target.url, updated_at=target.updated_at)


class NotificationTargetWithSecretView(NotificationTargetView):
    """The target and its signing secret: shown now, never again."""

    secret: str = Field(description="the signing secret (whsec_...); store it now")


def _audit(actor: str, action: str, account: str, url: str | None = None) -> None:
    fields: dict[str, object] = {"url_host": urlsplit(url).hostname} if url else {}
    log.info("api_audit", actor=actor, action=action, account=account, **fields)


@router.put(
    "",
    response_model=NotificationTargetWithSecretView,
    summary="Set the account's notification URL",
    responses=error_responses(401, 422, 503),
)
async def put_notification_target(
    account: AccountId, body: NotificationTargetInput, actor: Actor, services: Services
) -> NotificationTargetWithSecretView:
    """Send the account's operational notices to ``url``, signed with a new secret (or
    the one given). The answer holds the secret: the only time it is shown."""
    check_endpoint_url(body.url, allow_private_networks=services.allow_private_networks)
    targets = services.store.notification_targets()
    target = await asyncio.to_thread(targets.put, account, body.url, body.secret)
    _audit(actor, "set_notifications", account, target.url)
    return NotificationTargetWithSecretView(
        **NotificationTargetView.of(target).model_dump(), secret=target.secret.get_secret_value()
    )


@router.get(
    "",
    response_model=NotificationTargetView,
    summary="Show the account's notification URL",
    responses=error_responses(401, 404, 422, 503),
)
async def get_notification_target(
    account: AccountId, _actor: Actor, services: Services
) -> NotificationTargetView:
    """The account's notification URL, without its secret; 404 when none is set."""
    targets = services.store.notification_targets()
    return NotificationTargetView.of(await asyncio.to_thread(targets.get, account))


@router.delete(
    "",
    status_code=204,
    response_class=Response,
    summary="Remove the account's notification URL",
    responses=error_responses(401, 404, 422, 503),
)
async def delete_notification_target(
    account: AccountId, actor: Actor, services: Services
) -> Response:
    """Stop sending the account notices (the operator's URL still gets them)."""
    targets = services.store.notification_targets()
    await asyncio.to_thread(targets.delete, account)
    _audit(actor, "delete_notifications", account)
    return Response(status_code=204)
