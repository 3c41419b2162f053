"""The binlog settings the MySQL source requires, each reported with its fix (pure function)."""

from __future__ import annotations

from cdcstream.sources.mysql.source import settings_problems

GOOD = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


def test_good_settings() -> None:
    assert settings_problems(GOOD) == []
    assert settings_problems({**GOOD, "binlog_transaction_compression": "OFF", "binlog_row_value_options": ""}) == []


def test_each_problem_names_the_setting_and_the_fix() -> None:
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
    assert "binlog_transaction_compression = OFF" in text
    assert "binlog_row_value_options = ''" in text
    assert len(problems) == 5
