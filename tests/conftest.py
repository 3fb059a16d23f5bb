"""Shared pytest configuration: a real RabbitMQ broker for integration tests.

Broker selection for ``rabbitmq_url`` (first that works, once per session):

1. ``RABBITMQ_URL`` from the environment (an existing broker; optionally
   ``RABBITMQ_MANAGEMENT_URL``, else ``http://<host>:15672`` is tried for the HTTP API);
2. a testcontainers ``RabbitMqContainer`` (image ``$RABBITMQ_TEST_IMAGE``, default
   ``rabbitmq:3.10-management``) when a Docker engine answers a 2 s ping;
3. a throwaway ``devtools.rabbitmq_node.LocalRabbitMQ`` node (needs the
   ``rabbitmq-server`` apt package's binaries; no root service, loopback only).

If none is available the tests that need a broker are skipped, except under
``CI`` (env var set), where they fail with instructions instead.

Fixtures:

* ``rabbitmq_url`` (session): AMQP URL of the shared broker's default vhost.
* ``vhost_url`` (function): AMQP URL of a fresh vhost created for this test and
  deleted afterwards (management HTTP API when reachable, else rabbitmqctl on a
  local node).  On an external broker with neither, it falls back to the shared
  vhost ``/``: tests must then keep their queue/exchange names unique, which the
  ``unique_name`` fixture makes easy (use it anyway; it costs nothing).
* ``rabbitmq_node`` (session): a LocalRabbitMQ (no plugins) of its own, separate from the
  shared broker, for tests that stop/restart the broker.  Always a local node;
  skipped (failed under CI) when the binaries are missing.  It stays up for the
  session: a test that ``stop()``s it must ``start()`` it again (or use ``restart()``).
* ``unique_name`` (function): a short name unique to this test run.
* ``postgres_url`` (session): URL of a PostgreSQL database whose role may create
  databases (the store tests make one per test).  From ``POSTGRES_URL``, else a
  testcontainers ``PostgresContainer`` (image ``$POSTGRES_TEST_IMAGE``, default
  ``postgres:15-alpine``) when a Docker engine answers, else a throwaway
  ``devtools.postgres_node.LocalPostgres`` cluster (the ``postgresql`` apt
  package's binaries; no service).  Skipped when none is available, failed under CI.

Options and markers: tests under ``tests/integration`` get the ``integration``
marker automatically; ``slow`` tests are skipped unless ``--long`` is given.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.postgres_node import (
    POSTGRES,
    LocalPostgres,
    create_database,
    drop_database,
    postgres_available,
)
from devtools.rabbitmq_inspection import management_api
from devtools.rabbitmq_node import (
    MANAGEMENT_PLUGIN,
    PROMETHEUS_PLUGIN,
    RABBITMQ_SERVER,
    LocalRabbitMQ,
    rabbitmq_available,
)

INTEGRATION_DIR = Path(__file__).parent / "integration"
DEFAULT_TEST_IMAGE = "rabbitmq:3.10-management"
DEFAULT_POSTGRES_IMAGE = "postgres:15-alpine"
NODE_PLUGINS = (MANAGEMENT_PLUGIN, PROMETHEUS_PLUGIN)

HOW_TO_FIX = (
    "Install the broker so tests can start a throwaway node "
    "(`apt-get install -y rabbitmq-server`; no service needs to run), "
    "or set RABBITMQ_URL=amqp://user:pass@host:5672/%2F to use an existing broker."
)
POSTGRES_HOW_TO_FIX = (
    "Install the PostgreSQL 15 server so tests can start a throwaway cluster "
    "(`apt-get install -y postgresql`; no service needs to run), or set "
    "POSTGRES_URL=postgresql://user:pass@host:5432/db (a role that may CREATE DATABASE)."
)


# --------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="also run tests marked `slow` (long chaos/load runs)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_long = config.getoption("--long")
    skip_slow = pytest.mark.skip(reason="slow test: run with --long")
    for item in items:
        if Path(item.path).resolve().is_relative_to(INTEGRATION_DIR.resolve()):
            item.add_marker(pytest.mark.integration)
        if not run_long and item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


# ------------------------------------------------------------- broker selection


@dataclass
class Broker:
    """The session's shared broker."""

    url: str  # AMQP URL of the default vhost "/"
    kind: str  # "env", "testcontainers" or "local"
    management_url: str | None = None
    node: LocalRabbitMQ | None = None
    _cleanup: list[Any] = field(default_factory=list, repr=False)

    def credentials(self) -> tuple[str, str]:
        parts = urllib.parse.urlsplit(self.url)
        return (
            urllib.parse.unquote(parts.username or "guest"),
            urllib.parse.unquote(parts.password or "guest"),
        )

    def url_for_vhost(self, vhost: str) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(
            parts._replace(path="/" + urllib.parse.quote(vhost, safe=""))
        )


