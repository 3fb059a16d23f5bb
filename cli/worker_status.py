"""``webhook-worker status``: a running worker's ``/status``, as a table or as JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from cli.terminal import format_table
from config.settings import Settings


def status_url(settings: Settings) -> str:
    """Where this host's worker serves ``/status`` (a wildcard listen address is local)."""
    host = settings.metrics_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, not a bind
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.metrics_port}/status"


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The status document; OSError saying why when no worker answers there."""
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - checked
            document = json.loads(response.read())
    except urllib.error.URLError as exc:
        raise OSError(f"no worker answers at {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise OSError(f"no worker status at {url}: {exc}") from None
    if not isinstance(document, dict):
        raise OSError(f"no worker status at {url}: not a status document")
    return document


def render_status(document: dict[str, Any]) -> str:
    """The lanes as a table, then anything removed that still holds events."""
    rows = [("SUBSCRIBER", "CIRCUIT", "PAUSED", "CONSUMING", "PREFETCH", "FAILURES", "PROBE IN")]
    for lane in document.get("subscribers", []):
        probe = lane.get("probe_in_seconds")
        rows.append(
            (
                str(lane.get("id")),
                str(lane.get("circuit")),
                "yes" if lane.get("paused") else "no",
                "yes" if lane.get("consuming") else "no",
                str(lane.get("prefetch") if lane.get("prefetch") is not None else "-"),
                str(lane.get("consecutive_failures", 0)),
                "-" if probe is None else f"{probe:g}s",
            )
        )
    lines = [f"ready: {'yes' if document.get('ready') else 'no'}", format_table(rows)]
    for removed in document.get("removed_subscribers_with_queues", []):
        lines.append(
            f"removed, still queued: {removed.get('id')} "
            f"({removed.get('messages')} events in {removed.get('queue')})"
        )
    return "\n".join(lines)
