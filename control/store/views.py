"""The endpoints as the API shows them, read as plain columns rather than ORM objects.

The API's list and get are its busiest requests.  Through the ORM a page of 100
endpoints cost ~4 ms of CPU in row objects and their instrumentation and ~2 ms
more building the models one at a time (docs/scaling.md); here the rows are
plain tuples, validated into ``Endpoint`` models in one call of pydantic's
core.  The secrets' ciphertexts are not even read: nothing shown needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Select, and_, bindparam, or_, select

from config.subscribers import CircuitBreakerOverride
from control.store.models import Endpoint
from control.store.tables import EndpointRow

# Every field of Endpoint is a column of the same name; the previous secret's
# expiry is shown only while that secret exists and has not expired.
_EXPIRY = "previous_secret_expires_at"
_BREAKER = "circuit_breaker"
_NAMES = tuple(Endpoint.model_fields)
_TABLE = EndpointRow.__table__.c
_SHOWN = select(
    *(_TABLE[name] for name in _NAMES),
    _TABLE.previous_secret_ciphertext.is_not(None).label("has_previous"),
)
_ENDPOINTS = TypeAdapter(list[Endpoint])

# An Endpoint's fields by name, as read from a row (see shown_fields).
ShownEndpoint = dict[str, Any]

# Built once, with bound parameters: SQLAlchemy then finds each in its statement
# cache as it is, where an equal statement built per call would be hashed and its
# columns matched to the cached ones again (~0.3 ms a call).
_ORDER = (_TABLE.created_at, _TABLE.id)
_OF_ACCOUNT = _SHOWN.where(_TABLE.account_id == bindparam("account"))
ALL_OF_ACCOUNT = _OF_ACCOUNT.order_by(*_ORDER)
FIRST_PAGE = ALL_OF_ACCOUNT.limit(bindparam("limit"))
NEXT_PAGE = (
    _OF_ACCOUNT.where(
        or_(
            _TABLE.created_at > bindparam("created_at", type_=_TABLE.created_at.type),
            and_(
                _TABLE.created_at == bindparam("created_at", type_=_TABLE.created_at.type),
                _TABLE.id > bindparam("last_id"),
            ),
        )
    )
    .order_by(*_ORDER)
    .limit(bindparam("limit"))
)
ONE = _SHOWN.where(_TABLE.id == bindparam("endpoint_id"), _TABLE.account_id == bindparam("account"))


def page_statement(
    account: str, limit: int, after: tuple[datetime, str] | None
) -> tuple[Select[Any], dict[str, Any]]:
    """Up to ``limit`` of the account's endpoints, oldest first, following ``after``:
    the statement and its parameters."""
    if after is None:
        return FIRST_PAGE, {"account": account, "limit": limit}
    created_at, last_id = after
    parameters = {"account": account, "limit": limit, "created_at": created_at, "last_id": last_id}
    return NEXT_PAGE, parameters


def shown_fields(rows: Sequence[Sequence[Any]], now: datetime) -> list[ShownEndpoint]:
    """The fields of the endpoints the rows of a ``page_statement`` or ``ONE`` hold, as
    seen at ``now``: exactly an ``Endpoint``'s, in its order, values as it dumps them."""
    items: list[ShownEndpoint] = []
    for row in rows:
        *values, has_previous = tuple(row)
        item = dict(zip(_NAMES, values, strict=True))
        expires = item[_EXPIRY]
        # An expired overlap is not shown (the same rule as records.previous_expiry).
        if expires is not None and (not has_previous or expires <= now):
            item[_EXPIRY] = None
        if item[_BREAKER] is not None:
            # Stored without its unset keys (exclude_none); shown with all of them.
            item[_BREAKER] = CircuitBreakerOverride.model_validate(item[_BREAKER]).model_dump()
        items.append(item)
    return items


def as_models(items: Sequence[ShownEndpoint]) -> list[Endpoint]:
    """``shown_fields`` as ``Endpoint`` models, validated in one call."""
    return _ENDPOINTS.validate_python(items)
