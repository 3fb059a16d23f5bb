"""The README's commands are real: tool lines parse, and the curl quick start runs.

The quick start's ``api`` calls run, in order, against the API app (SQLite
store, broker and delivery faked); every tool line in a shell block parses
with that tool's own argument parser.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from cli import admin, dlq, log, publish, worker
from tests.support.api import AUTH, open_store, running_api

README = Path(__file__).resolve().parents[2] / "README.md"

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "webhook-publish": publish.build_parser,
    "webhook-worker": worker.build_parser,
    "webhook-dlq": dlq.build_parser,
    "webhook-admin": admin.build_parser,
    "webhook-log": log.build_parser,
}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    return text[start : text.index("\n##", start + 1)]


def _tool_lines() -> list[str]:
    lines = []
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.split(" ", 1)[0] in PARSERS:
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _tool_lines())
def test_tool_lines_parse(line: str) -> None:
    words = shlex.split(line, comments=True)
    PARSERS[words[0]]().parse_args(words[1:])


def test_publishing_examples_name_the_account() -> None:
    calls = [c for block in _blocks("python") for c in re.findall(r"\.publish\(.*\)", block)]
    assert calls and all("account=" in call for call in calls)
    publishes = [line for line in _tool_lines() if line.startswith("webhook-publish")]
    assert publishes and all("--account" in line for line in publishes)


def _quick_start_calls() -> list[tuple[str, str, str | None]]:
    """(method, path, body) of each `api` call of the quick start, in order."""
    [block] = re.findall(r"```sh\n(.*?)```", _section("Quick start with curl"), re.S)
    calls = []
    for line in block.replace("\\\n", " ").splitlines():
        found = re.search(r"(?:^|\$\()api (.*)$", line)
        if found is None:
            continue
        words = shlex.split(found.group(1).rstrip().removesuffix(")"), comments=True)
        method, body = "GET", None
        if "-X" in words:
            method = words[words.index("-X") + 1]
        if "-d" in words:
            body = words[words.index("-d") + 1]
        [url] = [w for w in words if w.startswith("$WEBHOOK_API_URL")]
        calls.append((method, url.removeprefix("$WEBHOOK_API_URL"), body))
    return calls


def test_the_curl_quick_start_runs_against_the_api(tmp_path: Path) -> None:
    calls = _quick_start_calls()
    assert [(method, path.rsplit("/", 1)[-1]) for method, path, _ in calls] == [
        ("POST", "endpoints"),
        ("GET", "endpoints"),
        ("POST", "test"),
        ("POST", "pause"),
        ("POST", "resume"),
        ("POST", "rotate"),
        ("DELETE", "$EP"),
    ]
    store = open_store(tmp_path)
    try:
        with running_api(store) as api:
            endpoint_id = ""
            for method, path, body in calls:
                response = api.client.request(
                    method,
                    path.replace("$EP", endpoint_id),
                    content=body,
                    headers={**AUTH, "Content-Type": "application/json"},
                )
                assert response.status_code in (200, 201, 204), (path, response.text)
                if method == "POST" and path.endswith("/endpoints"):
                    endpoint_id = response.json()["id"]
                    assert response.json()["secret"].startswith("whsec_")
            assert api.pauses.calls == [("mark", endpoint_id), ("clear", endpoint_id)]
            assert store.list_endpoints("acme") == ()
    finally:
        store.close()
    # The create body is the API's own input model.
    assert json.loads(calls[0][2] or "{}")["events"] == ["order.*"]
