"""``webhook-publish``: publish webhook events from a JSON file, stdin or the page's samples."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO, cast

from cli.arguments import OneLineParser, UsageError, positive_int
from cli.event_input import read_events
from cli.exit_codes import EXIT_CODES_HELP, ExitCode, run_command
from cli.terminal import LiveStderr, PipeOutput, add_version
from config.logs import configure_logging
from config.settings import load_settings
from producer.publisher import Publisher
from wire.envelope import build_envelope
from wire.samples import SAMPLE_EVENTS, sample_data

PROG = "webhook-publish"
# Events per publish_many call: one confirm round trip each, ids printed as they come.
_CHUNK = 500

EPILOG = f"""\
{EXIT_CODES_HELP}
Environment: RABBITMQ_URL, RABBITMQ_USERNAME, RABBITMQ_PASSWORD, WEBHOOK_CONFIG
(if that file exists, the topology is declared before publishing).
Samples: {", ".join(SAMPLE_EVENTS)}."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = OneLineParser(
        prog=PROG,
        description="Publish webhook events to RabbitMQ; prints one event id per line.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("event", metavar="EVENT", help="event type, e.g. order.created")
    parser.add_argument(
        "--account",
        required=True,
        metavar="ACCOUNT",
        help="the merchant's account id; only that account's endpoints receive the event",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        metavar="FILE",
        help="JSON file with the event's data object ('-' for stdin); "
        "JSON lines (one object per line) publish one event per line",
    )
    source.add_argument(
        "--sample",
        action="store_true",
        help="use the product page's example data, with a fresh order id each time",
    )
    parser.add_argument(
        "--count", type=positive_int, default=1, metavar="N", help="publish N events (default 1)"
    )
    parser.add_argument(
        "--event-id", metavar="ID", help="use this event id instead of a fresh one (count 1 only)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log connection and publish details to stderr"
    )
    add_version(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-publish``; returns the exit code."""

    def command() -> int:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        _publish(args)
        return ExitCode.OK

    return run_command(PROG, command)


def _publish(args: argparse.Namespace) -> None:
    if args.event_id is not None and args.count != 1:
        raise UsageError("--event-id needs --count 1: every event has its own id")
    settings = load_settings(require_subscriber_file=False, require_secrets=False)
    configure_logging(
        settings.log_format,
        "info" if args.verbose else "error",
        stream=cast(TextIO, LiveStderr()),
    )
    total, events = _events(args)
    first = next(events)
    # Validate before connecting: bad input fails fast, without a broker round trip.
    build_envelope(args.event, first)
    with Publisher.from_settings(settings) as publisher:
        if args.event_id is not None:
            event_id = publisher.publish(
                args.event, first, account=args.account, event_id=args.event_id
            )
            PipeOutput().line(event_id)
            return
        _publish_all(publisher, args, total, itertools.chain([first], events))


def _events(args: argparse.Namespace) -> tuple[int, Iterator[dict[str, Any]]]:
    """How many events, and their data (a fresh sample each, or what was given)."""
    if args.sample:
        event: str = args.event
        return args.count, (sample_data(event) for _ in range(args.count))
    documents = read_events(args.data)
    if len(documents) > 1:
        if args.count != 1:
            raise UsageError(f"{args.data} holds {len(documents)} events: leave out --count")
        return len(documents), iter(documents)
    # The same data for every event; the publisher never mutates it.
    return args.count, itertools.repeat(documents[0], args.count)


def _publish_all(
    publisher: Publisher, args: argparse.Namespace, total: int, events: Iterator[dict[str, Any]]
) -> None:
    """Publish in pipelined chunks (``publish_many``): one confirm round trip per chunk,
    not per event; each chunk's ids are printed once the broker has confirmed them."""
    started = time.monotonic()
    output = PipeOutput()
    with _progress(total, f"publishing {args.event}") as advance:
        while chunk := list(itertools.islice(events, _CHUNK)):
            ids = publisher.publish_many([(args.account, args.event, data) for data in chunk])
            advance(len(ids))
            if not output.is_terminal:
                for event_id in ids:
                    output.line(event_id)
    if output.is_terminal:
        elapsed = time.monotonic() - started
        rate = total / elapsed if elapsed > 0 else float("inf")
        output.line(f"published {total} {args.event} events in {elapsed:.2f} s ({rate:.0f}/s)")


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal for more than one event; a no-op otherwise."""
    if total < 2 or not sys.stdout.isatty():
        yield lambda _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


if __name__ == "__main__":
    raise SystemExit(main())
