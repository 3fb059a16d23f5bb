"""``webhook-worker``: run the daemon, check the config, or test one endpoint."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from cli.arguments import OneLineParser, UsageError
from cli.exit_codes import EXIT_CODES_HELP, ExitCode, run_command
from cli.terminal import PipeOutput, add_version, format_table
from cli.worker_status import fetch_status, render_status, status_url
from config.logs import configure_logging
from config.settings import Settings, load_settings
from config.subscribers import Subscriber
from config.topology import dead_letter_queue, work_queue

PROG = "webhook-worker"

RUN_HELP = """\
Consume every subscriber's work queue, sign and POST each event, retry failures
through the delay queues and dead-letter what still fails. Serves /healthz,
/readyz, /status and /metrics on METRICS_HOST:METRICS_PORT.

SIGTERM or SIGINT: stop consuming, let in-flight deliveries finish for up to
SHUTDOWN_GRACE_SECONDS, leave the rest unacked (the broker redelivers them),
exit 0.

Environment: RABBITMQ_URL (RABBITMQ_USERNAME, RABBITMQ_PASSWORD), WEBHOOK_CONFIG
(the subscriber file) or DATABASE_URL (the endpoint store), METRICS_HOST,
METRICS_PORT, LOG_FORMAT (json|console), LOG_LEVEL, SHUTDOWN_GRACE_SECONDS.
See the README's Configuration section for every variable."""


async def _run(settings: Settings) -> None:
    from worker.service import Worker

    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop)
    await worker.run()


def run(settings: Settings) -> int:
    """Run the worker until SIGTERM/SIGINT; exit 0 after a graceful stop."""
    configure_logging(settings.log_format, settings.log_level, cache_loggers=True)
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(_run(settings))
    return 0


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on Linux and macOS), else asyncio's loop.

    uvloop runs the worker's sockets and callbacks in C: ~10-20% less CPU per
    delivery (docs/performance.md).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def configured_subscribers(settings: Settings) -> tuple[Subscriber, ...]:
    """The subscribers as a worker starting now would see them: the file's, or the store's."""
    if not settings.uses_store:
        return settings.subscribers
    from control.store.endpoints import EndpointStore

    store = EndpointStore.from_settings(settings)
    try:
        return tuple(endpoint.subscriber() for endpoint in store.load_all().endpoints)
    finally:
        store.close()


def _where(settings: Settings) -> str:
    if settings.uses_store:
        from control.store.database import DatabaseUrl

        assert settings.database_url is not None
        url = DatabaseUrl.parse(settings.database_url.get_secret_value())
        return f"endpoint store {url.redacted} (DATABASE_URL)"
    return str(settings.config_path)


def check_config(settings: Settings) -> int:
    """Print the subscriber table of a valid config (validation already happened)."""
    subscribers = configured_subscribers(settings)
    print(f"config: {_where(settings)}")
    print(f"broker: {settings.broker.redacted}")
    delays = ", ".join(f"{d:g}s" for d in settings.retry.delays_seconds) or "none"
    print(f"retry delays: {delays} (max {settings.retry.max_attempts} attempts)")
    print(f"private networks allowed: {settings.security.allow_private_networks}")
    print()
    rows = [("ID", "ACCOUNT", "URL", "EVENTS", "TIMEOUT", "IN-FLIGHT", "CIRCUIT", "QUEUES")]
    for sub in subscribers:
        breaker = settings.breaker_policy(sub)
        circuit = (
            f"{breaker.failure_threshold} fails, "
            f"{breaker.cooldown_seconds:g}-{breaker.max_cooldown_seconds:g}s"
            if breaker.enabled
            else "off"
        )
        rows.append(
            (
                sub.id if sub.enabled else f"{sub.id} (disabled)",
                "(all accounts)" if sub.all_accounts else str(sub.account),
                sub.url,
                ",".join(sub.events),
                f"{sub.timeout_seconds:g}s",
                str(sub.max_in_flight),
                circuit,
                f"{work_queue(sub.id)} / {dead_letter_queue(sub.id)}",
            )
        )
    print(format_table(rows))
    warnings = [] if settings.security.allow_private_networks else _refused_targets(subscribers)
    for warning in warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    noted = f", {len(warnings)} warning(s) (see stderr)" if warnings else ""
    print(f"\n{len(subscribers)} subscriber(s) OK{noted}")
    return 0


