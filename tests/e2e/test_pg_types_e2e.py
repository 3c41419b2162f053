"""The PostgreSQL type matrix through the daemon into moto: what a Kinesis consumer actually reads."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import pg_types as m
from tests.support.daemon import create_stream, read_stream, start_daemon
from tests.support.postgres import PgDb

pytestmark = pytest.mark.pg_core


def test_type_matrix_end_to_end(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    m.prepare(pg_db)
    stream = create_stream(moto_url, f"s-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(pg_db, moto_url, stream, tmp_path, extra_source='json_as = "object"\nhstore_as = "object"')
    daemon.wait_ready()
    try:
        for row in range(m.ROWS):
            pg_db.execute(m.insert_sql(row))
        pg_db.execute("INSERT INTO types (id) VALUES (5)")
        deadline = time.monotonic() + 60
        while True:
            records = [r for r in read_stream(moto_url, stream) if r["data"]["metadata"].get("table-name") == "types"]
            if len(records) >= m.ROWS + 1:
                break
            assert time.monotonic() < deadline, f"only {len(records)} records:\n{daemon.log_tail()}"
            time.sleep(0.3)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    data = {r["data"]["data"]["id"]: r["data"]["data"] for r in records}
    for row in range(m.ROWS):
        want: dict[str, Any] = orjson.loads(orjson.dumps(m.expected(row, row + 1)))
        for col, renderings in m.OBJECT_RENDERING.items():
            want[col] = renderings[row]
        # JSON null inside a json column is a value (present, null); SQL NULL columns are left out (below)
        assert data[row + 1] == want, {
            k: (data[row + 1].get(k), v) for k, v in want.items() if data[row + 1].get(k) != v
        }
    assert data[5] == {"id": 5}  # include_null_and_empty = false: SQL NULL columns are absent
    assert "c_json" in data[4] and data[4]["c_json"] is None  # JSON 'null' is not SQL NULL
    assert data[1]["c_int_arr"] == [1, None, 3]  # NULL array elements are never dropped
    assert data[2]["c_pair"] == {"n": None, "t": None, "s": None}  # nor NULL composite fields
