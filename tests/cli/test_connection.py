"""The Kafka connection flags (rater/connection.py): one set for ``worker``, ``notify``,
``produce`` and ``simulate``, the same flags, variables and checks in each (issue 16)."""

import pytest

from rater.cli import main as cli
from rater.connection import KafkaSettings, client_kwargs, settings_from_args

# Each command with the arguments it needs besides the connection flags.
COMMANDS = {
    "worker": ["worker"],
    "notify": ["notify", "--webhook-url", "http://127.0.0.1:1/hook"],
    "produce": ["produce", "in.jsonl"],
    "simulate": ["simulate"],
}
FLAGS = [
    "--broker",
    "kafka-1:9096,kafka-2:9096",
    "--security-protocol",
    "SASL_SSL",
    "--sasl-mechanism",
    "SCRAM-SHA-256",
    "--sasl-username",
    "rater",
    "--sasl-password",
    "pw-1",
    "--ssl-cafile",
    "/etc/ca.pem",
    "--ssl-certfile",
    "/etc/client.pem",
    "--ssl-keyfile",
    "/etc/client.key",
]
ENV = {
    "RATER_BROKER": "kafka-1:9096,kafka-2:9096",
    "RATER_SECURITY_PROTOCOL": "SASL_SSL",
    "RATER_SASL_MECHANISM": "SCRAM-SHA-256",
    "RATER_SASL_USERNAME": "rater",
    "RATER_SASL_PASSWORD": "pw-1",
    "RATER_SSL_CAFILE": "/etc/ca.pem",
    "RATER_SSL_CERTFILE": "/etc/client.pem",
    "RATER_SSL_KEYFILE": "/etc/client.key",
}
# Written out by hand from FLAGS (and ENV), not taken from the code.
EXPECTED = KafkaSettings(
    broker="kafka-1:9096,kafka-2:9096",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-256",
    sasl_username="rater",
    sasl_password="pw-1",
    ssl_cafile="/etc/ca.pem",
    ssl_certfile="/etc/client.pem",
    ssl_keyfile="/etc/client.key",
)


@pytest.fixture(autouse=True)
def _no_connection_variables(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _parse(argv):
    return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_takes_the_connection_flags(command):
    assert settings_from_args(_parse(COMMANDS[command] + FLAGS)) == EXPECTED


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_takes_the_same_settings_from_the_variables(command, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    assert settings_from_args(_parse(COMMANDS[command])) == EXPECTED
    # A flag wins over its variable.
    args = _parse(COMMANDS[command] + ["--security-protocol", "PLAINTEXT", "--broker", "other:9092"])
    assert (args.security_protocol, args.broker, args.sasl_username) == ("PLAINTEXT", "other:9092", "rater")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_defaults_are_a_plain_text_local_broker(command):
    assert settings_from_args(_parse(COMMANDS[command])) == KafkaSettings(
        broker="127.0.0.1:9092", security_protocol="PLAINTEXT", sasl_mechanism="SCRAM-SHA-512"
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"RATER_SECURITY_PROTOCOL": "TLS"},
            "argument --security-protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (--security-protocol or RATER_SECURITY_PROTOCOL)",  # noqa: E501
        ),
        (
            {"RATER_SASL_MECHANISM": "GSSAPI"},
            "argument --sasl-mechanism: 'GSSAPI' is not one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN (--sasl-mechanism or RATER_SASL_MECHANISM)",  # noqa: E501
        ),
    ],
)
def test_a_bad_variable_is_refused_in_one_line_by_each_command(command, env, message, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exc:
        _parse(COMMANDS[command])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"rater {command}: error: {message}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_names_the_flags_but_never_the_password(command, monkeypatch, capsys):
    monkeypatch.setenv("RATER_SASL_PASSWORD", "hunter2")
    with pytest.raises(SystemExit):
        _parse([COMMANDS[command][0], "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "hunter2" not in out
    for flag in (
        "--broker",
        "--security-protocol",
        "--sasl-mechanism",
        "--sasl-username",
        "--sasl-password",
        "--ssl-cafile",
        "--ssl-certfile",
        "--ssl-keyfile",
    ):
        assert flag in out, flag
    assert "(RATER_SASL_PASSWORD; prefer the variable to the flag)" in out


def test_the_settings_reach_the_kafka_clients_as_sasl_credentials():
    args = _parse(
        COMMANDS["produce"]
        + ["--broker", "b:9095", "--security-protocol", "SASL_PLAINTEXT", "--sasl-username", "u", "--sasl-password", "p"]
    )
    assert client_kwargs(settings_from_args(args)) == {
        "bootstrap_servers": "b:9095",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
