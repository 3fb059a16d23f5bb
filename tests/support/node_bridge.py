"""A long-lived ``node`` process answering JSON questions over a pipe.

Starting node costs ~40 ms; a round trip on an open pipe costs tens of
microseconds, which is what lets the property tests run hundreds of examples
against the real ``JSON.parse``/``JSON.stringify`` in a second or two.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("node_driver.js")


def find_node_or_skip() -> str:
    """Path of ``node``; without it, fail under CI (env ``CI`` set), else skip."""
    node = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
    if node is None:
        message = (
            "node is not installed: the wire-format tests compare our bytes with "
            "real JSON.stringify/JSON.parse and the product page's verifier"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is an error)", pytrace=False)
        pytest.skip(message)
    return node


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class NodeBridge:
    """One ``node tests/support/node_driver.js`` process; see that file for the ops."""

    def __init__(self, node: str) -> None:
        self._proc = subprocess.Popen(
            [node, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            self._proc.wait(timeout=5)
            stderr = self._proc.stderr.read() if self._proc.stderr else ""
            raise RuntimeError(f"node driver died (exit {self._proc.returncode}): {stderr}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def check(self, body: bytes, ref: str | None = None) -> dict[str, Any]:
        """``fixed``: stringify(parse(body)) == body; ``same``: == stringify(parse(ref))."""
        request: dict[str, Any] = {"op": "check", "body": _b64(body)}
        if ref is not None:
            request["ref"] = ref
        reply = self._ask(request)
        if "error" in reply:
            raise AssertionError(f"node rejected {body!r:.200}: {reply['error']}")
        for name in ("again", "expected"):
            if name in reply:
                reply[name] = base64.b64decode(reply[name])
        return reply

    def canon(self, body: bytes) -> bytes | str:
        """UTF-8 of ``JSON.stringify(JSON.parse(body))``, or node's error text (a str)."""
        reply = self._ask({"op": "canon", "body": _b64(body)})
        if "error" in reply:
            error: str = reply["error"]
            return error
        return base64.b64decode(reply["out"])

    def page_verify(self, body: bytes, header: str, secret: str) -> bool | str:
        """The page's ``verifyWebhookSignature(JSON.parse(body), header, secret)``.

        Returns its boolean, or the text of what it threw.
        """
        reply = self._ask({"op": "verify", "body": _b64(body), "header": header, "secret": secret})
        if "error" in reply:
            error: str = reply["error"]
            return error
        valid: bool = reply["valid"]
        return valid