def _unavailable(message: str, how_to_fix: str = HOW_TO_FIX) -> None:
    """Skip locally, fail loudly under CI (a silently skipped integration suite is a lie)."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}\n{how_to_fix}", pytrace=False)
    pytest.skip(f"{message} ({how_to_fix})")


def _management_reachable(base_url: str, user: str, password: str) -> bool:
    try:
        management_api(base_url, "GET", "overview", user=user, password=password, timeout=2)
    except Exception:
        return False
    return True


def _docker_answers() -> bool:
    """Quick (2 s) probe for a Docker engine; never raises.

    The common no-Docker case (no DOCKER_HOST, no answering /var/run/docker.sock) is
    settled with a raw socket, without importing the docker SDK at all: a failed SDK
    ping leaks a socket whose ResourceWarning would surface later as an error under
    ``filterwarnings = error``.
    """
    docker_host = os.environ.get("DOCKER_HOST", "")
    if not docker_host or docker_host.startswith("unix://"):
        path = docker_host.removeprefix("unix://") or "/var/run/docker.sock"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(path)
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status = sock.recv(64)
            return status.startswith(b"HTTP/1.") and b" 200 " in status
        except OSError:
            return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import docker

            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
                gc.collect()  # flush ResourceWarnings while they are still ignored
    except Exception:
        return False


def _start_container() -> Broker:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # testcontainers emits DeprecationWarnings
        from testcontainers.community.rabbitmq import RabbitMqContainer

        image = os.environ.get("RABBITMQ_TEST_IMAGE", DEFAULT_TEST_IMAGE)
        container = RabbitMqContainer(image).with_exposed_ports(15672)
        container.start()
    try:
        host = container.get_container_host_ip()
        amqp_port = container.get_exposed_port(container.port)
        url = f"amqp://guest:guest@{host}:{amqp_port}/%2F"
        management_url: str | None = f"http://{host}:{container.get_exposed_port(15672)}"
        # The management listener comes up a little after AMQP; an image without the
        # plugin never answers, and vhost_url then falls back to the shared vhost.
        deadline = time.monotonic() + (30 if "management" in image else 3)
        while not _management_reachable(management_url, "guest", "guest"):
            if time.monotonic() > deadline:
                management_url = None
                break
            time.sleep(0.5)
    except BaseException:
        container.stop()
        raise
    return Broker(url, "testcontainers", management_url, _cleanup=[container.stop])


def _external_broker(url: str) -> Broker:
    broker = Broker(url, "env")
    user, password = broker.credentials()
    candidates = [os.environ.get("RABBITMQ_MANAGEMENT_URL")]
    host = urllib.parse.urlsplit(url).hostname
    if host:
        candidates.append(f"http://{host}:15672")
    for candidate in candidates:
        if candidate and _management_reachable(candidate, user, password):
            broker.management_url = candidate
            break
    return broker


@pytest.fixture(scope="session")
def rabbitmq_broker() -> Iterator[Broker]:
    tried: list[str] = []
    env_url = os.environ.get("RABBITMQ_URL")
    broker: Broker | None = None
    if env_url:
        broker = _external_broker(env_url)
    else:
        tried.append("RABBITMQ_URL is not set")
        if _docker_answers():
            try:
                broker = _start_container()
            except Exception as exc:
                tried.append(f"testcontainers failed: {type(exc).__name__}: {exc}")
        else:
            tried.append("no Docker engine answered (testcontainers)")
        if broker is None:
            if rabbitmq_available():
                node = LocalRabbitMQ(plugins=NODE_PLUGINS)
                try:
                    node.start()
                except BaseException:
                    node.close()
                    raise
                broker = Broker(node.url, "local", node.management_url, node, [node.close])
            else:
                tried.append(f"{RABBITMQ_SERVER} not found (local throwaway node)")
    if broker is None:
        _unavailable("No RabbitMQ broker for integration tests: " + "; ".join(tried) + ".")
        return  # unreachable: _unavailable raises
    try:
        yield broker
    finally:
        for cleanup in reversed(broker._cleanup):
            try:
                cleanup()
            except Exception as exc:  # never mask the test session's result
                print(f"warning: broker cleanup failed: {exc!r}", file=sys.stderr)


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_broker: Broker) -> str:
    """AMQP URL of the shared broker (default vhost)."""
    return rabbitmq_broker.url


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[LocalRabbitMQ]:
    """A LocalRabbitMQ node of its own (not the shared broker), free to stop/restart."""
    if not rabbitmq_available():
        _unavailable(
            f"Tests that restart the broker need a local node, and {RABBITMQ_SERVER} "
            "was not found (an external RABBITMQ_URL or container cannot be restarted)."
        )
    # No HTTP plugins: they add ~5 s to every graceful stop (see LocalRabbitMQ.stop).
    # Tests that need them on a restartable node build their own LocalRabbitMQ.
    node = LocalRabbitMQ()
    try:
        node.start()
        yield node
    finally:
        node.close()


# ----------------------------------------------------------- PostgreSQL selection


def _start_postgres_container() -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # testcontainers emits DeprecationWarnings
        from testcontainers.postgres import PostgresContainer

        image = os.environ.get("POSTGRES_TEST_IMAGE", DEFAULT_POSTGRES_IMAGE)
        container = PostgresContainer(image, driver=None)
        container.start()
    return container.get_connection_url(), container.stop


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database on a server where the tests may create databases."""
    tried: list[str] = []
    url = os.environ.get("POSTGRES_URL")
    cleanup: Any = None
    if not url:
        tried.append("POSTGRES_URL is not set")
        if _docker_answers():
            try:
                url, cleanup = _start_postgres_container()
            except Exception as exc:
                tried.append(f"testcontainers failed: {type(exc).__name__}: {exc}")
        else:
            tried.append("no Docker engine answered (testcontainers)")
    if not url:
        if postgres_available():
            node = LocalPostgres()
            try:
                node.start()
            except BaseException:
                node.close()
                raise
            url, cleanup = node.url, node.close
        else:
            tried.append(f"{POSTGRES} not found (local throwaway cluster)")
    if not url:
        _unavailable(
            "No PostgreSQL for the store tests: " + "; ".join(tried) + ".", POSTGRES_HOW_TO_FIX
        )
        return  # unreachable: _unavailable raises
    try:
        yield url
    finally:
        if cleanup is not None:
            try:
                cleanup()
            except Exception as exc:  # never mask the test session's result
                print(f"warning: PostgreSQL cleanup failed: {exc!r}", file=sys.stderr)


