"""Worker settings (rater/worker/config.py): an environment value is checked as the flag is."""

import pytest

from rater.cli import main as cli
from rater.worker.config import config_from_args


def _parse(monkeypatch, env: dict[str, str], argv: list[str]):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RATER_PARTITIONS": "abc"}, "argument --partitions: 'abc' is not a whole number (--partitions or RATER_PARTITIONS)"),
        ({"RATER_PARTITIONS": "0"}, "argument --partitions: '0' must be >= 1 (--partitions or RATER_PARTITIONS)"),
        ({"RATER_STORE": "rocks"}, "argument --store: 'rocks' is not one of rocksdb, memory (--store or RATER_STORE)"),
        ({"RATER_WEB_PORT": "99999"}, "argument --web-port: '99999' is not a port number, 0 to 65535 (--web-port or RATER_WEB_PORT)"),
        (
            {"RATER_SWEEP_INTERVAL": "nan"},
            "argument --sweep-interval: 'nan' must be a number > 0 (--sweep-interval or RATER_SWEEP_INTERVAL)",
        ),
        (
            {"RATER_RECOVERY_STALL_TIMEOUT": "-1"},
            "argument --recovery-stall-timeout: '-1' must be a number >= 0 (--recovery-stall-timeout or RATER_RECOVERY_STALL_TIMEOUT)",  # noqa: E501
        ),
        (
            {"RATER_BULK_RECOVERY_LEAST": "-5"},
            "argument --bulk-recovery-least: '-5' must be >= 0 (--bulk-recovery-least or RATER_BULK_RECOVERY_LEAST)",
        ),
        ({"RATER_ACCOUNT_FORMAT": "3"}, "argument --account-format: '3' is not one of 1, 2 (--account-format or RATER_ACCOUNT_FORMAT)"),
        ({"RATER_LOG_FORMAT": "xml"}, "argument --log-format: 'xml' is not one of text, json (--log-format or RATER_LOG_FORMAT)"),
        (
            {"RATER_SECURITY_PROTOCOL": "TLS"},
            "argument --security-protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (--security-protocol or RATER_SECURITY_PROTOCOL)",  # noqa: E501
        ),
    ],
)
def test_a_bad_environment_value_is_refused_with_one_line_naming_the_variable(monkeypatch, capsys, env, message):
    with pytest.raises(SystemExit) as exc:
        _parse(monkeypatch, env, ["worker"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"rater worker: error: {message}"


def test_a_bad_worker_variable_does_not_break_other_commands(monkeypatch, capsys):
    monkeypatch.setenv("RATER_PARTITIONS", "abc")
    monkeypatch.setenv("RATER_STORE", "rocks")
    assert cli.main(["rates", "check", "rate_tables"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: 3 plan(s)")


def test_good_environment_values_become_the_config(monkeypatch):
    env = {
        "RATER_PARTITIONS": "12",
        "RATER_STORE": "memory",
        "RATER_LOG_LEVEL": "DEBUG",
        "RATER_ACCOUNT_CACHE": "0",
        "RATER_SWEEP_INTERVAL": "2.5",
        "RATER_WEB_PORT": "7000",
        "RATER_STANDBY_REPLICAS": "0",
        "RATER_RECOVERY_STALL_TIMEOUT": "0",
    }
    cfg = config_from_args(_parse(monkeypatch, env, ["worker"]))
    assert cfg.recovery_stall_timeout == 0.0
    assert config_from_args(_parse(monkeypatch, {}, ["worker", "--recovery-stall-timeout", "42"])).recovery_stall_timeout == 42.0
    assert (cfg.partitions, cfg.store, cfg.log_level, cfg.account_cache, cfg.sweep_interval, cfg.web_port, cfg.standby_replicas) == (
        12,
        "memory",
        "debug",
        0,
        2.5,
        7000,
        0,
    )
    # A flag wins over its variable.
    assert config_from_args(_parse(monkeypatch, {}, ["worker", "--partitions", "3"])).partitions == 3
    # The stored format: 2 unless told, 1 for a rolling upgrade.
    assert config_from_args(_parse(monkeypatch, {}, ["worker"])).account_format == 2
    assert config_from_args(_parse(monkeypatch, {"RATER_ACCOUNT_FORMAT": "1"}, ["worker"])).account_format == 1
    assert config_from_args(_parse(monkeypatch, {}, ["worker", "--account-format", "1"])).account_format == 1
    # The bulk read of a changelog far behind (rater/worker/catchup.py): 1,000 records unless told, 0 never.
    assert config_from_args(_parse(monkeypatch, {}, ["worker"])).bulk_recovery_least == 1000
    assert config_from_args(_parse(monkeypatch, {"RATER_BULK_RECOVERY_LEAST": "0"}, ["worker"])).bulk_recovery_least == 0
    assert config_from_args(_parse(monkeypatch, {}, ["worker", "--bulk-recovery-least", "250"])).bulk_recovery_least == 250


def test_worker_help_shows_defaults_but_never_the_password(monkeypatch, capsys):
    monkeypatch.setenv("RATER_SASL_PASSWORD", "hunter2")
    with pytest.raises(SystemExit):
        _parse(monkeypatch, {}, ["worker", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(RATER_PARTITIONS) (default: 8)" in out
    assert "hunter2" not in out and "(default: set)" in out


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RATER_REPLICATION": "abc"}, "argument --replication: 'abc' is not a whole number (--replication or RATER_REPLICATION)"),
        ({"RATER_NOTIFY_SMTP_PORT": "x"}, "argument --smtp-port: 'x' is not a whole number (--smtp-port or RATER_NOTIFY_SMTP_PORT)"),
        ({"RATER_NOTIFY_BACKOFF": "-1"}, "argument --backoff: '-1' must be a number >= 0 (--backoff or RATER_NOTIFY_BACKOFF)"),
        (
            {"RATER_NOTIFY_SMTP_SECURITY": "tls"},
            "argument --smtp-security: 'tls' is not one of none, starttls, ssl (--smtp-security or RATER_NOTIFY_SMTP_SECURITY)",
        ),  # noqa: E501
    ],
)
def test_notify_variables_are_checked_by_notify_alone(monkeypatch, capsys, env, message):
    with pytest.raises(SystemExit) as exc:
        _parse(monkeypatch, env, ["notify"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"rater notify: error: {message}"
    assert cli.main(["rates", "check", "rate_tables"]) == 0


def test_rocksdb_memory_is_set_per_partition_in_mib(monkeypatch):
    from rater.worker.app import rocksdb_options

    default = config_from_args(_parse(monkeypatch, {}, ["worker"]))
    assert rocksdb_options(default) == {"write_buffer_size": 8 * 2**20, "max_write_buffer_number": 2, "block_cache_size": 16 * 2**20}
    cfg = config_from_args(_parse(monkeypatch, {"RATER_ROCKSDB_WRITE_BUFFER": "2"}, ["worker", "--rocksdb-block-cache", "4"]))
    assert rocksdb_options(cfg) == {"write_buffer_size": 2 * 2**20, "max_write_buffer_number": 2, "block_cache_size": 4 * 2**20}


def test_a_rocksdb_size_of_zero_is_refused_naming_the_variable(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _parse(monkeypatch, {"RATER_ROCKSDB_WRITE_BUFFER": "0"}, ["worker"])
    assert "'0' must be >= 1 (--rocksdb-write-buffer or RATER_ROCKSDB_WRITE_BUFFER)" in capsys.readouterr().err
