"""Every error answer has one shape, ``{"error": "...", "fields"?: [...]}`` (``ErrorBody``).

The project's errors map to statuses here: bad input 422 (naming the fields),
not found 404, a write clashing with stored data 409, the store or RabbitMQ
unreachable 503.  Anything else is a bug: its traceback goes to the log
(``api_internal_error``) and the answer says only ``internal error``; no
response ever carries a traceback, a database URL or a driver's message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.errors import (
    BrokerError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from control.api.schemas import ErrorBody

log = structlog.get_logger(__name__)

_DESCRIPTIONS = {
    401: "No bearer token, or not one of the configured ones.",
    404: "No such account or endpoint (another account's endpoint is not found either).",
    409: "The change clashes with what is stored.",
    422: "Invalid input; `fields` names the fields at fault.",
    503: "The endpoint store (or RabbitMQ, for pause, resume, resend and recover) is "
    "unavailable; nothing was changed. Try again later.",
}
_LOCATIONS = ("body", "query", "path", "header", "cookie")
_PATH_PARAMETER = re.compile(r"\{[^}/]+\}")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the ErrorBody shape."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
            }
        responses[status] = response
    return responses


def error_response(
    status: int,
    message: str,
    *,
    fields: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An ErrorBody answer."""
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = list(fields)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map the project's errors (and FastAPI's own) to ErrorBody answers."""
    app.add_exception_handler(RequestValidationError, _request_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidInputError, _input_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(NotFoundError, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, _store_error)  # type: ignore[arg-type]
    app.add_exception_handler(BrokerError, _broker_error)  # type: ignore[arg-type]
    app.add_middleware(RequestLog)


async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    fields: list[str] = []
    problems: list[str] = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            where = loc[0]
            loc = loc[1:]
        else:
            where = "body"
        if error.get("type") == "json_invalid":
            field, message = "body", "is not valid JSON"
        else:
            field = ".".join(loc) or where
            message = _plain(error)
        if field not in fields:
            fields.append(field)
        problems.append(f"{field}: {message}")
    return error_response(422, "; ".join(problems) or "invalid input", fields=fields)


def _plain(error: Any) -> str:
    # Pydantic's messages never quote the input; these read better.
    kind = error.get("type")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot even decode (e.g. not UTF-8); bad
        # input is 422 here, whatever is wrong with it. No route raises 400 itself.
        return error_response(422, "body: is not valid JSON", fields=["body"])
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; each method
        # is a route of its own here, so collect them all.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    # From the OpenAPI document: it lists every method of every path, however
    # the routers are nested.
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        literal_parts = _PATH_PARAMETER.split(template)
        pattern = "[^/]+".join(re.escape(part) for part in literal_parts)
        if re.fullmatch(pattern, request.url.path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


async def _input_invalid(_request: Request, exc: InvalidInputError) -> JSONResponse:
    return error_response(422, str(exc), fields=exc.fields)


async def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
    return error_response(404, str(exc))


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    # InvalidInputError, a StoreError too, has its own handler (the most specific wins).
    if isinstance(exc, StoreUnavailableError):
        log.warning("store_unavailable", path=request.url.path, error=str(exc))
        return error_response(503, "the endpoint store is unavailable; try again later")
    if isinstance(exc, ConflictError):
        log.warning("store_conflict", path=request.url.path, error=str(exc))
        return error_response(409, "the change clashes with stored data; try again")
    log.error("store_failed", path=request.url.path, error=str(exc))
    return error_response(500, "internal error")


async def _broker_error(request: Request, exc: BrokerError) -> JSONResponse:
    log.warning("broker_unavailable", path=request.url.path, error=str(exc))
    return error_response(503, "RabbitMQ is unavailable; nothing was changed, try again later")


class RequestLog:
    """Logs each request (``api_request``: method, path, status, milliseconds) and
    answers a 500 for any error nobody handled, logging its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method, path = scope["method"], scope["path"]
        try:
            await self.app(scope, receive, remember_status)
        except Exception:
            log.exception("api_internal_error", method=method, path=path)
            if status:  # the answer had begun: all that is left is to drop the connection
                raise
            status = 500
            await error_response(500, "internal error")(scope, receive, send)
        log.info(
            "api_request",
            method=method,
            path=path,
            status=status,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
