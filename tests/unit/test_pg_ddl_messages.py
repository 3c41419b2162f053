"""Decoding of PostgreSQL DDL capture messages (sources/postgres/ddl.py) without a server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cdcstream.changes import Op
from cdcstream.sources.postgres.ddl import BadMessage, schema_changes


def snap(table: str, *cols: tuple[int, str, str], schema: str = "public", key: tuple[str, ...] = ("id",)) -> Any:
    oids = {"integer": 23, "bigint": 20, "text": 25}
    return {
        "schema": schema,
        "table": table,
        "columns": [{"num": n, "name": c, "type": t, "oid": oids[t], "notnull": c in key} for n, c, t in cols],
        "key": list(key),
    }


def decode(msg: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    events = schema_changes(orjson.dumps({"v": 1, **msg}), lambda oid, text: text)
    return [(e.op.value, f"{e.table.schema}.{e.table.table}", e.change.column, e.change.old_column) for e in events]


def test_diff_by_attnum() -> None:
    old = snap("t", (1, "id", "integer"), (2, "a", "text"), (3, "b", "integer"), (4, "c", "integer"))
    new = snap("u", (1, "id", "integer"), (2, "title", "text"), (4, "c", "bigint"), (5, "d", "text"))
    assert decode({"kind": "alter", "oid": 1, "old": old, "new": new}) == [
        ("rename-table", "public.u", None, None),
        ("drop-column", "public.u", None, "b"),
        ("rename-column", "public.u", "title", "a"),
        ("column-type-change", "public.u", "c", "c"),
        ("add-column", "public.u", "d", None),
    ]


def test_no_change_unknown_before_and_drop() -> None:
    t = snap("t", (1, "id", "integer"))
    assert decode({"kind": "alter", "oid": 1, "old": t, "new": t}) == []
    assert decode({"kind": "alter", "oid": 1, "old": None, "new": t}) == [("change-columns", "public.t", None, None)]
    [drop] = schema_changes(
        orjson.dumps({"v": 1, "kind": "drop", "oid": 1, "schema": "s", "table": "x", "old": None}), lambda o, t: t
    )
    assert drop.op is Op.DROP_TABLE and (drop.table.schema, drop.table.table, drop.table.columns) == ("s", "x", ())


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v": 2, "kind": "alter"}',
        b'{"v": 1, "kind": "create"}',
        b'{"v": 1, "kind": "alter"}',
    ],
)
def test_bad_messages_are_typed(content: bytes) -> None:
    with pytest.raises(BadMessage):
        schema_changes(content, lambda oid, text: text)
