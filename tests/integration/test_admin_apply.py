"""``webhook-admin apply`` as a real process (``python -m cli.admin``) on PostgreSQL.

Each test gets a fresh database on the session's server (``postgres_url``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.migrator import current_revision, head_revision
from devtools.postgres_node import create_database, drop_database
from tests.support.store import sample_input

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
ACME_SECRET = "acme-signing-secret-one"
SINK_SECRET = "sink-signing-secret-one"

FILE = """\
subscribers:
  - id: acme-orders
    account: acme
    url: https://acme.example/hooks/{token}
    secret: ${{ACME_SECRET}}
    events: [{events}]
    max_in_flight: 4
  - id: audit-sink
    all_accounts: true
    url: https://audit.example/in
    secret: {sink}
    events: ["#"]
"""


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    name = f"admin_{secrets.token_hex(6)}"
    url = create_database(postgres_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_url, name)


@pytest.fixture
def key() -> str:
    return SecretsKey.generate().as_text()


def _admin(
    database: str, key: str, *args: str, acme_secret: str = ACME_SECRET
) -> subprocess.CompletedProcess[str]:
    cleared = ("SECRETS_KEY_FILE", "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "WEBHOOK_DATA_DIR")
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env.update(DATABASE_URL=database, SECRETS_KEY=key, ACME_SECRET=acme_secret, LOG_FORMAT="json")
    result = subprocess.run(
        [sys.executable, "-m", "cli.admin", "apply", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for secret in (ACME_SECRET, SINK_SECRET, "acme-signing-secret-two", "tok-1", "tok-2"):
        assert secret not in result.stdout + result.stderr
    return result


def _write(path: Path, *, token: str = "tok-1", events: str = '"order.*"') -> Path:
    path.write_text(FILE.format(token=token, events=events, sink=SINK_SECRET), encoding="utf-8")
    return path


def _open(database: str, key: str) -> EndpointStore:
    return EndpointStore.open(database, secrets_key=SecretStr(key))


def test_apply_creates_changes_prunes_and_converges(
    tmp_path: Path, database: str, key: str
) -> None:
    path = _write(tmp_path / "subscribers.yaml")
    first = _admin(database, key, "-f", str(path))
    assert first.returncode == 0, first.stderr
    assert [line.split()[:2] for line in first.stdout.splitlines()[1:3]] == [
        ["create", "acme/acme-orders"],
        ["create", "internal/audit-sink"],
    ]
    assert '"event":"endpoints_applied"' in first.stderr
    assert current_revision(database) == head_revision()

    again = _admin(database, key, "-f", str(path))
    assert again.stdout == f"nothing to do: the store matches {path} (2 endpoint(s))\n"

    store = _open(database, key)
    try:
        snapshot = store.load_all()
        acme = next(e for e in snapshot.endpoints if e.endpoint.id == "acme-orders")
        assert acme.secret.get_secret_value() == ACME_SECRET
        assert acme.subscriber().max_in_flight == 4 and acme.subscriber().account == "acme"
        stray, _ = store.create_endpoint("acme", sample_input())

        _write(path, token="tok-2", events='"order.created"')
        changed = _admin(
            database, key, "-f", str(path), "--prune", acme_secret="acme-signing-secret-two"
        )
        assert changed.returncode == 0, changed.stderr
        rows = [line.split(None, 2) for line in changed.stdout.splitlines()[1:3]]
        assert rows == [
            ["change", "acme/acme-orders", "events, secret, url"],
            ["delete", f"acme/{stray.id}", "not in the file"],
        ]
        # Workers following the store see exactly these changes.
        changes = store.changed_since(snapshot.version)
        assert [e.endpoint.id for e in changes.endpoints] == ["acme-orders"]
        assert changes.deleted == (stray.id,)
        [updated] = changes.endpoints
        assert updated.secret.get_secret_value() == "acme-signing-secret-two"
        assert updated.endpoint.events == ("order.created",)
    finally:
        store.close()


def test_dry_run_on_an_empty_database_creates_no_schema(
    tmp_path: Path, database: str, key: str
) -> None:
    path = _write(tmp_path / "subscribers.yaml")
    result = _admin(database, key, "-f", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "dry run, nothing written: 2 to create, 0 to change, 0 to delete, 0 unchanged"
    )
    assert current_revision(database) is None


def test_unreachable_database_and_bad_file_exit_codes(
    tmp_path: Path, database: str, key: str
) -> None:
    path = _write(tmp_path / "subscribers.yaml")
    unreachable = _admin("postgresql://webhooks:pw-x@127.0.0.1:1/none", key, "-f", str(path))
    assert unreachable.returncode == 4
    assert "is unavailable" in unreachable.stderr and "pw-x" not in unreachable.stderr

    path.write_text(path.read_text().replace("events: [", "evnets: ["), encoding="utf-8")
    bad = _admin(database, key, "-f", str(path))
    assert bad.returncode == 3
    assert "subscribers[0] (id 'acme-orders').evnets: unknown key" in bad.stderr
