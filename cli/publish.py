"""``webhook-publish``: publish webhook events from a JSON file, stdin or the page's samples."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

from cli.arguments import OneLineParser, UsageError, positive_int
from cli.exit_codes import EXIT_CODES_HELP, ExitCode, run_command
from cli.terminal import LiveStderr
from config.errors import PayloadError
from config.logs import configure_logging
from config.settings import load_settings
from producer.publisher import Publisher
from wire.envelope import build_envelope
from wire.samples import SAMPLE_EVENTS, sample_data

PROG = "webhook-publish"

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
        "--data", metavar="FILE", help="JSON file with the event's data object ('-' for stdin)"
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
    return parser


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise PayloadError(f"{name} is not valid JSON")


def read_data(source: str) -> Any:
    """Parse the JSON document in file ``source`` (``-`` for stdin); PayloadError if bad."""
    label = "stdin" if source == "-" else source
    try:
        if source == "-":
            buffer = getattr(sys.stdin, "buffer", None)
            raw = buffer.read() if buffer is not None else sys.stdin.read().encode("utf-8")
        else:
            raw = Path(source).read_bytes()
    except FileNotFoundError:
        raise PayloadError(f"{label}: no such file") from None
    except OSError as exc:
        raise PayloadError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{label}: not UTF-8 (byte {exc.start})") from None
    try:
        # Python's json accepts NaN/Infinity and keeps the last duplicate key
        # silently; neither survives a JavaScript receiver, so refuse both here.
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"{label}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except PayloadError as exc:
        raise PayloadError(f"{label}: not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(f"{label}: JSON is nested too deeply") from None


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
    settings = load_settings(require_subscriber_file=False)
    configure_logging(
        settings.log_format,
        "info" if args.verbose else "error",
        stream=cast(TextIO, LiveStderr()),
    )
    next_data = _data_source(args)
    first = next_data()
    # Validate before connecting: bad input fails fast, without a broker round trip.
    build_envelope(args.event, first)
    with Publisher.from_settings(settings) as publisher:
        _publish_all(publisher, args, first, next_data)


def _data_source(args: argparse.Namespace) -> Callable[[], dict[str, Any]]:
    if args.sample:
        event: str = args.event
        return lambda: sample_data(event)
    data = read_data(args.data)
    if not isinstance(data, dict):
        raise PayloadError(f"{args.data}: the data must be a JSON object, got {_kind(data)}")
    # The same data for every event; the publisher never mutates it.
    return lambda: data


def _publish_all(
    publisher: Publisher,
    args: argparse.Namespace,
    first: dict[str, Any],
    next_data: Callable[[], dict[str, Any]],
) -> None:
    started = time.monotonic()
    if args.count > 1 and sys.stdout.isatty():
        _publish_with_progress(publisher, args, first, next_data)
    else:
        for index in range(args.count):
            data = first if index == 0 else next_data()
            event_id = publisher.publish(
                args.event, data, account=args.account, event_id=args.event_id
            )
            print(event_id, flush=True)
        return
    elapsed = time.monotonic() - started
    rate = args.count / elapsed if elapsed > 0 else float("inf")
    print(f"published {args.count} {args.event} events in {elapsed:.2f} s ({rate:.0f}/s)")


def _publish_with_progress(
    publisher: Publisher,
    args: argparse.Namespace,
    first: dict[str, Any],
    next_data: Callable[[], dict[str, Any]],
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task(f"publishing {args.event}", total=args.count)
        for index in range(args.count):
            publisher.publish(
                args.event, first if index == 0 else next_data(), account=args.account
            )
            progress.advance(task)


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


if __name__ == "__main__":
    raise SystemExit(main())
