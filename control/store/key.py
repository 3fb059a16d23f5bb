"""The key that encrypts endpoint secrets at rest: where it comes from.

In order: ``SECRETS_KEY`` (the key itself, base64), ``SECRETS_KEY_FILE`` (a file
holding that text), or, for SQLite only, a key file created beside the database
(``<db>.key``, mode 0600) on first use.  PostgreSQL has no "beside": a key
generated on one host would be missing on the next, so it must be configured.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

import structlog
from pydantic import SecretStr

from config.errors import ConfigError
from control.store.database import DatabaseUrl

KEY_BYTES = 32  # AES-256
KEY_FILE_SUFFIX = ".key"

_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")

log = structlog.get_logger(__name__)


class SecretsKey:
    """The raw key bytes; never shown by ``repr`` or ``str``."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise ConfigError(
                f"the secrets key must be {KEY_BYTES} bytes, base64-encoded; generate one with "
                "python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'"
            )
        self._material = material

    @classmethod
    def generate(cls) -> SecretsKey:
        """A fresh random key."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, source: str) -> SecretsKey:
        """Decode base64 ``text`` (standard or URL-safe alphabet); ``source`` names it in errors."""
        cleaned = text.strip().translate(_URLSAFE_TO_STANDARD)
        try:
            material = base64.b64decode(cleaned, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: not base64") from None
        try:
            return cls(material)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @property
    def material(self) -> bytes:
        """The key bytes, for the cipher only."""
        return self._material

    def as_text(self) -> str:
        """The key as base64 text, the form SECRETS_KEY and key files hold."""
        return base64.b64encode(self._material).decode("ascii")

    def __repr__(self) -> str:
        return "SecretsKey(**********)"

    __str__ = __repr__


def load_secrets_key(
    database: DatabaseUrl,
    secrets_key: SecretStr | None = None,
    secrets_key_file: Path | None = None,
) -> SecretsKey:
    """The configured key; for SQLite without one, the key file beside the database."""
    if secrets_key is not None and secrets_key.get_secret_value().strip():
        return SecretsKey.from_text(secrets_key.get_secret_value(), "SECRETS_KEY")
    if secrets_key_file is not None:
        return _read_key_file(secrets_key_file, f"SECRETS_KEY_FILE {secrets_key_file}")
    db_path = database.sqlite_path
    if db_path is None:
        raise ConfigError(
            "set SECRETS_KEY (32 random bytes, base64) or SECRETS_KEY_FILE: endpoint secrets "
            f"in {database.redacted} are encrypted, and PostgreSQL has no place to keep a key"
        )
    path = db_path.with_name(db_path.name + KEY_FILE_SUFFIX)
    if path.exists():
        return _read_key_file(path, f"key file {path}")
    return _create_key_file(path)


def _read_key_file(path: Path, source: str) -> SecretsKey:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not ASCII text"
        raise ConfigError(f"{source}: cannot read it: {reason}") from None
    return SecretsKey.from_text(text, source)


def _create_key_file(path: Path) -> SecretsKey:
    """Write a new key to ``path`` atomically, readable by its owner only.

    The key goes to a temporary file opened with O_EXCL and mode 0600 (so it is
    never readable by others, not even briefly), then is hard-linked into place:
    a second process starting at the same moment either wins the link or reads
    the complete key the first one wrote, never a half-written file.
    """
    key = SecretsKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask left
            os.write(fd, (key.as_text() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key_file(path, f"key file {path}")
    except OSError as error:
        raise ConfigError(f"cannot create the secrets key file {path}: {error.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    log.info("secrets_key_created", path=str(path))
    return key
