"""What routes take from a request besides their body: path ids and the app's services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from config.subscribers import SUBSCRIBER_ID
from control.api.services import ApiServices
from wire.envelope import ACCOUNT_ID


async def services(request: Request) -> ApiServices:
    """The app's services (``app.state.services``).

    ``async`` only so that FastAPI calls it in place: a plain function would be
    run in a worker thread, a thread hand-off on every request for an attribute.
    """
    found: ApiServices = request.app.state.services
    return found


Services = Annotated[ApiServices, Depends(services)]

AccountId = Annotated[
    str,
    Path(
        pattern=ACCOUNT_ID.pattern,
        description="The merchant account: 1-64 characters of A-Z, a-z, 0-9, '_' and '-'.",
        examples=["acct_1"],
    ),
]
EndpointId = Annotated[
    str,
    Path(
        pattern=SUBSCRIBER_ID.pattern,
        description="The endpoint's id, as created (`ep-...`).",
        examples=["ep-abcdefghij0123456789"],
    ),
]
