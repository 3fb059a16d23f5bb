"""``webhook-recorder``: write the delivery log's attempt records to the store.

Loads the settings (the environment only), migrates the store to the newest
schema, then consumes the delivery log queue and applies retention until
SIGTERM or SIGINT, after which it writes and acks what it holds (or leaves it to
the broker) and exits 0.  Health and metrics on METRICS_HOST:RECORDER_METRICS_PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

import structlog

from cli.arguments import OneLineParser
from cli.exit_codes import EXIT_CODES_HELP, run_command
from cli.terminal import add_version
from config.logs import configure_logging
from config.settings import Settings, load_environment

PROG = "webhook-recorder"

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no arguments: everything comes from the environment)."""
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Write the delivery log (attempt records workers publish with DELIVERY_LOG=true) "
            "to the store, and delete what is older than DELIVERY_LOG_RETENTION_DAYS. "
            "Configured by the environment: RABBITMQ_URL, DATABASE_URL or WEBHOOK_DATA_DIR, "
            "METRICS_HOST, RECORDER_METRICS_PORT, LOG_FORMAT, LOG_LEVEL."
        ),
        epilog=EXIT_CODES_HELP,
    )
    add_version(parser)
    return parser


async def _run(settings: Settings) -> None:
    from control.delivery_log.service import RecorderService
    from control.store.attempts import AttemptStore

    store = AttemptStore.from_settings(settings, migrate=True)
    try:
        service = RecorderService(settings, store)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.request_stop)
        await service.run()
    finally:
        store.close()


def run(settings: Settings) -> int:
    """Record until SIGTERM/SIGINT; 0 after a clean stop."""
    configure_logging(settings.log_format, settings.log_level, cache_loggers=True)
    asyncio.run(_run(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-recorder``; returns the exit code."""

    def command() -> int:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        return run(load_environment())

    return run_command(PROG, command)


if __name__ == "__main__":
    raise SystemExit(main())
