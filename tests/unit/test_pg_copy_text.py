"""The full load's reading of PostgreSQL COPY text (sources/postgres/snapshot.py), without a server."""

from __future__ import annotations

from cdcstream.sources.postgres.snapshot import render_lines, split_copy_text


def test_rows_of_a_table_without_columns_are_empty_rows() -> None:
    # COPY writes a row of CREATE TABLE t () as an empty line; the load failed on it (one field for no column)
    assert render_lines([], [], split_copy_text("\n\n\n")) == [{}, {}, {}]


def test_fields_nulls_and_escapes() -> None:
    lines = split_copy_text("1\ta\\tb\t\\N\n2\t\t\\\\\n")
    assert render_lines(["id", "s", "t"], [int, None, None], lines) == [
        {"id": 1, "s": "a\tb", "t": None},
        {"id": 2, "s": "", "t": "\\"},
    ]
