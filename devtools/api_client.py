"""A minimal webhook-api client for developer tools (standard library only).

Just what ``run-local`` needs: wait for ``/healthz``, and create an endpoint the
way any caller of the API would, with a bearer token.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


class ApiError(RuntimeError):
    """webhook-api answered with an error, or never answered."""


class ApiClient:
    """Calls to one webhook-api at ``base_url`` (``http://127.0.0.1:8080``)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r})"

    def wait_healthy(
        self, timeout: float, *, still_starting: Callable[[], bool] | None = None
    ) -> None:
        """Return once ``/healthz`` answers 200; ``still_starting()`` False gives up early."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if still_starting is not None and not still_starting():
                raise ApiError("webhook-api exited while starting (its output is above)")
            time.sleep(0.1)
        raise ApiError(f"webhook-api at {self.base_url} not healthy after {timeout:.0f} s")

    def create_endpoint(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST the endpoint; the answer holds its id and (only this once) its secret."""
        return self._call("POST", f"/v1/accounts/{account}/endpoints", body)

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode("utf-8"),
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:500]
            raise ApiError(f"{method} {path}: HTTP {error.code}: {detail}") from None
        except OSError as error:
            raise ApiError(f"{method} {path}: {error}") from None
        if not isinstance(answer, dict):
            raise ApiError(f"{method} {path}: the answer is not a JSON object")
        return answer
