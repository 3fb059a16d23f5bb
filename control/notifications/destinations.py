"""Where a notice goes: the operator's URL (settings) and the account's own (the store).

Every notice goes to the operator's URL when one is configured, and to the
URL the endpoint's own account set (``PUT /v1/accounts/{account}/notifications``),
never to another account's: the account is the one the worker's fact names,
which is the endpoint's owner.  Account targets are read from the store and
kept for ``cache_seconds``, so a storm of notices does not become a storm of
queries, and a changed URL is used within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr

from config.errors import ConfigError
from config.settings import Settings
from control.store.notification_targets import NotificationTargetWithSecret

DestinationKind = Literal["operator", "account"]
ACCOUNT_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Destination:
    """One notification URL and the secret its notices are signed with (neither in a repr)."""

    kind: DestinationKind
    url: str = field(repr=False)  # such URLs often carry a token
    secret: SecretStr = field(repr=False)


class AccountTargets(Protocol):
    """The store's accounts' notification targets (blocking; StoreError when unavailable)."""

    def with_secret(self, account: str) -> NotificationTargetWithSecret | None: ...


class Destinations:
    """The operator's destination, and each account's, looked up (and cached) on demand."""

    def __init__(
        self,
        operator: Destination | None,
        accounts: AccountTargets | None,
        *,
        cache_seconds: float = ACCOUNT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        close: Callable[[], None] | None = None,
    ) -> None:
        if operator is None and accounts is None:
            raise ConfigError(
                "webhook-notifier has nowhere to send notices: set OPERATOR_NOTIFICATION_URL "
                "(with OPERATOR_NOTIFICATION_SECRET or _FILE) and/or DATABASE_URL (accounts' "
                "own notification URLs)"
            )
        self.operator = operator
        self._accounts = accounts
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Destination | None]] = {}
        self._close = close

    @classmethod
    def from_settings(cls, settings: Settings) -> Destinations:
        """The operator's URL from the settings; the accounts' from the store (DATABASE_URL)."""
        operator = None
        if settings.operator_notification_url is not None:
            secret = operator_secret(settings)
            operator = Destination(
                "operator", settings.operator_notification_url.get_secret_value(), secret
            )
        if not settings.uses_store:
            return cls(operator, None)
        from control.store.endpoints import EndpointStore

        store = EndpointStore.from_settings(settings)
        return cls(operator, store.notification_targets(), close=store.close)

    async def account(self, account: str) -> Destination | None:
        """The account's own destination, or None; raises StoreError if the store is down."""
        if self._accounts is None:
            return None
        now = self._clock()
        cached = self._cache.get(account)
        if cached is not None and cached[0] > now:
            return cached[1]
        target = await asyncio.to_thread(self._accounts.with_secret, account)
        found = None if target is None else Destination("account", target.url, target.secret)
        if len(self._cache) > 10_000:  # bounded: old entries are simply read again
            self._cache.clear()
        self._cache[account] = (now + self._cache_seconds, found)
        return found

    def close(self) -> None:
        """Close the store's connections, if any."""
        if self._close is not None:
            self._close()


def operator_secret(settings: Settings) -> SecretStr:
    """OPERATOR_NOTIFICATION_SECRET, or the content of OPERATOR_NOTIFICATION_SECRET_FILE."""
    if settings.operator_notification_secret is not None:
        return settings.operator_notification_secret
    path = settings.operator_notification_secret_file
    if path is None:
        raise ConfigError(
            "OPERATOR_NOTIFICATION_URL is set but not its secret: set "
            "OPERATOR_NOTIFICATION_SECRET or OPERATOR_NOTIFICATION_SECRET_FILE"
        )
    return SecretStr(_read_secret_file(path))


def _read_secret_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"OPERATOR_NOTIFICATION_SECRET_FILE: cannot read {path}: {exc.__class__.__name__}"
        ) from None
    if not text:
        raise ConfigError(f"OPERATOR_NOTIFICATION_SECRET_FILE: {path} is empty")
    return text
