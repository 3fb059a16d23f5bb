"""Resend and recover: logged events sent again to one of the account's endpoints.

The endpoint is looked up first (another account's is not found: 404), then
the delivery log is read and each copy published to RabbitMQ, confirmed,
before it is reported ``published``.  Blocking work runs in a thread.  Each
request writes one audit line (``delivery_resent``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter

from config.errors import BrokerUnavailableError
from control.api.auth import Actor
from control.api.dependencies import AccountId, EndpointId, Services
from control.api.errors import error_responses
from control.api.resend_schemas import RecoverBody, ResendAnswer, ResendBody
from control.api.services import ApiServices
from control.delivery_log.resend_request import ResendRequest, check_request
from control.store.resend_selection import ResendScope

router = APIRouter(prefix="/v1/accounts/{account}/endpoints/{endpoint_id}", tags=["delivery log"])


@router.post(
    "/resend",
    response_model=ResendAnswer,
    summary="Resend logged events",
    responses=error_responses(401, 404, 422, 503),
)
async def resend_events(
    account: AccountId, endpoint_id: EndpointId, actor: Actor, services: Services, body: ResendBody
) -> ResendAnswer:
    """Send one event (`event_id`), or every event a filter selects, to this endpoint again,
    as the log keeps it: attempt 1, the same `X-Webhook-Id`, signed with the endpoint's
    current secret. Only events of this account that were attempted at this endpoint can
    be resent (404 for any other single event). The answer reports each event; 503 (nothing
    sent) when RabbitMQ or the store is unreachable."""
    return await _run(services, account, endpoint_id, actor, body.request)


@router.post(
    "/recover",
    response_model=ResendAnswer,
    summary="Recover failed events",
    responses=error_responses(401, 404, 422, 503),
)
async def recover_events(
    account: AccountId, endpoint_id: EndpointId, actor: Actor, services: Services, body: RecoverBody
) -> ResendAnswer:
    """Resend every event whose attempts at this endpoint since `since` failed (it was
    retried or dead-lettered) and that has not been delivered here after its last failure,
    oldest first. An event still waiting for a retry is resent too (its id arrives twice)."""
    return await _run(services, account, endpoint_id, actor, body.request)


async def _run(
    services: ApiServices,
    account: str,
    endpoint_id: str,
    actor: str,
    requested: Callable[[], ResendRequest],
) -> ResendAnswer:
    endpoint = await asyncio.to_thread(services.store.get_endpoint, account, endpoint_id)
    request = requested()  # InvalidInputError (422) for clashing fields
    check_request(request)  # and for an empty filter, before anything is read or sent
    resender = services.resender
    if resender is None:
        raise BrokerUnavailableError("resending is not set up in this server")
    scope = ResendScope(endpoint.id, endpoint.account_id, endpoint.all_accounts)
    report = await asyncio.to_thread(resender.resend, scope, request, actor)
    return ResendAnswer.of(report)
