"""``webhook-admin apply`` on SQLite: create, change, prune, dry run, secrets never shown."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from cli import admin
from cli.exit_codes import ExitCode
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.models import EndpointWithSecrets
from tests.support.store import sample_input

SECRETS = {"ACME_SECRET": "acme-secret-1-xyz", "GLOBEX_SECRET": "globex-secret-1-xyz"}

FILE = """\
subscribers:
  - id: acme-orders
    account: acme
    url: https://acme.example/hooks/{acme_path}
    secret: ${{ACME_SECRET}}
    events: ["order.*"]
  - id: globex-orders
    account: globex
    url: https://globex.example/webhook
    secret: ${{GLOBEX_SECRET}}
    events: ["order.created", "order.cancelled"]
    timeout_seconds: {timeout}
    circuit_breaker:
      failure_threshold: 9
  - id: audit-sink
    all_accounts: true
    url: https://audit.example/in
    secret: sink-secret-1-xyz
    events: ["#"]
"""


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment webhook-admin reads: a SQLite store and the file's variables."""
    url = f"sqlite:///{tmp_path / 'store' / 'webhooks.db'}"
    for name in ("SECRETS_KEY_FILE", "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "WEBHOOK_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRETS_KEY", SecretsKey.generate().as_text())
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return url


@pytest.fixture
def store(database: str) -> Iterator[EndpointStore]:
    store = EndpointStore.open(database, secrets_key=_key(), migrate=True)
    yield store
    store.close()


def _key() -> SecretStr:
    return SecretStr(os.environ["SECRETS_KEY"])


def _file(tmp_path: Path, *, acme_path: str = "tok-1", timeout: float = 5) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(FILE.format(acme_path=acme_path, timeout=timeout), encoding="utf-8")
    return path


def _apply(
    capsys: pytest.CaptureFixture[str], path: Path, *options: str
) -> tuple[int, list[str], str]:
    code = admin.main(["apply", "-f", str(path), *options])
    out, err = capsys.readouterr()
    # Never a secret, and never a URL's path (it may carry a token), in anything printed.
    for secret in (*SECRETS.values(), "sink-secret-1-xyz", "rotated-secret-2", "tok-1", "tok-2"):
        assert secret not in out + err
    return code, out.splitlines(), err


def _by_id(store: EndpointStore) -> dict[str, EndpointWithSecrets]:
    return {item.endpoint.id: item for item in store.load_all().endpoints}


def test_apply_creates_each_subscriber_under_its_id_with_its_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: EndpointStore
) -> None:
    code, out, _ = _apply(capsys, _file(tmp_path))
    assert code == ExitCode.OK
    assert out[0].split() == ["ACTION", "ENDPOINT", "WHAT"]
    assert out[1].split()[:2] == ["create", "acme/acme-orders"]
    assert "host acme.example, order.*" in out[1]
    assert out[2].split()[:2] == ["create", "globex/globex-orders"]
    assert out[3].split()[:2] == ["create", "internal/audit-sink"]
    assert out[4].startswith(f"applied {tmp_path / 'subscribers.yaml'}: 3 created, 0 changed")

    stored = _by_id(store)
    assert stored["acme-orders"].endpoint.account_id == "acme"
    assert stored["acme-orders"].secret.get_secret_value() == SECRETS["ACME_SECRET"]
    globex = stored["globex-orders"]
    assert globex.endpoint.timeout_seconds == 5 and globex.endpoint.max_in_flight is None
    assert globex.endpoint.circuit_breaker is not None
    assert globex.endpoint.circuit_breaker.failure_threshold == 9
    sink = stored["audit-sink"]
    assert sink.endpoint.account_id == "internal" and sink.endpoint.all_accounts
    # What a worker makes of it is the file's subscriber.
    assert sink.subscriber().all_accounts and sink.subscriber().account is None
    assert globex.subscriber().account == "globex"


