"""structlog set-up shared by every entry point: JSON in containers, console for people."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

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
) -> None:
    """Route structlog events to ``stream`` (stdout by default) as JSON or console lines."""
    renderer: structlog.typing.Processor
    if format == "json":
        renderer = structlog.processors.JSONRenderer()
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
        cache_logger_on_first_use=False,
    )
    # pika logs connection noise through stdlib logging; keep only its warnings.
    logging.basicConfig(level=logging.WARNING, stream=stream or sys.stdout)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
