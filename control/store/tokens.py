"""Random endpoint ids and signing secrets."""

from __future__ import annotations

import base64
import secrets

ENDPOINT_ID_PREFIX = "ep-"
ENDPOINT_ID_CHARACTERS = 20  # base32: 100 random bits
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix; the Standard Webhooks form
SECRET_BYTES = 32


def new_endpoint_id() -> str:
    """``ep-`` and 20 lowercase base32 characters: a valid subscriber id, so a queue name."""
    raw = base64.b32encode(secrets.token_bytes(13)).decode("ascii")
    return ENDPOINT_ID_PREFIX + raw[:ENDPOINT_ID_CHARACTERS].lower()


def new_signing_secret() -> str:
    """``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")