def test_a_second_apply_has_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: EndpointStore
) -> None:
    path = _file(tmp_path)
    _apply(capsys, path)
    version = store.load_all().version
    code, out, err = _apply(capsys, path)
    assert code == ExitCode.OK
    assert out == [f"nothing to do: the store matches {path} (3 endpoint(s))"]
    assert err == ""
    assert store.load_all().version == version


def test_changes_name_their_fields_only(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    store: EndpointStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _apply(capsys, _file(tmp_path))
    monkeypatch.setenv("ACME_SECRET", "rotated-secret-2")
    path = _file(tmp_path, acme_path="tok-2", timeout=7)
    with capture_logs() as logs:
        code, out, _ = _apply(capsys, path)
    assert code == ExitCode.OK
    assert [line.split(None, 2) for line in out[1:3]] == [
        ["change", "acme/acme-orders", "secret, url"],
        ["change", "globex/globex-orders", "timeout_seconds"],
    ]
    assert out[3].startswith(f"applied {path}: 0 created, 2 changed, 0 deleted, 1 unchanged")
    stored = _by_id(store)
    acme = stored["acme-orders"]
    assert acme.secret.get_secret_value() == "rotated-secret-2"
    assert acme.previous_secret is None  # no --overlap: replaced at once
    assert acme.endpoint.url.endswith("/tok-2")
    assert stored["globex-orders"].endpoint.timeout_seconds == 7
    [line] = [entry for entry in logs if entry["event"] == "endpoints_applied"]
    assert line["changed"] == {
        "acme/acme-orders": ["secret", "url"],
        "globex/globex-orders": ["timeout_seconds"],
    }
    assert "rotated-secret-2" not in repr(logs) and "tok-2" not in repr(logs)


def test_overlap_keeps_the_replaced_secret_valid(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    store: EndpointStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _file(tmp_path)
    _apply(capsys, path)
    monkeypatch.setenv("ACME_SECRET", "rotated-secret-2")
    assert _apply(capsys, path, "--overlap", "3600")[0] == ExitCode.OK
    acme = _by_id(store)["acme-orders"]
    assert acme.secret.get_secret_value() == "rotated-secret-2"
    assert acme.previous_secret is not None
    assert acme.previous_secret.get_secret_value() == SECRETS["ACME_SECRET"]


def test_defaults_given_or_not_and_pattern_order_are_no_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: EndpointStore
) -> None:
    store.create_endpoint(
        "globex",
        sample_input(
            url="https://globex.example/webhook",
            events=["order.cancelled", "order.created"],
            timeout_seconds=10,  # the default, stored explicitly
            max_in_flight=16,
        ),
        endpoint_id="globex-orders",
        secret=SecretStr(SECRETS["GLOBEX_SECRET"]),
    )
    path = tmp_path / "globex.yaml"
    path.write_text(
        "subscribers:\n"
        "  - id: globex-orders\n"
        "    account: globex\n"
        "    url: https://globex.example/webhook\n"
        "    secret: ${GLOBEX_SECRET}\n"
        "    events: [order.created, order.cancelled]\n",
        encoding="utf-8",
    )
    code, out, _ = _apply(capsys, path)
    assert code == ExitCode.OK
    assert out == [f"nothing to do: the store matches {path} (1 endpoint(s))"]


def test_dry_run_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], database: str
) -> None:
    path = _file(tmp_path)
    code, out, _ = _apply(capsys, path, "--dry-run")
    assert code == ExitCode.OK
    assert [line.split()[:3] for line in out[1:4]] == [
        ["would", "create", "acme/acme-orders"],
        ["would", "create", "globex/globex-orders"],
        ["would", "create", "internal/audit-sink"],
    ]
    assert out[4] == "dry run, nothing written: 3 to create, 0 to change, 0 to delete, 0 unchanged"
    assert not (tmp_path / "store").exists(), "a dry run creates no database"

    _apply(capsys, path)
    store = EndpointStore.open(database, secrets_key=_key())
    try:
        version = store.load_all().version
        changed = _file(tmp_path, timeout=8)
        code, out, _ = _apply(capsys, changed, "--dry-run", "--prune-all")
        assert out[1].split()[:3] == ["would", "change", "globex/globex-orders"]
        assert store.load_all().version == version
        assert _by_id(store)["globex-orders"].endpoint.timeout_seconds == 5
    finally:
        store.close()


