"""Encryption of endpoint secrets at rest.

AES-256-GCM rather than Fernet: GCM authenticates *associated data*, and each
ciphertext is bound to its endpoint's id.  Someone who can write to the database
but does not hold the key can then not move a known endpoint's secret onto
another endpoint (the copy fails to decrypt) - Fernet has no such binding.  The
key is also 256 bits (Fernet: 128-bit AES).  Random 96-bit nonces are safe far
beyond the number of secrets this store will ever encrypt under one key.

Stored form: one format byte, the 12-byte nonce, then ciphertext and tag.  The
format byte leaves room for a later key-rotation scheme.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config.errors import StoreError
from control.store.key import SecretsKey

FORMAT_AES_GCM = 1
NONCE_BYTES = 12


class SecretCipher:
    """Encrypts and decrypts secrets, each bound to the id of the endpoint owning it."""

    __slots__ = ("_aead",)

    def __init__(self, key: SecretsKey) -> None:
        self._aead = AESGCM(key.material)

    def __repr__(self) -> str:
        return "SecretCipher(AES-256-GCM)"

    def encrypt(self, secret: str, *, endpoint_id: str) -> bytes:
        """The stored form of ``secret``, which only ``endpoint_id``'s row can decrypt."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("utf-8"), _associated(endpoint_id))
        return bytes([FORMAT_AES_GCM]) + nonce + sealed

    def decrypt(self, stored: bytes, *, endpoint_id: str) -> str:
        """The secret; a StoreError naming the endpoint if the key (or the data) is wrong."""
        if len(stored) < 1 + NONCE_BYTES or stored[0] != FORMAT_AES_GCM:
            raise StoreError(f"endpoint {endpoint_id}: its stored secret is in no known format")
        nonce, sealed = stored[1 : 1 + NONCE_BYTES], stored[1 + NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _associated(endpoint_id))
        except InvalidTag:
            raise StoreError(
                f"endpoint {endpoint_id}: cannot decrypt its secret: SECRETS_KEY (or "
                "SECRETS_KEY_FILE) is not the key it was stored with, or the row was altered"
            ) from None
        return plain.decode("utf-8")


def _associated(endpoint_id: str) -> bytes:
    return f"webhook-relay endpoint secret:{endpoint_id}".encode()
