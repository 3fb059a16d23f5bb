"""Where the run's endpoints point: an HTTP server in the benchmark's own process.

It answers every POST with 200 and remembers when each path was first hit
(``time.monotonic()``, the clock the change measurement uses too).  Signatures
are not checked here: every store endpoint has its own secret, and what is
measured is only *when* a delivery reaches an endpoint's URL
(``python -m bench`` is the benchmark that verifies signatures).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint
    server: RecordingServer

    def do_POST(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.record(self.path, arrived)
        body = b'{"received":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log."""


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._first: dict[str, float] = {}
        self.deliveries = 0

    def record(self, path: str, arrived: float) -> None:
        with self._lock:
            self.deliveries += 1
            self._first.setdefault(path, arrived)

    def first_hit(self, path: str) -> float | None:
        with self._lock:
            return self._first.get(path)


class Receiver:
    """The recording server on a free loopback port, served by a background thread."""

    def __init__(self) -> None:
        self._server = RecordingServer()
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def first_hit(self, path: str) -> float | None:
        """When ``path`` was first delivered to (monotonic seconds), if it was."""
        return self._server.first_hit(path)

    @property
    def deliveries(self) -> int:
        return self._server.deliveries

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
