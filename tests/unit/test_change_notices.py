"""Reading the control plane's change notices: only the version matters, junk is refused."""

from __future__ import annotations

import pytest

from worker.change_notices import ChangeNotice, parse_notice


def test_a_notice_as_the_api_publishes_it() -> None:
    body = b'{"version": 42, "account": "acme", "endpoint_id": "ep-1", "change": "rotated"}'
    assert parse_notice(body) == ChangeNotice(42, "acme", "ep-1", "rotated")


def test_only_the_version_is_needed_and_unknown_keys_are_ignored() -> None:
    assert parse_notice(b'{"version": 0, "later": "field"}') == ChangeNotice(0)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b"{}", "version"),
        (b'{"version": "42"}', "version"),
        (b'{"version": true}', "version"),
        (b'{"version": -1}', "version"),
        (b'{"version": 1.5}', "version"),
        (b'{"version": 1, "account": 7}', "account must be a string"),
    ],
)
def test_junk_is_refused_with_a_reason(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_notice(body)
