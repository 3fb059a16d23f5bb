"""structlog set-up shared by every entry point: JSON in containers, console for people."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, Literal, TextIO

import orjson


@contextlib.contextmanager
def _rich_hidden() -> Iterator[None]:
    """Make ``import rich`` fail inside the block, unless rich is imported already."""
    if "rich" in sys.modules:
        yield
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # None: "not importable"
    try:
        yield
    finally:
        del sys.modules["rich"]


# structlog imports rich (and Pygments) whenever it is installed, for its console
# renderer's tracebacks.  Ours never draws them (format_exc_info turns exceptions
# into text first, for JSON and console alike), and rich would stay in every
# long-running process: ~2 MB of a worker's memory (docs/scaling.md).  The
# tools that draw tables import rich themselves when they do (cli.terminal).
with _rich_hidden():
    import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    format: Literal["json", "console"] = "json",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    cache_loggers: bool = False,
) -> None:
    """Route structlog events to ``stream`` (stdout by default) as JSON or console lines.

    ``cache_loggers`` makes each logger keep this configuration for good (cheaper
    per call); for long-running daemons only, since it defeats later
    reconfiguration such as ``structlog.testing.capture_logs``.
    """
    renderer: structlog.typing.Processor
    if format == "json":
        # orjson renders a log line in a third of the time json.dumps takes; the
        # worker writes one per delivery.
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=cache_loggers,
    )
    # pika logs connection noise through stdlib logging; keep only its warnings.
    logging.basicConfig(level=logging.WARNING, stream=stream or sys.stdout)
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def _orjson_text(value: Any, **kwargs: Any) -> str:
    return orjson.dumps(value, **kwargs).decode("utf-8")
