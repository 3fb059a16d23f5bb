"""Writing endpoints: create, update, delete, rotate a secret, pause and resume.

Every method is one transaction that first takes the next version
(``version_counter.next_version``), so writes commit in version order.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr
from sqlalchemy import delete

from config.errors import ConflictError, InvalidInputError
from config.subscribers import SUBSCRIBER_ID
from control.store.cipher import SecretCipher
from control.store.clock import Clock
from control.store.database import Database
from control.store.endpoint_reader import owned_row
from control.store.models import (
    MAX_OVERLAP_SECONDS,
    OPTION_FIELDS,
    PAUSED_REASON_MAX,
    Endpoint,
    EndpointInput,
    EndpointPatch,
)
from control.store.records import column_value, endpoint_of
from control.store.tables import AccountRow, EndpointDeletionRow, EndpointRow
from control.store.tokens import new_endpoint_id, new_signing_secret
from control.store.version_counter import next_version
from wire.envelope import ACCOUNT_ID


class EndpointWriter:
    """The write half of :class:`~control.store.endpoints.EndpointStore`."""

    _db: Database
    _cipher: SecretCipher
    _clock: Clock

    def create_endpoint(
        self,
        account: str,
        data: EndpointInput,
        *,
        endpoint_id: str | None = None,
        secret: SecretStr | None = None,
    ) -> tuple[Endpoint, SecretStr]:
        """Store a new endpoint (and its account, if new); its secret is shown only now.

        ``endpoint_id`` and ``secret`` default to fresh random ones; declarative
        imports (``webhook-admin apply``) give their own. A taken id is a ConflictError.
        """
        if not ACCOUNT_ID.match(account):
            raise InvalidInputError(
                "account: must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                fields=["account"],
            )
        if endpoint_id is not None and not SUBSCRIBER_ID.match(endpoint_id):
            raise InvalidInputError(
                "id: must be 1-64 characters of a-z, 0-9 and '-', not starting or ending with '-'",
                fields=["id"],
            )
        now = self._clock()
        endpoint_id = endpoint_id or new_endpoint_id()
        plain = _given_secret(secret) if secret is not None else new_signing_secret()
        with self._db.transaction() as session:
            version = next_version(session)
            if session.get(EndpointRow, endpoint_id) is not None:
                raise ConflictError(f"endpoint id {endpoint_id!r} is taken")
            # A given id may be one deleted earlier: its tombstone would tell workers
            # it is gone, and would block the tombstone of its next deletion.
            session.execute(
                delete(EndpointDeletionRow).where(EndpointDeletionRow.endpoint_id == endpoint_id)
            )
            if session.get(AccountRow, account) is None:
                session.add(AccountRow(id=account, created_at=now))
                session.flush()  # the account row before its endpoint (foreign key)
            row = EndpointRow(
                id=endpoint_id,
                account_id=account,
                url=data.url,
                description=data.description,
                events=list(data.events),
                secret_ciphertext=self._cipher.encrypt(plain, endpoint_id=endpoint_id),
                enabled=data.enabled,
                paused=False,
                all_accounts=data.all_accounts,
                version=version,
                created_at=now,
                updated_at=now,
                **{name: column_value(name, getattr(data, name)) for name in OPTION_FIELDS},
            )
            session.add(row)
        return endpoint_of(row, now), SecretStr(plain)

    def update_endpoint(self, account: str, endpoint_id: str, patch: EndpointPatch) -> Endpoint:
        """Apply ``patch``; an empty patch changes nothing, not even the version."""
        changes = patch.changes()
        now = self._clock()
        with self._db.transaction() as session:
            if not changes:
                return endpoint_of(owned_row(session, account, endpoint_id), now)
            version = next_version(session)
            row = owned_row(session, account, endpoint_id)
            for name, value in changes.items():
                setattr(row, name, column_value(name, value))
            row.version, row.updated_at = version, now
        return endpoint_of(row, now)

    def delete_endpoint(self, account: str, endpoint_id: str) -> int:
        """Delete the endpoint, leaving a tombstone for the workers' changed_since.

        Returns the version of the deletion.
        """
        now = self._clock()
        with self._db.transaction() as session:
            version = next_version(session)
            row = owned_row(session, account, endpoint_id)
            session.delete(row)
            session.add(
                EndpointDeletionRow(
                    endpoint_id=row.id, account_id=row.account_id, version=version, deleted_at=now
                )
            )
        return version

    def rotate_secret(
        self,
        account: str,
        endpoint_id: str,
        overlap_seconds: float,
        *,
        secret: SecretStr | None = None,
    ) -> tuple[Endpoint, SecretStr]:
        """A new secret (``secret``, or a fresh random one); the current one stays valid
        for ``overlap_seconds`` (0: not at all).

        A rotation during another's overlap ends that overlap: there is at most
        one previous secret.
        """
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise InvalidInputError(
                f"overlap_seconds: must be between 0 and {MAX_OVERLAP_SECONDS} (7 days)",
                fields=["overlap_seconds"],
            )
        now = self._clock()
        plain = _given_secret(secret) if secret is not None else new_signing_secret()
        with self._db.transaction() as session:
            version = next_version(session)
            row = owned_row(session, account, endpoint_id)
            # Fails (naming the endpoint) under a wrong key before anything is replaced.
            self._cipher.decrypt(row.secret_ciphertext, endpoint_id=row.id)
            if overlap_seconds > 0:
                row.previous_secret_ciphertext = row.secret_ciphertext
                row.previous_secret_expires_at = now + timedelta(seconds=overlap_seconds)
            else:
                row.previous_secret_ciphertext = row.previous_secret_expires_at = None
            row.secret_ciphertext = self._cipher.encrypt(plain, endpoint_id=row.id)
            row.version, row.updated_at = version, now
        return endpoint_of(row, now), SecretStr(plain)

    def set_paused(
        self, account: str, endpoint_id: str, paused: bool, reason: str | None = None
    ) -> Endpoint:
        """Pause (with an optional reason) or resume delivery to the endpoint."""
        if reason is not None and len(reason) > PAUSED_REASON_MAX:
            raise InvalidInputError(
                f"reason: at most {PAUSED_REASON_MAX} characters", fields=["reason"]
            )
        now = self._clock()
        with self._db.transaction() as session:
            version = next_version(session)
            row = owned_row(session, account, endpoint_id)
            if paused:
                # Pausing again only updates the reason; paused_at tells since when.
                row.paused_at = row.paused_at if row.paused else now
                row.paused, row.paused_reason = True, reason
            else:
                row.paused, row.paused_reason, row.paused_at = False, None, None
            row.version, row.updated_at = version, now
        return endpoint_of(row, now)


def _given_secret(secret: SecretStr) -> str:
    """A caller's own secret, checked as the subscriber file checks it."""
    plain = secret.get_secret_value()
    if not plain.strip():
        raise InvalidInputError("secret: must not be empty", fields=["secret"])
    return plain
