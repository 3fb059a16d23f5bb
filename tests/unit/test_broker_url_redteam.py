"""Broker URLs an operator can get wrong: one ConfigError, and never a piece of the password."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from broker.url import BrokerUrl, redact_url
from cli.worker import main as worker_cli
from config.errors import ConfigError
from config.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pa/ss#w?rd"  # the report's example
UNENCODED = f"amqp://user:{PASSWORD}@host:5672/%2F"

# (URL, its password as the operator meant it)
MALFORMED = [
    (UNENCODED, PASSWORD),
    ("amqp://user:Pa55/W0rd#Xq9?Zr7@host:5672/%2F", "Pa55/W0rd#Xq9?Zr7"),
    ("amqp://user:Pw/Only@rabbit.example/%2F", "Pw/Only"),
    ("amqp://user:Pw?Only@rabbit.example/%2F", "Pw?Only"),
    ("amqp://user:Pw#Only@rabbit.example/%2F", "Pw#Only"),
    ("amqps://user:Pw#Only:99@rabbit.example:5671/%2F", "Pw#Only:99"),
    ("amqp://user:x9/y8@z7@rabbit.example/%2F", "x9/y8@z7"),
    ("amqp://us/er:Secret77@rabbit.example/%2F", "Secret77"),
    ("amqp:user:Secret77@rabbit.example/%2F", "Secret77"),
    ("amqp://user:Secret77", "Secret77"),  # the '@host' forgotten
    ("amqp://user:Pw/Only", "Pw/Only"),
    ("amqp://user:Secret77@[::1", "Secret77"),
]


def _pieces(password: str) -> set[str]:
    """What of the password a broken parse could print: its runs between special
    characters (host, port, path, query) and any four characters in a row."""
    runs = {p for p in re.split(r"[/?#@:]", password) if len(p) >= 3}
    return runs | {password[i : i + 4] for i in range(len(password) - 3)}


def _assert_hidden(text: str, password: str) -> None:
    assert password not in text
    for piece in _pieces(password):
        assert piece not in text, (piece, text)


@pytest.mark.parametrize(("url", "password"), MALFORMED)
def test_redaction_never_shows_a_piece_of_the_password(url: str, password: str) -> None:
    _assert_hidden(redact_url(url), password)


@pytest.mark.parametrize(("url", "password"), MALFORMED)
def test_malformed_urls_are_one_config_error_without_the_password(url: str, password: str) -> None:
    # Also second in a list (without '://' it would not start a new URL).
    for raw in (url, f"amqp://ok:pw@one.example, {url}") if "://" in url else (url,):
        with pytest.raises(ConfigError) as caught:
            BrokerUrl.parse(raw)
        message = str(caught.value)
        assert message.startswith("RABBITMQ_URL: ")
        assert "\n" not in message
        _assert_hidden(message, password)


def test_an_unencoded_password_says_what_to_do() -> None:
    with pytest.raises(ConfigError) as caught:
        BrokerUrl.parse(UNENCODED, password="good-one")
    assert str(caught.value) == (
        "RABBITMQ_URL: cannot parse 'amqp://user:***@host:5672/%2F': a '/', '?' or '#' in the "
        "user name or password ends the host part early; percent-encode special characters "
        "in the password (e.g. '/' as %2F), or set the password in RABBITMQ_PASSWORD instead"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://u:p@host:abc/", "cannot parse 'amqp://u:***@host:abc/': the port must be"),
        ("amqp://u:p@host:99999/", "the port must be a number from 0 to 65535"),
        ("amqp://u:p@[::1/", "cannot parse 'amqp://u:***@[::1/': Invalid IPv6 URL"),
        ("amqp://u:p@host/%2F?heartbeat=soon", "cannot use 'amqp://u:***@host/%2F?heartbeat"),
        ("amqp://u:p@host/%2F?no_such_option=1", "Unknown URL parameter: 'no_such_option'"),
        ("amqp://user@host/%2F", "'amqp://user@host/%2F' has a user name but no password"),
    ],
)
def test_other_unusable_urls_are_refused_at_start_up(url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        BrokerUrl.parse(url)


def test_percent_encoded_and_overridden_passwords_still_work() -> None:
    encoded = BrokerUrl.parse("amqp://user:pa%2Fss%23w%3Frd@host:5672/%2F")
    assert [p.credentials.password for p in encoded.parameters()] == [PASSWORD]
    assert encoded.redacted == "amqp://user:***@host:5672/%2F"
    # A comma in a password is not a URL separator; an '@' in one is not the host's.
    odd = BrokerUrl.parse("amqp://user:a,b@c@one.example, amqp://two.example:5673/v")
    assert [(p.host, p.credentials.password) for p in odd.parameters()] == [
        ("one.example", "a,b@c"),
        ("two.example", "guest"),
    ]
    assert odd.redacted == "amqp://user:***@one.example,amqp://two.example:5673/v"
    # Overriding the password keeps an IPv6 host's brackets.
    ipv6 = BrokerUrl.parse("amqp://user:old@[::1]:5672/%2F", password=PASSWORD)
    [params] = ipv6.parameters()
    assert (params.host, params.port, params.credentials.password) == ("::1", 5672, PASSWORD)


def test_check_config_refuses_the_url_without_printing_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RABBITMQ_URL", UNENCODED)
    monkeypatch.setenv("WEBHOOK_CONFIG", str(ROOT / "no-such-subscribers.yaml"))
    assert worker_cli(["check-config"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("webhook-worker: error: RABBITMQ_URL: cannot parse ")
    _assert_hidden(out + err, PASSWORD)


def test_settings_refuse_a_non_numeric_port(tmp_path: Path) -> None:
    environ = {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"), "RABBITMQ_URL": "amqp://u:p@h:x/"}
    with pytest.raises(ConfigError, match="the port must be a number"):
        load_settings(environ, require_subscriber_file=False)


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("worker", ["check-config"]),
        ("worker", ["run"]),
        ("cli.publish", ["order.created", "--sample", "--account", "acme"]),
        ("cli.dlq", ["list", "--queue", "webhooks.shop.dlq"]),
    ],
)
@pytest.mark.parametrize("url", [UNENCODED, "amqp://u:Secret77@host:abc/"])
def test_every_tool_exits_3_without_the_password(
    module: str, args: list[str], url: str, tmp_path: Path
) -> None:
    config = tmp_path / "subscribers.yaml"
    # A valid file: the URL is the only mistake, so `run` would get as far as
    # logging worker_started and connecting if the URL were let through.
    config.write_text(
        "subscribers:\n  - id: shop\n    url: https://shop.example/hook\n"
        "    secret: file-secret-1\n    account: acme\n    events: [order.created]\n",
        encoding="utf-8",
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RABBITMQ_URL": url,
        "WEBHOOK_CONFIG": str(config),
        "METRICS_PORT": "0",
        "LOG_FORMAT": "console",
    }
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.splitlines()
    assert ": error: RABBITMQ_URL: cannot parse " in line
    password = PASSWORD if url == UNENCODED else "Secret77"
    _assert_hidden(done.stdout + done.stderr, password)
