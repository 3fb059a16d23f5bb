"""Opaque cursors for pages of endpoints: where the previous page ended.

A cursor is the (created_at, id) of a page's last endpoint, base64url-encoded;
it stays valid when that endpoint is deleted meanwhile.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from config.errors import InvalidInputError
from config.subscribers import SUBSCRIBER_ID

MAX_CURSOR_CHARS = 200


def encode_cursor(created_at: datetime, endpoint_id: str) -> str:
    """The cursor of the page that follows endpoint ``endpoint_id`` (created at ``created_at``)."""
    text = f"{created_at.isoformat()}|{endpoint_id}"
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor holds; InvalidInputError (field ``cursor``) otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        moment, _, endpoint_id = raw.partition("|")
        created_at = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        created_at, endpoint_id = None, ""
    if created_at is None or created_at.tzinfo is None or not SUBSCRIBER_ID.match(endpoint_id):
        raise InvalidInputError(
            "cursor: not a cursor this API gave out; use next_cursor from the previous page",
            fields=["cursor"],
        )
    return created_at, endpoint_id
