"""Settings, the subscriber file and broker URLs: readable errors, no leaked secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from broker.url import DEFAULT_URL, BrokerUrl, redact_url
from config.errors import ConfigError
from config.settings import load_settings
from config.subscriber_file import parse_subscriber_file

SECRET = "whsec-very-secret-value-42"
PASSWORD = "rabbit-pw-Zq9x"

GOOD = """\
subscribers:
  - id: my-shop
    url: https://shop.example/webhook
    secret: ${MY_SHOP_SECRET}
    account: acme
    events: ["order.*"]
    timeout_seconds: 10
    max_in_flight: 16
  - id: crm
    url: http://crm.internal:8080/hooks/chatsvia?token=abc
    secret: literal-secret
    account: acme
    events: ["order.created", "message.#"]
retry:
  delays_seconds: [1, 2.5]
security:
  allow_private_networks: true
"""


def write(tmp_path: Path, text: str, name: str = "subscribers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def settings_env(path: Path, **extra: str) -> dict[str, str]:
    return {"WEBHOOK_CONFIG": str(path), "MY_SHOP_SECRET": SECRET, **extra}


# --- a good file --------------------------------------------------------------


def test_good_file_loads_with_env_expansion(tmp_path: Path) -> None:
    settings = load_settings(settings_env(write(tmp_path, GOOD)))
    shop = settings.subscriber("my-shop")
    assert shop is not None
    assert shop.secret.get_secret_value() == SECRET
    assert shop.events == ("order.*",)
    assert shop.host == "shop.example"
    crm = settings.subscriber("crm")
    assert crm is not None
    assert crm.secret.get_secret_value() == "literal-secret"
    assert crm.timeout_seconds == 10.0
    assert crm.max_in_flight == 16
    assert settings.retry.delays_seconds == (1.0, 2.5)
    assert settings.retry.max_attempts == 3
    assert settings.security.allow_private_networks is True
    assert settings.subscriber("nobody") is None


def test_env_expansion_inside_a_longer_string(tmp_path: Path) -> None:
    text = GOOD.replace("secret: ${MY_SHOP_SECRET}", "secret: prefix-${MY_SHOP_SECRET}-${SUFFIX}")
    settings = load_settings(settings_env(write(tmp_path, text), SUFFIX="end"))
    shop = settings.subscriber("my-shop")
    assert shop is not None
    assert shop.secret.get_secret_value() == f"prefix-{SECRET}-end"


def test_environment_defaults(tmp_path: Path) -> None:
    settings = load_settings(
        {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml")}, require_subscriber_file=False
    )
    assert settings.broker.redacted == redact_url(DEFAULT_URL)
    assert settings.metrics_port == 9100
    assert settings.log_format == "json"
    assert settings.subscribers == ()
    assert settings.retry.delays_seconds == (30.0, 300.0)
    assert settings.security.allow_private_networks is False


def test_environment_names_are_case_insensitive(tmp_path: Path) -> None:
    settings = load_settings(
        {"webhook_config": str(tmp_path / "absent.yaml"), "Metrics_Port": "9200"},
        require_subscriber_file=False,
    )
    assert settings.metrics_port == 9200


def test_missing_file_is_an_error_when_required(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: subscriber file not found"):
        load_settings({"WEBHOOK_CONFIG": str(missing)})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"METRICS_PORT": "abc"}, "METRICS_PORT"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"SHUTDOWN_GRACE_SECONDS": "-1"}, "SHUTDOWN_GRACE_SECONDS"),
        ({"RABBITMQ_URL": "http://guest:guest@localhost/"}, "scheme must be amqp or amqps"),
        ({"RABBITMQ_URL": "amqp:///vhost"}, "no host"),
        ({"RABBITMQ_URL": " , "}, "RABBITMQ_URL is empty"),
    ],
)
def test_bad_environment(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    environ = {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"), **env}
    with pytest.raises(ConfigError, match=expected):
        load_settings(environ, require_subscriber_file=False)


# --- every kind of mistake: one ConfigError naming file, subscriber and field ----


def _shop(**override: str) -> str:
    """A file whose second subscriber ("my-shop") has ``override`` applied."""
    fields = {
        "id": "my-shop",
        "account": "acme",
        "url": "https://shop.example/webhook",
        "secret": "${MY_SHOP_SECRET}",
        "events": '["order.*"]',
    }
    fields.update(override)
    lines = [
        "subscribers:",
        "  - id: first",
        "    url: https://a.example/",
        "    secret: s",
        "    account: acme",
        "    events: [x.y]",
    ]
    present = [(key, value) for key, value in fields.items() if value != "<absent>"]
    for index, (key, value) in enumerate(present):
        lines.append(f"  {'- ' if index == 0 else '  '}{key}: {value}")
    return "\n".join(lines) + "\n"


MISTAKES = [
    # (file text, substrings the message must contain)
    (_shop(colour="blue"), ["subscribers[1] (id 'my-shop').colour", "unknown key"]),
    (_shop(id="first"), ["subscribers[1] (id 'first').id", "duplicate id 'first'"]),
    (_shop(id="My_Shop"), ["(id 'My_Shop').id", "a-z, 0-9"]),
    (_shop(id="-shop"), ["(id '-shop').id"]),
    (_shop(id="<absent>"), ["subscribers[1].id", "is required"]),
    (_shop(url="ftp://shop.example/"), ["(id 'my-shop').url", "http:// or https://"]),
    (_shop(url="https:///path"), ["(id 'my-shop').url", "no host"]),
    (_shop(url="https://u:p@shop.example/"), ["(id 'my-shop').url", "credentials"]),
    (_shop(url="https://shop.example/#frag"), ["(id 'my-shop').url", "fragment"]),
    (_shop(url="https://shop.example:99999/"), ["(id 'my-shop').url", "not a valid URL"]),
    (_shop(secret='""'), ["(id 'my-shop').secret", "must not be empty"]),
    (_shop(secret='"   "'), ["(id 'my-shop').secret", "must not be empty"]),
    (_shop(secret="${NOT_SET_ANYWHERE}"), ["(id 'my-shop').secret", "NOT_SET_ANYWHERE"]),
    (_shop(events="[]"), ["(id 'my-shop').events"]),
    (_shop(events='["order.**"]'), ["(id 'my-shop').events", "'order.**' is not a topic pattern"]),
    (_shop(events='["order..x"]'), ["(id 'my-shop').events", "not a topic pattern"]),
    (_shop(events='["order created"]'), ["(id 'my-shop').events", "not a topic pattern"]),
    (_shop(events='["a.b", "a.b"]'), ["(id 'my-shop').events", "twice"]),
    (_shop(timeout_seconds="0"), ["(id 'my-shop').timeout_seconds"]),
    (_shop(timeout_seconds="soon"), ["(id 'my-shop').timeout_seconds"]),
    (_shop(max_in_flight="0"), ["(id 'my-shop').max_in_flight"]),
    (
        "subscribers: []\nretry:\n  delays_seconds: [1, 2, 3]\n",
        ["retry.delays_seconds", "at most 2"],
    ),
    ("subscribers: []\nretry:\n  delays_seconds: [-1]\n", ["retry.delays_seconds", "out of range"]),
    ("subscribers: []\nretry:\n  attempts: 3\n", ["retry.attempts", "unknown key"]),
    ("subscribers: []\nsecurity:\n  allow_private_networks: maybe\n", ["allow_private_networks"]),
    ("subscriber: []\n", ["subscriber", "unknown key"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    ("subscribers: [\n", ["not valid YAML"]),
    ("subscribers: []\nsubscribers: []\n", ["duplicate key 'subscribers'"]),
    ("subscribers: {id: x}\n", ["subscribers"]),
]


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_mistakes_give_one_readable_error(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_env(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, message
    assert "Traceback" not in message
    assert caught.value.__cause__ is None  # raised "from None": no pydantic dump attached
    assert SECRET not in message


def test_empty_file_has_no_subscribers(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=rf"^{path}: no subscribers: the file is empty"):
        load_settings(settings_env(path))


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_bytes(b"subscribers: [\xff]\n")
    with pytest.raises(ConfigError, match="cannot read subscriber file"):
        load_settings(settings_env(path))


def test_parse_names_the_given_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline\.yaml: subscribers\[0\] \(id 'a'\)\.url"):
        parse_subscriber_file(
            "subscribers:\n  - {id: a, url: nope, secret: s, events: [a.b]}\n",
            source="inline.yaml",
            environ={},
        )


def test_error_for_one_subscriber_does_not_show_another_secret(tmp_path: Path) -> None:
    text = GOOD.replace("url: http://crm.internal", "url: gopher://crm.internal")
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_env(write(tmp_path, text)))
    message = str(caught.value)
    assert "(id 'crm').url" in message
    assert SECRET not in message
    assert "literal-secret" not in message


def test_wrongly_typed_secret_is_not_echoed(tmp_path: Path) -> None:
    text = _shop(secret="[whsec-in-a-list-123]")
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_env(write(tmp_path, text)))
    assert "(id 'my-shop').secret" in str(caught.value)
    assert "whsec-in-a-list-123" not in str(caught.value)


# --- secrets stay out of reprs ------------------------------------------------


def test_settings_repr_and_str_hide_secrets(tmp_path: Path) -> None:
    environ = settings_env(
        write(tmp_path, GOOD), RABBITMQ_URL=f"amqp://app:{PASSWORD}@rabbit.example:5672/%2F"
    )
    settings = load_settings(environ)
    for text in (repr(settings), str(settings), repr(settings.subscribers), str(settings.broker)):
        assert PASSWORD not in text
        assert SECRET not in text
        assert "literal-secret" not in text
    assert "app:***@rabbit.example:5672" in repr(settings)
    assert PASSWORD not in repr(settings.model_dump())
    assert PASSWORD not in settings.model_dump_json()


def test_broker_url_repr_str_and_redacted() -> None:
    broker = BrokerUrl.parse(f"amqp://app:{PASSWORD}@rabbit.example:5672/prod")
    assert str(broker) == "amqp://app:***@rabbit.example:5672/prod"
    assert repr(broker) == "BrokerUrl('amqp://app:***@rabbit.example:5672/prod')"
    assert broker.redacted == str(broker)
    assert PASSWORD not in f"{broker} {broker!r} {broker!s} {[broker]}"


def test_broker_error_messages_hide_password() -> None:
    for raw in (f"http://app:{PASSWORD}@host/", f"amqp://app:{PASSWORD}@/vhost"):
        with pytest.raises(ConfigError) as caught:
            BrokerUrl.parse(raw)
        assert PASSWORD not in str(caught.value)
        assert "***" in str(caught.value)


def test_url_without_password_is_unchanged_by_redaction() -> None:
    assert redact_url("amqp://rabbit.example/%2F") == "amqp://rabbit.example/%2F"


# --- credentials and TLS ------------------------------------------------------


def test_credentials_from_environment_override_the_url(tmp_path: Path) -> None:
    password = "p@ss:w/rd%20 ok"
    settings = load_settings(
        {
            "WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"),
            "RABBITMQ_URL": "amqp://guest:guest@rabbit.example:5672/%2F",
            "RABBITMQ_USERNAME": "publisher",
            "RABBITMQ_PASSWORD": password,
        },
        require_subscriber_file=False,
    )
    (params,) = settings.broker.parameters()
    assert params.credentials.username == "publisher"
    assert params.credentials.password == password
    assert params.host == "rabbit.example"
    assert params.port == 5672
    assert params.virtual_host == "/"
    assert password not in repr(settings)
    assert "publisher:***@rabbit.example" in settings.broker.redacted


def test_password_only_override_keeps_url_user() -> None:
    broker = BrokerUrl.parse("amqp://app:old@rabbit.example/%2F", password="new-secret")
    (params,) = broker.parameters()
    assert (params.credentials.username, params.credentials.password) == ("app", "new-secret")


def test_several_urls_are_tried_in_order() -> None:
    broker = BrokerUrl.parse("amqp://a:pw1x@one.example, amqp://a:pw2x@two.example:5673/v")
    hosts = [(p.host, p.port, p.virtual_host) for p in broker.parameters()]
    assert hosts == [("one.example", 5672, "/"), ("two.example", 5673, "v")]
    assert broker.redacted == "amqp://a:***@one.example,amqp://a:***@two.example:5673/v"


def test_amqps_parameters_get_server_hostname() -> None:
    broker = BrokerUrl.parse("amqps://app:pw@rabbit.example:5671/%2F")
    (params,) = broker.parameters(heartbeat=15, connection_name="test-conn")
    assert params.ssl_options is not None
    assert params.ssl_options.server_hostname == "rabbit.example"
    assert params.ssl_options.context.check_hostname is True
    assert params.port == 5671
    assert params.heartbeat == 15
    assert params.client_properties == {"connection_name": "test-conn"}


def test_plain_amqp_has_no_tls() -> None:
    (params,) = BrokerUrl.parse("amqp://rabbit.example").parameters()
    assert params.ssl_options is None


# --- with the endpoint store (DATABASE_URL) ------------------------------------


def test_with_the_store_the_file_is_not_read_and_file_wide_settings_come_from_env(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "WEBHOOK_CONFIG": str(write(tmp_path, GOOD)),  # there, and ignored
            "WEBHOOK_RETRY_DELAYS": " 1, 2.5 ",
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "RECONCILE_SECONDS": "5",
        }
    )
    assert settings.uses_store and settings.subscribers == ()
    assert settings.retry.delays_seconds == (1.0, 2.5)
    assert settings.security.allow_private_networks is True
    assert settings.reconcile_seconds == 5


def test_store_defaults_match_the_file_defaults() -> None:
    settings = load_settings({"DATABASE_URL": "sqlite:///store.db"})
    assert settings.retry.delays_seconds == (30.0, 300.0)
    assert settings.security.allow_private_networks is False
    assert settings.reconcile_seconds == 30


def test_a_blank_database_url_means_the_file(tmp_path: Path) -> None:
    settings = load_settings(settings_env(write(tmp_path, GOOD), DATABASE_URL=" "))
    assert not settings.uses_store and len(settings.subscribers) == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WEBHOOK_RETRY_DELAYS": "30,soon"}, "WEBHOOK_RETRY_DELAYS: comma-separated seconds"),
        ({"WEBHOOK_RETRY_DELAYS": "1,2,3"}, "WEBHOOK_RETRY_DELAYS: at most 2 delays"),
        ({"WEBHOOK_RETRY_DELAYS": "0"}, "WEBHOOK_RETRY_DELAYS: 0.0 is out of range"),
        ({"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "maybe"}, "WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
        ({"RECONCILE_SECONDS": "0"}, "RECONCILE_SECONDS"),
    ],
)
def test_bad_store_settings(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings({"DATABASE_URL": "sqlite:///store.db", **env})


def test_enabled_false_in_the_file(tmp_path: Path) -> None:
    text = GOOD.replace("    max_in_flight: 16\n", "    max_in_flight: 16\n    enabled: false\n")
    settings = load_settings(settings_env(write(tmp_path, text)))
    shop, crm = settings.subscribers
    assert (shop.enabled, crm.enabled) == (False, True)