def _refused_targets(subscribers: Sequence[Subscriber]) -> list[str]:
    """Subscribers whose URL the address policy will refuse, said before it happens."""
    from worker.address_policy import is_public_address

    warnings = []
    for sub in subscribers:
        host = urlsplit(sub.url).hostname or ""
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (OSError, UnicodeError):
            warnings.append(f"{sub.id}: {host} does not resolve now; deliveries will fail")
            continue
        if addresses and not any(is_public_address(a) for a in addresses):
            shown = ", ".join(sorted(addresses))
            warnings.append(
                f"{sub.id}: {host} is a private address ({shown}); the worker will refuse it "
                "unless security.allow_private_networks is true"
            )
    return warnings


def _subscriber(settings: Settings, subscriber_id: str) -> Subscriber:
    subscribers = configured_subscribers(settings)
    for subscriber in subscribers:
        if subscriber.id == subscriber_id:
            return subscriber
    known = ", ".join(s.id for s in subscribers) or "none"
    where = _where(settings)
    raise UsageError(f"no subscriber {subscriber_id!r} in {where} (known: {known})")


async def _test_endpoint(settings: Settings, subscriber_id: str, event_type: str) -> int:
    from wire.envelope import build_envelope, new_event_id
    from wire.queued_event import QueuedEvent
    from wire.samples import sample_data
    from worker.delivery import Deliverer

    subscriber = _subscriber(settings, subscriber_id)
    body = build_envelope(event_type, sample_data(event_type))
    event = QueuedEvent(new_event_id(), event_type, 1, body, None, None, account=subscriber.account)
    async with Deliverer(allow_private_networks=settings.security.allow_private_networks) as d:
        result = await d.deliver(subscriber, event, test=True)
    print(f"subscriber: {subscriber.id}")
    print(f"url:        {subscriber.url}")
    print(f"event:      {event_type} ({event.event_id})")
    print(f"status:     {result.status or '-'}")
    print(f"latency:    {result.duration_seconds * 1000:.1f} ms")
    if result.error:
        print(f"error:      {result.error}")
    excerpt = result.response_excerpt[:200].decode("utf-8", "replace")
    print(f"response:   {excerpt!r}")
    print("result:     PASS" if result.ok else "result:     FAIL")
    return ExitCode.OK if result.ok else ExitCode.FAILED


def resume_subscriber(settings: Settings, subscriber_id: str) -> int:
    """Delete a subscriber's pause marker; running workers resume within their poll interval."""
    from worker.pause import resume

    _subscriber(settings, subscriber_id)
    if resume(settings.broker, subscriber_id):
        print(f"{subscriber_id}: resumed; workers consume its queue again within seconds")
    else:
        print(f"{subscriber_id}: was not paused")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = OneLineParser(
        prog=PROG, description="Webhook delivery worker.", epilog=EXIT_CODES_HELP
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    commands.add_parser(
        "run",
        help="consume and deliver until SIGTERM (the default)",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser(
        "check-config", help="validate the configuration and print the subscribers (file or store)"
    )
    status = commands.add_parser(
        "status", help="ask the running worker on this host for its lanes (GET /status)"
    )
    status.add_argument("--url", help="the worker's /status URL (default: METRICS_HOST:PORT)")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    test = commands.add_parser(
        "test-endpoint", help="send one signed sample event straight to a subscriber"
    )
    test.add_argument("subscriber")
    test.add_argument(
        "--event",
        default="order.created",
        choices=["order.created", "order.updated", "order.cancelled"],
    )
    commands.add_parser(
        "resume", help="deliver again to a subscriber paused after it answered 410 Gone"
    ).add_argument("subscriber")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-worker``; returns the exit code."""

    def command() -> int:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        return _dispatch(args)

    return run_command(PROG, command)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "status":
        # Asking a running worker needs no subscriber file and no secret.
        settings = load_settings(require_subscriber_file=False, require_secrets=False)
        document = fetch_status(args.url or status_url(settings))
        shown = json.dumps(document, indent=2) if args.output == "json" else render_status(document)
        PipeOutput().line(shown)
        return ExitCode.OK
    settings = load_settings()
    if args.command == "check-config":
        return check_config(settings)
    if args.command == "test-endpoint":
        configure_logging(settings.log_format, "warning", stream=sys.stderr)
        return asyncio.run(_test_endpoint(settings, args.subscriber, args.event))
    if args.command == "resume":
        return resume_subscriber(settings, args.subscriber)
    return run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
