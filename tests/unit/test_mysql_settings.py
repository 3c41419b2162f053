"""The binlog settings and privileges the MySQL source requires, each reported with its fix (pure functions)."""

from __future__ import annotations

from cdcstream.sources.mysql.checks import global_privileges
from cdcstream.sources.mysql.server import settings_problems

GOOD = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


def test_good_settings() -> None:
    assert settings_problems(GOOD) == []
    assert settings_problems({**GOOD, "binlog_transaction_compression": "OFF", "binlog_row_value_options": ""}) == []


def test_each_problem_names_the_setting_and_the_fix() -> None:
    """Compressed transactions and partial JSON updates are decoded (test_mysql_binlog.py): no problem."""
    problems = settings_problems(
        {
            "binlog_format": "MIXED",
            "binlog_row_image": "MINIMAL",
            "binlog_transaction_compression": "ON",
            "binlog_row_value_options": "PARTIAL_JSON",
        }
    )
    text = " | ".join(problems)
    assert "binlog_format is MIXED" in text and "SET GLOBAL binlog_format = ROW" in text
    assert "binlog_row_image is MINIMAL" in text
    assert "binlog_row_metadata is (not supported by this server version)" in text
    assert "binlog_transaction_compression" not in text and "binlog_row_value_options" not in text
    assert len(problems) == 3


def test_tls_failures_are_fatal_with_the_fix() -> None:
    import pymysql

    from cdcstream.config import MySQLSourceConfig
    from cdcstream.errors import DecodeError, SourceConnectionError, SourceError
    from cdcstream.sources.mysql.reader import classify
    from cdcstream.sources.mysql.server import connect_error

    cfg = MySQLSourceConfig(engine="mysql", server_id=9, ssl_mode="verify_identity")
    mismatch = pymysql.err.OperationalError(
        2003, "Can't connect ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch ...)"
    )
    for err in (connect_error(cfg, mismatch), classify(mismatch, "cdc@db:3306")):
        assert type(err) is SourceError and "host name verification failed" in str(err) and "verify_ca" in str(err)
    untrusted = pymysql.err.OperationalError(2003, "[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer")
    assert "ssl_ca must hold the CA" in str(connect_error(cfg, untrusted))
    no_tls = pymysql.err.OperationalError(2026, "SSL is required but the server doesn't support it")
    assert "does not offer TLS" in str(connect_error(cfg, no_tls))
    down = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db' ([Errno 111] refused)")
    assert isinstance(connect_error(cfg, down), SourceConnectionError)
    decode = classify(ValueError("bad"), "cdc@db:3306", "mariadb-bin.000007:1234")
    assert isinstance(decode, DecodeError) and not decode.retriable
    assert "mariadb-bin.000007:1234" in str(decode) and "--start-position=1234" in str(decode)


def test_global_privileges_are_whole_names_of_global_grants() -> None:
    grants = [
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `selector`@`%` IDENTIFIED BY PASSWORD '*AB'",
        "GRANT SELECT, INSERT ON `shop`.* TO `selector`@`%`",
        "GRANT `reload_role` TO `selector`@`%`",
    ]
    # Neither the user name "selector" nor a database grant nor a role named reload_role counts.
    assert global_privileges(grants) == {"REPLICATION SLAVE", "BINLOG MONITOR"}
    assert "ALL PRIVILEGES" in global_privileges(["GRANT ALL ON *.* TO `u`@`localhost`"])
    assert global_privileges(["GRANT USAGE ON *.* TO `u`@`%`"]) == {"USAGE"}
