"""What an account does to one endpoint besides editing it: test, pause, resume, rotate.

Pause and resume are the broker's pause markers (``worker.pause``, the same
mechanism as a 410 Gone, which every worker obeys) and the store's flag (so the
API shows it).  The broker goes first: if RabbitMQ is unreachable the answer is
503 and nothing changed; if the store then fails, the marker is put back as it
was.  Store and broker calls are blocking and run in threads.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import structlog
from fastapi import APIRouter, Body

from config.errors import BrokerError
from control.api.audit import Action, record_change
from control.api.auth import Actor
from control.api.dependencies import AccountId, EndpointId, Services
from control.api.endpoints import with_secret
from control.api.errors import error_responses
from control.api.schemas import (
    EndpointTestRequest,
    EndpointTestResult,
    EndpointWithSecret,
    PauseRequest,
    RotateRequest,
)
from control.api.services import ApiServices
from control.store.models import Endpoint

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/accounts/{account}/endpoints/{endpoint_id}", tags=["endpoints"])


@router.post(
    "/test",
    response_model=EndpointTestResult,
    summary="Send a test event",
    responses=error_responses(401, 404, 422, 503),
)
async def test_endpoint(
    account: AccountId,
    endpoint_id: EndpointId,
    actor: Actor,
    services: Services,
    body: Annotated[EndpointTestRequest | None, Body()] = None,
) -> EndpointTestResult:
    """Send one signed sample event to the endpoint now (header `X-Webhook-Test: true`)
    and report its answer. The status is 200 whatever the endpoint answered: see `ok`."""
    event = (body or EndpointTestRequest()).event
    stored = await asyncio.to_thread(services.store.get_endpoint_with_secrets, account, endpoint_id)
    result = await services.probe.send(stored.subscriber(), event)
    log.info(
        "api_endpoint_tested",
        actor=actor,
        account=account,
        endpoint_id=endpoint_id,
        event_type=event,
        ok=result.ok,
        status=result.status,
    )
    return EndpointTestResult.of(result)


@router.post(
    "/pause",
    response_model=Endpoint,
    summary="Pause deliveries",
    responses=error_responses(401, 404, 422, 503),
)
async def pause_endpoint(
    account: AccountId,
    endpoint_id: EndpointId,
    actor: Actor,
    services: Services,
    body: Annotated[PauseRequest | None, Body()] = None,
) -> Endpoint:
    """Stop deliveries on every worker; events wait in the endpoint's queue until it is
    resumed. 503 (and no change) when RabbitMQ is unreachable."""
    reason = (body or PauseRequest()).reason
    await asyncio.to_thread(services.store.get_endpoint, account, endpoint_id)  # 404 first
    note = f"paused through webhook-api by {actor}" + (f": {reason}" if reason else "")
    created = await asyncio.to_thread(services.pauses.mark, endpoint_id, note)
    try:
        endpoint = await asyncio.to_thread(
            services.store.set_paused, account, endpoint_id, True, reason
        )
    except Exception:
        if created:
            await _restore(services, endpoint_id, paused=False)
        raise
    _record(services, actor, "pause", endpoint, reason=reason)
    return endpoint


@router.post(
    "/resume",
    response_model=Endpoint,
    summary="Resume deliveries",
    responses=error_responses(401, 404, 422, 503),
)
async def resume_endpoint(
    account: AccountId, endpoint_id: EndpointId, actor: Actor, services: Services
) -> Endpoint:
    """Deliver again, whether it was paused here or after a 410 Gone; workers resume
    within seconds. 503 (and no change) when RabbitMQ is unreachable."""
    await asyncio.to_thread(services.store.get_endpoint, account, endpoint_id)  # 404 first
    was_paused = await asyncio.to_thread(services.pauses.clear, endpoint_id)
    try:
        endpoint = await asyncio.to_thread(services.store.set_paused, account, endpoint_id, False)
    except Exception:
        if was_paused:
            await _restore(services, endpoint_id, paused=True)
        raise
    _record(services, actor, "resume", endpoint)
    return endpoint


@router.post(
    "/secret/rotate",
    response_model=EndpointWithSecret,
    summary="Rotate the signing secret",
    responses=error_responses(401, 404, 422, 503),
)
async def rotate_secret(
    account: AccountId,
    endpoint_id: EndpointId,
    actor: Actor,
    services: Services,
    body: Annotated[RotateRequest | None, Body()] = None,
) -> EndpointWithSecret:
    """A new signing secret, shown in this answer only. The previous one stays valid for
    `overlap_seconds` (default one day) so receivers can switch without losing events."""
    overlap = (body or RotateRequest()).overlap_seconds
    endpoint, secret = await asyncio.to_thread(
        services.store.rotate_secret, account, endpoint_id, overlap
    )
    _record(services, actor, "rotate", endpoint, overlap_seconds=overlap)
    return with_secret(endpoint, secret.get_secret_value())


def _record(
    services: ApiServices, actor: str, action: Action, endpoint: Endpoint, **details: object
) -> None:
    record_change(
        services.notices,
        actor=actor,
        action=action,
        account=endpoint.account_id,
        endpoint_id=endpoint.id,
        version=endpoint.version,
        **details,
    )


async def _restore(services: ApiServices, endpoint_id: str, *, paused: bool) -> None:
    """Put the broker's marker back as it was after the store refused the change."""
    try:
        if paused:
            await asyncio.to_thread(
                services.pauses.mark, endpoint_id, "paused (restored after a failed resume)"
            )
        else:
            await asyncio.to_thread(services.pauses.clear, endpoint_id)
    except BrokerError as exc:
        log.warning(
            "pause_marker_restore_failed", endpoint_id=endpoint_id, paused=paused, error=str(exc)
        )
