"""The product page's example payloads, for demos, smoke tests and ``webhook-publish --sample``."""

from __future__ import annotations

import secrets
from functools import cache
from importlib import resources
from typing import Any

import orjson

from config.errors import PayloadError

SAMPLE_EVENTS = ("order.created", "order.updated", "order.cancelled")


@cache
def _load(event_type: str) -> bytes:
    return resources.files("wire").joinpath("samples", f"{event_type}.json").read_bytes()


def sample_data(event_type: str) -> dict[str, Any]:
    """The page's example ``data`` for ``event_type``, with a fresh order id and number.

    Each call returns a new dict, so that repeated samples are distinct orders
    (receivers that de-duplicate by order id would otherwise drop them).
    """
    if event_type not in SAMPLE_EVENTS:
        raise PayloadError(
            f"no sample for event {event_type!r}; samples exist for {', '.join(SAMPLE_EVENTS)}"
        )
    # Parsing the cached file anew is a deep copy at a tenth of copy.deepcopy's
    # cost (the benchmark makes one sample per published event).
    data: dict[str, Any] = orjson.loads(_load(event_type))
    data["id"] = secrets.token_hex(12)  # 24 hex digits, like the page's MongoDB ids
    prefix, _, _ = str(data["orderNumber"]).rpartition("-")
    data["orderNumber"] = f"{prefix}-{secrets.token_hex(2).upper()}"
    return data


def page_example(event_type: str) -> dict[str, Any]:
    """The page's example ``data`` for ``event_type`` exactly as published (same ids)."""
    if event_type not in SAMPLE_EVENTS:
        raise PayloadError(
            f"no sample for event {event_type!r}; samples exist for {', '.join(SAMPLE_EVENTS)}"
        )
    example: dict[str, Any] = orjson.loads(_load(event_type))
    return example
