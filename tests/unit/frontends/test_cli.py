"""The terminal front end without services: parsing, tables, exit codes."""

from __future__ import annotations

import pandas as pd
import pytest

from yadtq import AmbiguousTask, UnknownTask
from yadtq.frontends import cli
from yadtq.frontends.tables import render


@pytest.mark.parametrize(
    ("text", "value"), [("2", 2), ("2.5", 2.5), ("[1, 2]", [1, 2]), ("true", True), ("hello", "hello"), ('"7"', "7")]
)
def test_arguments_are_json_where_they_parse(text: str, value: object) -> None:
    assert cli.parse_value(text) == value


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("up", "down", "worker", "submit", "status", "tasks", "workers", "dlq", "cancel", "demo"):
        assert command in out


def test_a_user_mistake_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YADTQ_PARTITIONS", "zero")
    assert cli.main(["tasks"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "yadtq: YADTQ_PARTITIONS='zero' is not a valid int"


def test_tables_render_readably() -> None:
    frame = pd.DataFrame(
        {"id": ["a" * 50], "result": [None], "args": [[1, 2]], "at": pd.to_datetime([0.0], unit="s", utc=True)}
    )
    text = render(frame, width=10)
    assert "aaaaaaaaa…" in text and "[1, 2]" in text and " - " in text.splitlines()[1] + " "
    assert render(frame.iloc[0:0]) == "(none)"


@pytest.mark.parametrize("error", [UnknownTask("no task with an id starting 'ab'"), AmbiguousTask("'ab' matches 2")])
def test_an_id_naming_no_task_or_several_is_bad_input(
    error: Exception, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def command(config: object, args: object) -> int:
        raise error

    monkeypatch.setitem(cli.COMMANDS, "history", command)
    assert cli.main(["history", "ab"]) == 2
    assert capsys.readouterr().err == f"yadtq: {error}\n"


def test_workers_lists_the_gone_ones_only_when_asked() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["workers"]).all is False
    assert parser.parse_args(["workers", "--all"]).all is True
    assert parser.parse_args(["result", "3f0c9e6a", "--timeout", "2"]).timeout == 2.0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"YADTQ_TLS_CERT_FILE": "/tmp/cert.pem"}, "YADTQ_TLS_CERT_FILE is for secured services: set YADTQ_SECURE=1"),
        (
            {
                "YADTQ_SECURE": "1",
                "YADTQ_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "YADTQ_KAFKA_SASL_MECHANISM": "PLAIN",
            },
            "secure services need YADTQ_KAFKA_SASL_USERNAME",
        ),
        (
            {"YADTQ_SECURE": "1", "YADTQ_TLS_CERT_FILE": "/nowhere/cert.pem", "YADTQ_KAFKA_SASL_MECHANISM": "PLAIN"},
            "YADTQ_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
    ],
    ids=["tls-without-secure", "secure-without-credentials", "tls-with-the-plain-protocol"],
)
def test_up_refuses_incomplete_security_settings_before_starting_anything(
    env: dict[str, str], says: str, tmp_path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YADTQ_HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["up"]) == 3  # the code of a service that cannot be started as configured
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "services.json").exists()
