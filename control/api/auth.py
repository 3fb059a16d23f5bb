"""Bearer-token authentication: every ``/v1`` request carries a configured token.

Tokens come from ``API_TOKENS`` (comma-separated) and ``API_TOKENS_FILE`` (one
per line; blank lines and ``#`` comments are skipped).  Only their SHA-256
digests are kept.  A presented token is hashed and compared with every digest
in constant time (``hmac.compare_digest``, no early exit), so neither the
timing nor the number of comparisons tells how much of a guess was right.  The
audit log names a caller by a fingerprint (``token:`` and 8 hex digits of the
digest), never by the token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.errors import ConfigError
from config.settings import Settings

# Long enough that guessing is hopeless; `openssl rand -hex 32` gives 64.
MIN_TOKEN_CHARS = 16
# Visible ASCII: what an Authorization header carries without any escaping.
_TOKEN_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")
FINGERPRINT_PREFIX = "token:"

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="opaque token",
    description="One of the tokens in API_TOKENS or API_TOKENS_FILE.",
)


class ApiTokens:
    """The accepted tokens, as SHA-256 digests; ``repr`` shows only how many."""

    __slots__ = ("_digests",)

    def __init__(self, tokens: Iterable[str]) -> None:
        digests: list[bytes] = []
        for number, token in enumerate(tokens, start=1):
            if len(token) < MIN_TOKEN_CHARS or not _TOKEN_CHARACTERS.match(token):
                raise ConfigError(
                    f"API token {number}: use at least {MIN_TOKEN_CHARS} visible ASCII "
                    "characters without spaces (e.g. the output of `openssl rand -hex 32`)"
                )
            digests.append(_digest(token))
        if not digests:
            raise ConfigError(
                "webhook-api needs at least one bearer token: set API_TOKENS or API_TOKENS_FILE"
            )
        self._digests = tuple(dict.fromkeys(digests))

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiTokens:
        """The tokens of API_TOKENS and API_TOKENS_FILE together."""
        tokens: list[str] = []
        if settings.api_tokens is not None:
            text = settings.api_tokens.get_secret_value()
            tokens += [t.strip() for t in text.split(",") if t.strip()]
        if settings.api_tokens_file is not None:
            tokens += read_token_file(settings.api_tokens_file)
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiTokens({len(self._digests)} token(s))"

    def actor_for(self, presented: str) -> str | None:
        """The caller's fingerprint if ``presented`` is an accepted token, else None."""
        digest = _digest(presented)
        matched: bytes | None = None
        for known in self._digests:  # every one, whatever matched before
            if hmac.compare_digest(digest, known):
                matched = known
        return None if matched is None else fingerprint(matched)


def read_token_file(path: Path) -> list[str]:
    """The tokens in a file, one per line (ConfigError when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"API_TOKENS_FILE: cannot read {path}: {reason}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def fingerprint(digest: bytes) -> str:
    """A short name for a token in logs: ``token:`` and its digest's first 8 hex digits."""
    return FINGERPRINT_PREFIX + digest.hex()[:8]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """FastAPI dependency: the caller's fingerprint, or 401 with ``WWW-Authenticate``."""
    tokens: ApiTokens = request.app.state.services.tokens
    actor = tokens.actor_for(credentials.credentials) if credentials is not None else None
    if actor is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return actor


# The authenticated caller's fingerprint, for handlers that record who acted.
Actor = Annotated[str, Depends(require_token)]
