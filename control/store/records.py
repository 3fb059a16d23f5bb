"""Translation between stored rows and the store's models, secrets decrypted on the way out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import SecretStr

from config.subscribers import CircuitBreakerOverride
from control.store.cipher import SecretCipher
from control.store.models import Endpoint, EndpointWithSecrets
from control.store.tables import EndpointRow


def endpoint_of(row: EndpointRow, now: datetime) -> Endpoint:
    """The endpoint a row holds, as seen at ``now`` (an expired overlap is not shown)."""
    return Endpoint(
        id=row.id,
        account_id=row.account_id,
        url=row.url,
        events=tuple(row.events),
        description=row.description,
        enabled=row.enabled,
        paused=row.paused,
        paused_reason=row.paused_reason,
        paused_at=row.paused_at,
        all_accounts=row.all_accounts,
        timeout_seconds=row.timeout_seconds,
        connect_timeout_seconds=row.connect_timeout_seconds,
        max_in_flight=row.max_in_flight,
        standard_webhooks=row.standard_webhooks,
        circuit_breaker=(
            None
            if row.circuit_breaker is None
            else CircuitBreakerOverride.model_validate(row.circuit_breaker)
        ),
        previous_secret_expires_at=previous_expiry(row, now),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def with_secrets(row: EndpointRow, now: datetime, cipher: SecretCipher) -> EndpointWithSecrets:
    """The endpoint with its current secret and, while the overlap runs, the previous one."""
    previous = None
    if previous_expiry(row, now) is not None and row.previous_secret_ciphertext is not None:
        previous = SecretStr(cipher.decrypt(row.previous_secret_ciphertext, endpoint_id=row.id))
    return EndpointWithSecrets(
        endpoint=endpoint_of(row, now),
        secret=SecretStr(cipher.decrypt(row.secret_ciphertext, endpoint_id=row.id)),
        previous_secret=previous,
    )


def column_value(name: str, value: Any) -> Any:
    """A model field's value as its column stores it (JSON lists and objects)."""
    if name == "events":
        return list(value)
    if isinstance(value, CircuitBreakerOverride):
        return value.model_dump(exclude_none=True)
    return value


def previous_expiry(row: EndpointRow, now: datetime) -> datetime | None:
    """When the previous secret stops being valid; None if there is none or it has."""
    expires = row.previous_secret_expires_at
    if row.previous_secret_ciphertext is None or expires is None or expires <= now:
        return None
    return expires
