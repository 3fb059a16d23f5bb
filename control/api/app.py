"""The ``webhook-api`` application: routes, error answers, and the notices' life cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from control.api import (
    attempts,
    endpoint_actions,
    endpoints,
    event_types,
    notification_settings,
    resends,
)
from control.api.errors import install_error_handlers
from control.api.schemas import Health
from control.api.services import ApiServices

TITLE = "webhook-relay endpoint API"
DESCRIPTION = """\
Manage merchants' webhook endpoints: create them (the answer holds the signing
secret, shown once), list, change, pause, resume, rotate the secret, delete, and
send a signed test event; read the delivery log of their endpoints (attempts,
one event's deliveries, an endpoint's summary), resend logged events to an
endpoint, or recover what failed there since a given time.

Every `/v1` request needs `Authorization: Bearer <token>`. Every error answer is
`{"error": "<message>"}`, with `"fields": [...]` naming the request fields at
fault when the input is invalid (422).
"""


def create_app(services: ApiServices) -> FastAPI:
    """The application serving ``services``; starts and stops their change notices."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.notices.start()
        try:
            yield
        finally:
            await services.notices.stop()
            if services.resender is not None:
                services.resender.close()

    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
        redoc_url=None,
        # "/x/" is not "/x": a 404, never a redirect.
        redirect_slashes=False,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(endpoints.router)
    app.include_router(endpoint_actions.router)
    app.include_router(event_types.router)
    app.include_router(notification_settings.router)
    app.include_router(attempts.router)
    app.include_router(resends.router)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> Health:
        """200 while the process serves requests (no token needed)."""
        return Health()

    return app
