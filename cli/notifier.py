"""``webhook-notifier``: send operational notices (control.notifications) until stopped.

Consumes the operational-facts queue the workers publish to, and POSTs one
signed notice per endpoint per NOTIFICATION_WINDOW_SECONDS to
OPERATOR_NOTIFICATION_URL and to the endpoint's account's own URL (from the
store, with DATABASE_URL).  Serves /healthz, /readyz and /metrics on
METRICS_HOST:METRICS_PORT.  SIGTERM or SIGINT: finish the notices under way
(up to SHUTDOWN_GRACE_SECONDS), leave the rest to the next consumer, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from cli.arguments import OneLineParser
from cli.exit_codes import EXIT_CODES_HELP, run_command
from cli.terminal import add_version
from config.logs import configure_logging
from config.settings import Settings, load_environment

PROG = "webhook-notifier"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no arguments: everything comes from the environment)."""
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Send signed operational notices (endpoint paused, circuit opened or closed, "
            "events dead-lettered) to OPERATOR_NOTIFICATION_URL (signed with "
            "OPERATOR_NOTIFICATION_SECRET or _FILE) and to each account's own notification "
            "URL (DATABASE_URL); at most one per endpoint per NOTIFICATION_WINDOW_SECONDS."
        ),
        epilog=EXIT_CODES_HELP,
    )
    add_version(parser)
    return parser


async def run_notifier(settings: Settings) -> None:
    """Run the notifier until SIGTERM/SIGINT (or its ``request_stop``)."""
    from control.notifications.aggregator import Aggregator
    from control.notifications.destinations import Destinations
    from control.notifications.sender import NoticeSender
    from control.notifications.service import Notifier
    from worker.health import HealthServer

    destinations = Destinations.from_settings(settings)
    notifier = Notifier(
        settings.broker,
        destinations,
        NoticeSender(
            allow_private_accounts=settings.store_allows_private_networks,
            proxy=settings.egress_proxy_url,
        ),
        Aggregator(
            window_seconds=settings.notification_window_seconds,
            batch_seconds=settings.notification_batch_seconds,
        ),
        grace_seconds=settings.shutdown_grace_seconds,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, notifier.request_stop)
    health = HealthServer(settings.metrics_host, settings.metrics_port, notifier.is_ready)
    await health.start()
    try:
        await notifier.run()
    finally:
        await health.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-notifier``; returns the exit code."""

    def command() -> int:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        settings = load_environment()
        configure_logging(settings.log_format, settings.log_level, cache_loggers=True)
        asyncio.run(run_notifier(settings))
        return 0

    return run_command(PROG, command)


if __name__ == "__main__":
    raise SystemExit(main())
