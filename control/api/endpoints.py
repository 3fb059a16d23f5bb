"""An account's endpoints: create, list, show, change, delete.

Routes are ``async``; every store call (synchronous SQLAlchemy) runs in a
worker thread through ``asyncio.to_thread``, so the event loop never waits on
the database.  Every committed change writes one audit line and queues one
change notice (``control.api.audit.record_change``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Response

from control.api.audit import record_change
from control.api.auth import Actor
from control.api.dependencies import AccountId, EndpointId, Services
from control.api.errors import error_responses
from control.api.json_answers import endpoint_answer, page_answer
from control.api.pagination import MAX_CURSOR_CHARS, decode_cursor, encode_cursor
from control.api.schemas import EndpointPage, EndpointWithSecret
from control.api.url_rules import check_endpoint_url
from control.store.models import Endpoint, EndpointInput, EndpointPatch

DEFAULT_PAGE = 100
MAX_PAGE = 1000

router = APIRouter(prefix="/v1/accounts/{account}/endpoints", tags=["endpoints"])


@router.post(
    "",
    status_code=201,
    response_model=EndpointWithSecret,
    summary="Create an endpoint",
    responses=error_responses(401, 404, 422, 503),
)
async def create_endpoint(
    account: AccountId, body: EndpointInput, actor: Actor, services: Services
) -> EndpointWithSecret:
    """Store a new endpoint (creating the account with its first one). The answer holds
    the signing secret: this and a rotation are the only times it is shown."""
    check_endpoint_url(body.url, allow_private_networks=services.allow_private_networks)
    endpoint, secret = await asyncio.to_thread(services.store.create_endpoint, account, body)
    record_change(
        services.notices,
        actor=actor,
        action="create",
        account=account,
        endpoint_id=endpoint.id,
        version=endpoint.version,
        url_host=urlsplit(endpoint.url).hostname,
    )
    return with_secret(endpoint, secret.get_secret_value())


@router.get(
    "",
    response_model=EndpointPage,
    summary="List an account's endpoints",
    responses=error_responses(401, 404, 422, 503),
)
async def list_endpoints(
    account: AccountId,
    _actor: Actor,
    services: Services,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="endpoints per page")] = (
        DEFAULT_PAGE
    ),
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` of the previous page"),
    ] = None,
) -> Response:
    """The account's endpoints, oldest first, without secrets; 404 for an account that
    never had one."""
    after = decode_cursor(cursor) if cursor is not None else None
    found = await asyncio.to_thread(
        services.store.page_shown, account, limit=limit + 1, after=after
    )
    page = found[:limit]
    last = page[-1] if len(found) > limit else None
    next_cursor = None if last is None else encode_cursor(last["created_at"], last["id"])
    return page_answer(page, next_cursor)


@router.get(
    "/{endpoint_id}",
    response_model=Endpoint,
    summary="Show an endpoint",
    responses=error_responses(401, 404, 422, 503),
)
async def get_endpoint(
    account: AccountId, endpoint_id: EndpointId, _actor: Actor, services: Services
) -> Response:
    """One endpoint of the account, without its secret."""
    return endpoint_answer(await asyncio.to_thread(services.store.get_shown, account, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    response_model=Endpoint,
    summary="Change an endpoint",
    responses=error_responses(401, 404, 422, 503),
)
async def update_endpoint(
    account: AccountId,
    endpoint_id: EndpointId,
    body: EndpointPatch,
    actor: Actor,
    services: Services,
) -> Endpoint:
    """Change the fields given; an option given as null goes back to its default. An
    empty body changes nothing (no new version, no audit line)."""
    if body.url is not None:
        check_endpoint_url(body.url, allow_private_networks=services.allow_private_networks)
    store = services.store
    endpoint = await asyncio.to_thread(store.update_endpoint, account, endpoint_id, body)
    changed = sorted(body.changes())
    if changed:
        record_change(
            services.notices,
            actor=actor,
            action="update",
            account=account,
            endpoint_id=endpoint.id,
            version=endpoint.version,
            fields=changed,
        )
    return endpoint


@router.delete(
    "/{endpoint_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an endpoint",
    responses=error_responses(401, 404, 422, 503),
)
async def delete_endpoint(
    account: AccountId, endpoint_id: EndpointId, actor: Actor, services: Services
) -> Response:
    """Delete the endpoint; workers stop delivering to it."""
    version = await asyncio.to_thread(services.store.delete_endpoint, account, endpoint_id)
    record_change(
        services.notices,
        actor=actor,
        action="delete",
        account=account,
        endpoint_id=endpoint_id,
        version=version,
    )
    return Response(status_code=204)


def with_secret(endpoint: Endpoint, secret: str) -> EndpointWithSecret:
    """The endpoint with its secret, for the two answers that show it."""
    return EndpointWithSecret.model_validate({**dict(endpoint), "secret": secret})
