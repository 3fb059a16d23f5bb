"""webhook-api authentication: bearer tokens from the settings, compared in constant time,
never logged; the settings webhook-api reads, and its start-up refusals."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from cli.api import main as api_main
from config.errors import ConfigError
from config.settings import load_environment
from control.api.auth import ApiTokens, fingerprint
from control.store.endpoints import EndpointStore
from tests.support.api import NEW_ENDPOINT, OTHER_TOKEN, TOKEN, open_store, running_api


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EndpointStore]:
    store = open_store(tmp_path)
    yield store
    store.close()


# --- configuration ------------------------------------------------------------------------


def test_tokens_come_from_the_variable_and_the_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# operators\n\n  {OTHER_TOKEN}  \n{TOKEN}\n", encoding="utf-8")
    settings = load_environment({"API_TOKENS": f" {TOKEN} ,, ", "API_TOKENS_FILE": str(file)})
    tokens = ApiTokens.from_settings(settings)
    assert len(tokens) == 2  # the same token twice counts once
    assert tokens.actor_for(TOKEN) is not None and tokens.actor_for(OTHER_TOKEN) is not None
    assert TOKEN not in repr(tokens) and TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "at least one bearer token"),
        ({"API_TOKENS": " , "}, "at least one bearer token"),
        ({"API_TOKENS": "short"}, "at least 16"),
        ({"API_TOKENS": "has a space in the middle of it"}, "without spaces"),
        ({"API_TOKENS_FILE": "/nonexistent/tokens"}, "API_TOKENS_FILE: cannot read"),
    ],
)
def test_token_mistakes_are_config_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        ApiTokens.from_settings(load_environment(environ))
    token = environ.get("API_TOKENS", "").strip(" ,")
    assert not token or token not in str(caught.value)  # never echoes a token


def test_api_settings_defaults_and_environment(tmp_path: Path) -> None:
    defaults = load_environment({})
    assert (defaults.api_host, defaults.api_port) == ("127.0.0.1", 8080)
    assert defaults.store_allows_private_networks is False
    assert defaults.store_database_url() == "sqlite:///webhook-data/webhooks.db"
    settings = load_environment(
        {
            "API_HOST": "0.0.0.0",
            "API_PORT": "9000",
            "WEBHOOK_DATA_DIR": str(tmp_path),
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        }
    )
    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 9000)
    assert settings.store_allows_private_networks is True
    assert settings.store_database_url() == f"sqlite:///{tmp_path}/webhooks.db"
    explicit = load_environment({"DATABASE_URL": "postgresql://u:p@db/x"})
    assert explicit.store_database_url() == "postgresql://u:p@db/x"
    with pytest.raises(ConfigError, match="API_PORT"):
        load_environment({"API_PORT": "70000"})


def test_store_from_settings_keeps_its_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_environment(
        {"WEBHOOK_DATA_DIR": str(tmp_path / "data"), "WEBHOOK_CONFIG": "/nonexistent.yaml"}
    )
    store = EndpointStore.from_settings(settings, migrate=True)
    store.close()
    assert (tmp_path / "data" / "webhooks.db").exists()
    assert (tmp_path / "data" / "webhooks.db.key").exists()


def test_webhook_api_refuses_to_start_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("API_TOKENS", "API_TOKENS_FILE", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEBHOOK_DATA_DIR", str(tmp_path / "data"))
    assert api_main([]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("webhook-api: error: ")
    assert "API_TOKENS" in err
    assert not (tmp_path / "data").exists()  # refused before creating anything


def test_webhook_api_bad_environment_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_PORT", "not-a-port")
    assert api_main([]) == 3
    assert "API_PORT" in capsys.readouterr().err


def test_webhook_api_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert api_main(["--help"]) == 0
    assert "API_TOKENS" in capsys.readouterr().out
    assert api_main(["--port", "1"]) == 2


# --- requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": "Bearer"},
    ],
)
def test_requests_without_a_right_token_are_401(
    store: EndpointStore, headers: dict[str, str]
) -> None:
    with running_api(store) as api:
        paths = [
            ("GET", "/v1/event-types"),
            ("GET", "/v1/accounts/acct_1/endpoints"),
            ("POST", "/v1/accounts/acct_1/endpoints"),
            ("DELETE", "/v1/accounts/acct_1/endpoints/ep-x"),
        ]
        for method, path in paths:
            response = api.client.request(method, path, headers=headers, json=NEW_ENDPOINT)
            assert response.status_code == 401, (method, path)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json() == {"error": "missing or invalid bearer token"}
        assert api.store.list_endpoints("acct_1") == ()


def test_right_tokens_are_accepted_and_health_and_schema_need_none(
    store: EndpointStore,
) -> None:
    with running_api(store) as api:
        for token in (TOKEN, OTHER_TOKEN):
            response = api.client.get(
                "/v1/event-types", headers={"Authorization": f"bearer {token}"}
            )
            assert response.status_code == 200
        assert api.client.get("/healthz").json() == {"status": "ok"}
        schema = api.client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_every_token_is_compared_in_constant_time(
    store: EndpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tokens = ("a" * 20, TOKEN, "c" * 20)
    with running_api(store, tokens=tokens) as api:
        for presented, status in ((TOKEN, 200), ("b" * 20, 401)):
            compared.clear()
            response = api.client.get(
                "/v1/event-types", headers={"Authorization": f"Bearer {presented}"}
            )
            assert response.status_code == status
            # No early exit: every configured digest, whatever matched, and never the
            # token itself (only SHA-256 digests are compared).
            presented_digest = hashlib.sha256(presented.encode()).digest()
            assert [a for a, _ in compared] == [presented_digest] * 3
            assert {b for _, b in compared} == {hashlib.sha256(t.encode()).digest() for t in tokens}


def test_audit_names_the_token_by_fingerprint_never_the_token(store: EndpointStore) -> None:
    with running_api(store) as api, structlog.testing.capture_logs() as logs:
        api.create()
    (audit,) = [entry for entry in logs if entry["event"] == "api_audit"]
    assert audit["actor"] == fingerprint(hashlib.sha256(TOKEN.encode()).digest())
    assert audit["actor"].startswith("token:") and len(audit["actor"]) == 14
    assert TOKEN not in repr(logs)


def test_tokens_keep_only_digests() -> None:
    tokens = ApiTokens([TOKEN])
    assert tokens._digests == (hashlib.sha256(TOKEN.encode()).digest(),)
    assert repr(tokens) == "ApiTokens(1 token(s))"
