"""Property-based checks of webhook-api against its own OpenAPI document (schemathesis).

The real server (SQLite, a fresh RabbitMQ vhost) is given inputs generated from
``/openapi.json``, valid and invalid, with the bearer token; no answer may be a
5xx, every answer must be documented (its status, content type, headers and
body schema), invalid input must be refused, and so must a missing token or an
unsupported method (with an exact ``Allow``).  Bounded: a few examples per operation, one worker, no
stateful chains (which would send test deliveries to generated URLs), and a
hard time limit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import schemathesis  # noqa: F401 - the test needs it installed (test extras), never skips

from control.store.key import SecretsKey
from tests.support.api import TOKEN
from tests.support.api_process import ApiProcess

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
)
MAX_EXAMPLES = 15
TIME_LIMIT_SECONDS = 240


def test_the_api_keeps_to_its_openapi_document(tmp_path: Path, vhost_url: str) -> None:
    server = ApiProcess(
        tmp_path / "api.log",
        WEBHOOK_DATA_DIR=str(tmp_path / "data"),
        SECRETS_KEY=SecretsKey.generate().as_text(),
        RABBITMQ_URL=vhost_url,
        LOG_LEVEL="warning",
    ).start()
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--seed",
                "20260131",
                "--generation-database",
                "none",
                "--no-color",
            ],
            cwd=tmp_path,  # reports and caches, if any, stay out of the repository
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_SECONDS,
        )
    finally:
        server.close()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "No issues found" in output or " passed" in output, output[-3000:]
    assert "Traceback" not in server.log()
