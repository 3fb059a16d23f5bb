"""One exit-code policy for every tool: the same error ends each tool with the same code."""

from __future__ import annotations

import pytest

from cli import admin, dlq, publish, recorder, worker
from cli.arguments import UsageError
from cli.exit_codes import ExitCode, exit_code_for, run_command
from config.errors import (
    BrokerUnavailableError,
    ConfigError,
    InvalidInputError,
    NackedError,
    NotFoundError,
    PayloadError,
    SignatureError,
    StoreUnavailableError,
    TopologyError,
    UnroutableError,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (PayloadError("x"), ExitCode.USAGE),
        (ConfigError("x"), ExitCode.CONFIG),
        (BrokerUnavailableError("x"), ExitCode.UNAVAILABLE),
        (TopologyError("x"), ExitCode.UNAVAILABLE),
        (StoreUnavailableError("x"), ExitCode.UNAVAILABLE),
        (InvalidInputError("x"), ExitCode.USAGE),
        (NotFoundError("x"), ExitCode.FAILED),
        (UnroutableError("x"), ExitCode.REFUSED),
        (NackedError("x"), ExitCode.REFUSED),
        (SignatureError("x"), ExitCode.FAILED),
        (OSError("x"), ExitCode.FAILED),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
    ],
)
def test_each_error_has_one_exit_code(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def test_run_command_reports_one_line_per_problem_and_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken() -> int:
        raise ConfigError(
            "file.yaml: subscribers[0].url: must  start with http://\n"
            "file.yaml: subscribers[1].events: must not be empty"
        )

    assert run_command("tool", broken) == ExitCode.CONFIG
    assert capsys.readouterr().err == (
        "tool: error: file.yaml: subscribers[0].url: must start with http://\n"
        "tool: error: file.yaml: subscribers[1].events: must not be empty\n"
    )


def test_run_command_keeps_tracebacks_of_bugs() -> None:
    def bug() -> int:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_command("tool", bug)


@pytest.mark.parametrize("main", [publish.main, worker.main, dlq.main, admin.main, recorder.main])
def test_every_tool_documents_the_same_codes(
    main: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(main)
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 ok, 1 failed" in text
    assert "5 refused by RabbitMQ (unroutable or nacked)" in text


@pytest.mark.parametrize("main", [publish.main, worker.main, dlq.main, admin.main, recorder.main])
def test_every_tool_exits_2_on_bad_arguments(
    main: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(main)
    assert main(["--no-such-option"]) == ExitCode.USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert ": error: " in line and line.endswith("(see --help)")


@pytest.mark.parametrize(
    ("main", "prog"),
    [
        (publish.main, "webhook-publish"),
        (worker.main, "webhook-worker"),
        (dlq.main, "webhook-dlq"),
        (recorder.main, "webhook-recorder"),
    ],
)
def test_every_tool_prints_its_version(
    main: object, prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(main)
    assert main(["--version"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{prog} ") and line.split()[1][0].isdigit()
