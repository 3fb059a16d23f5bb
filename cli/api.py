"""``webhook-api``: serve the endpoint HTTP API (``control.api``) with uvicorn.

Loads the settings (the environment only: the API never reads the subscriber
file), checks that at least one bearer token is configured, migrates the
endpoint store to the newest schema, then serves on ``API_HOST:API_PORT``
until SIGTERM or SIGINT, after which it finishes the requests in flight
(up to ``SHUTDOWN_GRACE_SECONDS``) and exits 0.  With ``API_WORKERS`` above 1
this process only supervises that many server processes on the same port
(uvicorn's workers), each building its app with ``app_from_environment``.
"""

from __future__ import annotations

import argparse
import atexit
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from cli.arguments import OneLineParser
from cli.exit_codes import EXIT_CODES_HELP, ExitCode, run_command
from config.logs import configure_logging
from config.settings import Settings, load_environment

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from control.delivery_log.in_thread import RecorderThread

PROG = "webhook-api"

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no arguments: everything comes from the environment)."""
    return OneLineParser(
        prog=PROG,
        description=(
            "Serve the endpoint HTTP API (JSON; OpenAPI at /openapi.json). Configured by "
            "the environment: API_HOST, API_PORT, API_TOKENS or API_TOKENS_FILE, "
            "DATABASE_URL or WEBHOOK_DATA_DIR, SECRETS_KEY or SECRETS_KEY_FILE, RABBITMQ_URL, "
            "API_WORKERS."
        ),
        epilog=EXIT_CODES_HELP,
    )


def serve(settings: Settings) -> int:
    """Check the tokens, migrate the store, serve until SIGTERM; 0 after a clean stop."""
    import uvicorn

    from control.api.app import create_app
    from control.api.auth import ApiTokens
    from control.api.services import ApiServices
    from control.store.database import DatabaseUrl
    from control.store.endpoints import EndpointStore

    tokens = ApiTokens.from_settings(settings)  # before anything is created on disk
    configure_logging(settings.log_format, settings.log_level, cache_loggers=True)
    database = DatabaseUrl.parse(settings.store_database_url())
    sqlite_path = database.sqlite_path
    log.info(
        "api_store_opening",
        database=database.redacted,
        sqlite_file=None if sqlite_path is None else str(sqlite_path.resolve()),
    )
    store = EndpointStore.from_settings(settings, migrate=True)
    recorder = _start_recorder(settings)
    if settings.api_workers > 1:
        store.close()  # each server process opens its own
        try:
            return _serve_processes(settings, len(tokens))
        finally:
            if recorder is not None:
                recorder.stop()
    try:
        app = create_app(ApiServices.from_settings(settings, store, tokens))
        config = _server_config(settings, app)
        _log_starting(settings, len(tokens))
        with _stop_signals_end_cleanly():
            uvicorn.Server(config).run()
    finally:
        if recorder is not None:
            recorder.stop()
        store.close()
    log.info("api_stopped")
    return 0


def _start_recorder(settings: Settings) -> RecorderThread | None:
    """With API_RUN_RECORDER: the delivery log's recorder, in a thread of its own."""
    if not settings.api_run_recorder:
        return None
    from control.delivery_log.in_thread import RecorderThread

    recorder = RecorderThread(settings)
    recorder.start()
    return recorder


def _serve_processes(settings: Settings, tokens: int) -> int:
    """Supervise API_WORKERS server processes on one socket until SIGTERM; 0 after a clean
    stop, 1 when they could not start."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = _server_config(settings, "cli.api:app_from_environment")
    _log_starting(settings, tokens)
    sock = config.bind_socket()
    try:
        with _stop_signals_end_cleanly():
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
    finally:
        sock.close()
    if any(worker.process.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        log.error("api_workers_failed", workers=settings.api_workers)
        return ExitCode.FAILED
    log.info("api_stopped")
    return 0


def app_from_environment() -> FastAPI:
    """The app of one of API_WORKERS server processes, from the environment (the
    supervising process has checked the tokens and migrated the store)."""
    from control.api.app import create_app
    from control.api.auth import ApiTokens
    from control.api.services import ApiServices
    from control.store.endpoints import EndpointStore

    settings = load_environment()
    configure_logging(settings.log_format, settings.log_level, cache_loggers=True)
    tokens = ApiTokens.from_settings(settings)
    store = EndpointStore.from_settings(settings)
    # uvicorn returns from the process's main after a graceful stop; this then
    # closes the store's connections (PostgreSQL sees a clean goodbye).
    atexit.register(store.close)
    return create_app(ApiServices.from_settings(settings, store, tokens))


def _server_config(settings: Settings, app: FastAPI | str) -> uvicorn.Config:
    """uvicorn's settings for ``app``: an app, or the import path of a factory of one
    (for API_WORKERS server processes)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        factory=isinstance(app, str),
        workers=settings.api_workers if isinstance(app, str) else 1,
        log_config=None,  # structlog (config.logs) writes the log; no uvicorn set-up
        access_log=False,  # control.api.errors.RequestLog writes api_request lines
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


def _log_starting(settings: Settings, tokens: int) -> None:
    log.info(
        "api_starting",
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        tokens=tokens,
        private_networks_allowed=settings.store_allows_private_networks,
        broker=settings.broker.redacted,
    )


@contextmanager
def _stop_signals_end_cleanly() -> Iterator[None]:
    """Let SIGTERM and SIGINT end in exit 0 once uvicorn has shut down gracefully.

    uvicorn catches them while serving, then restores the handlers it found and
    raises the signal again; with Python's defaults that would kill the process
    (SIGTERM) or raise KeyboardInterrupt (SIGINT) after a clean stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def noted(signum: int, _frame: FrameType | None) -> None:
        log.info("api_stop_requested", signal=signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, noted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-api``; returns the exit code."""

    def command() -> int:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        return serve(load_environment())

    return run_command(PROG, command)


if __name__ == "__main__":
    raise SystemExit(main())
