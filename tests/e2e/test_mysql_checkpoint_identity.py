"""A binlog checkpoint the server cannot confirm is refused before anything streams, MariaDB.

The daemon writes a real checkpoint, then stands in for checkpoints of other servers: one with this server's
``server_id`` (1, MariaDB's default) whose GTID state is ahead of what this binlog holds at that position (before:
resumed by GTID and skipped a committed row), one of another server id with GTIDs this server never wrote, a
position past the end of the binlog, and one that is not an event boundary here. Each is exit 3 with what differs
and the fix, ``check`` says the same, and the real checkpoint then resumes with nothing lost.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.config import load_config
from tests.support.checkpoints import mysql
from tests.support.daemon import check_fails, create_stream, db_config, run_refused, stream_rows_then_stop
from tests.support.mysql import MyDb


def _refused(config: Path, *needles: str) -> None:
    stderr = run_refused(config, 3, *needles)
    assert f"checkpoint {FileCheckpointStore.for_task(load_config(config)).path}: " in stderr  # a position refusal
    check_fails(config, "binlog position", *needles[:1])


def test_mysql_checkpoints_of_other_servers_and_positions_past_the_binlog(
    my_db: MyDb, moto_url: str, tmp_path: Path
) -> None:
    my_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"myckpt-{uuid.uuid4().hex[:8]}")
    config = db_config(my_db, tmp_path / "c.toml", moto_url, stream)

    def stream_until(n: int) -> None:
        insert = lambda: my_db.execute(f"INSERT INTO t VALUES ({n})")  # noqa: E731
        stream_rows_then_stop(config, tmp_path / "daemon.log", insert, moto_url, stream, "t", n)

    stream_until(1)
    store = FileCheckpointStore.for_task(load_config(config))
    good = mysql(store.load())
    assert store.owned and good["server_id"] == 1 and good["gtid"], good
    file, pos, gtid = good["file"], good["pos"], good["gtid"]
    domain, server_id, seq = gtid.split(",")[0].split("-")
    # Committed while the daemon is down: the next transactions of this domain, which the binlog holds after
    # the checkpointed position.
    my_db.execute("INSERT INTO t VALUES (2)")

    # Another server with the same server_id and binlog names, one transaction further: by GTID (the default
    # gtid_mode "auto") this used to resume after transaction seq+1, silently skipping row 2.
    ahead = f"{domain}-{server_id}-{int(seq) + 1}"
    store.save({**good, "gtid": ahead})
    _refused(config, f"at the checkpointed position {file}:{pos}", f"but the checkpoint says {ahead}", "full load")

    # Another server id, with GTIDs this server never wrote (before: "server identity changed", streaming
    # "by GTID" and a misleading "purged" error once the server refused the GTID).
    foreign = f"{domain}-77-5"
    store.save({**good, "server_id": 77, "gtid": foreign})
    _refused(config, f"includes transactions the server at 127.0.0.1:{my_db.server.port} never wrote", foreign)

    # A file/position past the end of the binlog (a checkpoint without GTID: MySQL without GTIDs, or an older
    # version's): within the current file, and in a file the server does not have yet.
    size = int(my_db.server.execute("SHOW MASTER STATUS")[0][1])
    store.save({**good, "gtid": None, "pos": size + 1000})
    _refused(config, f"{file}:{size + 1000} lies beyond the end of that file")
    later = file.rsplit(".", 1)[0] + f".{int(file.rsplit('.', 1)[1]) + 5:06d}"
    store.save({**good, "gtid": None, "file": later, "pos": 4})
    _refused(config, f"{later}:4 lies beyond the end of the binlog")

    # A position inside the file that is no event boundary here: another server's file with the same name.
    store.save({**good, "gtid": None, "pos": pos - 1})
    _refused(config, f"{file}:{pos - 1} is not an event boundary")

    store.save(good)  # the real one: resumes, and row 2 (committed meanwhile) is delivered
    stream_until(3)
