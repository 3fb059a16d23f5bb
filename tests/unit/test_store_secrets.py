"""The store's secrets at rest: where the key comes from, and that nothing shows it or them."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from config.errors import ConfigError, StoreError, StoreUnavailableError
from config.settings import load_settings
from control.store.cipher import SecretCipher
from control.store.database import DatabaseUrl
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey, load_secrets_key
from tests.support.store import sample_input

PASSWORD = "db-pw-Xy7q"


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'store.db'}"


def _key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


# --- the key --------------------------------------------------------------------------


def test_sqlite_without_a_key_creates_one_beside_the_database_0600_and_logs_it(
    tmp_path: Path,
) -> None:
    url = DatabaseUrl.parse(_sqlite(tmp_path))
    with structlog.testing.capture_logs() as logs:
        key = load_secrets_key(url)
    path = tmp_path / "data" / "store.db.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretsKey.from_text(path.read_text(), "test").material == key.material
    assert logs == [{"event": "secrets_key_created", "path": str(path), "log_level": "info"}]
    assert key.as_text() not in repr(logs)
    assert sorted(p.name for p in path.parent.iterdir()) == ["store.db.key"]  # no temp file

    with structlog.testing.capture_logs() as again:
        assert load_secrets_key(url).material == key.material
    assert again == []  # logged once: only when created


def test_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_secrets_key(DatabaseUrl.parse(_sqlite(tmp_path)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "data" / "store.db.key").stat().st_mode) == 0o600


def test_secrets_key_and_key_file_win_over_the_default_file(tmp_path: Path) -> None:
    url = DatabaseUrl.parse(_sqlite(tmp_path))
    text = _key_text()
    assert load_secrets_key(url, SecretStr(text)).as_text() == text
    key_file = tmp_path / "key"
    key_file.write_text(text + "\n")
    assert load_secrets_key(url, None, key_file).as_text() == text
    assert not (tmp_path / "data" / "store.db.key").exists()


def test_url_safe_base64_is_accepted() -> None:
    raw = os.urandom(32)
    key = SecretsKey.from_text(base64.urlsafe_b64encode(raw).decode(), "SECRETS_KEY")
    assert key.material == raw


@pytest.mark.parametrize("text", ["not base64!!", base64.b64encode(b"short").decode()])
def test_a_bad_key_is_a_config_error_that_does_not_echo_it(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_secrets_key(DatabaseUrl.parse(_sqlite(tmp_path)), SecretStr(text))
    assert "SECRETS_KEY" in str(caught.value)
    assert text not in str(caught.value)


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SECRETS_KEY_FILE .*cannot read"):
        load_secrets_key(DatabaseUrl.parse(_sqlite(tmp_path)), None, tmp_path / "absent")


def test_postgresql_without_a_key_says_what_to_set() -> None:
    url = DatabaseUrl.parse(f"postgresql://app:{PASSWORD}@db.example/webhooks")
    with pytest.raises(ConfigError) as caught:
        load_secrets_key(url)
    message = str(caught.value)
    assert "SECRETS_KEY" in message and "SECRETS_KEY_FILE" in message
    assert PASSWORD not in message
    assert "app:***@db.example" in message


# --- nothing shows a key or a secret -----------------------------------------------------


def test_secrets_never_show_in_reprs_and_are_encrypted_in_the_file(tmp_path: Path) -> None:
    key_text = _key_text()
    store = EndpointStore.open(_sqlite(tmp_path), secrets_key=SecretStr(key_text), migrate=True)
    endpoint, secret = store.create_endpoint("acct", sample_input())
    value = secret.get_secret_value()
    assert value.startswith("whsec_") and len(base64.b64decode(value[6:])) == 32
    snapshot = store.load_all()
    (loaded,) = snapshot.endpoints
    assert loaded.secret.get_secret_value() == value
    texts = [
        repr(endpoint),
        str(endpoint),
        repr(secret),
        str(secret),
        repr(snapshot),
        str(loaded),
        loaded.model_dump_json(),
        repr(loaded.subscriber()),
        repr(store),
        repr(SecretsKey.from_text(key_text, "k")),
        repr(SecretCipher(SecretsKey.from_text(key_text, "k"))),
        endpoint.model_dump_json(),
    ]
    for text in texts:
        assert value not in text
        assert key_text not in text
    store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    assert value.encode() not in raw  # encrypted at rest (database, WAL and all)


def test_a_wrong_key_is_a_store_error_naming_the_endpoint(tmp_path: Path) -> None:
    store = EndpointStore.open(_sqlite(tmp_path), migrate=True)
    endpoint, _ = store.create_endpoint("acct", sample_input())
    store.close()
    wrong = _key_text()
    other = EndpointStore.open(_sqlite(tmp_path), secrets_key=SecretStr(wrong))
    with pytest.raises(StoreError) as caught:
        other.load_all()
    assert endpoint.id in str(caught.value)
    assert "SECRETS_KEY" in str(caught.value)
    assert wrong not in str(caught.value)
    with pytest.raises(StoreError, match=endpoint.id):
        other.rotate_secret("acct", endpoint.id, 60)
    assert other.get_endpoint("acct", endpoint.id) == endpoint  # nothing was rotated
    other.close()


def test_ciphertext_is_bound_to_its_endpoint() -> None:
    cipher = SecretCipher(SecretsKey.generate())
    stored = cipher.encrypt("whsec_x", endpoint_id="ep-one")
    assert cipher.decrypt(stored, endpoint_id="ep-one") == "whsec_x"
    with pytest.raises(StoreError, match="ep-two"):
        cipher.decrypt(stored, endpoint_id="ep-two")


# --- the database URL's password -------------------------------------------------------


def test_database_url_maps_postgresql_to_psycopg_and_hides_the_password() -> None:
    for raw in (
        f"postgresql://app:{PASSWORD}@db.example:5433/webhooks",
        f"postgres://app:{PASSWORD}@db.example:5433/webhooks",
    ):
        url = DatabaseUrl.parse(raw)
        assert url.dialect == "postgresql"
        assert url.create_engine().url.drivername == "postgresql+psycopg"
        for text in (str(url), repr(url), url.redacted):
            assert PASSWORD not in text
        assert "app:***@db.example:5433" in str(url)


@pytest.mark.parametrize(
    "raw", [f"mysql://app:{PASSWORD}@db.example/x", "sqlite://", "sqlite:///:memory:", "nonsense"]
)
def test_unsupported_database_urls_are_config_errors(raw: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as caught:
        DatabaseUrl.parse(raw)
    assert PASSWORD not in str(caught.value)


def test_unreachable_postgresql_is_store_unavailable_without_the_password(
    unused_port: int,
) -> None:
    store = EndpointStore.open(
        f"postgresql://app:{PASSWORD}@127.0.0.1:{unused_port}/webhooks",
        secrets_key=SecretStr(_key_text()),
    )
    with pytest.raises(StoreUnavailableError) as caught:
        store.list_endpoints("acct")
    assert PASSWORD not in str(caught.value)
    assert "app:***@127.0.0.1" in str(caught.value)
    store.close()


def test_settings_read_the_store_variables_and_hide_them(tmp_path: Path) -> None:
    key_text = _key_text()
    settings = load_settings(
        {
            "WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"),
            "DATABASE_URL": f"postgresql://app:{PASSWORD}@db.example/webhooks",
            "SECRETS_KEY": key_text,
            "SECRETS_KEY_FILE": str(tmp_path / "key"),
        },
        require_subscriber_file=False,
    )
    assert settings.database_url is not None and settings.secrets_key is not None
    assert settings.database_url.get_secret_value().endswith("@db.example/webhooks")
    assert settings.secrets_key.get_secret_value() == key_text
    assert settings.secrets_key_file == tmp_path / "key"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in text
        assert key_text not in text


def test_store_from_settings_uses_sqlite_beside_the_given_path(tmp_path: Path) -> None:
    settings = load_settings(
        {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"), "DATABASE_URL": _sqlite(tmp_path)},
        require_subscriber_file=False,
    )
    store = EndpointStore.from_settings(settings, migrate=True)
    assert store.list_endpoints("acct") == ()
    assert (tmp_path / "data" / "store.db.key").exists()
    store.close()


@pytest.fixture
def unused_port() -> int:
    from devtools.local_processes import free_ports

    (port,) = free_ports(1)
    return port