# ------------------------------------------------------------------ per test


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh database on the PostgreSQL server.

    Tests that take it run once on each; the store and the delivery log share it.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"test_{secrets.token_hex(6)}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``t-<test name>-<random>``: safe as a queue, exchange or vhost name."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"t-{base}-{secrets.token_hex(4)}"


@pytest.fixture
def vhost_url(rabbitmq_broker: Broker, unique_name: str) -> Iterator[str]:
    """AMQP URL of a fresh vhost for this test, deleted afterwards.

    Falls back to the shared vhost "/" on an external broker without a reachable
    management API (then keep names unique, e.g. with ``unique_name``).
    """
    broker = rabbitmq_broker
    vhost = unique_name
    user, password = broker.credentials()
    quoted = urllib.parse.quote(vhost, safe="")
    if broker.management_url:
        api = broker.management_url
        auth = {"user": user, "password": password}
        management_api(api, "PUT", f"vhosts/{quoted}", {}, **auth)
        try:
            management_api(
                api,
                "PUT",
                f"permissions/{quoted}/{urllib.parse.quote(user, safe='')}",
                {"configure": ".*", "write": ".*", "read": ".*"},
                **auth,
            )
            yield broker.url_for_vhost(vhost)
        finally:
            with contextlib.suppress(urllib.error.HTTPError):
                management_api(api, "DELETE", f"vhosts/{quoted}", **auth)
    elif broker.node is not None:
        broker.node.ctl("add_vhost", vhost)
        try:
            broker.node.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            yield broker.url_for_vhost(vhost)
        finally:
            broker.node.delete_vhost(vhost)
    else:
        yield broker.url


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Undo any structlog configuration a test (e.g. a CLI's main) made.

    ``capture_logs`` swaps processors but not the level filter, so a CLI test that
    configured ``error`` level would otherwise hide later tests' info events.
    """
    import structlog

    yield
    structlog.reset_defaults()
