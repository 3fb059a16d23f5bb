"""Masking subscriber secrets in anything shown to an operator, payloads included.

Every configured secret is replaced wherever it appears, and values under
secret-looking keys (``password``, ``token``, ``authorization``...) are hidden
whatever they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config.settings import Settings

MASK = "***"
# Deeper documents are shown as received (secrets masked in the text) instead of
# being walked: walking them recursively is what overflowed the stack.
MAX_WALK_DEPTH = 100
SENSITIVE_KEYS = ("secret", "password", "passwd", "token", "authorization", "api-key", "apikey")


@dataclass(frozen=True)
class Redactor:
    """Masks every configured subscriber secret, and values of secret-looking keys."""

    secrets: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """A redactor for the secrets of every subscriber in ``settings``."""
        values = {secret for s in settings.subscribers for secret in s.signing_secrets()}
        # Longest first, so a secret containing another is masked whole.
        return cls(tuple(sorted((v for v in values if v), key=len, reverse=True)))

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for secret in self.secrets:
            value = value.replace(secret, MASK)
        return value

    def raw(self, value: bytes, headers: Mapping[Any, Any]) -> bytes:
        """Raw message bytes with every secret, and the text of sensitive ``headers``, blanked.

        Each is overwritten with as many ``*`` as it has bytes, so the bytes keep
        their layout (and still parse where they did).
        """
        hidden = [secret.encode("utf-8", "surrogatepass") for secret in self.secrets]
        for key, text in headers.items():
            name = key if isinstance(key, str) else key.decode("utf-8", "replace")
            if _sensitive(name) and isinstance(text, str | bytes):
                hidden.append(
                    text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
                )
        for needle in sorted(hidden, key=len, reverse=True):
            if needle:
                value = value.replace(needle, b"*" * len(needle))
        return value

    def data(self, value: Any, key: str = "") -> Any:
        """A JSON-like value with secrets masked in its strings and sensitive keys hidden.

        Call it only on values no deeper than :data:`MAX_WALK_DEPTH` (see
        :func:`nesting_depth`).
        """
        if key and _sensitive(key):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v) for v in value]
        return value


def nesting_depth(value: Any, *, stop_at: int = MAX_WALK_DEPTH + 1) -> int:
    """How deeply lists and dicts nest in ``value`` (0 for a scalar), counted without
    recursion; counting stops at ``stop_at``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest >= stop_at:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def _sensitive(key: str) -> bool:
    return any(word in key.lower() for word in SENSITIVE_KEYS)