def test_prune_deletes_what_the_file_does_not_list_in_its_accounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: EndpointStore
) -> None:
    path = _file(tmp_path)
    _apply(capsys, path)
    extra, _ = store.create_endpoint("acme", sample_input())
    elsewhere, _ = store.create_endpoint("initech", sample_input())

    code, out, _ = _apply(capsys, path)
    assert out == [
        "kept 1 endpoint(s) of the file's accounts that it does not list (--prune deletes "
        f"them): acme/{extra.id}",
        f"nothing to do: the store matches {path} (3 endpoint(s))",
    ]

    code, out, _ = _apply(capsys, path, "--prune")
    assert code == ExitCode.OK
    assert out[1].split() == ["delete", f"acme/{extra.id}", "not", "in", "the", "file"]
    assert set(_by_id(store)) == {"acme-orders", "globex-orders", "audit-sink", elsewhere.id}

    code, out, _ = _apply(capsys, path, "--prune-all")
    assert out[1].split()[:2] == ["delete", f"initech/{elsewhere.id}"]
    assert set(_by_id(store)) == {"acme-orders", "globex-orders", "audit-sink"}


def test_a_pause_made_through_the_api_survives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: EndpointStore
) -> None:
    path = _file(tmp_path)
    _apply(capsys, path)
    store.set_paused("acme", "acme-orders", True, reason="merchant asked")
    assert _apply(capsys, path)[1][0].startswith("nothing to do")
    assert store.get_endpoint("acme", "acme-orders").paused


def test_an_id_held_by_another_account_is_refused_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: EndpointStore
) -> None:
    store.create_endpoint("initech", sample_input(), endpoint_id="acme-orders")
    version = store.load_all().version
    code, out, err = _apply(capsys, _file(tmp_path))
    assert code == ExitCode.FAILED
    assert out == []
    assert "initech/acme-orders (the file says account 'acme')" in err
    assert store.load_all().version == version


def test_private_targets_follow_the_stores_policy(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    store: EndpointStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(
        "subscribers:\n"
        "  - {id: local, account: acme, url: 'http://127.0.0.1:9/x', secret: s, events: ['#']}\n"
        "security:\n  allow_private_networks: true\n",
        encoding="utf-8",
    )
    code, out, err = _apply(capsys, path)
    assert out == []
    assert code == ExitCode.CONFIG
    assert f"{path}: subscribers[0] (id 'local').url: 127.0.0.1 is not a public" in err
    assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS=true" in err
    assert store.load_all().endpoints == ()

    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    assert _apply(capsys, path)[0] == ExitCode.OK


def test_exit_codes_follow_the_policy(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    database: str,
) -> None:
    path = _file(tmp_path)
    monkeypatch.setenv("ACME_SECRET", "x")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-secret@127.0.0.1:1/db")
    code, _, err = _apply(capsys, path)
    assert code == ExitCode.UNAVAILABLE
    assert "u:***@127.0.0.1:1/db is unavailable" in err and "pw-secret" not in err

    monkeypatch.delenv("ACME_SECRET")
    code, _, err = _apply(capsys, path)
    assert code == ExitCode.CONFIG
    assert "environment variable ACME_SECRET is not set" in err

    assert _apply(capsys, tmp_path / "missing.yaml")[0] == ExitCode.CONFIG
    assert admin.main(["apply"]) == ExitCode.USAGE
    assert admin.main(["apply", "-f", str(path), "--overlap", "-1"]) == ExitCode.USAGE
    assert admin.main(["apply", "-f", str(path), "--prune", "--prune-all"]) == ExitCode.USAGE
    capsys.readouterr()
