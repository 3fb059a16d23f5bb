"""YAML mistakes on a secret's line: the error names file, line and column, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.worker import main as worker_cli
from config.errors import ConfigError
from config.settings import load_settings
from config.subscriber_file import parse_subscriber_file

SECRET = "s3cret-value"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "redteam" / "secret-in-yaml-error"
CASES = sorted(FIXTURES.glob("*.yaml"))


def test_the_fixtures_are_there() -> None:
    assert len(CASES) >= 15
    for path in CASES:
        assert SECRET in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_yaml_errors_never_show_the_secret(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"WEBHOOK_CONFIG": str(path)})
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML: line "), message
    assert SECRET not in message
    assert caught.value.__cause__ is None

    monkeypatch.setenv("WEBHOOK_CONFIG", str(path))
    assert worker_cli(["check-config"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"webhook-worker: error: {path}: not valid YAML: line ")
    assert SECRET not in err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("duplicate-secret-key", "line 5, column 5: duplicate key 'secret'"),
        ("tab-after-secret", "line 4, column 25: found character '\\t' that cannot start"),
        ("unclosed-flow-on-secret", "line 5, column 11: expected ',' or ']', but got ':'"),
        ("secret-read-as-alias", "line 4, column 13: found undefined alias '***'"),
        ("secret-read-as-tag", "line 4, column 13: could not determine a constructor for the tag"),
        ("secret-with-int-tag", "line 4, column 13: cannot read this value as the type it has"),
        ("control-character-in-secret", "line 4, column 25: character #x0001 is not allowed"),
    ],
)
def test_yaml_errors_still_say_where_and_what(name: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_settings({"WEBHOOK_CONFIG": str(FIXTURES / f"{name}.yaml")})
    assert expected in str(caught.value)


def test_a_duplicate_key_is_named_only_if_the_schema_knows_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_subscriber_file("retry: {}\nretry: {}\n", source="s.yaml", environ={})
    assert str(caught.value) == "s.yaml: not valid YAML: line 2, column 1: duplicate key 'retry'"
    with pytest.raises(ConfigError) as caught:
        parse_subscriber_file("x: {k9-hidden: 1, k9-hidden: 2}\n", source="s.yaml", environ={})
    assert str(caught.value) == "s.yaml: not valid YAML: line 1, column 19: duplicate key"
