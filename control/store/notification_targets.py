"""Each account's own notification URL and signing secret (operational notices).

Kept on the account's row (``accounts.notification_url`` and the columns of
migration 0002), the secret encrypted under the store's key like an endpoint
secret, bound to ``account <id> notifications`` so it cannot be moved onto an
endpoint's row or another account's.  The API sets, shows and removes it; the
notifier (control.notifications) reads it with the secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr
from sqlalchemy.orm import Session

from config.errors import InvalidInputError, NotFoundError
from control.store.cipher import SecretCipher
from control.store.database import Database
from control.store.tables import AccountRow
from control.store.tokens import new_signing_secret
from wire.envelope import ACCOUNT_ID


@dataclass(frozen=True)
class NotificationTarget:
    """Where an account's notices go (no secret: what the API shows after the first time)."""

    account: str
    url: str
    updated_at: datetime


@dataclass(frozen=True)
class NotificationTargetWithSecret(NotificationTarget):
    """The target and its signing secret (``SecretStr``: never in a repr or a log)."""

    secret: SecretStr = field(repr=False)


class NotificationTargets:
    """The accounts' notification targets, in the endpoint store's database."""

    def __init__(
        self, database: Database, cipher: SecretCipher, *, clock: Callable[[], datetime]
    ) -> None:
        self._db = database
        self._cipher = cipher
        self._clock = clock

    def put(
        self, account: str, url: str, secret: SecretStr | None = None
    ) -> NotificationTargetWithSecret:
        """Set the account's URL and secret (a fresh one unless given); creates the account.

        The answer holds the secret: the only time it is shown.
        """
        _check_account(account)
        plain = secret.get_secret_value() if secret is not None else new_signing_secret()
        if not plain.strip():
            raise InvalidInputError("secret: must not be empty", fields=["secret"])
        now = self._clock()
        with self._db.transaction() as session:
            row = session.get(AccountRow, account)
            if row is None:
                row = AccountRow(id=account, created_at=now)
                session.add(row)
            row.notification_url = url
            row.notification_secret_ciphertext = self._cipher.encrypt(
                plain, endpoint_id=_binding(account)
            )
            row.notification_updated_at = now
        return NotificationTargetWithSecret(account, url, now, SecretStr(plain))

    def get(self, account: str) -> NotificationTarget:
        """The account's target without its secret; NotFoundError if none is set."""
        with self._db.transaction() as session:
            row = _configured(session, account)
            assert row.notification_url is not None and row.notification_updated_at is not None
            return NotificationTarget(account, row.notification_url, row.notification_updated_at)

    def delete(self, account: str) -> None:
        """Stop sending the account notices; NotFoundError if none was set."""
        with self._db.transaction() as session:
            row = _configured(session, account)
            row.notification_url = None
            row.notification_secret_ciphertext = None
            row.notification_updated_at = self._clock()

    def with_secret(self, account: str) -> NotificationTargetWithSecret | None:
        """The account's target and secret for the notifier, or None if none is set."""
        with self._db.transaction() as session:
            row = session.get(AccountRow, account) if ACCOUNT_ID.match(account) else None
            if row is None or row.notification_url is None:
                return None
            stored = row.notification_secret_ciphertext
            if stored is None or row.notification_updated_at is None:
                return None
            secret = self._cipher.decrypt(stored, endpoint_id=_binding(account))
            return NotificationTargetWithSecret(
                account, row.notification_url, row.notification_updated_at, SecretStr(secret)
            )


def _binding(account: str) -> str:
    # A space cannot occur in an endpoint id or an account id: no row of either
    # kind can decrypt this ciphertext.
    return f"account {account} notifications"


def _check_account(account: str) -> None:
    if not ACCOUNT_ID.match(account):
        raise InvalidInputError(
            "account: must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'", fields=["account"]
        )


def _configured(session: Session, account: str) -> AccountRow:
    row = session.get(AccountRow, account) if ACCOUNT_ID.match(account) else None
    if row is None or row.notification_url is None:
        raise NotFoundError(f"account {account!r} has no notification URL")
    return row
