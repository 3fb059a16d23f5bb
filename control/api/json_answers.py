"""The list and get answers, serialised once, straight from the store's fields.

A route that returns a model has FastAPI validate it against the route's
response model and dump it again; for a page of 100 endpoints that was ~1 ms
of CPU, about a third of what the page then cost (docs/scaling.md).  These
answers are the fields the store read, as an ``Endpoint`` has them
(``control.store.views``), written by orjson the way pydantic writes them (a
UTC time ends in ``Z``); a unit test holds the two equal byte for byte.  The
routes keep their ``response_model``, so /openapi.json describes these
answers exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.responses import Response

from control.store.views import ShownEndpoint

_OPTIONS = orjson.OPT_UTC_Z


def endpoint_answer(endpoint: ShownEndpoint) -> Response:
    """200 with one endpoint (the ``Endpoint`` schema)."""
    return _answer(endpoint)


def page_answer(endpoints: Sequence[ShownEndpoint], next_cursor: str | None) -> Response:
    """200 with a page of endpoints (the ``EndpointPage`` schema)."""
    return _answer({"data": list(endpoints), "next_cursor": next_cursor})


def _answer(body: Any) -> Response:
    return Response(orjson.dumps(body, option=_OPTIONS), media_type="application/json")
