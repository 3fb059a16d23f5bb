"""One audit line per resend request, however it ends: who, which endpoint, what, how many.

The API and ``webhook-log`` both resend through :func:`audited_resend`, so a
request leaves exactly one ``delivery_resent`` line (structlog), whether it
published everything, stopped early, was refused or failed.  The line never
carries a body or a secret: ids, the filter, counts and the outcome.
"""

from __future__ import annotations

from typing import Any, Literal

import structlog

from broker.url import BrokerUrl
from config.errors import InvalidInputError, NotFoundError
from control.delivery_log.resend import resend
from control.delivery_log.resend_request import (
    Matching,
    OneEvent,
    ResendReport,
    ResendRequest,
    kind_of,
)
from control.store.database import Database
from control.store.resend_selection import ResendScope

log = structlog.get_logger("delivery-log")

Via = Literal["api", "cli"]


def describe_request(request: ResendRequest) -> dict[str, Any]:
    """What was asked, for the audit line: the event id, or the filter and limit."""
    if isinstance(request, OneEvent):
        return {"event_id": request.event_id}
    if isinstance(request, Matching):
        return {**request.where.describe(), "limit": request.limit}
    return {"since": request.since.isoformat(), "limit": request.limit}


def audited_resend(
    broker: BrokerUrl,
    database: Database,
    scope: ResendScope,
    request: ResendRequest,
    *,
    actor: str,
    via: Via,
    **context: Any,
) -> ResendReport:
    """:func:`~control.delivery_log.resend.resend`, with its audit line written at the end."""
    line: dict[str, Any] = {
        "actor": actor,
        "via": via,
        "account": scope.account,
        "endpoint_id": scope.endpoint_id,
        "all_accounts": scope.all_accounts,
        "request": kind_of(request),
        "filter": describe_request(request),
        **context,
    }
    try:
        report = resend(broker, database, scope, request)
    except BaseException as exc:
        refused = isinstance(exc, NotFoundError | InvalidInputError)
        log.warning(
            "delivery_resent",
            **line,
            outcome="refused" if refused else "error",
            error=str(exc) or type(exc).__name__,
            counts={},
        )
        raise
    log.info(
        "delivery_resent",
        **line,
        outcome="complete" if report.complete else "partial",
        counts=report.counts(),
        limit_reached=report.limit_reached,
        stopped=report.stopped,
    )
    return report
